"""Tests for kerapos.checkpoints.language_model: a causal LM and its sidecar
round-trip, and a failed save leaves the previous files whole."""

import json

import numpy as np
import pytest

from kerapos.checkpoints import language_model
from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.models.causal_lm import build_causal_lm

CONFIG = {"vocab_size": 256, "position": "t5", "max_length": 24, "num_layers": 1,
          "hidden_dim": 16, "num_heads": 2, "intermediate_dim": 32}


@pytest.fixture(scope="module")
def model():
    return build_causal_lm(**CONFIG)


def test_save_and_load_language_model(tmp_path, model):
    path = tmp_path / "models" / "t5.keras"
    language_model.save_language_model(model, path, CONFIG, ByteTokenizer(), train_length=24)
    assert sorted(p.name for p in path.parent.iterdir()) == ["t5.json", "t5.keras"]
    loaded, tokenizer, info = language_model.load_language_model(path)
    ids = np.arange(12, dtype=np.int32)[None]
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(model(ids)), atol=1e-6)
    assert info["train_length"] == 24 and tokenizer.vocab_size == 256
    assert info["build_config"] == CONFIG
    assert json.loads(path.with_suffix(".json").read_text()) == info


def test_bad_paths(tmp_path, model):
    with pytest.raises(ValueError, match="no language model"):
        language_model.load_language_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="must end in .keras"):
        language_model.save_language_model(model, tmp_path / "m.h5", CONFIG, ByteTokenizer(), 24)
    with pytest.raises(ValueError, match="`train_length` must be an integer >= 1"):
        language_model.save_language_model(model, tmp_path / "m.keras", CONFIG, ByteTokenizer(), 0)
    path = tmp_path / "alone.keras"
    language_model.save_language_model(model, path, CONFIG, ByteTokenizer(), 24)
    path.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match="alone.json is missing"):
        language_model.load_language_model(path)


def test_failed_save_keeps_the_previous_model(tmp_path, model, monkeypatch):
    path = tmp_path / "lm.keras"
    language_model.save_language_model(model, path, CONFIG, ByteTokenizer(), 24)
    before = path.read_bytes()

    def broken_save(target, *args, **kwargs):
        with open(target, "wb") as file:
            file.write(b"half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        language_model.save_language_model(model, path, {**CONFIG, "x": 1}, ByteTokenizer(), 24)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.json", "lm.keras"]
    assert "x" not in json.loads(path.with_suffix(".json").read_text())["build_config"]
