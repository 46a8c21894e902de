"""The LSTM text classifier with a selectable input position encoding."""

import keras
from keras import ops

from kerapos import positions
from kerapos.models.embedding import embed_tokens
from kerapos.models.embedding import position_arguments
from kerapos.utils import checks


def build_lstm_classifier(
    vocab_size, num_classes,
    position="sinusoidal", position_config=None, max_length=None,  # the scheme, from the registry
    embedding_dim=128, lstm_units=128, hidden_units=64,
    dropout=0.0, word_dropout=0.0,
):
    """Embedding(mask_zero) -> position -> LSTM -> Dense(relu) -> Dense(softmax).

    An LSTM reads order by itself; the position layer is the variable under
    study. Only schemes that act on the input (`positions.where(name)` is
    "input" or "none") fit here: attention schemes need a Transformer.

    Args:
        vocab_size: int, token ids are in `[0, vocab_size)`, 0 is padding.
        num_classes: int, size of the softmax output.
        position: a `kerapos.positions` name acting on the input
            ("none", "sinusoidal" or "learned").
        position_config: dict of extra arguments for that position layer.
        max_length: int, table size for "learned" (its `max_length`).
        embedding_dim, lstm_units, hidden_units: layer widths.
        dropout: dropout rate on the embeddings and before the head.
        word_dropout: probability of dropping a whole token while training
            (see `kerapos.models.embedding.embed_tokens`).

    Returns:
        A `keras.Model` from int token ids `[batch, seq]` to class
        probabilities `[batch, num_classes]` (float32 under mixed precision).
    """
    vocab_size = checks.integer(vocab_size, "vocab_size", minimum=1)
    num_classes = checks.integer(num_classes, "num_classes", minimum=1)
    position_config = position_arguments(position, position_config, max_length=max_length)
    if positions.where(position) == "attention":
        input_schemes = [name for name in positions.available() if positions.where(name) != "attention"]
        raise ValueError(
            f"The lstm model takes position schemes that act on the input "
            f"({', '.join(input_schemes)}); {position!r} acts inside attention: "
            "use model='transformer'."
        )
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    # [batch, seq, embedding_dim], mask [batch, seq]
    x = embed_tokens(token_ids, vocab_size, embedding_dim, position, position_config, word_dropout)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.LSTM(lstm_units, name="lstm")(x)  # [batch, lstm_units]
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(token_ids, probabilities, name=f"lstm_{position}")


def build_truncation_model(classifier, lengths):
    """The LSTM classifier's probabilities for several truncations of its input, in one pass.

    A left-to-right LSTM whose position encoding does not depend on the
    input's length ("none", "sinusoidal", a learned table within its size)
    is in the same state after the first `L` tokens of a review as at the
    end of the review truncated to `L` tokens. So one pass over untruncated
    inputs, read at step `min(L, length) - 1`, scores every truncation length
    `L` at once: the cost of the longest evaluation instead of their sum.
    Dropout (inference) is left out; weights are shared with `classifier`.

    Args:
        classifier: a model from `build_lstm_classifier`.
        lengths: truncation lengths, each an int >= 1 or None (untruncated).

    Returns:
        A `keras.Model` from int token ids `[batch, seq]`, right-padded with
        0, to probabilities `[batch, len(lengths), num_classes]`.
    """
    lengths = [None if n is None else checks.integer(n, "length", minimum=1) for n in lengths]
    lstm = classifier.get_layer("lstm")
    every_step = keras.layers.LSTM.from_config(
        {**lstm.get_config(), "return_sequences": True, "name": "lstm_every_step"}
    )
    token_ids = classifier.input
    features = keras.tree.flatten(lstm.input)[0]  # [batch, seq, embedding_dim]; then its mask
    not_padding = ops.not_equal(token_ids, 0)  # [batch, seq]
    states = every_step(features, mask=not_padding)  # [batch, seq, lstm_units]
    every_step.set_weights(lstm.get_weights())
    valid = ops.sum(ops.cast(not_padding, "int32"), axis=1)  # [batch]
    # [batch, len(lengths)]: the last step each truncation reads
    read_at = ops.stack([valid if n is None else ops.minimum(valid, n) for n in lengths], axis=1)
    last = ops.take_along_axis(states, ops.expand_dims(ops.maximum(read_at - 1, 0), -1), axis=1)
    # An empty input leaves the LSTM in its initial (zero) state.
    last = ops.where(ops.expand_dims(read_at > 0, -1), last, ops.zeros_like(last))
    hidden = classifier.get_layer("hidden")(last)  # [batch, len(lengths), hidden_units]
    probabilities = classifier.get_layer("probabilities")(hidden)  # [batch, len(lengths), classes]
    return keras.Model(token_ids, probabilities, name=f"{classifier.name}_truncations")
