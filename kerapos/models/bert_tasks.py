"""Task models on a pretrained BERT encoder, and the in-graph input packing they use.

* `extend_positions` lets an encoder take inputs longer than its checkpoint's
  position table: a keras-hub `BertBackbone` is rebuilt around a kerapos
  `LearnedPositionEmbedding` (initialised from the checkpoint's table, then
  grown by interpolation or copying); an encoder that already has a
  `LearnedPositionEmbedding` named `positions.INPUT_LAYER_NAME`
  (``"position_embedding"``) is grown in place.
* `build_sequence_classifier` / `build_token_classifier` put a softmax head on
  the encoder's pooled output (or first token) / on every token.
* `enable_lora` freezes the encoder except low-rank adapters (Hu et al. 2021,
  LoRA, arXiv:2106.09685) on the attention query and value projections.
* `pack_texts` / `pack_words` turn WordPiece ids into the encoder's inputs
  with TensorFlow ops only (ragged slicing, no keras-hub packer op), so the
  same code runs in `tf.data` for training and inside the exported SavedModel.

Every task model takes the encoder's inputs ``{"token_ids", "segment_ids",
"padding_mask"}`` (int32 `[batch, seq]`) and returns float32 probabilities.
"""

import keras
import keras_hub
import tensorflow as tf

from kerapos import positions
from kerapos.data.conll import IGNORE_LABEL
from kerapos.layers.learned_position_embedding import EXTEND_METHODS
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.utils import checks

POOLING = ("pooled", "first")
# Names of the attention projections that get LoRA adapters: keras-hub's
# `CachedMultiHeadAttention` ("query_dense", "value_dense") and Keras's
# `MultiHeadAttention`, which kerapos attention layers extend ("query", "value").
LORA_TARGET_NAMES = ("query_dense", "value_dense", "query", "value")
# label id of words that got no prediction (cut by truncation, or padding).
NO_LABEL = -1


def position_capacity(encoder):
    """Longest input the encoder accepts, or None when its positions have no table."""
    return getattr(encoder, "max_sequence_length", None)


def _encoder_inputs():
    return {
        name: keras.Input(shape=(None,), dtype="int32", name=name)
        for name in ("token_ids", "segment_ids", "padding_mask")
    }


def rebuild_with_learned_positions(backbone):
    """The backbone's encoder graph with a kerapos `LearnedPositionEmbedding`.

    keras-hub's `BertBackbone` is functional and its `PositionEmbedding`
    cannot grow, so the graph is rebuilt from the backbone's own layers
    (token, segment and position embeddings, embeddings layer norm and
    dropout, transformer layers, pooler: shared, not copied) with a
    `LearnedPositionEmbedding` named ``"position_embedding"`` in place of its
    position layer, holding a copy of the checkpoint's table. Before any
    `extend_to`, its outputs equal the backbone's exactly.

    Args:
        backbone: a built `keras_hub.models.BertBackbone`.

    Returns:
        A `keras.Model` with the backbone's inputs ``{"token_ids",
        "segment_ids", "padding_mask"}`` and outputs ``{"sequence_output",
        "pooled_output"}``, and attributes ``hidden_dim`` and
        ``max_sequence_length`` (kept equal to the table's length by
        `extend_positions`).
    """
    table = backbone.position_embedding.position_embeddings  # [max_length, hidden]
    position_layer = LearnedPositionEmbedding(
        max_length=backbone.max_sequence_length,
        dtype=backbone.position_embedding.dtype_policy,
        name=positions.INPUT_LAYER_NAME,
    )
    inputs = _encoder_inputs()
    tokens = backbone.token_embedding(inputs["token_ids"])  # [batch, seq, hidden]
    # Same sum order as the backbone's Add((tokens, positions, segments)).
    x = position_layer(tokens)  # [batch, seq, hidden]
    position_layer.embeddings.assign(table)
    x = x + backbone.segment_embedding(inputs["segment_ids"])
    x = backbone.embeddings_layer_norm(x)
    x = backbone.embeddings_dropout(x)
    for transformer_layer in backbone.transformer_layers:
        x = transformer_layer(x, padding_mask=inputs["padding_mask"])  # [batch, seq, hidden]
    pooled_output = backbone.pooled_dense(x[:, backbone.cls_token_index, :])  # [batch, hidden]
    encoder = keras.Model(
        inputs,
        {"sequence_output": x, "pooled_output": pooled_output},
        name=f"{backbone.name}_learned_positions",
    )
    encoder.hidden_dim = backbone.hidden_dim
    encoder.max_sequence_length = backbone.max_sequence_length
    return encoder


