"""Serializable Keras layers for position information (registered under "kerapos").

| layer | scheme | acts on |
|---|---|---|
| `PositionalEncoding` | sinusoidal (Vaswani et al. 2017) | inputs |
| `LearnedPositionEmbedding` | learned table, extendable (`extend_to`) | inputs |
| `RotaryEmbedding` | RoPE + `rope_types` scaling (PI / NTK / dynamic / YaRN), xPos | queries and keys |
| `ALiBiBias` | ALiBi, causal or symmetric (Press et al. 2022) | attention logits |
| `RelativePositionBias` | T5 bucketed relative bias (Raffel et al. 2020) | attention logits |
| `FireBias` | FIRE learned, interpolated relative bias (Li et al. 2024) | attention logits |
| `KerpleBias` | KERPLE learned log / power distance kernel (Chi et al. 2022) | attention logits |
| `PositionalMultiHeadAttention` | `MultiHeadAttention` taking any of them by name | - |
| `TransformerBlock` | pre-norm encoder / decoder block around that attention | - |
| `MaskedPooling` | masked mean or first-token pooling | - |

`registry` (public as `kerapos.positions`) says which scheme each layer
implements and how it behaves. Importing this package registers every layer,
so `keras.saving.load_model(path, safe_mode=True)` loads models built from them.
This package imports only `kerapos.utils` and its own modules.
"""

from kerapos.layers.alibi_bias import ALiBiBias
from kerapos.layers.fire_bias import FireBias
from kerapos.layers.kerple_bias import KerpleBias
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.layers.masked_pooling import MaskedPooling
from kerapos.layers.positional_attention import PositionalMultiHeadAttention
from kerapos.layers.positional_encoding import PositionalEncoding
from kerapos.layers.relative_position_bias import RelativePositionBias
from kerapos.layers.rotary_embedding import RotaryEmbedding
from kerapos.layers.transformer_block import TransformerBlock

__all__ = [
    "ALiBiBias",
    "FireBias",
    "KerpleBias",
    "LearnedPositionEmbedding",
    "MaskedPooling",
    "PositionalEncoding",
    "PositionalMultiHeadAttention",
    "RelativePositionBias",
    "RotaryEmbedding",
    "TransformerBlock",
]
