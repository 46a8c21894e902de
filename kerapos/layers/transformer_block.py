"""A pre-norm Transformer block (encoder or decoder) taking any position scheme."""

import keras
import numpy as np

from kerapos.layers import registry as positions
from kerapos.layers.positional_attention import PositionalMultiHeadAttention
from kerapos.utils import checks


@keras.saving.register_keras_serializable(package="kerapos")
class TransformerBlock(keras.layers.Layer):
    """A pre-norm Transformer block whose attention takes any position scheme.

    `x + Dropout(Attention(LayerNorm(x)))`, then
    `x + Dropout(FeedForward(LayerNorm(x)))`, with a GELU feed-forward
    network. With `causal=True` it is a decoder block (each position attends
    to itself and the past, queries aligned to the end of the keys as in
    `PositionalMultiHeadAttention`), otherwise an encoder block.

    Attention schemes of `kerapos.positions` ("rotary", "xpos", "alibi",
    "t5") act inside the attention of this block; for any other scheme the
    block runs plain attention (input schemes are added to the embeddings
    before the first block, by the model). The padding mask arrives as the
    Keras mask of `inputs` (or `mask=`), masks the attention's keys, and is
    passed on to the outputs.

    Args:
        num_heads: int. Number of attention heads.
        hidden_dim: int. Width of the residual stream; a multiple of
            `num_heads` (each head has `hidden_dim // num_heads` features).
        intermediate_dim: int. Width of the feed-forward layer.
        dropout: float in `[0, 1)`. Dropout on the attention probabilities
            and on both residual branches.
        position: str. A `kerapos.positions` name (see above).
        position_config: dict or None. Arguments of the attention's position
            layer (only read for attention schemes), e.g.
            `{"scaling": {"rope_type": "linear", "factor": 2.0}}`.
        causal: bool. Decoder (causal) or encoder (bidirectional) block.
        logn_train_length: None or int >= 2. Enables log-n attention scaling
            for keys longer than this (see `PositionalMultiHeadAttention`).
        context_extension: None or dict. An inference-time context-extension
            method of rotary / xPos attention ("rerope", "self_extend",
            "dual_chunk"; see `kerapos.layers.context_extension`).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `dtype` etc.

    Call arguments:
        inputs: float tensor `[batch, seq, hidden_dim]`.
        mask: optional boolean padding mask `[batch, seq]`, True = a real
            token (the Keras mask of `inputs` when not given).
        training: bool. Dropout on or off.

    Returns:
        `[batch, seq, hidden_dim]`, in the compute dtype.

    Example:
    ```python
    block = TransformerBlock(
        num_heads=4, hidden_dim=64, intermediate_dim=128, position="rotary")
    outputs = block(np.ones((2, 10, 64), "float32"))  # [2, 10, 64]
    ```

    References:
        Vaswani et al. 2017, Attention Is All You Need (arXiv:1706.03762);
        Xiong et al. 2020, On Layer Normalization in the Transformer
        Architecture (arXiv:2002.04745), for the pre-norm placement.
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.0,
        position="none",
        position_config=None,
        causal=False,
        logn_train_length=None,
        context_extension=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_heads = checks.integer(num_heads, "num_heads", minimum=1)
        hidden_dim = checks.integer(hidden_dim, "hidden_dim", minimum=1)
        intermediate_dim = checks.integer(intermediate_dim, "intermediate_dim", minimum=1)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})."
            )
        dropout = checks.number(dropout, "dropout", minimum=0, below=1)
        in_attention = positions.where(position) == "attention"  # ValueError for unknown names
        if not isinstance(causal, (bool, np.bool_)):
            raise ValueError(f"`causal` must be True or False, got causal={causal!r}.")
        logn_train_length = checks.integer(
            logn_train_length, "logn_train_length", minimum=2, allow_none=True
        )
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.position = position
        self.position_config = dict(position_config or {})
        self.causal = bool(causal)
        self.logn_train_length = logn_train_length
        self.supports_masking = True

        # === Layers ===
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=self.dtype_policy, name="attention_norm"
        )
        self.attention = PositionalMultiHeadAttention(
            num_heads=num_heads,
            key_dim=hidden_dim // num_heads,
            position=position if in_attention else "none",
            position_config=self.position_config if in_attention else None,
            logn_train_length=logn_train_length,
            context_extension=context_extension,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.feedforward_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=self.dtype_policy, name="feedforward_norm"
        )
        self.feedforward_in = keras.layers.Dense(
            intermediate_dim, activation="gelu", dtype=self.dtype_policy, name="feedforward_in"
        )
        self.feedforward_out = keras.layers.Dense(
            hidden_dim, dtype=self.dtype_policy, name="feedforward_out"
        )
        self.residual_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, inputs_shape):
        self.attention_norm.build(inputs_shape)
        self.attention.build(inputs_shape, inputs_shape)
        self.feedforward_norm.build(inputs_shape)
        self.feedforward_in.build(inputs_shape)
        self.feedforward_out.build((*inputs_shape[:-1], self.intermediate_dim))
        self.built = True

    def call(self, inputs, mask=None, training=None):
        normed = self.attention_norm(inputs)  # [batch, seq, hidden]
        attended = self.attention(
            normed,
            normed,
            value_mask=mask,
            use_causal_mask=self.causal,
            training=training,
        )
        x = inputs + self.residual_dropout(attended, training=training)
        hidden = self.feedforward_in(self.feedforward_norm(x))  # [batch, seq, intermediate]
        return x + self.residual_dropout(self.feedforward_out(hidden), training=training)

    def call_with_cache(self, inputs, cache, cache_index, rotate_cached_keys=None):
        """The causal block on new tokens against a key/value cache (inference).

        Args:
            inputs: `[batch, T, hidden_dim]`, the new tokens, at positions
                `cache_index .. cache_index + T - 1`.
            cache: this block's `(keys, values)`, each `[batch, S, num_heads,
                hidden_dim // num_heads]` (`PositionalMultiHeadAttention.call_with_cache`).
            cache_index: int or scalar int tensor, the slots already filled.
            rotate_cached_keys: passed to the attention's `call_with_cache`.

        Returns:
            `(outputs [batch, T, hidden_dim], updated cache)`.
        """
        if not self.causal:
            raise ValueError(
                "call_with_cache decodes left to right, so it needs a causal block "
                "(causal=True); an encoder block attends to later tokens too."
            )
        normed = self.attention_norm(inputs)  # [batch, T, hidden]
        attended, cache = self.attention.call_with_cache(
            normed, cache, cache_index, rotate_cached_keys=rotate_cached_keys
        )
        x = inputs + attended
        hidden = self.feedforward_in(self.feedforward_norm(x))  # [batch, T, intermediate]
        return x + self.feedforward_out(hidden), cache

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "position": self.position,
                "position_config": dict(self.position_config),
                "causal": self.causal,
                "logn_train_length": self.logn_train_length,
                "context_extension": self.attention.get_config()["context_extension"],
            }
        )
        return config
