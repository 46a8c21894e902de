"""T5's learned, bucketed relative position bias (Raffel et al., 2020)."""

import math

import keras
import numpy as np
from keras import ops

from kerapos.layers.attention_bias import AttentionBias
from kerapos.utils import checks


def _relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """T5's bucket of each relative position `memory_position - query_position`.

    Half the buckets (per direction, when bidirectional) hold one exact
    distance each; the rest cover distances up to `max_distance`
    logarithmically. Every farther distance falls into the last bucket, which
    is what lets the bias extend to any length. Unidirectional (causal) mode
    maps all future positions to bucket 0.

    Args:
        relative_position: int tensor of any shape.
        bidirectional: bool, whether keys after the query get their own buckets.
        num_buckets: int, total number of buckets.
        max_distance: int, the distance where the last bucket starts.

    Returns:
        int32 tensor, same shape, values in `[0, num_buckets)`.
    """
    distance = -ops.cast(relative_position, "int32")  # > 0: key before query
    bucket_offset = ops.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        bucket_offset = ops.cast(distance < 0, "int32") * num_buckets
        distance = ops.abs(distance)
    else:
        distance = ops.maximum(distance, 0)
    max_exact = num_buckets // 2
    # Log-spaced buckets for max_exact <= distance; the maximum only keeps the
    # (unused) small-distance branch away from log(0).
    log_ratio = ops.log(
        ops.cast(ops.maximum(distance, max_exact), "float32") / float(max_exact)
    ) / math.log(max_distance / max_exact)
    log_bucket = max_exact + ops.cast(log_ratio * (num_buckets - max_exact), "int32")
    log_bucket = ops.minimum(log_bucket, num_buckets - 1)
    return bucket_offset + ops.where(distance < max_exact, distance, log_bucket)


