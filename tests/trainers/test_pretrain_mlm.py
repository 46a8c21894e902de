"""trainers/pretrain_mlm.py end to end on a tiny corpus (smoke preset): its
outputs, TensorBoard read-back, the checkpoints it leaves, bad flags."""

import json
import math

import numpy as np
import pytest
from helpers import run_python
from helpers import run_script_cases
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kerapos.checkpoints import bert
from kerapos.training.mlm import PRESETS
from tests.trainers.corpus import write_corpus

TRAINER = "trainers/pretrain_mlm.py"
SCHEMES = ("learned", "alibi")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    corpus = write_corpus(root / "corpus", lines=60, words_per_line=12)
    result = run_python([
        TRAINER, "--preset=smoke", f"--corpus={corpus}", f"--model_dir={root / 'run'}",
        f"--schemes={','.join(SCHEMES)}",
    ])
    return root / "run", result


def tensor_values(accumulator, tag):
    return {event.step: float(np.asarray(event.tensor_proto.float_val or
                                         np.frombuffer(event.tensor_proto.tensor_content, "float32"))[0])
            for event in accumulator.Tensors(tag)}


def test_cli_prints_progress_and_writes_files(smoke_run):
    run, result = smoke_run
    assert "== learned: training 6 steps" in result.stdout and "Done in" in result.stdout
    assert "Traceback" not in result.stderr
    for name in ("results.json", "results.md", "vocab.txt"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0
    vocabulary = (run / "vocab.txt").read_text("utf-8").split("\n")
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "grass" in vocabulary
    command = (run / "command.txt").read_text()
    assert command.startswith("python trainers/pretrain_mlm.py --preset=smoke ")


def test_results_json(smoke_run):
    run, _ = smoke_run
    results = json.loads((run / "results.json").read_text())
    train_length = PRESETS["smoke"]["train_length"]
    lengths = [str(m * train_length) for m in (1, 2, 4)]
    assert results["preset"] == "smoke" and results["device"].startswith(("CPU", "1 GPU"))
    assert results["flags"]["schemes"] == list(SCHEMES)
    assert results["corpus"]["documents"]["test"] == ["doc3"]
    assert results["corpus"]["tokens"]["train"] > 0 and results["corpus"]["tokens"]["test"]["doc3"] > 0
    assert set(results["timings"]) >= {*SCHEMES, "vocabulary_s", "tokenize_s", "total_s"}
    assert results["vocabulary"]["size"] == len((run / "vocab.txt").read_text("utf-8").splitlines())
    for scheme in SCHEMES:
        record = results["schemes"][scheme]
        assert list(record["mlm_accuracy"]) == lengths and list(record["mlm_loss"]) == lengths
        assert all(0.0 <= value <= 1.0 for value in record["mlm_accuracy"].values())
        assert all(math.isfinite(value) and value > 0 for value in record["mlm_loss"].values())
        assert all(count > 0 for count in record["masked_tokens"].values())
    assert results["schemes"]["learned"]["learned_extension"] == {
        "method": "interpolate", "lengths": lengths[1:]}
    assert results["schemes"]["alibi"]["learned_extension"] is None
    markdown = (run / "results.md").read_text()
    for scheme in SCHEMES:
        assert markdown.count(f"\n| {scheme} |") == 3  # accuracy, loss and throughput tables
        timing = results["timings"][scheme]
        assert timing["train_tokens_per_s"] > 0 and timing["train_flops_per_token"] > 0
        assert timing["train_share_of_peak"] == (
            timing["train_achieved_gflops"] / results["machine"]["matmul_gflops"])
        assert 0 < timing["train_share_of_peak"] < 1
    assert "## Training throughput" in markdown
    assert f"| scheme | L={lengths[0]} | L={lengths[1]} | L={lengths[2]} |" in markdown


def test_tensorboard_scalars(smoke_run):
    run, _ = smoke_run
    results = json.loads((run / "results.json").read_text())
    for scheme in SCHEMES:
        train = EventAccumulator(str(run / "logs" / scheme / "train"), size_guidance={"tensors": 0})
        train.Reload()
        for tag in ("epoch_loss", "epoch_accuracy", "batch_learning_rate"):
            assert tag in train.Tags()["tensors"], (tag, train.Tags())
        assert len(tensor_values(train, "epoch_accuracy")) == PRESETS["smoke"]["epochs"]
        validation = EventAccumulator(str(run / "logs" / scheme / "validation"))
        validation.Reload()
        assert "epoch_accuracy" in validation.Tags()["tensors"]
        evaluation = EventAccumulator(str(run / "logs" / scheme / "eval"))
        evaluation.Reload()
        accuracy = tensor_values(evaluation, "mlm_accuracy")
        expected = results["schemes"][scheme]["mlm_accuracy"]
        assert {str(step): value for step, value in accuracy.items()} == pytest.approx(expected)
        assert set(tensor_values(evaluation, "mlm_loss")) == {int(n) for n in expected}


def test_checkpoints_load_for_fine_tuning(smoke_run):
    run, _ = smoke_run
    for scheme in SCHEMES:
        backbone, tokenizer = bert.load_bert_checkpoint(run / "checkpoints" / scheme)
        assert backbone.position == scheme
        assert backbone.max_sequence_length == (
            PRESETS["smoke"]["train_length"] if scheme == "learned" else None)
        ids = np.asarray(tokenizer(["the sky is blue"]))
        token_ids = np.concatenate([[[2]], ids, [[3]]], axis=1).astype("int32")
        outputs = backbone({"token_ids": token_ids, "segment_ids": 0 * token_ids,
                            "padding_mask": np.ones_like(token_ids)})
        assert outputs["sequence_output"].shape == (1, token_ids.shape[1], backbone.hidden_dim)
        assert outputs["pooled_output"].shape == (1, backbone.hidden_dim)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


BAD_FLAGS = [
    (["--schemes=rotary,rope"], "--schemes[1] must be one of 'none', 'sinusoidal', "),
    (["--eval_lengths=16,abc"], "--eval_lengths takes integers"),
    (["--train_length=2", "--dropout=1.5"], "--train_length must be an integer >= 4"),
    (["--corpus={missing}"], "unknown corpus"),
]


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Every BAD_FLAGS command line run as `python trainers/pretrain_mlm.py ...`
    (one warm process, a fork per case): [(its model_dir, CompletedProcess)]."""
    root = tmp_path_factory.mktemp("bad_flags")
    model_dirs = [root / f"case{index}" for index in range(len(BAD_FLAGS))]
    commands = [
        ["--preset=smoke", f"--model_dir={model_dir}",
         *[a.format(missing=root / "nope") for a in arguments]]
        for (arguments, _), model_dir in zip(BAD_FLAGS, model_dirs)
    ]
    return list(zip(model_dirs, run_script_cases(TRAINER, commands, root / "output", timeout=300)))


@pytest.mark.parametrize("arguments, message", BAD_FLAGS)
def test_bad_flags_exit_cleanly(arguments, message, bad_flag_runs):
    model_dir, result = bad_flag_runs[BAD_FLAGS.index((arguments, message))]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: " in result.stderr and message in result.stderr, result.stderr[-2000:]
    assert not (model_dir / "results.json").exists()
