"""kerapos.positions: the registry of position schemes."""

import os
import subprocess
import sys

import numpy as np
import pytest

from kerapos import positions
from kerapos.layers.alibi_bias import ALiBiBias
from kerapos.layers.fire_bias import FireBias
from kerapos.layers.kerple_bias import KerpleBias
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.layers.positional_encoding import PositionalEncoding
from kerapos.layers.relative_position_bias import RelativePositionBias
from kerapos.layers.rotary_embedding import RotaryEmbedding

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED_WHERE = {
    "none": "none",
    "sinusoidal": "input",
    "learned": "input",
    "rotary": "attention",
    "xpos": "attention",
    "alibi": "attention",
    "t5": "attention",
    "fire": "attention",
    "kerple": "attention",
}


def test_available():
    assert positions.available() == (
        "none", "sinusoidal", "learned", "rotary", "xpos", "alibi", "t5", "fire", "kerple"
    )


@pytest.mark.parametrize("name", sorted(EXPECTED_WHERE))
def test_where(name):
    assert positions.where(name) == EXPECTED_WHERE[name]


@pytest.mark.parametrize(
    "name, config, cls",
    [
        ("sinusoidal", {}, PositionalEncoding),
        ("learned", {"max_length": 16}, LearnedPositionEmbedding),
        ("rotary", {}, RotaryEmbedding),
        ("xpos", {}, RotaryEmbedding),
        ("alibi", {"num_heads": 4}, ALiBiBias),
        ("t5", {"num_heads": 4}, RelativePositionBias),
        ("fire", {"num_heads": 4}, FireBias),
        ("kerple", {"num_heads": 4}, KerpleBias),
    ],
)
def test_get_builds_the_right_layer(name, config, cls):
    layer = positions.get(name, **config)
    assert type(layer) is cls
    assert type(positions.get(name, **config)) is cls and positions.get(name, **config) is not layer


def test_get_none_is_none():
    assert positions.get("none") is None


def test_get_passes_config_and_defaults():
    assert positions.get("xpos").xpos is True
    assert positions.get("rotary").xpos is False
    assert positions.get("rotary", max_wavelength=500.0).max_wavelength == 500.0
    assert positions.get("alibi", num_heads=8).causal is True
    assert positions.get("alibi", num_heads=8, causal=False).causal is False
    t5 = positions.get("t5", num_heads=2, num_buckets=8, max_distance=20, bidirectional=False)
    assert (t5.num_buckets, t5.max_distance, t5.bidirectional) == (8, 20, False)
    assert positions.get("fire", num_heads=2).causal is True
    assert positions.get("fire", num_heads=2, causal=False, hidden_dim=8).hidden_dim == 8
    assert positions.get("kerple", num_heads=2).kernel == "log"
    assert positions.get("kerple", num_heads=2, kernel="power").kernel == "power"
    assert positions.get("learned", max_length=7).max_length == 7
    layer = positions.get("sinusoidal", name="pos", dtype="mixed_float16")
    assert layer.name == "pos" and layer.compute_dtype == "float16"


@pytest.mark.parametrize("name", ["rope", "ALiBi", "", "learnt", None, 3])
def test_unknown_name(name):
    valid = "valid names are: none, sinusoidal, learned, rotary, xpos, alibi, t5, fire, kerple"
    with pytest.raises(ValueError, match=valid):
        positions.get(name)
    with pytest.raises(ValueError, match="Unknown position scheme"):
        positions.where(name)


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError, match="Did you mean 'rotary'"):
        positions.get("rotry")
    with pytest.raises(ValueError, match="Did you mean 'alibi'"):
        positions.where("ALiBi")


@pytest.mark.parametrize(
    "name, config, match",
    [
        ("alibi", {"num_heads": 4, "slopes": 1}, "does not take 'slopes'.*takes: num_heads, causal"),
        ("sinusoidal", {"max_length": 9}, "does not take 'max_length'"),
        ("xpos", {"xpos": False}, "xpos=True is fixed by the scheme"),
        ("none", {"num_heads": 2}, "takes no config"),
        ("learned", {}, "needs max_length"),
        ("alibi", {}, "needs num_heads"),
        ("t5", {"causal": True, "num_heads": 2}, "does not take 'causal'"),
        ("kerple", {"causal": True, "num_heads": 2}, "does not take 'causal'"),
        ("fire", {}, "needs num_heads"),
    ],
)
def test_bad_config(name, config, match):
    with pytest.raises(ValueError, match=match):
        positions.get(name, **config)


