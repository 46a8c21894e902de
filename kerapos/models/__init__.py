"""Models composed from kerapos layers; position schemes come only via `kerapos.positions`."""

from kerapos.models.lstm_classifier import build_lstm_classifier
from kerapos.models.transformer import TransformerBlock
from kerapos.models.transformer import build_transformer_classifier

CLASSIFIERS = {
    "lstm": build_lstm_classifier,
    "transformer": build_transformer_classifier,
}


def build_classifier(model, **kwargs):
    """Builds a classifier by name (`lstm` or `transformer`)."""
    if model not in CLASSIFIERS:
        raise ValueError(
            f"Unknown model {model!r}; choose one of {sorted(CLASSIFIERS)}."
        )
    return CLASSIFIERS[model](**kwargs)
