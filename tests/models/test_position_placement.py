"""Every model puts each scheme's layer where the registry says: an input
scheme as one layer named `positions.INPUT_LAYER_NAME`, an attention scheme
inside every block, "none" nowhere; with the scheme's fixed config and its
encoder or decoder defaults."""

import pytest

from kerapos import positions
from kerapos.models import build_classifier
from kerapos.models.bert_encoder import BertEncoderBackbone
from kerapos.models.causal_lm import build_causal_lm

MAX_LENGTH = 16
NUM_LAYERS = 2
SIZES = dict(num_layers=NUM_LAYERS, hidden_dim=16, num_heads=2, intermediate_dim=32)


def _builders():
    """(model name, causal, builder(position)) for every model builder."""
    return [
        ("transformer", False, lambda p: build_classifier(
            "transformer", vocab_size=50, num_classes=2, position=p, max_length=MAX_LENGTH,
            **SIZES)),
        ("causal_lm", True, lambda p: build_causal_lm(
            50, p, max_length=MAX_LENGTH, **SIZES)),
        ("bert_encoder", False, lambda p: BertEncoderBackbone(
            50, p, max_sequence_length=MAX_LENGTH, **SIZES)),
        ("lstm", False, lambda p: build_classifier(
            "lstm", vocab_size=50, num_classes=2, position=p, max_length=MAX_LENGTH,
            embedding_dim=16, lstm_units=8, hidden_units=4)),
    ]


CASES = [
    pytest.param(name, causal, build, scheme, id=f"{name}-{scheme}")
    for name, causal, build in _builders()
    for scheme in positions.available()
    if not (name == "lstm" and positions.where(scheme) == "attention")
]


def _layer_names(model):
    return {layer.name for layer in model._flatten_layers(include_self=False)}


def _assert_configured(layer, entry, causal):
    assert isinstance(layer, entry.layer)
    config = layer.get_config()
    defaults = entry.decoder_config if causal else entry.encoder_config
    for key, value in {**entry.fixed_config, **defaults}.items():
        assert config[key] == value, (key, config[key], value)
    if entry.bounded:
        assert entry.max_length(layer) == MAX_LENGTH


@pytest.mark.parametrize("name, causal, build, scheme", CASES)
def test_position_layer_sits_where_the_registry_says(name, causal, build, scheme):
    entry = positions.scheme(scheme)
    model = build(scheme)
    found = positions.position_layers(model)
    if entry.where == "none":
        assert found == [] and positions.INPUT_LAYER_NAME not in _layer_names(model)
    elif entry.where == "input":
        layer = model.get_layer(positions.INPUT_LAYER_NAME)
        assert found == [layer]
        _assert_configured(layer, entry, causal)
    else:
        assert positions.INPUT_LAYER_NAME not in _layer_names(model)
        assert len(found) == NUM_LAYERS
        for index in range(NUM_LAYERS):
            (layer,) = positions.position_layers(model.get_layer(f"block_{index}"))
            assert layer is found[index]
            _assert_configured(layer, entry, causal)


@pytest.mark.parametrize("scheme", [s for s in positions.available() if positions.scheme(s).bounded])
def test_bounded_schemes_need_a_length_named_as_the_builder_calls_it(scheme):
    with pytest.raises(ValueError, match=f"position='{scheme}' needs max_length"):
        build_causal_lm(50, scheme, **SIZES)
    with pytest.raises(ValueError, match=f"position='{scheme}' needs max_length"):
        build_classifier("transformer", vocab_size=50, num_classes=2, position=scheme, **SIZES)
    with pytest.raises(ValueError, match=f"position='{scheme}' needs max_length"):
        build_classifier("lstm", vocab_size=50, num_classes=2, position=scheme)
    with pytest.raises(ValueError, match=f"position='{scheme}' needs max_sequence_length"):
        BertEncoderBackbone(50, scheme, **SIZES)
    # A length in the position config is enough.
    entry = positions.scheme(scheme)
    model = build_causal_lm(50, scheme, position_config={entry.length_argument: 5}, **SIZES)
    assert entry.max_length(model.get_layer(positions.INPUT_LAYER_NAME)) == 5


@pytest.mark.parametrize("build", [
    lambda **bad: build_causal_lm(**{"vocab_size": 50, "position": "rotary", **SIZES, **bad}),
    lambda **bad: BertEncoderBackbone(**{"vocabulary_size": 50, "position": "rotary", **SIZES, **bad}),
    lambda **bad: build_classifier("transformer", **{"vocab_size": 50, "num_classes": 2, **SIZES, **bad}),
])
def test_sizes_are_checked_the_same_way_everywhere(build):
    with pytest.raises(ValueError, match=r"`num_layers` must be an integer >= 1, got 0"):
        build(num_layers=0)
    with pytest.raises(ValueError, match=r"`num_layers` must be an integer >= 1, got True"):
        build(num_layers=True)
