"""The shared half of additive attention-bias layers (ALiBi, T5, FIRE, KERPLE)."""

import keras
from keras import ops


def end_aligned_positions(query_length, key_length):
    """float32 positions `([q], [k])` of queries aligned to the END of the keys.

    Query `i` sits at `key_length - query_length + i`, key `j` at `j`: the
    last query and the last key coincide (ordinary self-attention when the
    lengths match, one new query against a whole cache in decoding).
    Lengths may be Python ints or scalar int tensors.
    """
    offset = ops.cast(key_length - query_length, "float32")
    query_positions = ops.arange(query_length, dtype="float32") + offset  # [q]
    key_positions = ops.arange(key_length, dtype="float32")  # [k]
    return query_positions, key_positions


class AttentionBias(keras.layers.Layer):
    """Adds `self.bias(query_length, key_length)` (`[1, heads, q, k]`) to scores.

    Subclasses set `self.num_heads` and implement `bias_at(query_positions,
    key_positions)`, the bias of explicit absolute positions (what a
    key/value cache needs: a fixed-size buffer of keys at `0 .. S - 1` and
    queries at the cache index). `bias(query_length, key_length)` is
    `bias_at` of end-aligned positions. This base checks the scores' shape
    and adds the bias in the scores' dtype.
    """

    def bias(self, query_length, key_length):
        """The float32 bias, shape `[1, num_heads, query_length, key_length]`,
        queries aligned to the end of the keys (`end_aligned_positions`).

        Lengths may be Python ints or scalar int tensors (dynamic shapes).
        """
        return self.bias_at(*end_aligned_positions(query_length, key_length))

    def bias_at(self, query_positions, key_positions):
        """The float32 bias `[1, num_heads, q, k]` of queries at
        `query_positions` (`[q]`) and keys at `key_positions` (`[k]`),
        absolute positions as float32 or int tensors."""
        raise NotImplementedError

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
