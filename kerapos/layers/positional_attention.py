"""Multi-head attention with a position scheme inside: RoPE, xPos, ALiBi, T5."""

import math

import keras
from keras import ops

from kerapos.layers import context_extension as extension
from kerapos.layers import registry as positions
from kerapos.layers.attention_bias import AttentionBias
from kerapos.layers.attention_bias import end_aligned_positions
from kerapos.utils import checks


@keras.saving.register_keras_serializable(package="kerapos")
class PositionalMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` with a built-in position scheme.

    A drop-in subclass: same constructor arguments, call arguments, Keras
    mask handling and weights as `MultiHeadAttention`, plus one of the
    attention-level position schemes of `kerapos.positions`:

    * `"none"`: plain multi-head attention.
    * `"rotary"` (RoPE) / `"xpos"`: the projected queries and keys are rotated
      by their positions (`RotaryEmbedding`; with xPos, queries with
      `is_key=False` and keys with `is_key=True`), then attention proceeds as
      usual.
    * `"alibi"` / `"t5"` / `"fire"` / `"kerple"` (every scheme whose layer is
      an `AttentionBias`): a `[1, num_heads, query_length, key_length]` bias
      (`ALiBiBias` / `RelativePositionBias` / `FireBias` / `KerpleBias`) is
      added to the logits before the softmax. ALiBi and FIRE default to
      `causal=True`, one-sided forms which are only right together with a
      causal mask (`use_causal_mask=True`); encoders should pass
      `position_config={"causal": False}` (`kerapos.positions.layer_config`
      does so for encoder models).

    Positions: queries are aligned to the END of the keys. With query length
    `T` and key length `S`, query `i` sits at position `S - T + i` (ordinary
    self-attention when `T == S`; one query against a cache of `S` keys in
    incremental decoding). The causal mask (`use_causal_mask=True`) follows
    the same alignment: query `i` sees keys `0 .. S - T + i` (for `T == S`
    this is `MultiHeadAttention`'s mask).

    Log-n scaling (`logn_train_length=L`): when the key length `n` exceeds
    `L`, the logits are multiplied by `log(n) / log(L)`, which keeps the
    attention entropy from growing with the length (Chiang and Cholak 2022,
    arXiv:2202.12172); lengths `n <= L` are unchanged.

    Context extension (`context_extension`, rotary and xPos only): an
    inference-time method of `kerapos.layers.context_extension` ("rerope",
    "self_extend" or "dual_chunk") that runs a trained model past its training
    length by changing the relative positions of far query-key pairs. It
    computes 3 (ReRoPE, Self-Extend) or 5 (Dual Chunk) score passes of
    `[batch, heads, T, S]` instead of one (time and peak memory) and equals
    plain rotary attention on sequences up to its window.

    Position schemes other than "none" need inputs `[batch, seq, features]`
    (attention over axis 1 only).

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key (even for
            "rotary"/"xpos").
        position: str. One of "none", "rotary", "xpos", "alibi", "t5".
        position_config: dict or None. Constructor arguments of the position
            layer, as taken by `kerapos.positions.get(position, ...)`, e.g.
            `{"scaling": {"rope_type": "linear", "factor": 2.0}}` for
            "rotary" or `{"causal": False}` for "alibi". `num_heads` is filled
            in for "alibi" and "t5".
        logn_train_length: None or int >= 2. The training length for log-n
            scaling; None disables it.
        context_extension: None or dict with "method" and its arguments, e.g.
            `{"method": "rerope", "window": 32, "leaky_factor": None,
            "logn_train_length": 64}`, `{"method": "self_extend",
            "neighbor_window": 32, "group_size": 8}` or `{"method":
            "dual_chunk", "chunk_size": 48, "local_window": 4}` (see
            `kerapos.layers.context_extension`).
        **kwargs: the other arguments of `keras.layers.MultiHeadAttention`
            (`value_dim`, `dropout`, `use_bias`, `output_shape`,
            `kernel_initializer`, ..., `name`, `dtype`).

    Call arguments:
        query: `[batch, T, features]`.
        value: `[batch, S, features]`.
        key: optional `[batch, S, features]`; defaults to `value`.
        attention_mask: optional boolean `[batch, T, S]`, True = attend.
        return_attention_scores: bool. Also return the attention
            probabilities `[batch, num_heads, T, S]`.
        training: bool. Dropout on or off.
        use_causal_mask: bool. Mask keys after each query (end-aligned).

    Returns:
        `[batch, T, output features]`, and the attention probabilities when
        `return_attention_scores=True`.

    Example:
    ```python
    tokens = np.random.rand(2, 10, 64).astype("float32")  # [b, seq, features]
    attention = PositionalMultiHeadAttention(
        num_heads=4, key_dim=16, position="alibi", logn_train_length=512)
    outputs = attention(tokens, tokens, use_causal_mask=True)  # [2, 10, 64]
    ```

    References:
        Vaswani et al. 2017 (arXiv:1706.03762) for the attention; Su et al.
        2021 (RoPE, arXiv:2104.09864); Sun et al. 2023 (xPos,
        arXiv:2212.10554); Press et al. 2022 (ALiBi, arXiv:2108.12409); Raffel
        et al. 2020 (T5, arXiv:1910.10683); Chiang and Cholak 2022 (log-n
        scaling, arXiv:2202.12172); Su 2023 (ReRoPE, github bojone/rerope);
        Jin et al. 2024 (Self-Extend, arXiv:2401.01325); An et al. 2024 (Dual
        Chunk Attention, arXiv:2402.17463).
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        position="none",
        position_config=None,
        logn_train_length=None,
        context_extension=None,
        **kwargs,
    ):
        valid_positions = positions.available(where="none") + positions.available(where="attention")
        if position not in valid_positions:
            hint = ""
            if isinstance(position, str) and position in positions.available():
                hint = (
                    f" ({position!r} is added to the token embeddings, not inside "
                    f"attention: use kerapos.positions.get({position!r}, ...) there.)"
                )
            raise ValueError(
                f"Unknown attention position {position!r}; valid names are: "
                f"{', '.join(valid_positions)}.{hint}"
            )
        if position_config is not None and not isinstance(position_config, dict):
            raise ValueError(
                f"`position_config` must be a dict or None, got {position_config!r}."
            )
        num_heads = checks.integer(num_heads, "num_heads", minimum=1)
        key_dim = checks.integer(key_dim, "key_dim", minimum=1)
        logn_train_length = checks.integer(
            logn_train_length, "logn_train_length", minimum=2, allow_none=True
        )
        context_extension = extension.validate(context_extension)
        if context_extension is not None and position not in ("rotary", "xpos"):
            raise ValueError(
                f"context_extension {context_extension['method']!r} changes rotary "
                f"positions, so it needs position='rotary' or 'xpos'; got {position!r}."
            )
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.position = position
        self.position_config = dict(position_config or {})
        self.logn_train_length = logn_train_length
        self.context_extension = context_extension
        self._position_layer = self._make_position_layer()

    def _make_position_layer(self):
        """The scheme's layer (None for "none"), with this layer's heads and dtype."""
        scheme = positions.scheme(self.position)
        if scheme.layer is None:
            return positions.get(self.position, **self.position_config)  # None; refuses a config
        layer_config = dict(self.position_config)
        accepted, _ = scheme.accepted_config()
        if "num_heads" in accepted:
            heads = layer_config.setdefault("num_heads", self._num_heads)
            if heads != self._num_heads:
                raise ValueError(
                    f"position_config has num_heads={heads} but the attention "
                    f"has num_heads={self._num_heads}; leave num_heads out of "
                    f"position_config."
                )
        layer_config.setdefault("dtype", self.dtype_policy)
        return positions.get(self.position, **layer_config)

    @property
    def _adds_bias(self):
        """Bias schemes (ALiBi, T5, FIRE, KERPLE) add `bias(query_length,
        key_length)` to the logits; the others (RoPE, xPos) rotate the
        queries and keys."""
        return isinstance(self._position_layer, AttentionBias)

    @property
    def _rotates(self):
        return self._position_layer is not None and not self._adds_bias

    @property
    def caches_rotated_keys(self):
        """Whether `call_with_cache` stores keys already rotated.

        True for rotary / xPos whose rotation of a position never changes:
        a key is rotated once, when it enters the cache. False for the
        length-dependent rope types ("dynamic", "longrope", whose frequencies
        follow the context length) and for context-extension methods (whose
        key positions depend on the query): their cache holds unrotated
        keys, and every step rotates all of them again (an extra
        `[batch, S, heads, head_dim]` rotation per layer and step). Schemes
        that do not rotate store keys as projected.
        """
        return (
            self._rotates
            and self.context_extension is None
            and not self._position_layer.length_dependent
        )

    def call_with_cache(self, query, cache, cache_index, rotate_cached_keys=None):
        """Self-attention of new tokens against a fixed-size key/value cache.

        The new tokens sit at positions `cache_index .. cache_index + T - 1`
        and see every cached token before them and each other causally; slots
        from `cache_index + T` on are masked (the buffer has a fixed size, so
        a decoding loop compiles once). Every scheme and inference-time
        variant gives the logits of the uncached causal call on the
        `cache_index + T` tokens: rotary keys are rotated by their own
        positions (see `caches_rotated_keys`), biases come from
        `bias_at(query positions, key positions)`, log-n scaling and the
        length-dependent rope types read the number of tokens held.

        Args:
            query: `[batch, T, features]`, the new tokens.
            cache: `(keys [batch, S, num_heads, key_dim], values [batch, S,
                num_heads, value_dim])` of slots `0 .. S - 1`. Two tensors,
                not one stacked buffer: each step writes its slots in place
                (a stack would copy the whole cache per layer and token).
            cache_index: int or scalar int tensor, the slots already filled.
            rotate_cached_keys: None (default: `caches_rotated_keys`) or
                bool. False stores unrotated keys and rotates them by their
                slot at every step: what a cache whose slots change position
                (attention sinks) needs.

        Returns:
            `(outputs [batch, T, output features], updated cache)`.
        """
        if rotate_cached_keys is None:
            rotate_cached_keys = self.caches_rotated_keys
        elif rotate_cached_keys and not self.caches_rotated_keys:
            raise ValueError(
                "rotate_cached_keys=True needs a rotation that stays valid as the "
                "context grows (see caches_rotated_keys)."
            )
        query_tokens = self._query_dense(query)  # [B, T, N, H]
        new_keys = self._key_dense(query)  # [B, T, N, H]
        new_values = self._value_dense(query)  # [B, T, N, H]
        cache_index = ops.cast(cache_index, "int32")
        query_positions = ops.arange(ops.shape(query)[1], dtype="float32") + ops.cast(
            cache_index, "float32"
        )  # [T]
        keys, values = cache
        key_positions = ops.arange(ops.shape(keys)[1], dtype="float32")  # [S]
        held = ops.cast(cache_index + ops.shape(query)[1], "float32")  # tokens in the cache
        if self._rotates and self.context_extension is None:
            query_tokens = self._position_layer(
                query_tokens, positions=query_positions, is_key=False, sequence_length=held
            )
            if rotate_cached_keys:
                new_keys = self._position_layer(new_keys, positions=query_positions, is_key=True)
        start = [0, cache_index, 0, 0]
        keys = ops.slice_update(keys, start, ops.cast(new_keys, keys.dtype))  # [B, S, N, H]
        values = ops.slice_update(values, start, ops.cast(new_values, values.dtype))
        cache = (keys, values)
        keys = ops.cast(keys, query_tokens.dtype)
        values = ops.cast(values, query_tokens.dtype)
        if self._rotates and self.context_extension is None and not rotate_cached_keys:
            keys = self._position_layer(
                keys, positions=key_positions, is_key=True, sequence_length=held
            )
        # Causal, and free slots (positions >= held) are after every query.
        mask = (key_positions[None, :] <= query_positions[:, None])[None]  # [1, T, S]
        if self.logn_train_length is not None:
            query_tokens = query_tokens * ops.cast(self._logn_factor(held), query_tokens.dtype)
        if self.context_extension is not None:
            scores = self._extended_scores(query_tokens, keys, query_positions, key_positions)
            outputs, _ = self._attend(scores, values, mask, training=False)
        elif self._adds_bias:
            bias = self._position_layer.bias_at(query_positions, key_positions)  # [1, N, T, S]
            outputs, _ = self._biased_attention(
                query_tokens, keys, values, bias, mask, False, False
            )
        else:
            outputs, _ = super()._compute_attention(
                query_tokens, keys, values, attention_mask=mask, training=False
            )
        return self._output_dense(outputs), cache  # [B, T, F]

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        if self._position_layer is None:
            return
        if len(query_shape) != 3 or self._attention_axes != (1,):
            raise ValueError(
                f"position={self.position!r} needs inputs [batch, seq, features] "
                f"with attention over axis 1; got query shape {tuple(query_shape)} "
                f"and attention_axes={self._attention_axes}."
            )
        if self._adds_bias:
            self._position_layer.build((None, self._num_heads, None, None))
        else:
            self._position_layer.build((None, None, self._num_heads, self._key_dim))

    def _compute_causal_mask(self, query, value=None):
        """End-aligned causal mask `[1, T, S]`: query i sees keys <= S - T + i."""
        query_length = ops.shape(query)[1]
        key_length = query_length if value is None else ops.shape(value)[1]
        query_positions = ops.arange(query_length, dtype="int32") + (
            key_length - query_length
        )  # [T]
        key_positions = ops.arange(key_length, dtype="int32")  # [S]
        return ops.less_equal(key_positions[None, :], query_positions[:, None])[None]

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
    ):
        # `MultiHeadAttention.call` merges the causal mask (end-aligned, from
        # `_compute_causal_mask`) into `attention_mask` for subclasses that
        # override this method, so `use_causal_mask` never reaches it.
        # query: [B, T, N, H], key: [B, S, N, H], value: [B, S, N, Hv]
        if self._rotates and self.context_extension is None:
            query, key = self._rotate(query, key)
        if self.logn_train_length is not None:  # a scalar: commutes with the rotation
            query = query * ops.cast(self._logn_factor(ops.shape(key)[1]), query.dtype)
        if self.context_extension is not None:
            self._check_lengths(query, key)
            query_positions, key_positions = end_aligned_positions(
                ops.shape(query)[1], ops.shape(key)[1]
            )
            scores = self._extended_scores(query, key, query_positions, key_positions)
            return self._attend(scores, value, attention_mask, training)  # scores [B, N, T, S]
        if self._adds_bias:
            bias = self._position_layer.bias(ops.shape(query)[1], ops.shape(key)[1])
            return self._biased_attention(
                query, key, value, bias, attention_mask, training, return_attention_scores
            )
        return super()._compute_attention(
            query,
            key,
            value,
            attention_mask=attention_mask,
            training=training,
            return_attention_scores=return_attention_scores,
        )

    def _check_lengths(self, query, key):
        query_length, key_length = query.shape[1], key.shape[1]
        if query_length is not None and key_length is not None and query_length > key_length:
            raise ValueError(
                f"position={self.position!r} aligns queries to the end of the "
                f"keys, so it needs query length <= key length; got "
                f"{query_length} queries and {key_length} keys."
            )

    def _rotate(self, query, key):
        self._check_lengths(query, key)
        start_index = ops.shape(key)[1] - ops.shape(query)[1]
        query = self._position_layer(query, start_index=start_index, is_key=False)
        key = self._position_layer(key, is_key=True)
        return query, key

    def _extended_scores(self, query, key, query_positions, key_positions):
        """Scaled logits `[B, N, T, S]` of the context-extension method: one
        rotary pass per region of `context_extension.passes`, for unrotated
        queries at `query_positions` `[T]` and keys at `key_positions` `[S]`
        (float32)."""
        query = query * ops.cast(self._inverse_sqrt_key_dim, query.dtype)
        scale = extension.query_scale(self.context_extension, query_positions)
        if scale is not None:
            query = query * ops.cast(scale[None, :, None, None], query.dtype)
        scores = None
        for query_at, key_at, region in extension.passes(
            self.context_extension, query_positions, key_positions
        ):
            rotated_query = self._position_layer(query, positions=query_at, is_key=False)
            rotated_key = self._position_layer(key, positions=key_at, is_key=True)
            # [B, N, T, S]
            pass_scores = ops.einsum(self._dot_product_equation, rotated_key, rotated_query)
            scores = pass_scores if region is None else ops.where(
                region[None, None], pass_scores, scores
            )
        return scores

    def _attend(self, attention_scores, value, attention_mask, training):
        """Masked softmax of `[B, N, T, S]` logits, dropout, and the weighted
        values `[B, T, N, Hv]`; returns `(outputs, probabilities)`."""
        attention_scores = self._masked_softmax(attention_scores, attention_mask)
        if self._dropout > 0.0:
            final_attention_scores = self._dropout_layer(attention_scores, training=training)
        else:
            final_attention_scores = attention_scores
        attention_output = ops.einsum(self._combine_equation, final_attention_scores, value)
        return attention_output, attention_scores

    def _logn_factor(self, key_length):
        """max(1, log(S) / log(L)) in float32, for key length S."""
        key_length = ops.cast(key_length, "float32")
        ratio = ops.log(key_length) / math.log(self.logn_train_length)
        return ops.maximum(ratio, 1.0)

    def _biased_attention(
        self, query, key, value, bias, attention_mask, training, return_attention_scores
    ):
        """`MultiHeadAttention._compute_attention` with the scheme's float32
        `bias` `[1, N, T, S]` added to the logits (`attention_mask`: None or
        boolean, `[B, T, S]`)."""
        if self._flash_attention and return_attention_scores:
            raise ValueError(
                "Returning attention scores is not supported when flash "
                "attention is enabled. Please disable flash attention to "
                "access attention scores."
            )
        bias = ops.cast(bias, query.dtype)

        if not (self._dropout > 0.0 or return_attention_scores):
            if attention_mask is not None:
                attention_mask = ops.cast(attention_mask, "bool")
                while len(attention_mask.shape) < 4:
                    attention_mask = ops.expand_dims(attention_mask, -3)  # [B, 1, T, S]
            attention_output = ops.dot_product_attention(
                query=query,
                key=key,
                value=value,
                bias=bias,
                mask=attention_mask,
                scale=self._inverse_sqrt_key_dim,
                flash_attention=self._flash_attention,
            )
            return attention_output, None

        query = query * ops.cast(self._inverse_sqrt_key_dim, query.dtype)
        # [B, N, T, S]
        attention_scores = ops.einsum(self._dot_product_equation, key, query) + bias
        return self._attend(attention_scores, value, attention_mask, training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "position": self.position,
                "position_config": dict(self.position_config),
                "logn_train_length": self.logn_train_length,
                "context_extension": (
                    None if self.context_extension is None else dict(self.context_extension)
                ),
            }
        )
        return config