@keras.saving.register_keras_serializable(package="kerapos")
class RelativePositionBias(AttentionBias):
    """Adds T5's learned relative position bias to attention scores.

    Each query-key pair is assigned a bucket by its relative position
    `key_position - query_position`: small distances get one bucket each,
    larger ones share logarithmically wider buckets up to `max_distance`, and
    everything beyond lands in the last bucket. A learned
    `[num_buckets, num_heads]` table gives each head a scalar bias per bucket.
    Distances past `max_distance` reuse the last bucket, so the bias is
    defined for any sequence length.

    Queries are aligned to the END of the keys: query `i` sits at absolute
    position `key_length - query_length + i` (self-attention when the lengths
    match, incremental decoding with one query against a cache).

    Args:
        num_heads: int. Number of attention heads.
        num_buckets: int. Number of buckets (T5: 32). Must be at least 2,
            at least 4 when `bidirectional` (each direction needs an exact and
            a log-spaced bucket).
        max_distance: int. Distance from which on all pairs share the last
            bucket (T5: 128). Must exceed the number of exact buckets.
        bidirectional: bool. `True` (encoders) gives keys after the query
            their own buckets; `False` (causal decoders) maps them all to
            bucket 0.
        embeddings_initializer: initializer of the bias table.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `dtype` etc.

    Call arguments:
        attention_scores: the attention logits, shape
            `[batch, num_heads, query_length, key_length]`.

    Returns:
        `attention_scores` plus the bias, same shape and dtype.

    Example:
    ```python
    scores = np.random.rand(2, 8, 10, 10).astype("float32")  # [b, h, q, k]
    t5_bias = kerapos.layers.relative_position_bias.RelativePositionBias(
        num_heads=8)
    biased = t5_bias(scores)
    bias = t5_bias.bias(query_length=10, key_length=10)  # [1, 8, 10, 10]
    ```

    Reference:
        Raffel et al., "Exploring the Limits of Transfer Learning with a
        Unified Text-to-Text Transformer", JMLR 2020,
        [arXiv:1910.10683](https://arxiv.org/abs/1910.10683).
    """

    def __init__(
        self,
        num_heads,
        num_buckets=32,
        max_distance=128,
        bidirectional=True,
        embeddings_initializer="truncated_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_heads = checks.integer(num_heads, "num_heads", minimum=1)
        num_buckets = checks.integer(num_buckets, "num_buckets", minimum=1)
        max_distance = checks.integer(max_distance, "max_distance", minimum=1)
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise ValueError(
                f"`bidirectional` must be True or False, got bidirectional={bidirectional!r}."
            )
        bidirectional = bool(bidirectional)
        buckets_per_direction = num_buckets // 2 if bidirectional else num_buckets
        if buckets_per_direction < 2:
            raise ValueError(
                f"num_buckets={num_buckets} is too small: each direction needs at "
                "least 2 buckets (one exact, one log-spaced); use num_buckets >= "
                f"{4 if bidirectional else 2}."
            )
        exact_buckets = buckets_per_direction // 2
        if max_distance <= exact_buckets:
            raise ValueError(
                f"max_distance={max_distance} must exceed the {exact_buckets} exact "
                f"buckets per direction (num_buckets={num_buckets}, "
                f"bidirectional={bidirectional}); raise max_distance."
            )
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.num_heads),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def bias(self, query_length, key_length):
        """The bias `[1, num_heads, q, k]`, queries end-aligned to the keys.

        It depends on the distance only (a Toeplitz matrix), so the buckets
        are looked up once per distance, `[q + k - 1]`, and laid out into
        `[q, k]` by a skewed reshape (which XLA fuses). Its gradient is
        `_table_gradient`: no scatter over every query-key pair and no
        layout copy. Equals `bias_at(*end_aligned_positions(q, k))`, values
        and gradient.
        """
        # t = j - i + q - 1 indexes the distances key - query, -(k - 1) .. q - 1
        distances = ops.arange(-(key_length - 1), query_length, dtype="int32")  # [q + k - 1]
        buckets = self._buckets(distances)

        @ops.custom_gradient
        def toeplitz(embeddings):  # [num_buckets, h]
            def gradient(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream  # [h, q, k]
                table_gradient = self._table_gradient(upstream, query_length, key_length)
                return ops.cast(table_gradient, embeddings.dtype)

            per_distance = ops.transpose(ops.take(embeddings, buckets, axis=0))  # [h, q + k - 1]
            period = query_length + key_length
            per_distance = ops.pad(per_distance, [[0, 0], [0, 1]])  # [h, period]
            # Rows of period - 1 values cut from the periodic sequence start one
            # distance earlier each: row i starts at t = q - 1 - i.
            tiled = ops.tile(per_distance, [1, query_length + 1])  # [h, (q + 1) * period]
            skewed = ops.slice(tiled, [0, query_length - 1],
                               [self.num_heads, query_length * (period - 1)])
            skewed = ops.reshape(skewed, [self.num_heads, query_length, period - 1])
            return skewed[:, :, :key_length], gradient  # [h, q, k]

        return toeplitz(ops.copy(self.embeddings))[None]  # [1, h, q, k]; a tensor, not the variable

    def _buckets(self, relative_position):
        return _relative_position_bucket(
            relative_position, self.bidirectional, self.num_buckets, self.max_distance
        )

    def _table_gradient(self, upstream, query_length, key_length):
        """The gradient of the table `[num_buckets, h]` from that of the bias `[h, q, k]`.

        Every distance `d = key - query` with `|d| >= max_distance` falls in
        one bucket per sign, so only the band `|d| < max_distance` needs
        per-distance sums: a gather of `[h, q, 2 max_distance - 1]` values (or less
        for short inputs). The pairs past the band, after and before the
        query, are two sums: one `[h, q * k] x [q * k, 2]` matrix product.
        """
        upstream = ops.cast(upstream, "float32")  # [h, q, k]
        static_lengths = isinstance(query_length, int) and isinstance(key_length, int)
        if static_lengths:
            half = min(self.max_distance, max(query_length, key_length))  # static, as JAX needs
        else:  # lengths known only when the graph runs (TensorFlow)
            half = ops.minimum(self.max_distance, ops.maximum(query_length, key_length))
        band = ops.arange(1 - half, half, dtype="int32")  # [w]: the band's distances
        query_index = ops.arange(query_length, dtype="int32")  # [q]
        # key column of query i at distance d (queries end-aligned): i + d + k - q
        columns = query_index[:, None] + band[None, :] + (key_length - query_length)  # [q, w]
        inside = ops.logical_and(columns >= 0, columns < key_length)
        # one gather from the flattened gradient (cheaper than take_along_axis
        # on TensorFlow's CPU kernels); int64 unless h * q * k is known to fit int32
        index_dtype = "int64"
        if static_lengths and self.num_heads * query_length * key_length < 2**31:
            index_dtype = "int32"
        pair_index = (ops.cast(query_index, index_dtype) * ops.cast(key_length, index_dtype))[
            :, None] + ops.cast(ops.clip(columns, 0, key_length - 1), index_dtype)  # [q, w]
        head_offset = (ops.arange(self.num_heads, dtype=index_dtype)
                       * ops.cast(query_length, index_dtype)
                       * ops.cast(key_length, index_dtype))  # [h]
        gathered = ops.take(ops.reshape(upstream, [-1]),
                            head_offset[:, None, None] + pair_index[None])  # [h, q, w]
        band_sums = ops.sum(ops.where(inside[None], gathered, 0.0), axis=1)  # [h, w]
        distance = (ops.arange(key_length, dtype="int32")[None, :]
                    - query_index[:, None] - (key_length - query_length))  # [q, k]
        regions = ops.stack([distance >= self.max_distance, distance <= -self.max_distance], axis=-1)
        past_band = ops.matmul(
            ops.reshape(upstream, [self.num_heads, -1]),  # [h, q * k]
            ops.reshape(ops.cast(regions, "float32"), [-1, 2]),  # [q * k, 2]
        )  # [h, 2]: the sums after and before the band
        values = ops.concatenate([band_sums, past_band], axis=1)  # [h, w + 2]
        buckets = self._buckets(ops.concatenate(
            [band, ops.array([self.max_distance, -self.max_distance], "int32")], axis=0))
        # [num_buckets, w + 2] x [w + 2, h]: each value into its bucket
        return ops.matmul(ops.transpose(ops.one_hot(buckets, self.num_buckets)),
                          ops.transpose(values))

    def bias_at(self, query_positions, key_positions):
        """The bias `[1, num_heads, q, k]` of queries at `query_positions`
        `[q]` and keys at `key_positions` `[k]` (integer-valued)."""
        relative_position = ops.cast(key_positions, "int32")[None, :] - ops.cast(
            query_positions, "int32"
        )[:, None]  # [q, k]
        buckets = self._buckets(relative_position)
        values = ops.take(self.embeddings, buckets, axis=0)  # [q, k, h]
        return ops.transpose(values, (2, 0, 1))[None]  # [1, h, q, k]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "num_buckets": self.num_buckets,
                "max_distance": self.max_distance,
                "bidirectional": self.bidirectional,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config
