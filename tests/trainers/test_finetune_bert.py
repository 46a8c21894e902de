"""The BERT fine-tuning trainer end to end on the real all-MiniLM-L6-v2 checkpoint.

Two tiny CLI runs, started together (IMDb fixture classification with
positions grown past 512 and gradient accumulation; CoNLL token
classification with LoRA under MirroredStrategy), then checks of what they
wrote: results.json, TensorBoard events, model.keras, and both SavedModels
reloaded in one fresh process that imports only TensorFlow and
tensorflow_text, against Python references. The bad flags run in one warm
process (tests/trainers/cli_runner.py).
"""

import json
import textwrap
import zipfile

import keras
import keras_hub  # noqa: F401  (registers the BertBackbone layers for load_model)
import numpy as np
import pytest
import tensorflow as tf
from helpers import FIXTURE
from helpers import assert_warmup_replays
from helpers import keras_file_summary
from helpers import keras_files_in_fresh_process
from helpers import run_python
from helpers import run_python_together
from helpers import run_script_cases
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import kerapos.layers.learned_position_embedding  # noqa: F401  (registers the layer)
from kerapos.checkpoints.bert import default_checkpoint
from kerapos.checkpoints.bert import load_bert_checkpoint
from kerapos.data.conll import load_wnut16
from tests.export.test_bert_export import check_token_outputs
from tests.export.test_bert_export import reference_probabilities
from tests.export.test_bert_export import reference_word_label_ids
from tests.export.test_bert_export import serving_texts

TRAINER = "trainers/finetune_bert.py"
TINY = ["--max_length=32", "--batch_size=8", "--epochs=1", "--max_train_examples=16",
        "--max_test_examples=8"]
LORA_RANK = 4


def _command(root, *args):
    return [TRAINER, *TINY, *args, f"--model_dir={root / 'run'}",
            f"--export_dir={root / 'exports'}", "--model_name=tiny"]


