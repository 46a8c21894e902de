"""The LSTM text classifier with a selectable input position encoding."""

import keras

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
