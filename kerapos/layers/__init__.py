"""Serializable Keras layers for position information (registered under "kerapos").

| layer | scheme | acts on |
|---|---|---|
| `PositionalEncoding` | sinusoidal (Vaswani et al. 2017) | inputs |
| `LearnedPositionEmbedding` | learned table, extendable (`extend_to`) | inputs |
| `RotaryEmbedding` | RoPE + PI / NTK / dynamic / YaRN scaling, xPos | queries and keys |
| `ALiBiBias` | ALiBi, causal or symmetric (Press et al. 2022) | attention logits |
| `RelativePositionBias` | T5 bucketed relative bias (Raffel et al. 2020) | attention logits |
| `PositionalMultiHeadAttention` | `MultiHeadAttention` taking any of them by name | - |
"""

from kerapos.layers.alibi_bias import ALiBiBias
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.layers.positional_encoding import PositionalEncoding
from kerapos.layers.relative_position_bias import RelativePositionBias
from kerapos.layers.rotary_embedding import RotaryEmbedding
from kerapos.layers.positional_attention import PositionalMultiHeadAttention  # noqa: I001 (last: uses kerapos.positions)

__all__ = [
    "ALiBiBias",
    "LearnedPositionEmbedding",
    "PositionalEncoding",
    "PositionalMultiHeadAttention",
    "RelativePositionBias",
    "RotaryEmbedding",
]