def _write_conll(path, sentences):
    lines = []
    for sentence in sentences:
        lines += [f"{token}\t{tag}" for token, tag in zip(sentence.tokens, sentence.tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The two CLI runs, started together: {"classification", "token"} ->
    (root, CompletedProcess, results.json)."""
    classification_root = tmp_path_factory.mktemp("classification")
    token_root = tmp_path_factory.mktemp("token")
    wnut = load_wnut16()
    conll_dir = token_root / "wnut_small"
    conll_dir.mkdir()
    _write_conll(conll_dir / "train.txt", wnut.train[:24])
    _write_conll(conll_dir / "dev.txt", wnut.validation[:8])
    _write_conll(conll_dir / "test.txt", wnut.test[:12])
    commands = {
        "classification": _command(
            classification_root, f"--dataset={FIXTURE}", "--extend_positions_to=576",
            "--extension_method=copy", "--eval_full_length", "--learning_rate=1e-4",
            "--gradient_accumulation_steps=2"),
        "token": _command(
            token_root, "--task=token_classification", f"--dataset={conll_dir}",
            f"--lora_rank={LORA_RANK}", "--strategy=mirrored", "--learning_rate=1e-3",
            "--max_test_examples=12"),
    }
    roots = {"classification": classification_root, "token": token_root}
    results = run_python_together(list(commands.values()))
    return {name: (roots[name], result, json.loads((roots[name] / "run" / "results.json").read_text()))
            for name, result in zip(commands, results)}


@pytest.fixture(scope="module")
def classification_run(runs):
    return runs["classification"]


@pytest.fixture(scope="module")
def token_run(runs):
    return runs["token"]


def test_classification_results_json(classification_run):
    root, result, results = classification_run
    assert "Test accuracy by evaluation length: 32:" in result.stdout
    assert "Traceback" not in result.stderr
    command = (root / "run" / "command.txt").read_text()
    assert command.startswith("python trainers/finetune_bert.py --max_length=32 ")
    assert "--extension_method=copy" in command
    assert results["task"] == "classification"
    assert results["checkpoint"] == str(default_checkpoint())
    assert results["max_length"] == 32 and results["lora_rank"] == 0
    assert results["extend_positions_to"] == 576 and results["extension_method"] == "copy"
    assert results["positions"] == "extended from 512 to 576 positions by copy"
    assert set(results["test_accuracy"]) == {"32", "full"}
    assert all(0.0 <= v <= 1.0 for v in results["test_accuracy"].values())
    assert results["dataset"]["counts"] == {"train": 16, "validation": 8, "test": 8}
    assert results["dataset"]["class_names"] == ["neg", "pos"]
    assert results["train_seconds"] > 0 and results["examples_per_second"] > 0
    assert results["device"].startswith("CPU")
    assert results["export"] == str(root / "exports" / "tiny" / "1")
    assert results["serve_max_length"] == 576
    assert results["trainable_parameters"] == results["total_parameters"]  # full fine-tune
    assert results["flags"]["eval_full_length"] is True


def test_token_classification_results_json(token_run):
    _, result, results = token_run
    assert "Test token accuracy" in result.stdout and "Traceback" not in result.stderr
    assert results["task"] == "token_classification"
    # --max_train_examples=16 keeps the first 16 of the 24 training sentences.
    assert results["dataset"]["counts"] == {"train": 16, "validation": 8, "test": 12}
    assert results["dataset"]["counts_before_limits"]["train"] == 24
    label_names = results["dataset"]["label_names"]
    assert label_names[0] == "O" and all(n[:2] in ("B-", "I-") for n in label_names[1:])
    assert 0.0 <= results["token_accuracy"] <= 1.0
    assert 0.0 <= results["entity_f1"] <= 1.0
    assert results["entity_scores"]["overall"]["f1"] == results["entity_f1"]
    assert set(results["entity_scores"]["per_type"]) <= {n[2:] for n in label_names[1:]}
    assert results["extend_positions_to"] is None and results["positions"] == "not extended"
    assert results["num_replicas"] >= 1 and results["flags"]["strategy"] == "mirrored"
    # LoRA: only the adapters (A [384, 12, r] + B [r, 32] on 12 projections) and the head.
    num_labels = len(label_names)
    assert results["lora_rank"] == LORA_RANK
    assert results["trainable_parameters"] == (
        12 * (384 * 12 * LORA_RANK + LORA_RANK * 32) + 384 * num_labels + num_labels
    )


def test_keras_files_load_after_import_kerapos_alone(classification_run, token_run):
    paths = [run[0] / "run" / "model.keras" for run in (classification_run, token_run)]
    assert keras_files_in_fresh_process(paths) == [keras_file_summary(p) for p in paths]


def test_gradient_accumulation_reaches_the_optimizer(token_run, classification_run):
    def optimizer_config(root):
        with zipfile.ZipFile(root / "run" / "model.keras") as archive:
            config = json.loads(archive.read("config.json"))
        return config["compile_config"]["optimizer"]["config"]

    assert optimizer_config(classification_run[0])["gradient_accumulation_steps"] == 2
    assert optimizer_config(token_run[0])["gradient_accumulation_steps"] is None


def _scalars(directory, tag):
    events = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    events.Reload()
    return [float(tf.make_ndarray(event.tensor_proto)) for event in events.Tensors(tag)]


def test_tensorboard_scalars_and_hparams(classification_run, token_run):
    for root, _, _ in (classification_run, token_run):
        logs = root / "run" / "logs"
        train = EventAccumulator(str(logs / "train"), size_guidance={"tensors": 0})
        train.Reload()
        for tag in ("epoch_loss", "epoch_accuracy", "batch_loss", "batch_learning_rate"):
            assert tag in train.Tags()["tensors"], (tag, train.Tags()["tensors"])
        losses = _scalars(logs / "train", "epoch_loss")
        assert len(losses) == 1 and np.isfinite(losses).all()
        assert max(_scalars(logs / "train", "batch_learning_rate")) > 0
        assert len(_scalars(logs / "validation", "epoch_accuracy")) == 1
        root_events = EventAccumulator(str(logs))
        root_events.Reload()
        assert "_hparams_/session_start_info" in root_events.Tags()["tensors"]
    classification_logs = classification_run[0] / "run" / "logs" / "test"
    assert _scalars(classification_logs, "test_accuracy_full") == pytest.approx(
        [classification_run[2]["test_accuracy"]["full"]])
    token_logs = token_run[0] / "run" / "logs" / "test"
    assert _scalars(token_logs, "test_entity_f1") == pytest.approx([token_run[2]["entity_f1"]])


@pytest.fixture(scope="module")
def served(runs, tmp_path_factory):
    """Both SavedModels run on serving_texts() (and a 0-batch) in one process
    importing only tensorflow + tensorflow_text: {"classification", "token"}
    -> {output name: array}."""
    root = tmp_path_factory.mktemp("served")
    texts, _ = serving_texts()
    np.save(root / "texts.npy", texts.numpy(), allow_pickle=True)
    exports = {name: run[2]["export"] for name, run in runs.items()}
    script = textwrap.dedent(f"""
        import sys
        import numpy as np, tensorflow as tf, tensorflow_text
        directory = {str(root)!r}
        texts = np.load(directory + "/texts.npy", allow_pickle=True)
        for name, export in {exports!r}.items():
            serve = tf.saved_model.load(export).signatures["serving_default"]
            out = serve(text=tf.constant(list(texts), tf.string))
            empty = serve(text=tf.constant([], tf.string))
            for output, value in out.items():
                np.save(f"{{directory}}/{{name}}.{{output}}.npy", value.numpy(), allow_pickle=True)
                assert empty[output].shape[0] == 0 and empty[output].dtype == value.dtype, output
        assert not [m for m in sys.modules if m.startswith(("kerapos", "keras_hub"))]
        print("ok")
    """)
    result = run_python(["-c", script])
    assert result.stdout.split() == ["ok"]
    outputs = {name: {} for name in exports}
    for path in root.glob("*.*.npy"):
        name, output, _ = path.name.split(".")
        outputs[name][output] = np.load(path, allow_pickle=True)
    return outputs


@pytest.fixture(scope="module")
def tokenizer():
    return load_bert_checkpoint(default_checkpoint())[1]


def test_exports_carry_warmup_requests_that_replay(runs, served):
    for name, run in runs.items():
        assert_warmup_replays(run[2]["export"], output_names=tuple(served[name]))


def test_classifier_export_in_fresh_process_matches_keras_model(classification_run, served, tokenizer):
    root, _, results = classification_run
    outputs = served["classification"]
    assert outputs["probabilities"].dtype == np.float32 and outputs["class_id"].dtype == np.int64
    model = keras.saving.load_model(str(root / "run" / "model.keras"), compile=False)
    _, decoded = serving_texts()
    expected = np.stack([
        reference_probabilities(model, tokenizer, text, results["serve_max_length"])
        for text in decoded
    ])
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["class_id"], expected.argmax(axis=1))


def test_token_classifier_export_in_fresh_process_matches_keras_model(token_run, served, tokenizer):
    root, _, results = token_run
    outputs = served["token"]
    model = keras.saving.load_model(str(root / "run" / "model.keras"), compile=False)
    _, decoded = serving_texts()
    expected = [
        reference_word_label_ids(model, tokenizer, text, results["serve_max_length"])
        for text in decoded
    ]
    check_token_outputs(outputs, decoded, expected, results["dataset"]["label_names"])


BAD_FLAGS = [
    (["--max_length=2"], "--max_length must be an integer >= 3, got 2"),
    (["--strategy=mirrored", "--gradient_accumulation_steps=2"], "use --strategy=default"),
    (["--task=token_classification", "--dataset=/no/such/dir"], "/no/such/dir"),
    (["--checkpoint={bad}"], "lacks model.safetensors, vocab.txt"),
    (["--max_length=600"], "add --extend_positions_to=600"),
]


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Every BAD_FLAGS command line run as `python trainers/finetune_bert.py ...`
    (one warm process, a fork per case): [(its own directory, CompletedProcess)]."""
    root = tmp_path_factory.mktemp("bad_flags")
    bad_checkpoint = root / "not_bert"
    bad_checkpoint.mkdir()
    (bad_checkpoint / "config.json").write_text('{"model_type": "bert"}')
    directories = [root / f"case{index}" for index in range(len(BAD_FLAGS))]
    commands = [
        [*TINY, f"--dataset={FIXTURE}", f"--model_dir={directory / 'run'}",
         f"--export_dir={directory / 'exports'}", *[arg.format(bad=bad_checkpoint) for arg in args]]
        for (args, _), directory in zip(BAD_FLAGS, directories)
    ]
    return list(zip(directories, run_script_cases(TRAINER, commands, root / "output", timeout=300)))


@pytest.mark.parametrize("args, message", BAD_FLAGS)
def test_bad_flags_and_checkpoints_exit_2_without_traceback(args, message, bad_flag_runs):
    directory, result = bad_flag_runs[BAD_FLAGS.index((args, message))]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: " in result.stderr and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (directory / "run" / "results.json").exists()
    assert not (directory / "exports").exists()
