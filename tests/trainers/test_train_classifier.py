"""The classifier trainer end to end on the committed IMDb fixture (tiny config).

One real run through the absl CLI (flags -> training -> TensorBoard ->
results.json -> SavedModel), then checks of what it wrote, including the
export reloaded in a fresh process that imports only TensorFlow.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import FIXTURE
from helpers import REPO_ROOT
from helpers import keras_file_summary
from helpers import keras_files_in_fresh_process
from helpers import run_python
from helpers import run_script_cases
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kerapos.data import text_pipeline
from kerapos.data.imdb import load_classification_data
from kerapos.training.classification import ClassifierOptions
from kerapos.training.classification import run

TRAINER = "trainers/train_classifier.py"
TINY = [
    f"--dataset={FIXTURE}", "--max_length=32", "--eval_max_lengths=16,64",
    "--vocab_size=2000", "--batch_size=16", "--num_layers=1", "--hidden_dim=32",
    "--num_heads=2", "--intermediate_dim=64", "--learning_rate=3e-3",
]
TEXTS = [
    "An absolute masterpiece, the acting was wonderful and I loved every minute.",
    "Dreadful. The plot made no sense and the dialogue was painfully bad.",
    "",
    "   \t  ",
    "great " * 20000,  # 120,000 characters
    "\U0001F600\U0001F3AC loved it \u2764\ufe0f",
]


def _tiny_options(tmp_path, **overrides):
    values = dict(
        model="transformer", position="rotary", dataset=FIXTURE, max_length=32,
        eval_max_lengths=(16, 64), vocab_size=2000, batch_size=16, epochs=1,
        num_layers=1, hidden_dim=32, num_heads=2, intermediate_dim=64,
        learning_rate=3e-3, model_dir=str(tmp_path / "run"),
        export_dir=str(tmp_path / "exports"), model_name="tiny",
    )
    values.update(overrides)
    return ClassifierOptions(**values)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    result = run_python([
        TRAINER, *TINY, "--model=transformer", "--position=rotary", "--epochs=2",
        f"--model_dir={root / 'run'}", f"--export_dir={root / 'exports'}", "--model_name=tiny",
    ])
    return root, result


def test_cli_prints_accuracy_and_export_path(cli_run):
    root, result = cli_run
    assert "Test accuracy by evaluation length" in result.stdout
    assert re.search(r"\nTime: training \d+ s \(\d+ examples/s\), evaluation \d+ s on CPU "
                     r"\(\d+ cores\), float32 matmul \d+ GFLOP/s\n", result.stdout), result.stdout
    assert f"SavedModel for TF Serving: {root / 'exports' / 'tiny' / '1'}" in result.stdout
    assert "Traceback" not in result.stderr
    # kerapos' progress lines go to stdout as plain lines; absl INFO lines of
    # the SavedModel writer stay out of the output by default.
    assert "\n[kerapos] test accuracy @    16 tokens: " in result.stdout
    assert f"\n[kerapos] exported {root / 'exports' / 'tiny' / '1'}\n" in result.stdout
    assert "Writing fingerprint" not in result.stdout + result.stderr
    command = (root / "run" / "command.txt").read_text()
    assert command.startswith(f"python trainers/train_classifier.py --dataset={FIXTURE} ")


def test_results_json(cli_run):
    root, _ = cli_run
    results = json.loads((root / "run" / "results.json").read_text())
    assert results["model"] == "transformer" and results["position"] == "rotary"
    assert results["max_length"] == 32
    assert set(results["test_accuracy"]) == {"16", "64", "full"}
    assert all(0.0 <= v <= 1.0 for v in results["test_accuracy"].values())
    counts = results["dataset"]["counts"]
    assert counts["train"] > 0 and counts["validation"] > 0 and counts["test"] > 0
    assert results["train_seconds"] > 0 and results["examples_per_second"] > 0
    assert results["evaluate_seconds"] > 0
    assert results["export"].endswith(os.path.join("tiny", "1"))
    assert results["flags"]["epochs"] == 2 and results["epochs_run"] == 2
    assert results["longest_test_tokens"] > 64  # the fixture has long reviews


def test_tensorboard_scalars_hparams_and_image(cli_run):
    root, _ = cli_run
    logs = root / "run" / "logs"
    train = EventAccumulator(str(logs / "train"), size_guidance={"tensors": 0})
    train.Reload()
    tags = train.Tags()["tensors"]
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate", "batch_loss",
                "batch_learning_rate"):
        assert tag in tags, (tag, tags)
    losses = [float(tf.make_ndarray(e.tensor_proto)) for e in train.Tensors("epoch_loss")]
    assert len(losses) == 2 and all(np.isfinite(losses))
    validation = EventAccumulator(str(logs / "validation"))
    validation.Reload()
    assert "epoch_accuracy" in validation.Tags()["tensors"]
    root_events = EventAccumulator(str(logs))
    root_events.Reload()
    root_tags = root_events.Tags()["tensors"]
    assert "_hparams_/session_start_info" in root_tags, root_tags
    assert "position_similarity" in root_tags
    test_events = EventAccumulator(str(logs / "test"))
    test_events.Reload()
    assert "test_accuracy_full" in test_events.Tags()["tensors"]


def test_export_in_fresh_process_matches_keras_model(cli_run, tmp_path):
    root, _ = cli_run
    export = root / "exports" / "tiny" / "1"
    assert (export / "saved_model.pb").is_file()
    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(TEXTS))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        assert "kerapos" not in sys.modules and "tensorflow_text" not in sys.modules
        texts = json.load(open({str(texts_file)!r}))
        serve = tf.saved_model.load({str(export)!r}).signatures["serving_default"]
        out = serve(text=tf.constant(texts + [b"\\xff\\xfe invalid utf-8 \\xc3"]))
        empty = serve(text=tf.constant([], dtype=tf.string))
        assert empty["probabilities"].shape == (0, 2) and empty["class_id"].shape == (0,)
        np.save({str(tmp_path / 'probabilities.npy')!r}, out["probabilities"].numpy())
        np.save({str(tmp_path / 'class_id.npy')!r}, out["class_id"].numpy())
        print(out["probabilities"].dtype.name, out["class_id"].dtype.name)
    """)
    result = run_python(["-c", script])
    assert result.stdout.split() == ["float32", "int64"]
    probabilities = np.load(tmp_path / "probabilities.npy")
    class_id = np.load(tmp_path / "class_id.npy")
    assert probabilities.shape == (len(TEXTS) + 1, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(class_id, probabilities.argmax(axis=1))
    # Same answers as the trained Keras model (the .keras text model).
    keras_model = keras.saving.load_model(str(root / "run" / "classifier.keras"))
    expected = np.asarray(keras_model(np.array(TEXTS)))
    np.testing.assert_allclose(probabilities[: len(TEXTS)], expected, atol=1e-5)


def test_keras_file_loads_after_import_kerapos_alone(cli_run):
    root, _ = cli_run
    path = root / "run" / "classifier.keras"
    assert keras_files_in_fresh_process([path]) == [keras_file_summary(path)]


def test_second_export_gets_version_2_and_mirrored_strategy_runs(cli_run, tmp_path):
    # The CLI run exported version 1; a second run into (a copy of) its
    # export directory gets version 2.
    root, _ = cli_run
    export_dir = tmp_path / "exports"
    shutil.copytree(root / "exports", export_dir)
    assert [p.name for p in (export_dir / "tiny").iterdir()] == ["1"]
    second = run(_tiny_options(tmp_path, model_dir=str(tmp_path / "b"), export_dir=str(export_dir),
                               strategy="mirrored", model="lstm", position="learned"))
    assert pathlib.Path(second["export"]).name == "2"
    assert sorted(p.name for p in (export_dir / "tiny").iterdir()) == ["1", "2"]
    assert second["num_replicas"] == 2  # the two logical CPUs of tests/conftest.py
    assert set(second["test_accuracy"]) == {"16", "64", "full"}
    assert second["learned_extension"] == "interpolate"


def test_one_pass_lstm_scores_equal_one_evaluation_per_length(tmp_path):
    # The LSTM with sinusoidal positions is scored at every length in one pass
    # over untruncated reviews; here each length is scored on its own, from
    # classifier.keras, as the trainer did before.
    results = run(_tiny_options(tmp_path, model="lstm", position="sinusoidal", dropout=0.3,
                                word_dropout=0.3))
    text_model = keras.saving.load_model(tmp_path / "run" / "classifier.keras", safe_mode=True)
    classifier = text_model.get_layer("lstm_sinusoidal")
    vectorizer = keras.layers.TextVectorization(
        vocabulary=text_model.get_layer("vectorizer").get_vocabulary(), ragged=True)
    test = load_classification_data(FIXTURE, validation_fraction=0.1, seed=0).test
    token_ids = text_pipeline.tokenize(vectorizer, test.texts)
    for key, length in [("16", 16), ("64", 64), ("full", None)]:
        ids = text_pipeline.pad_batch(text_pipeline.truncate(token_ids, length))
        predicted = np.argmax(classifier.predict(ids, verbose=0), axis=-1)
        # float rounding may flip a prediction at probability 0.5, no more
        assert abs(results["test_accuracy"][key] - np.mean(predicted == test.labels)) <= (
            1.0 / len(test.labels)), key


def test_main_job_resumes_after_kill(tmp_path):
    # `make run`'s flagfile, shrunk to the fixture by the flags after it.
    command = [
        sys.executable, TRAINER, "--flagfile=trainers/configs/main.flags", *TINY, "--epochs=4",
        "--patience=100", f"--model_dir={tmp_path / 'run'}",
        f"--export_dir={tmp_path / 'exports'}", "--model_name=resume",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    backup = tmp_path / "run" / "backup"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (backup / "training_metadata.json").exists():  # a complete backup
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "exports" / "resume").exists() or not any(
        p.name.isdigit() for p in (tmp_path / "exports" / "resume").iterdir())

    run_python(command[1:])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0 < results["epochs_run"] < 4, results["epochs_run"]  # resumed, not restarted
    assert (results["model"], results["position"], results["flags"]["word_dropout"]) == (
        "lstm", "sinusoidal", 0.3)
    assert not backup.exists() or not any(backup.iterdir())  # removed after a finished run


BAD_FLAGS = [
    (["--position=bogus"], "none"),
    (["--model=lstm", "--position=rotary"], "use --model=transformer"),
    (["--strategy=gpu_cluster"], "mirrored"),
    (["--dataset=/no/such/file.json"], "/no/such/file.json"),
    (["--position_config={not json"], "--position_config must be a JSON object"),
    (["--eval_max_lengths=128,abc"], "--eval_max_lengths takes integers"),
    (["--max_length=0"], "--max_length must be an integer >= 1, got 0"),
    (["--word_dropout=1"], "--word_dropout must be a number >= 0.0 and < 1.0, got 1.0"),
]


def _bad_flags_command(args, directory):
    return [*TINY, f"--model_dir={directory}", f"--export_dir={directory}", *args]


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Every BAD_FLAGS command line run as `python trainers/train_classifier.py ...`
    (one warm process, a fork per case): [(its own directory, CompletedProcess)]."""
    root = tmp_path_factory.mktemp("bad_flags")
    directories = [root / f"case{index}" for index in range(len(BAD_FLAGS))]
    commands = [_bad_flags_command(args, directory)
                for (args, _), directory in zip(BAD_FLAGS, directories)]
    return list(zip(directories, run_script_cases(TRAINER, commands, root / "output", timeout=300)))


@pytest.mark.parametrize("args, message", BAD_FLAGS)
def test_bad_flags_fail_fast_with_clear_message(args, message, bad_flag_runs):
    directory, result = bad_flag_runs[BAD_FLAGS.index((args, message))]
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (directory / "results.json").exists()


def test_a_bad_flag_run_is_what_a_fresh_process_gives(bad_flag_runs):
    # tests/trainers/cli_runner.py against `python trainers/train_classifier.py ...`
    # itself, on the last case: had `--max_length=0` of the case before leaked
    # into it, its message would list that problem too.
    assert BAD_FLAGS[-2][0] == ["--max_length=0"]
    directory, warm = bad_flag_runs[-1]
    fresh = run_python([TRAINER, *_bad_flags_command(BAD_FLAGS[-1][0], directory)], check=False)
    assert (warm.returncode, warm.stdout, warm.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert warm.returncode == 2 and "max_length" not in warm.stderr
