"""The backend-neutral classifier run (benchmarks/gpu/classifier_train.py, the
GPU benchmark) on the IMDb fixture.

Its ids are the trainer's vectorizer's, its padding keeps the trainer's
truncation, and prepare -> train runs end to end as a script and refuses bad
options with a message. (conftest.py puts benchmarks/gpu on `sys.path`, as
running the script does.)
"""

import json

import classifier_train as gpu_classifier_train  # benchmarks/gpu/classifier_train.py
import numpy as np
import pytest
import tensorflow as tf
from helpers import FIXTURE
from helpers import run_python

from kerapos.data import text_pipeline
from kerapos.data.imdb import load_classification_data

SCRIPT = ["benchmarks/gpu/classifier_train.py"]
TINY = {"model": "transformer", "position": "rotary", "max_length": 32, "epochs": 1,
        "hidden_dim": 16, "num_heads": 2, "intermediate_dim": 32, "eval_max_lengths": [16, 64]}


@pytest.mark.parametrize("max_length", [None, 1, 3, 8])
def test_pad_keeps_the_trainer_truncation(max_length):
    row_lengths = np.array([0, 2, 5, 8, 3])
    ids = np.arange(1, row_lengths.sum() + 1)
    ragged = tf.RaggedTensor.from_row_lengths(ids, row_lengths)
    expected = text_pipeline.truncate(ragged, max_length).to_tensor().numpy()
    padded = gpu_classifier_train.pad(ids, row_lengths, max_length)
    np.testing.assert_array_equal(padded, expected)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    bundle_dir = tmp_path_factory.mktemp("cls") / "bundle"
    run_python([*SCRIPT, "prepare", f"--bundle_dir={bundle_dir}", f"--dataset={FIXTURE}",
                "--vocab_size=500"])
    return bundle_dir


def test_prepare_uses_the_trainer_split_and_vectorizer(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    arrays = np.load(bundle / "ids.npz")
    data = load_classification_data(FIXTURE, validation_fraction=0.1, seed=0)
    vectorizer = text_pipeline.build_vectorizer(data.train.texts, 500)
    expected = text_pipeline.tokenize(vectorizer, data.test.texts)
    np.testing.assert_array_equal(arrays["test_ids"], expected.flat_values.numpy())
    np.testing.assert_array_equal(arrays["test_row_lengths"], expected.row_lengths().numpy())
    np.testing.assert_array_equal(arrays["test_labels"], data.test.labels)
    assert manifest["vocabulary_size"] == vectorizer.vocabulary_size()
    assert manifest["trainer_options"]["learning_rate"] == 1e-3  # the trainer's default


def test_train_end_to_end(bundle, tmp_path):
    output_dir = tmp_path / "out"
    result = run_python([*SCRIPT, "train", f"--bundle_dir={bundle}", f"--output_dir={output_dir}",
                         f"--options={json.dumps(TINY)}"])
    results = json.loads((output_dir / "results.json").read_text())
    assert set(results["test_accuracy"]) == {"16", "64", "full"}
    assert all(0.0 <= value <= 1.0 for value in results["test_accuracy"].values())
    assert (results["model"], results["position"], results["max_length"]) == ("transformer", "rotary", 32)
    assert results["flags"]["hidden_dim"] == 16 and results["flags"]["vocab_size"] == 500
    assert results["keras_backend"] == "tensorflow" and results["epochs_run"] == 1
    prepare_line, train_line = (output_dir / "command.txt").read_text().splitlines()
    assert prepare_line.startswith("python benchmarks/gpu/classifier_train.py prepare ")
    assert train_line.startswith("KERAS_BACKEND=tensorflow python benchmarks/gpu/classifier_train.py train ")
    assert "test accuracy @  full tokens" in result.stdout


@pytest.mark.parametrize("options, message", [
    ({"position": "learned"}, "position=learned needs its table grown"),
    ({"hiden_dim": 16}, "names no trainer flag ['hiden_dim']"),
])
def test_train_refuses_bad_options(bundle, tmp_path, options, message):
    result = run_python([*SCRIPT, "train", f"--bundle_dir={bundle}", f"--output_dir={tmp_path}",
                         f"--options={json.dumps(options)}"], check=False)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results.json").exists()