def extend_positions(encoder, new_length, method="interpolate"):
    """An encoder that accepts `new_length` tokens, and what was done to get it.

    Args:
        encoder: a `keras_hub.models.BertBackbone`, or a keras.Model with the
            same call contract whose learned positions (if any) are a
            `LearnedPositionEmbedding` named `positions.INPUT_LAYER_NAME`.
        new_length: positions wanted; larger than the checkpoint's table.
        method: `"interpolate"` or `"copy"` (see
            `LearnedPositionEmbedding.extend_to`).

    Returns:
        `(encoder, note)`: the encoder to fine-tune (a rebuilt one for a
        `BertBackbone`, the same object otherwise) and a sentence for
        results.json saying what was extended, or why nothing was.

    Raises:
        ValueError: `new_length` is not larger than the table, or `method`
            is unknown.
    """
    method = checks.choice(method, "method", EXTEND_METHODS)
    new_length = checks.integer(new_length, "new_length", minimum=1)
    if isinstance(encoder, keras_hub.models.BertBackbone):
        encoder = rebuild_with_learned_positions(encoder)
    try:
        position_layer = encoder.get_layer(positions.INPUT_LAYER_NAME)
    except ValueError:
        position_layer = None
    if not isinstance(position_layer, LearnedPositionEmbedding):
        return encoder, (
            "not extended: the encoder has no learned position table "
            "(its positions work at any length)"
        )
    old_length = position_layer.max_length
    if new_length <= old_length:
        raise ValueError(
            f"`new_length` ({new_length}) must be larger than the "
            f"checkpoint's {old_length} positions"
        )
    position_layer.extend_to(new_length, method=method)
    encoder.max_sequence_length = int(new_length)
    return encoder, f"extended from {old_length} to {new_length} positions by {method}"


def build_sequence_classifier(encoder, num_classes, pooling="pooled", dropout=0.1):
    """Softmax classifier over the encoder's summary of the whole sequence.

    Args:
        encoder: BERT-style encoder (dict in, ``{"sequence_output",
            "pooled_output"}`` out).
        num_classes: number of classes.
        pooling: `"pooled"` (the encoder's pooler: tanh dense on [CLS]) or
            `"first"` (the [CLS] token's output itself).
        dropout: dropout rate before the output layer.

    Returns:
        keras.Model: encoder inputs -> float32 probabilities `[batch, num_classes]`.
    """
    pooling = checks.choice(pooling, "pooling", POOLING)
    inputs = _encoder_inputs()
    outputs = encoder(inputs)
    if pooling == "pooled":
        summary = outputs["pooled_output"]  # [batch, hidden]
    else:
        summary = outputs["sequence_output"][:, 0, :]  # [batch, hidden]
    summary = keras.layers.Dropout(dropout, name="head_dropout")(summary)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="classifier_head"
    )(summary)  # [batch, num_classes]
    return keras.Model(inputs, probabilities, name="bert_sequence_classifier")


def build_token_classifier(encoder, num_labels, dropout=0.1):
    """Softmax over labels at every token (read at each word's first piece).

    Returns:
        keras.Model: encoder inputs -> float32 probabilities
        `[batch, seq, num_labels]`.
    """
    inputs = _encoder_inputs()
    sequence_output = encoder(inputs)["sequence_output"]  # [batch, seq, hidden]
    sequence_output = keras.layers.Dropout(dropout, name="head_dropout")(sequence_output)
    probabilities = keras.layers.Dense(
        num_labels, activation="softmax", dtype="float32", name="token_classifier_head"
    )(sequence_output)  # [batch, seq, num_labels]
    return keras.Model(inputs, probabilities, name="bert_token_classifier")