def test_layer_validation_still_applies():
    with pytest.raises(ValueError, match="num_heads"):
        positions.get("alibi", num_heads=0)


def test_describe():
    rows = positions.describe()
    assert [row["name"] for row in rows] == list(positions.available())
    for row in rows:
        assert set(row) == {"name", "where", "layer", "paper", "extrapolates"}
        assert row["where"] == EXPECTED_WHERE[row["name"]]
        assert "arXiv:" in row["paper"] and row["extrapolates"]
    by_name = {row["name"]: row for row in rows}
    assert by_name["none"]["layer"] is None
    assert by_name["alibi"]["layer"] == "ALiBiBias"
    assert by_name["xpos"]["layer"] == "RotaryEmbedding(xpos=True)"
    assert "2108.12409" in by_name["alibi"]["paper"]
    assert "1910.10683" in by_name["t5"]["paper"]
    assert by_name["fire"]["layer"] == "FireBias"
    assert by_name["kerple"]["layer"] == "KerpleBias"
    assert "2310.04418" in by_name["fire"]["paper"]
    assert "2205.09921" in by_name["kerple"]["paper"]


def test_scheme_records():
    record = positions.scheme("xpos")
    assert isinstance(record, positions.Scheme)
    assert record.layer is RotaryEmbedding and dict(record.fixed_config) == {"xpos": True}
    accepted, required = positions.scheme("learned").accepted_config()
    assert "max_length" in accepted and required == ("max_length",)


