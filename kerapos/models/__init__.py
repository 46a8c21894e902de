"""Models composed from kerapos layers; position schemes come only via `kerapos.positions`."""

from kerapos.layers.transformer_block import TransformerBlock  # noqa: F401  (public here too)
from kerapos.models.lstm_classifier import build_lstm_classifier
from kerapos.models.transformer import build_transformer_classifier
from kerapos.utils import checks

CLASSIFIERS = {
    "lstm": build_lstm_classifier,
    "transformer": build_transformer_classifier,
}


def build_classifier(model, **kwargs):
    """Builds a classifier by name (`lstm` or `transformer`)."""
    return CLASSIFIERS[checks.choice(model, "model", tuple(CLASSIFIERS))](**kwargs)


def build_classifier_from_options(options, vocab_size, num_classes):
    """The classifier a `train_classifier.py` run trains, from its options
    (`kerapos.training.classification.ClassifierOptions`, or any object with
    the same attributes)."""
    common = dict(
        vocab_size=vocab_size,
        num_classes=num_classes,
        position=options.position,
        position_config=options.position_config,
        max_length=options.max_length,
        word_dropout=options.word_dropout,
    )
    if options.model == "lstm":
        return build_classifier("lstm", dropout=options.dropout, **common)
    return build_classifier(
        "transformer",
        num_layers=options.num_layers,
        hidden_dim=options.hidden_dim,
        num_heads=options.num_heads,
        intermediate_dim=options.intermediate_dim,
        dropout=options.dropout,
        pooling=options.pooling,
        logn_train_length=options.max_length if options.logn_scaling else None,
        **common,
    )
