"""The shared half of additive attention-bias layers (ALiBi, T5)."""

import keras
from keras import ops


class AttentionBias(keras.layers.Layer):
    """Adds `self.bias(query_length, key_length)` (`[1, heads, q, k]`) to scores.

    Subclasses set `self.num_heads` and implement `bias`; this base checks the
    scores' shape and adds the bias in the scores' dtype.
    """

    def call(self, attention_scores):
        self._check_scores(attention_scores)
        shape = ops.shape(attention_scores)  # [b, h, q, k]
        bias = self.bias(shape[2], shape[3])
        return attention_scores + ops.cast(bias, attention_scores.dtype)

    def _check_scores(self, attention_scores):
        shape = attention_scores.shape
        if len(shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects attention scores of shape "
                "[batch, num_heads, query_length, key_length] (rank 4), got "
                f"shape {tuple(shape)}."
            )
        if shape[1] is not None and shape[1] != self.num_heads:
            raise ValueError(
                f"{type(self).__name__} was built for num_heads={self.num_heads} "
                f"but the attention scores have {shape[1]} heads (axis 1 of "
                f"shape {tuple(shape)}); pass num_heads={shape[1]}."
            )

    def compute_output_shape(self, input_shape):
        return input_shape
