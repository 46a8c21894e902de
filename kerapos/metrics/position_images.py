"""Pictures of what a trained model's position scheme does, for TensorBoard."""

import numpy as np

from kerapos import positions


def position_similarity(model, position, length, head_dim=64):
    """A `[length, length]` matrix of how the model relates positions i and j.

    The matrix is the scheme's relation image (`positions.relation_matrix`)
    of the model's outermost position layer: for input schemes, the cosine
    similarity of the position vectors added at i and j; for rotary / xPos,
    the attention logit between a query at i and a key at j that carry the
    same content (so only the rotation and decay differ); for ALiBi / T5,
    the additive bias averaged over heads. A bounded table (learned) is drawn
    up to its end.

    Args:
        model: a built model holding position layers (`positions.position_layers`);
            for input schemes, with a layer named "token_embedding" whose
            `output_dim` is the width the positions are added at.
        position: the model's `kerapos.positions` name.
        length: int, positions drawn.
        head_dim: int, the query/key width the rotary logits are taken at.

    Returns:
        A float `[length, length]` numpy array, or None when the model has no
        position layer (NoPE).
    """
    layers = positions.position_layers(model)
    if not layers:
        return None
    if positions.where(position) == "input":
        width = int(model.get_layer("token_embedding").output_dim)
    else:
        width = head_dim
    return np.asarray(positions.relation_matrix(position, layers[0], length, width))
