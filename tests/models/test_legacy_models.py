"""Models saved before the input position layer was renamed still load and
give the numbers they gave then (tests/fixtures/legacy/README.md)."""

import json

import keras
import numpy as np
import pytest
from helpers import REPO_ROOT

from kerapos import positions
from kerapos.checkpoints.language_model import load_language_model
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.metrics.position_images import position_similarity
from kerapos.models.causal_lm import extend_learned_positions

LEGACY = f"{REPO_ROOT}/tests/fixtures/legacy"
OLD_NAME = "position_encoding"


@pytest.fixture(scope="module")
def expected():
    with open(f"{LEGACY}/expected.json", encoding="utf-8") as file:
        return json.load(file)


def test_classifier_with_the_old_layer_name_loads_and_evaluates(expected):
    record = expected["classifier"]
    model = keras.saving.load_model(f"{LEGACY}/classifier_learned.keras")
    (table,) = positions.position_layers(model)
    assert table.name == OLD_NAME and isinstance(table, LearnedPositionEmbedding)
    assert positions.scheme("learned").max_length(table) == 12
    ids = np.asarray(record["token_ids"], "int32")
    np.testing.assert_allclose(np.asarray(model(ids)), record["probabilities"], atol=1e-6)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(ids, np.asarray(record["labels"]), verbose=0)
    assert loss == pytest.approx(record["loss"], abs=1e-6)
    assert accuracy == pytest.approx(record["accuracy"])
    # The relation image finds the table by class, not by name.
    similarity = position_similarity(model, "learned", 32)
    assert similarity.shape == (12, 12)
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)


def test_language_model_with_the_old_layer_name_loads_and_extends(expected):
    record = expected["language_model"]
    model, tokenizer, sidecar = load_language_model(f"{LEGACY}/lm_learned.keras")
    assert [layer.name for layer in positions.position_layers(model)] == [OLD_NAME]
    assert sidecar["train_length"] == 8 and tokenizer.vocab_size == 256
    ids = np.asarray(record["token_ids"], "int32")
    np.testing.assert_allclose(np.asarray(model(ids))[0, -1], record["last_logits"], atol=1e-5)
    # Extension rebuilds from the sidecar's build config and copies the weights.
    longer = extend_learned_positions(model, sidecar["build_config"], 16)
    ids_16 = np.asarray(record["token_ids_16"], "int32")
    np.testing.assert_allclose(
        np.asarray(longer(ids_16))[0, -1], record["last_logits_16_interpolated"], atol=1e-5
    )
