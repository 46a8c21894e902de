"""`python -m kerapos.serving check` on every kind of export, in a fresh
process: warmup replayed, every hostile input answered with one row per text
and finite numbers, the peak memory reported."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_python

from kerapos.checkpoints.bert import default_checkpoint
from kerapos.checkpoints.bert import load_bert_checkpoint
from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.export import bert as bert_export
from kerapos.export import export_text_classifier
from kerapos.export import writer
from kerapos.export.language_model import export_language_model
from kerapos.models import bert_tasks
from kerapos.serving.check import HOSTILE_INPUTS


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{kind: version directory} of a tiny untrained export of every kind."""
    base = tmp_path_factory.mktemp("exports")
    keras.utils.set_random_seed(4)
    vectorizer = keras.layers.TextVectorization(max_tokens=30, output_mode="int", ragged=True)
    vectorizer.adapt(["a great film", "a bad film"])
    classifier = keras.Sequential([keras.layers.Embedding(30, 4),
                                   keras.layers.GlobalAveragePooling1D(),
                                   keras.layers.Dense(2, activation="softmax")])
    classifier(np.zeros((1, 1), np.int32))
    language_model = keras.Sequential([keras.layers.Embedding(256, 8),
                                       keras.layers.Dense(256)])
    language_model(np.zeros((1, 1), np.int32))
    backbone, tokenizer = load_bert_checkpoint(default_checkpoint())
    sequence = bert_tasks.build_sequence_classifier(backbone, num_classes=2, dropout=0.0)
    token = bert_tasks.build_token_classifier(backbone, num_labels=3, dropout=0.0)
    return {
        "classifier": export_text_classifier(vectorizer, classifier, base / "clf", 16),
        "language_model": export_language_model(language_model, ByteTokenizer(), base / "lm", 32),
        "bert_sequence": bert_export.export_bert_classifier(sequence, tokenizer, base / "seq", 32),
        "bert_token": bert_export.export_bert_token_classifier(
            token, tokenizer, ["O", "B-X", "I-X"], base / "tok", 32),
    }


@pytest.mark.parametrize("kind", ["classifier", "language_model", "bert_sequence", "bert_token"])
def test_every_hostile_input_is_answered(exports, kind):
    result = run_python(["-m", "kerapos.serving", "check", str(exports[kind])])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["warmup"]) == 2  # batch 1 and 8
    assert list(report["cases"]) == [name for name, _ in HOSTILE_INPUTS]
    for name, texts in HOSTILE_INPUTS:
        assert {shape[0] for shape in report["cases"][name].values()} == {len(texts)}, name
    assert 0 < report["peak_memory_mb"] < 8192


def test_an_export_that_fails_a_hostile_input_is_named(tmp_path):
    def refuses_empty_batches(text):
        tf.debugging.assert_positive(tf.size(text), message="empty batch")
        return {"length": tf.strings.length(text)}

    version = writer.write_saved_model(
        tmp_path / "m", {writer.SERVING_DEFAULT: writer.Endpoint(refuses_empty_batches)})
    result = run_python(["-m", "kerapos.serving", "check", str(version)], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: input 'batch of 0' failed")
    missing = run_python(["-m", "kerapos.serving", "check", str(tmp_path)], check=False)
    assert missing.returncode == 2 and "holds no saved_model.pb" in missing.stderr
