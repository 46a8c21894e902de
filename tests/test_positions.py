"""kerapos.positions: the registry of position schemes."""

import os
import subprocess
import sys

import pytest

from kerapos import positions
from kerapos.layers.alibi_bias import ALiBiBias
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
}


def test_available():
    assert positions.available() == (
        "none", "sinusoidal", "learned", "rotary", "xpos", "alibi", "t5"
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
    assert positions.get("learned", max_length=7).max_length == 7
    layer = positions.get("sinusoidal", name="pos", dtype="mixed_float16")
    assert layer.name == "pos" and layer.compute_dtype == "float16"


@pytest.mark.parametrize("name", ["rope", "ALiBi", "", "learnt", None, 3])
def test_unknown_name(name):
    with pytest.raises(ValueError, match="valid names are: none, sinusoidal, learned, rotary, xpos, alibi, t5"):
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
