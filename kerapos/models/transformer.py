"""The Transformer classifier, built from `kerapos.layers` blocks and pooling."""

import keras

from kerapos.layers.masked_pooling import MaskedPooling
from kerapos.models.embedding import embed_tokens
from kerapos.models.embedding import position_arguments
from kerapos.models.embedding import transformer_blocks
from kerapos.utils import checks


def build_transformer_classifier(
    vocab_size, num_classes,
    position="rotary", position_config=None, max_length=None,  # the scheme, from the registry
    num_layers=2, hidden_dim=128, num_heads=4, intermediate_dim=256,  # the block stack
    dropout=0.1, pooling="mean", logn_train_length=None, word_dropout=0.0,
):
    """A Transformer encoder classifier taking any scheme from the registry.

    Input schemes (sinusoidal, learned) are added to the token embeddings as
    the layer `positions.INPUT_LAYER_NAME`; attention schemes (rotary, xpos,
    alibi, t5) act inside every block, with the scheme's encoder defaults
    (ALiBi symmetric). Bounded schemes (learned) need `max_length`.

    Returns:
        A `keras.Model` from int token ids `[batch, seq]` (0 = padding) to
        class probabilities `[batch, num_classes]` (float32).
    """
    vocab_size = checks.integer(vocab_size, "vocab_size", minimum=1)
    num_classes = checks.integer(num_classes, "num_classes", minimum=1)
    num_layers = checks.integer(num_layers, "num_layers", minimum=1)
    position_config = position_arguments(position, position_config, max_length=max_length)
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = embed_tokens(token_ids, vocab_size, hidden_dim, position, position_config, word_dropout)
    x = keras.layers.Dropout(dropout)(x)
    sizes = dict(num_heads=num_heads, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim)
    for block in transformer_blocks(num_layers, position, position_config, dropout=dropout,
                                    logn_train_length=logn_train_length, **sizes):
        x = block(x)  # [batch, seq, hidden_dim]
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    x = MaskedPooling(pooling, name="pooling")(x)
    x = keras.layers.Dropout(dropout)(x)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(token_ids, probabilities, name=f"transformer_{position}")
