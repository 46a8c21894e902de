"""The backend-neutral IMDb fine-tuning (benchmarks/gpu/bert_finetune.py, the
GPU benchmark) against the trainer.

Its numpy packing must equal `bert_tasks.pack_texts`, its model (keras-hub
backbone + grown table + head) must compute what the trainer's model computes
on the real checkpoint, and prepare -> train must run end to end as a script
and refuse bad input with a message. (conftest.py puts benchmarks/gpu on
`sys.path`, as running the script does.)
"""

import json

import bert_finetune as gpu_bert_finetune  # benchmarks/gpu/bert_finetune.py
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import FIXTURE
from helpers import run_python

from kerapos.checkpoints import bert
from kerapos.models import bert_tasks

SCRIPT = ["benchmarks/gpu/bert_finetune.py"]


@pytest.mark.parametrize("max_length", [2, 5, 9, 12])
def test_pack_matches_trainer_packing(max_length):
    rng = np.random.default_rng(max_length)
    row_lengths = np.array([0, 1, 3, 7, 10, 4])
    pieces = rng.integers(1000, 2000, size=row_lengths.sum())
    packed = gpu_bert_finetune.pack(pieces, row_lengths, max_length, cls_id=101, sep_id=102)
    reference = bert_tasks.pack_texts(
        tf.RaggedTensor.from_row_lengths(pieces, row_lengths), max_length, 101, 102
    )
    for name, value in reference.items():
        value = value.numpy()  # padded to the batch's longest text
        width = value.shape[1]
        assert width <= max_length
        np.testing.assert_array_equal(packed[name][:, :width], value, err_msg=name)
        np.testing.assert_array_equal(packed[name][:, width:], 0, err_msg=name)


@pytest.mark.skipif(
    not (bert.default_checkpoint() / "model.safetensors").is_file(),
    reason="all-MiniLM-L6-v2 is not cached (make test fetches it)",
)
def test_model_matches_trainer_model_past_512(tmp_path):
    checkpoint = bert.default_checkpoint()
    (tmp_path / "checkpoint").symlink_to(checkpoint)
    backbone, _ = bert.load_bert_checkpoint(checkpoint)
    encoder, _ = bert_tasks.extend_positions(backbone, 640, "interpolate")
    np.save(
        gpu_bert_finetune.positions_file(tmp_path, 640, "interpolate"),
        keras.ops.convert_to_numpy(encoder.get_layer("position_embedding").embeddings),
    )
    trainer_model = bert_tasks.build_sequence_classifier(encoder, num_classes=2)
    model = gpu_bert_finetune.build_classifier(tmp_path, 2, 640, "interpolate", dropout=0.1)
    rng = np.random.default_rng(0)
    # A steep head, the same in both, so different reviews get clearly different outputs.
    head_weights = [rng.normal(scale=10.0, size=(384, 2)), np.zeros(2)]
    for classifier in (trainer_model, model):
        classifier.get_layer("classifier_head").set_weights(head_weights)

    row_lengths = np.array([630, 300, 20])  # past the checkpoint's 512 positions
    inputs = gpu_bert_finetune.pack(
        rng.integers(1000, 30000, size=row_lengths.sum()), row_lengths, 640, 101, 102
    )
    expected = keras.ops.convert_to_numpy(trainer_model(inputs, training=False))
    actual = keras.ops.convert_to_numpy(model(inputs, training=False))
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert np.abs(expected[0] - expected[1]).max() > 0.05  # the inputs matter


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    bundle_dir = tmp_path_factory.mktemp("gpu") / "bundle"
    run_python([*SCRIPT, "prepare", f"--bundle_dir={bundle_dir}", f"--dataset={FIXTURE}",
                "--max_train_examples=24", "--max_test_examples=16", "--max_pieces=574",
                "--extend_positions_to=576"])
    return bundle_dir


def test_prepare_writes_the_trainer_split_and_ids(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    arrays = np.load(bundle / "pieces.npz")
    assert manifest["dataset"]["counts"] == {"train": 24, "validation": 16, "test": 16}
    assert manifest["trainer_options"]["learning_rate"] == 5e-5  # the trainer's defaults
    assert (manifest["cls_id"], manifest["sep_id"]) == (101, 102)
    for split in ("train", "validation", "test"):
        lengths = arrays[f"{split}_row_lengths"]
        assert len(lengths) == len(arrays[f"{split}_labels"])
        assert lengths.max() <= 574 and arrays[f"{split}_pieces"].size == lengths.sum()
    assert np.load(bundle / "positions_576_interpolate.npy").shape == (576, 384)
    assert [path.name for path in bundle.parent.iterdir()] == ["bundle"]  # no partial copy left


def test_train_end_to_end(bundle, tmp_path):
    output_dir = tmp_path / "out"
    result = run_python([*SCRIPT, "train", f"--bundle_dir={bundle}", "--max_length=64",
                         "--extend_positions_to=576", "--epochs=1", f"--output_dir={output_dir}"])
    results = json.loads((output_dir / "results.json").read_text())
    assert set(results["test_accuracy"]) == {"64", "full"}
    assert results["position_capacity"] == 576
    assert all(0.0 <= value <= 1.0 for value in results["test_accuracy"].values())
    assert results["keras_backend"] == "tensorflow" and results["epochs_run"] == 1
    prepare_line, train_line = (output_dir / "command.txt").read_text().splitlines()
    assert prepare_line.startswith("python benchmarks/gpu/bert_finetune.py prepare ")
    assert train_line.startswith("KERAS_BACKEND=tensorflow python benchmarks/gpu/bert_finetune.py train ")
    assert "test accuracy @  full tokens" in result.stdout


def test_train_refuses_inputs_longer_than_the_table(bundle, tmp_path):
    result = run_python([*SCRIPT, "train", f"--bundle_dir={bundle}", "--max_length=640",
                         "--extend_positions_to=576", f"--output_dir={tmp_path}"], check=False)
    assert result.returncode != 0 and "exceeds the encoder's 576 positions" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_train_refuses_a_bundle_cut_shorter_than_the_table(bundle, tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    (short / "checkpoint").symlink_to(bundle / "checkpoint")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (short / "manifest.json").write_text(json.dumps({**manifest, "max_pieces": 94}))
    result = run_python([*SCRIPT, "train", f"--bundle_dir={short}", "--max_length=64",
                         f"--output_dir={tmp_path}"], check=False)
    assert result.returncode != 0 and "run `prepare --max_pieces=510`" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_without_bundle_says_run_prepare(tmp_path):
    result = run_python([*SCRIPT, "train", f"--bundle_dir={tmp_path}", f"--output_dir={tmp_path}"],
                        check=False)
    assert result.returncode != 0 and "run `prepare" in result.stderr
    assert "Traceback" not in result.stderr
