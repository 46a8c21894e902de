"""kerapos.layers.rope_types: one init function and one validator per rope type."""

import math

import numpy as np
import pytest

from kerapos.layers import rope_types
from kerapos.layers.rotary_embedding import RotaryEmbedding

SCALINGS = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "ntk": {"rope_type": "ntk", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
}


def plain(rotary_dim, base):
    return base ** (-np.arange(0, rotary_dim, 2) / rotary_dim)


def test_every_type_has_an_init_function_and_a_validator():
    assert list(rope_types.ROPE_INIT_FUNCTIONS) == [
        "default", "linear", "ntk", "dynamic", "yarn", "longrope", "llama3", "proportional"]
    assert list(rope_types.ROPE_VALIDATION_FUNCTIONS) == list(rope_types.ROPE_INIT_FUNCTIONS)
    assert set(SCALINGS) <= set(rope_types.ROPE_INIT_FUNCTIONS)


@pytest.mark.parametrize("rope_type", sorted(SCALINGS))
def test_init_functions_return_frequencies_and_attention_factor(rope_type):
    parsed_type, parameters = rope_types.parse(SCALINGS[rope_type])
    assert parsed_type == rope_type
    frequencies, attention_factor = rope_types.ROPE_INIT_FUNCTIONS[rope_type](parameters, 16, 100.0, None)
    frequencies = np.asarray(frequencies)
    assert frequencies.shape == (8,) and frequencies.dtype == np.float32
    expected_factor = 0.1 * math.log(4.0) + 1.0 if rope_type == "yarn" else 1.0
    np.testing.assert_allclose(attention_factor, expected_factor)
    # At the original context, only the interpolating types move the lowest frequency.
    lowest = plain(16, 100.0)[-1]
    moved = {"default": 1.0, "linear": 4.0, "ntk": 4.0, "dynamic": 1.0, "yarn": 4.0}[rope_type]
    np.testing.assert_allclose(frequencies[-1], lowest / moved, rtol=1e-5)


def test_parse_reads_the_type_alias_and_defaults():
    assert rope_types.parse(None) == ("default", {})
    assert rope_types.parse({}) == ("default", {})
    assert rope_types.parse({"type": "linear", "factor": 2}) == ("linear", {"factor": 2.0})
    _, parameters = rope_types.parse(SCALINGS["yarn"])
    assert parameters == {
        "factor": 4.0,
        "original_max_position_embeddings": 64,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "attention_factor": 0.1 * math.log(4.0) + 1.0,
        "truncate": True,
    }


@pytest.mark.parametrize(
    "scaling, match",
    [
        ({"rope_type": "ntk", "factor": 2.0, "beta_slow": 1.0}, r"Unknown keys \['beta_slow'\].*'ntk'"),
        ({"rope_type": "default", "attention_factor": 1.0}, r"Unknown keys \['attention_factor'\]"),
        ({"rope_type": "ntk"}, "rope_type 'ntk' needs a numeric 'factor'"),
        ({"rope_type": "yarn", "factor": 2.0}, "'yarn' needs 'original_max_position_embeddings'"),
        ({"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": None},
         r"`scaling\['original_max_position_embeddings'\]` must be an integer >= 1"),
        ({"rope_type": "linear", "factor": 2.0, "original_max_position_embeddings": 1.5},
         r"`scaling\['original_max_position_embeddings'\]` must be an integer"),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8, "beta_fast": 0},
         r"`scaling\['beta_fast'\]` must be a number > 0"),
        ({"rope_type": "linear", "factor": True}, r"`scaling\['factor'\]` must be a number >= 1"),
        ({"rope_type": ["linear"]}, "Unknown rope_type"),
    ],
)
def test_validators_name_the_key(scaling, match):
    with pytest.raises(ValueError, match=match):
        rope_types.parse(scaling)


def test_a_new_type_is_one_function_and_one_validator(monkeypatch):
    def compute_halved(parameters, rotary_dim, base, sequence_length=None):
        frequencies, attention_factor = rope_types.ROPE_INIT_FUNCTIONS["default"](
            parameters, rotary_dim, base, sequence_length)
        return frequencies / 2.0, attention_factor * parameters["gain"]

    def validate_halved(scaling):
        return {"gain": float(scaling.get("gain", 1.0))}

    monkeypatch.setitem(rope_types.ROPE_INIT_FUNCTIONS, "halved", compute_halved)
    monkeypatch.setitem(rope_types.ROPE_VALIDATION_FUNCTIONS, "halved", validate_halved)
    layer = RotaryEmbedding(max_wavelength=100.0, scaling={"rope_type": "halved", "gain": 3.0}, rotary_dim=8)
    np.testing.assert_allclose(layer.frequencies(), plain(8, 100.0) / 2.0, rtol=1e-6)
    assert layer.attention_factor() == 3.0
    x = np.ones((1, 2, 1, 8), "float32")
    np.testing.assert_allclose(np.linalg.norm(layer(x), axis=-1), 3.0 * np.linalg.norm(x, axis=-1), rtol=1e-5)
