"""Pre-norm Transformer blocks (encoder or decoder) and the Transformer classifier."""

import kerapos  # noqa: F401
import keras
from keras import ops

from kerapos import positions
from kerapos.layers.positional_attention import PositionalMultiHeadAttention
from kerapos.models.embedding import embed_tokens


@keras.saving.register_keras_serializable(package="kerapos")
class TransformerBlock(keras.layers.Layer):
    """A pre-norm Transformer block whose attention takes any position scheme.

    `x + Dropout(Attention(LayerNorm(x)))`, then
    `x + Dropout(FeedForward(LayerNorm(x)))` (Xiong et al. 2020,
    arXiv:2002.04745, "On Layer Normalization in the Transformer
    Architecture"). With `causal=True` it is a decoder block (each position
    attends to itself and the past), otherwise an encoder block.

    Args:
        num_heads: int, attention heads.
        hidden_dim: int, width of the residual stream (`key_dim` is
            `hidden_dim // num_heads`).
        intermediate_dim: int, width of the feed-forward layer.
        dropout: float, dropout on attention probabilities and both residuals.
        position: a `kerapos.positions` name: attention schemes ("rotary",
            "xpos", "alibi", "t5") act here; any other name means plain
            attention (input schemes are added before the first block).
        position_config: dict, extra arguments of the position layer.
        causal: bool, decoder (causal) or encoder (bidirectional) block.
        logn_train_length: optional int, enables log-n attention scaling for
            keys longer than this (see `PositionalMultiHeadAttention`).

    Call arguments:
        inputs: float tensor `[batch, seq, hidden_dim]`.
        mask: optional bool padding mask `[batch, seq]` (propagated Keras mask).
        training: bool, dropout on or off.

    Example:
    >>> block = TransformerBlock(num_heads=4, hidden_dim=64,
    ...                          intermediate_dim=128, position="rotary")
    >>> block(keras.ops.ones((2, 10, 64))).shape
    (2, 10, 64)
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads "
                f"({num_heads})."
            )
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.position = position
        self.position_config = dict(position_config or {})
        self.causal = causal
        self.logn_train_length = logn_train_length
        self.supports_masking = True

        attention_position = (
            position if positions.where(position) == "attention" else "none"
        )
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=self.dtype_policy, name="attention_norm"
        )
        self.attention = PositionalMultiHeadAttention(
            num_heads=num_heads,
            key_dim=hidden_dim // num_heads,
            position=attention_position,
            position_config=self.position_config if attention_position != "none" else None,
            logn_train_length=logn_train_length,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.feedforward_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=self.dtype_policy, name="feedforward_norm"
        )
        self.feedforward_in = keras.layers.Dense(
            intermediate_dim, activation="gelu", dtype=self.dtype_policy,
            name="feedforward_in",
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
        # [batch, seq, hidden]
        normed = self.attention_norm(inputs)
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
                "position_config": self.position_config,
                "causal": self.causal,
                "logn_train_length": self.logn_train_length,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kerapos")
class MaskedPooling(keras.layers.Layer):
    """Pools `[batch, seq, dim]` to `[batch, dim]`: masked mean or first token.

    Args:
        mode: "mean" (average over unmasked positions; an all-padding row
            gives zeros, not NaN) or "first" (the first position).
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "first"):
            raise ValueError(f"pooling must be 'mean' or 'first', got {mode!r}.")
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if self.mode == "first" or mask is None:
            return inputs[:, 0] if self.mode == "first" else ops.mean(inputs, axis=1)
        weights = ops.cast(mask, inputs.dtype)[..., None]  # [batch, seq, 1]
        total = ops.sum(inputs * weights, axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), ops.cast(1, inputs.dtype))
        return total / count

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def build_transformer_classifier(
    vocab_size,
    num_classes,
    position="rotary",
    position_config=None,
    max_length=None,
    num_layers=2,
    hidden_dim=128,
    num_heads=4,
    intermediate_dim=256,
    dropout=0.1,
    pooling="mean",
    logn_train_length=None,
    word_dropout=0.0,
):
    """A Transformer encoder classifier taking any scheme from the registry.

    Input schemes (sinusoidal, learned) are added to the token embeddings;
    attention schemes (rotary, xpos, alibi, t5) act inside every block; ALiBi
    defaults to its symmetric (encoder) form here.

    Returns:
        A `keras.Model` from int token ids `[batch, seq]` (0 = padding) to
        class probabilities `[batch, num_classes]` (float32).
    """
    position_config = dict(position_config or {})
    if position == "alibi":
        position_config.setdefault("causal", False)
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = embed_tokens(
        token_ids, vocab_size, hidden_dim, position, position_config, max_length, word_dropout
    )
    x = keras.layers.Dropout(dropout)(x)
    for index in range(num_layers):
        x = TransformerBlock(
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            position=position,
            position_config=position_config,
            logn_train_length=logn_train_length,
            name=f"block_{index}",
        )(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    x = MaskedPooling(pooling, name="pooling")(x)
    x = keras.layers.Dropout(dropout)(x)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(token_ids, probabilities, name=f"transformer_{position}")
