"""A BERT-style encoder whose positions come from `kerapos.positions`, and its
masked-language-model head.

`BertEncoderBackbone` has the call contract of `keras_hub.models.BertBackbone`
(inputs ``token_ids``, ``segment_ids``, ``padding_mask``; outputs
``sequence_output`` and ``pooled_output``), so fine-tuning code written for
keras-hub BERT runs on it unchanged, but it is a pre-norm Transformer (Xiong
et al. 2020, arXiv:2002.04745) built from `kerapos.layers.TransformerBlock`
and any position scheme: input schemes ("sinusoidal",
"learned") are added to the embeddings, attention schemes ("rotary", "xpos",
"alibi" in its symmetric form, "t5") act in every block, "none" has no
positions at all.

`build_masked_lm` puts BERT's MLM head on it (Devlin et al. 2018,
arXiv:1810.04805): dense + GELU + LayerNorm, then the output projection tied
to the token embedding, read only at the masked positions.
"""

import math

import keras
import keras_hub
from keras import ops

from kerapos import positions
from kerapos.models.embedding import input_position_layer
from kerapos.models.embedding import position_arguments
from kerapos.models.embedding import transformer_blocks
from kerapos.utils import checks

NUM_SEGMENTS = 2


@keras.saving.register_keras_serializable(package="kerapos")
class BertEncoderBackbone(keras.Model):
    """A BERT encoder with any kerapos position scheme.

    token embedding * sqrt(hidden_dim) + segment embedding [+ input position
    scheme] -> dropout -> `num_layers` x `TransformerBlock(causal=False)`
    (padding keys masked out) -> final LayerNorm = ``sequence_output``;
    ``pooled_output`` = tanh(Dense(``sequence_output`` at [CLS])), as BERT's
    pooler.

    Args:
        vocabulary_size: int, token ids lie in `[0, vocabulary_size)`.
        position: a `kerapos.positions` name.
        position_config: dict, extra arguments of the position layer
            ("alibi" defaults to `{"causal": False}`, the symmetric bias).
        max_sequence_length: int, rows of the "learned" table (required for
            it, ignored by other schemes, which have no length limit).
        num_layers, hidden_dim, num_heads, intermediate_dim: sizes.
        dropout: float, on embeddings, attention and residuals.
        dtype: None or a dtype policy (name or `keras.DTypePolicy`) for every
            layer, as keras-hub backbones take it. None: the global policy,
            with the final LayerNorm and the pooler in float32.

    Attributes:
        hidden_dim: int.
        max_sequence_length: the "learned" table's current length (it follows
            `extend_to`), None for schemes without a table.
        token_embedding: the `keras_hub.layers.ReversibleEmbedding` (tied to
            the MLM head).

    Call arguments:
        inputs: dict of int `[batch, seq]` tensors ``token_ids``,
            ``segment_ids`` (0 or 1) and ``padding_mask`` (1 = real token).

    Returns:
        dict: ``sequence_output`` `[batch, seq, hidden_dim]` and
        ``pooled_output`` `[batch, hidden_dim]`.

    Example:
    >>> backbone = BertEncoderBackbone(100, "rotary", num_layers=1,
    ...                                hidden_dim=16, num_heads=2,
    ...                                intermediate_dim=32)
    >>> ids = np.array([[2, 7, 8, 3, 0]])
    >>> backbone({"token_ids": ids, "segment_ids": 0 * ids,
    ...           "padding_mask": ids != 0})["sequence_output"].shape
    TensorShape([1, 5, 16])
    """

    def __init__(
        self,
        vocabulary_size,
        position, position_config=None, max_sequence_length=None,  # the scheme, from the registry
        num_layers=2, hidden_dim=128, num_heads=4, intermediate_dim=512,  # the block stack
        dropout=0.1, dtype=None,
        **kwargs,
    ):
        vocabulary_size = checks.integer(vocabulary_size, "vocabulary_size", minimum=1)
        num_layers = checks.integer(num_layers, "num_layers", minimum=1)
        position_config = position_arguments(
            position,
            position_config,
            causal=False,
            max_length=max_sequence_length,
            length_name="max_sequence_length",
        )

        # === Layers ===
        token_embedding = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=True, dtype=dtype, name="token_embedding"
        )
        segment_embedding = keras.layers.Embedding(
            NUM_SEGMENTS, hidden_dim, dtype=dtype, name="segment_embedding"
        )
        position_layer = input_position_layer(position, {**position_config, "dtype": dtype})
        sizes = dict(num_heads=num_heads, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim)
        blocks = list(transformer_blocks(num_layers, position, position_config, dropout=dropout,
                                         causal=False, dtype=dtype, **sizes))

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = token_embedding(token_ids)  # [batch, seq, hidden]
        x = keras.layers.Rescaling(math.sqrt(hidden_dim), dtype=dtype, name="embedding_scale")(x)
        x = keras.layers.Add(dtype=dtype, name="embeddings_add")([x, segment_embedding(segment_ids)])
        if position_layer is not None:
            x = position_layer(x)
        x = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")(x)
        key_mask = ops.cast(padding_mask, "bool")  # [batch, seq]
        for block in blocks:
            x = block(x, mask=key_mask)
        # The blocks attach `key_mask` to their outputs as a Keras mask;
        # BertBackbone's outputs carry none (callers pass padding_mask
        # themselves) and heads such as MaskedLMHead warn on one. A plain op
        # drops it.
        x = ops.multiply(x, ops.cast(1, x.dtype))
        output_dtype = "float32" if dtype is None else dtype
        sequence_output = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=output_dtype, name="final_norm"
        )(x)  # [batch, seq, hidden]
        pooled_output = keras.layers.Dense(
            hidden_dim, activation="tanh", dtype=output_dtype, name="pooled_dense"
        )(sequence_output[:, 0, :])  # [batch, hidden]
        super().__init__(
            inputs={
                "token_ids": token_ids,
                "segment_ids": segment_ids,
                "padding_mask": padding_mask,
            },
            outputs={"sequence_output": sequence_output, "pooled_output": pooled_output},
            **kwargs,
        )
        # As keras_hub.models.Backbone: the model's own policy is the one given.
        self._backbone_dtype = None if dtype is None else keras.dtype_policies.get(dtype)
        if self._backbone_dtype is not None:
            self.dtype_policy = self._backbone_dtype

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.position = position
        self.position_config = position_config
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.token_embedding = token_embedding
        self._position_layer = position_layer

    @property
    def max_sequence_length(self):
        return positions.scheme(self.position).max_length(self._position_layer)

    @max_sequence_length.setter
    def max_sequence_length(self, value):
        # Read from the table, so it can only be "set" to what it already is
        # (code written for keras-hub backbones assigns it after extend_to).
        if value != self.max_sequence_length:
            raise ValueError(
                f"max_sequence_length follows the position table "
                f"({self.max_sequence_length}); grow a learned table with "
                f"get_layer({positions.INPUT_LAYER_NAME!r}).extend_to({value}) instead of "
                "setting it"
            )

    def get_config(self):
        position_config = dict(self.position_config)
        scheme = positions.scheme(self.position)
        if scheme.bounded:
            # The table may have been extended since construction.
            position_config[scheme.length_argument] = self.max_sequence_length
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary_size": self.vocabulary_size,
            "position": self.position,
            "position_config": position_config,
            "max_sequence_length": self.max_sequence_length,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "dtype": (
                None
                if self._backbone_dtype is None
                else keras.dtype_policies.serialize(self._backbone_dtype)
            ),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def build_masked_lm(backbone):
    """The masked-language model of `backbone`: logits at the masked positions.

    Args:
        backbone: a `BertEncoderBackbone`.

    Returns:
        A `keras.Model` from the backbone's inputs plus ``mask_positions``
        (int `[batch, num_predictions]`, indices into the sequence) to float32
        logits `[batch, num_predictions, vocabulary_size]`. The output
        projection is the token embedding transposed (Press and Wolf 2017,
        arXiv:1608.05859) plus a bias.
    """
    inputs = {
        name: keras.Input(shape=(None,), dtype="int32", name=name)
        for name in ("token_ids", "segment_ids", "padding_mask", "mask_positions")
    }
    sequence_output = backbone(
        {name: inputs[name] for name in ("token_ids", "segment_ids", "padding_mask")}
    )["sequence_output"]  # [batch, seq, hidden]
    logits = keras_hub.layers.MaskedLMHead(
        token_embedding=backbone.token_embedding,
        intermediate_activation="gelu",
        name="mlm_head",
    )(sequence_output, mask_positions=inputs["mask_positions"])  # [batch, predictions, vocab]
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(inputs, logits, name=f"masked_lm_{backbone.position}")