def enable_lora(encoder, rank):
    """Freezes the encoder except LoRA adapters on attention query/value.

    Every layer inside `encoder` becomes non-trainable; each query and value
    projection (`LORA_TARGET_NAMES`) gets Keras's `enable_lora(rank)`: its
    kernel and bias stay frozen and a trainable low-rank update of the
    kernel is added. Heads built
    on the encoder stay trainable.

    Args:
        encoder: a built encoder.
        rank: LoRA rank, >= 1.

    Returns:
        The number of projections that got adapters.

    Raises:
        ValueError: no layer of the encoder can take LoRA.
    """
    rank = checks.integer(rank, "rank", minimum=1)
    sublayers = encoder._flatten_layers(include_self=False)
    for layer in sublayers:
        layer.trainable = False
    adapted = 0
    for layer in sublayers:
        if layer.name in LORA_TARGET_NAMES and hasattr(layer, "enable_lora"):
            layer.trainable = True
            layer.enable_lora(rank)  # freezes the kernel
            if getattr(layer, "bias", None) is not None:
                layer.bias.trainable = False  # only the adapters train
            adapted += 1
    if not adapted:
        raise ValueError(
            f"`rank`: the encoder {encoder.name} has no attention projection "
            f"named {' or '.join(LORA_TARGET_NAMES)} that supports LoRA; "
            "fine-tune it fully instead"
        )
    return adapted


def _pack(pieces, max_length, cls_id, sep_id):
    """[CLS] pieces [SEP], pieces cut to `max_length - 2` (None: not cut).

    Args:
        pieces: ragged int `[batch, None]`.

    Returns:
        Encoder inputs, int32 `[batch, max(2, longest)]`, padded with 0.
    """
    pieces = tf.cast(pieces, tf.int32)
    if max_length is not None:
        pieces = pieces[:, : max_length - 2]
    batch_size = pieces.nrows()
    cls = tf.fill([batch_size, 1], cls_id)
    sep = tf.fill([batch_size, 1], sep_id)
    token_ids = tf.concat([cls, pieces, sep], axis=1)  # ragged [batch, None]
    padding_mask = tf.ones_like(token_ids).to_tensor()  # [batch, seq]
    token_ids = token_ids.to_tensor()  # [batch, seq]
    # A 0-batch has no row to give it the 2 columns every other batch has.
    missing = [[0, 0], [0, tf.maximum(0, 2 - tf.shape(token_ids)[1])]]
    token_ids, padding_mask = tf.pad(token_ids, missing), tf.pad(padding_mask, missing)
    return {
        "token_ids": token_ids,  # [batch, seq]
        "segment_ids": tf.zeros_like(token_ids),  # [batch, seq]
        "padding_mask": padding_mask,  # [batch, seq]
    }


def pack_texts(pieces, max_length, cls_id, sep_id):
    """Encoder inputs of single-segment texts.

    Args:
        pieces: ragged WordPiece ids `[batch, None]` (a `BertTokenizer`'s output).
        max_length: tokens per text including [CLS] and [SEP] (>= 2), or
            None to keep every piece.
        cls_id, sep_id: the tokenizer's [CLS] and [SEP] ids (padding is 0).

    Returns:
        ``{"token_ids", "segment_ids", "padding_mask"}``, int32 `[batch, seq]`
        with `seq` the longest packed text of the batch (at least 2).
    """
    return _pack(pieces, max_length, cls_id, sep_id)


