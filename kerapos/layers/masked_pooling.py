"""Pooling of a sequence to one vector that honours the padding mask."""

import keras
from keras import ops

from kerapos.utils import checks

POOLING_MODES = ("mean", "first")


@keras.saving.register_keras_serializable(package="kerapos")
class MaskedPooling(keras.layers.Layer):
    """Pools `[batch, seq, dim]` to `[batch, dim]`: masked mean or first token.

    "mean" averages the positions the Keras mask keeps (all of them without a
    mask); a row whose positions are all masked gives zeros, not NaN. "first"
    takes position 0 (a [CLS] token). The mask ends here: the output carries
    none.

    Args:
        mode: str. "mean" or "first".
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `dtype` etc.

    Call arguments:
        inputs: float tensor `[batch, seq, dim]`.
        mask: optional boolean `[batch, seq]`, True = a real token (the Keras
            mask of `inputs` when not given).

    Returns:
        `[batch, dim]`, in the dtype of `inputs`.

    Example:
    ```python
    tokens = keras.Input(shape=(None,), dtype="int32")
    embedded = keras.layers.Embedding(1000, 64, mask_zero=True)(tokens)
    pooled = MaskedPooling("mean")(embedded)  # [batch, 64], padding ignored
    ```
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        self.mode = checks.choice(mode, "mode", POOLING_MODES)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if self.mode == "first":
            return inputs[:, 0]
        if mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.cast(mask, inputs.dtype)[..., None]  # [batch, seq, 1]
        total = ops.sum(inputs * weights, axis=1)  # [batch, dim]
        count = ops.maximum(ops.sum(weights, axis=1), ops.cast(1, inputs.dtype))  # [batch, 1]
        return total / count

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, inputs_shape):
        return (inputs_shape[0], inputs_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