@pytest.mark.parametrize(
    "first_import",
    ["import kerapos.positions", "import kerapos.layers.positional_attention"],
)
def test_import_order_has_no_cycle(first_import):
    script = (
        f"{first_import}\n"
        "import kerapos.positions, kerapos.layers.positional_attention as pa\n"
        "layer = pa.PositionalMultiHeadAttention(2, 8, position='alibi')\n"
        "print(type(layer._position_layer).__name__)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        cwd=REPO_ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ALiBiBias"


# -- scheme behaviour: defaults, lengths, extension, relation images ----------------------


@pytest.mark.parametrize(
    "name, encoder, decoder",
    [
        ("alibi", {"causal": False}, {"causal": True}),
        ("t5", {}, {}),
        ("fire", {"causal": False}, {"causal": True}),
        ("kerple", {}, {}),
        ("rotary", {}, {}),
        ("xpos", {}, {}),
        ("sinusoidal", {}, {}),
        ("none", {}, {}),
    ],
)
def test_layer_config_defaults_per_encoder_and_decoder(name, encoder, decoder):
    assert positions.layer_config(name) == encoder
    assert positions.layer_config(name, causal=False) == encoder
    assert positions.layer_config(name, causal=True) == decoder


def test_layer_config_keeps_the_users_values_and_copies():
    config = {"num_heads": 4, "causal": True}
    assert positions.layer_config("alibi", config) == {"num_heads": 4, "causal": True}
    assert positions.layer_config("alibi", {"num_heads": 4}, causal=True) == {"num_heads": 4, "causal": True}
    merged = positions.layer_config("alibi", config, causal=False)
    merged["num_heads"] = 8
    assert config == {"num_heads": 4, "causal": True}
    layer = positions.get("alibi", **positions.layer_config("alibi", {"num_heads": 2}))
    assert layer.causal is False and layer.num_heads == 2


def test_bounded_schemes_need_a_length():
    assert positions.scheme("learned").bounded
    assert [name for name in positions.available() if positions.scheme(name).bounded] == ["learned"]
    with pytest.raises(ValueError, match="'learned' needs a maximum length.*max_length"):
        positions.layer_config("learned")
    with pytest.raises(ValueError, match="needs a maximum length"):
        positions.layer_config("learned", {"embeddings_initializer": "zeros"}, causal=True)
    assert positions.layer_config("learned", max_length=32) == {"max_length": 32}
    assert positions.layer_config("learned", {"max_length": 8}, max_length=32) == {"max_length": 8}
    # Unbounded schemes ignore the model's length.
    assert positions.layer_config("sinusoidal", max_length=32) == {}
    assert positions.layer_config("t5", {"num_heads": 2}, max_length=32) == {"num_heads": 2}


def test_max_length_and_extend():
    learned = positions.scheme("learned")
    assert learned.extension_methods == ("interpolate", "copy")
    layer = positions.get("learned", **positions.layer_config("learned", max_length=4))
    layer.build((None, None, 2))
    table = np.arange(8, dtype="float32").reshape(4, 2)
    layer.set_weights([table])
    assert learned.max_length(layer) == 4
    learned.extend(layer, 10, "copy")
    assert learned.max_length(layer) == 10
    np.testing.assert_array_equal(layer.get_weights()[0], table[np.arange(10) % 4])
    with pytest.raises(ValueError, match="cannot be extended with 'nearest'.*interpolate, copy"):
        learned.extend(layer, 20, "nearest")
    sinusoid = positions.scheme("sinusoidal")
    assert sinusoid.max_length(positions.get("sinusoidal")) is None
    with pytest.raises(ValueError, match="'sinusoidal' cannot be extended.*takes: nothing"):
        sinusoid.extend(positions.get("sinusoidal"), 20, "interpolate")


def cosine_of_distance(length, frequencies):
    """mean_k cos((i - j) w_k): the closed form of both relation images below."""
    distance = np.arange(length)[:, None] - np.arange(length)[None, :]  # [L, L]
    return np.cos(distance[..., None] * frequencies).mean(axis=-1)


def test_relation_matrix_sinusoidal_is_cosine_of_distance():
    # Vectors [sin(p w_k), cos(p w_k)]_k have squared norm d/2 and dot
    # products sum_k cos((p - q) w_k).
    length, width = 12, 16
    frequencies = 10000.0 ** (-np.arange(0, width, 2) / width)
    got = positions.relation_matrix("sinusoidal", positions.get("sinusoidal"), length, width)
    np.testing.assert_allclose(got, cosine_of_distance(length, frequencies), atol=1e-5)


def test_relation_matrix_rotary_is_cosine_of_distance():
    # Equal contents 1/sqrt(d): each rotated pair contributes (2/d) cos((i - j) w_k).
    length, head_dim = 12, 8
    frequencies = 100.0 ** (-np.arange(0, head_dim, 2) / head_dim)
    layer = positions.get("rotary", max_wavelength=100.0)
    got = positions.relation_matrix("rotary", layer, length, head_dim)
    np.testing.assert_allclose(got, cosine_of_distance(length, frequencies), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_relation_matrix_alibi_is_mean_slope_times_distance(causal):
    length = 9
    slopes = np.array([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8])  # 4 heads (Press et al.)
    distance = np.arange(length)[:, None] - np.arange(length)[None, :]  # i - j
    expected = -slopes.mean() * (distance if causal else np.abs(distance))
    layer = positions.get("alibi", num_heads=4, causal=causal)
    got = positions.relation_matrix("alibi", layer, length, 16)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_relation_matrix_kerple_is_mean_log_penalty():
    length = 9
    layer = positions.get("kerple", num_heads=2)
    layer.build()
    layer.set_weights([np.array([0.5, 1.5], "float32"), np.array([0.3, 1.2], "float32")])
    distance = np.abs(np.arange(length)[:, None] - np.arange(length)[None, :])  # |i - j|
    expected = -(0.5 * np.log1p(0.3 * distance) + 1.5 * np.log1p(1.2 * distance)) / 2
    got = positions.relation_matrix("kerple", layer, length, 16)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_relation_matrix_stops_at_the_table_and_needs_a_layer():
    layer = positions.get("learned", max_length=5)
    layer.build((None, None, 4))
    assert positions.relation_matrix("learned", layer, 12, 4).shape == (5, 5)
    with pytest.raises(ValueError, match="'none' has no layer"):
        positions.relation_matrix("none", None, 12, 4)