def pack_words(word_pieces, max_length, cls_id, sep_id, unknown_id, word_label_ids=None):
    """Encoder inputs of pre-split words, and where each word's first piece is.

    The sequence is ``[CLS] pieces(word_0) pieces(word_1) ... [SEP]``, as
    `kerapos.data.conll.align_labels_to_wordpieces` builds it: a word with no
    pieces becomes [UNK]; pieces past ``max_length - 2`` are cut, and a word
    whose first piece is cut has no position.

    Args:
        word_pieces: ragged WordPiece ids `[batch, words, pieces]` (a
            `BertTokenizer` applied to ragged words `[batch, words]`).
        max_length: tokens per sequence including [CLS] and [SEP] (>= 2).
        cls_id, sep_id, unknown_id: the tokenizer's special ids.
        word_label_ids: optional ragged int `[batch, words]`: one label per word.

    Returns:
        `(inputs, first_piece, token_labels)`: the encoder inputs (int32
        `[batch, seq]`); `first_piece`, ragged int32 `[batch, words]`, the
        position in `seq` of each word's first piece, or `NO_LABEL` (-1) for a
        word cut by truncation; `token_labels` (None without
        `word_label_ids`), int32 `[batch, seq]`: the word's label at its first
        piece, `IGNORE_LABEL` (-100) everywhere else.
    """
    word_pieces = tf.cast(word_pieces, tf.int32)
    # Append [UNK] to rows without pieces, a sentinel (dropped) to the others.
    empty = tf.equal(word_pieces.row_lengths(axis=2), 0)  # ragged [batch, words]
    filler = tf.ragged.map_flat_values(tf.where, empty, unknown_id, -1)
    filler = tf.expand_dims(filler, axis=2)  # ragged [batch, words, 1]
    word_pieces = tf.concat([word_pieces, filler], axis=2)
    word_pieces = tf.ragged.boolean_mask(word_pieces, word_pieces >= 0)
    pieces_per_word = word_pieces.row_lengths(axis=2)  # ragged [batch, words]
    # Position of each word's first piece after [CLS]: 1 + pieces before it.
    first_piece = 1 + tf.cast(tf.math.cumsum(pieces_per_word, axis=1, exclusive=True), tf.int32)
    first_piece = tf.ragged.map_flat_values(
        lambda position: tf.where(position <= max_length - 2, position, NO_LABEL), first_piece
    )
    inputs = _pack(word_pieces.merge_dims(1, 2), max_length, cls_id, sep_id)
    if word_label_ids is None:
        return inputs, first_piece, None
    # Scatter each kept word's label to its first piece; IGNORE_LABEL elsewhere.
    kept = first_piece >= 0  # ragged [batch, words]
    rows = tf.cast(first_piece.value_rowids(), tf.int32)  # [total_words]
    indices = tf.stack([rows, first_piece.flat_values], axis=1)  # [total_words, 2]
    indices = tf.boolean_mask(indices, kept.flat_values)
    updates = tf.boolean_mask(tf.cast(word_label_ids.flat_values, tf.int32), kept.flat_values)
    token_labels = tf.tensor_scatter_nd_update(
        tf.fill(tf.shape(inputs["token_ids"]), IGNORE_LABEL), indices, updates
    )  # [batch, seq]
    return inputs, first_piece, token_labels


def word_predictions(token_probabilities, first_piece):
    """Each word's predicted label id, read at its first piece.

    Args:
        token_probabilities: `[batch, seq, num_labels]`.
        first_piece: ragged `[batch, words]` from `pack_words`.

    Returns:
        Ragged int64 `[batch, words]`: the argmax label id, or `NO_LABEL`
        (-1) for words that were cut by truncation.
    """
    token_label_ids = tf.argmax(token_probabilities, axis=-1)  # [batch, seq]
    positions = first_piece.flat_values  # [total_words]
    rows = tf.cast(first_piece.value_rowids(), tf.int32)  # [total_words]
    label_ids = tf.gather_nd(
        token_label_ids, tf.stack([rows, tf.maximum(positions, 0)], axis=1)
    )  # [total_words]
    label_ids = tf.where(positions >= 0, label_ids, tf.constant(NO_LABEL, tf.int64))
    return first_piece.with_flat_values(label_ids)


def predict_word_label_ids(model, tokenizer, words, max_length):
    """Label ids of pre-split words by a token classifier.

    Args:
        model: a token classifier from `build_token_classifier`.
        tokenizer: its `keras_hub.models.BertTokenizer`; call this inside a
            `tf.function` or `tf.data` map, where the tokenizer runs on
            TensorFlow ops.
        words: ragged string `[batch, words]`.
        max_length: tokens per sequence including [CLS] and [SEP].

    Returns:
        Ragged int64 `[batch, words]`: each word's label id, or `NO_LABEL`
        (-1) for words cut by truncation.
    """
    inputs, first_piece, _ = pack_words(
        tokenizer(words),
        max_length,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.token_to_id(getattr(tokenizer, "oov_token", "[UNK]")),
    )
    token_probabilities = model(inputs, training=False)  # [batch, seq, num_labels]
    return word_predictions(token_probabilities, first_piece)
