"""Pictures of what a trained model's position scheme does, for TensorBoard."""

import kerapos  # noqa: F401
import numpy as np

from kerapos.layers.alibi_bias import ALiBiBias
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.layers.positional_encoding import PositionalEncoding
from kerapos.layers.relative_position_bias import RelativePositionBias
from kerapos.layers.rotary_embedding import RotaryEmbedding

_POSITION_LAYERS = (PositionalEncoding, LearnedPositionEmbedding, RotaryEmbedding,
                    ALiBiBias, RelativePositionBias)


def position_similarity(model, position, length, head_dim=64):
    """A `[length, length]` matrix of how the model relates positions i and j.

    Input schemes: cosine similarity of the position vectors added at i and j.
    Rotary / xPos: the attention logit between a query at i and a key at j
    that carry the same content (so only the rotation and decay differ).
    ALiBi / T5: the additive bias, averaged over heads.
    Returns None when the model has no position layer (NoPE).
    """
    layer = next(
        (l for l in model._flatten_layers(include_self=False) if isinstance(l, _POSITION_LAYERS)),
        None,
    )
    if layer is None:
        return None
    if isinstance(layer, LearnedPositionEmbedding):
        length = min(length, layer.max_length)
    if isinstance(layer, (PositionalEncoding, LearnedPositionEmbedding)):
        width = int(model.get_layer("token_embedding").output_dim)
        vectors = np.asarray(layer(np.zeros((1, length, width), "float32")))[0]  # [length, width]
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)
        return unit @ unit.T
    if isinstance(layer, RotaryEmbedding):
        content = np.ones((1, length, 1, head_dim), "float32") / np.sqrt(head_dim)  # [1, L, 1, hd]
        queries = np.asarray(layer(content, is_key=False))[0, :, 0]  # [L, hd]
        keys = np.asarray(layer(content, is_key=True))[0, :, 0]
        return queries @ keys.T
    return np.asarray(layer.bias(length, length))[0].mean(axis=0)  # [L, L]
