"""`--strategy=multi_worker`: two real CLI worker processes on 127.0.0.1.

Each worker runs `trainers/train_classifier.py` with its own `TF_CONFIG`
(ports found free at run time) on the committed IMDb fixture with a tiny
config. The processes are killed if they outlive a time limit, so a
collective that hangs fails the test instead of hanging CI.
"""

import json
import os
import re
import signal
import socket
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
from helpers import run_python

from kerapos.data import text_pipeline
from kerapos.data.imdb import load_classification_data
from kerapos.training.strategy import enable_multi_worker_fit
from kerapos.training.strategy import get_strategy
from kerapos.training.strategy import is_multi_worker

TRAINER = "trainers/train_classifier.py"
TIME_LIMIT_SECONDS = 420
TINY = [
    f"--dataset={FIXTURE}", "--max_length=32", "--eval_max_lengths=16,32", "--epochs=1",
    "--batch_size=8", "--vocab_size=500", "--num_layers=1", "--hidden_dim=32",
    "--num_heads=2", "--intermediate_dim=64", "--strategy=multi_worker",
]
MODELS = {
    "lstm": ["--model=lstm", "--position=sinusoidal"],
    "transformer": ["--model=transformer", "--position=rotary"],
}


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _run_workers(args, log_dir, num_workers=2):
    """Runs the trainer once per worker; returns [(exit code, stdout, stderr)].

    Output goes to files (a full pipe would block a worker, and with it the
    other one in the next collective); all workers share one deadline.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(num_workers)]}
    processes, logs = [], []
    for index in range(num_workers):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        stdout, stderr = log_dir / f"worker-{index}.out", log_dir / f"worker-{index}.err"
        with open(stdout, "w") as out, open(stderr, "w") as err:
            processes.append(subprocess.Popen(
                [sys.executable, TRAINER, *args], cwd=REPO_ROOT,
                env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
                stdout=out, stderr=err, start_new_session=True,
            ))
        logs.append((stdout, stderr))
    deadline = time.monotonic() + TIME_LIMIT_SECONDS
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers ran past {TIME_LIMIT_SECONDS}s (a hung collective?)")
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return [
        (process.returncode, stdout.read_text(), stderr.read_text())
        for process, (stdout, stderr) in zip(processes, logs)
    ]


def _saved_model_accuracies(exports, split, tmp_path):
    """Test accuracy of each SavedModel in `exports`, in one process that
    imports TensorFlow only."""
    examples = tmp_path / "test.json"
    examples.write_text(json.dumps({"texts": list(split.texts), "labels": list(map(int, split.labels))}))
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        assert "kerapos" not in sys.modules
        examples = json.load(open({str(examples)!r}))
        for export in {[str(export) for export in exports]!r}:
            serve = tf.saved_model.load(export).signatures["serving_default"]
            predicted = serve(text=tf.constant(examples["texts"]))["class_id"].numpy()
            print(sum(int(p == l) for p, l in zip(predicted, examples["labels"])), len(predicted))
    """)
    lines = run_python(["-c", script], timeout=300).stdout.splitlines()
    accuracies = []
    for line in lines:
        correct, count = map(int, line.split())
        assert count == len(split.labels)
        accuracies.append(correct / count)
    assert len(accuracies) == len(exports)
    return accuracies


def _accuracy_line(stdout):
    return re.search(r"Test accuracy by evaluation length: .*", stdout).group(0)


@pytest.fixture(scope="module")
def worker_runs(tmp_path_factory):
    """Each model of MODELS trained by two CLI workers: model -> (run dir,
    export dir, [(exit code, stdout, stderr)] per worker, accuracy of the
    chief's export served by TensorFlow alone)."""
    runs = {}
    for model in sorted(MODELS):
        root = tmp_path_factory.mktemp(model)
        run_dir, export_dir = root / "run", root / "exports"
        outputs = _run_workers([
            *TINY, *MODELS[model], f"--model_dir={run_dir}", f"--export_dir={export_dir}",
            "--model_name=tiny",
        ], log_dir=root)
        runs[model] = [run_dir, export_dir, outputs]
    exported = {model: run[1] / "tiny" / "1" for model, run in runs.items()
                if (run[1] / "tiny" / "1" / "saved_model.pb").is_file()}
    test = load_classification_data(FIXTURE).test
    accuracies = dict(zip(exported, _saved_model_accuracies(
        list(exported.values()), test, tmp_path_factory.mktemp("served"))))
    return {model: (*run, accuracies.get(model)) for model, run in runs.items()}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_two_workers_train_and_only_the_chief_writes(model, worker_runs):
    run_dir, export_dir, outputs, exported_accuracy = worker_runs[model]
    for index, (code, stdout, stderr) in enumerate(outputs):
        assert code == 0, f"worker {index} exit {code}\n{stdout[-3000:]}\n{stderr[-3000:]}"
        assert "Traceback" not in stderr

    results = json.loads((run_dir / "results.json").read_text())
    assert results["num_replicas"] == 2
    assert results["flags"]["strategy"] == "multi_worker"
    assert results["epochs_run"] == 1
    assert set(results["test_accuracy"]) == {"16", "32", "full"}
    assert all(0.0 <= v <= 1.0 for v in results["test_accuracy"].values())

    # One export, by the chief; the worker exported nothing.
    assert [p.name for p in (export_dir / "tiny").iterdir()] == ["1"]
    assert (export_dir / "tiny" / "1" / "saved_model.pb").is_file()
    assert results["export"] == str(export_dir / "tiny" / "1")
    assert "Not the chief worker: results.json and the export are written by worker 0." in outputs[1][1]
    worker_files = {p.name for p in (run_dir / "worker-1").iterdir()}
    assert worker_files == {"logs"}, worker_files  # its own TensorBoard logs only
    assert (run_dir / "best.weights.h5").is_file() and (run_dir / "classifier.keras").is_file()

    # The chief's export, reloaded in a fresh TensorFlow-only process, scores
    # the whole test set as results.json reports at its serving length of 32
    # tokens (one review of slack for float ties).
    test = load_classification_data(FIXTURE).test
    assert abs(exported_accuracy - results["test_accuracy"]["32"]) <= 1 / len(test.labels) + 1e-6

    # Gradients were all-reduced: both workers end with the same weights and
    # so report the same accuracy at every length.
    assert _accuracy_line(outputs[0][1]) == _accuracy_line(outputs[1][1])


def _tiny_classifier():
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(50, 8),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # bucketed: no fixed count
def test_bucketed_batches_split_evenly_and_train_under_mirrored_on_two_cpus():
    # Across workers, tf.distribute splits every global batch the same way it
    # splits it here over the 2 logical CPUs of tests/conftest.py.
    strategy = get_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2 and not is_multi_worker(strategy)
    lengths = [1 + (i * 7) % 45 for i in range(40)]  # two length buckets (boundary 32)
    token_ids = tf.ragged.constant([[1 + i % 7] * n for i, n in enumerate(lengths)], dtype=tf.int64)
    data = text_pipeline.make_token_dataset(token_ids, np.arange(40) % 2, batch_size=8)
    whole_batches = list(data.as_numpy_iterator())
    slices = [
        [x.numpy() for x in strategy.experimental_local_results(ids)]
        for ids, _ in strategy.experimental_distribute_dataset(data)
    ]
    assert len(slices) == len(whole_batches)  # one step per global batch
    for (ids, _), (first, second) in zip(whole_batches, slices):
        assert first.shape[1] == second.shape[1] == ids.shape[1]  # same width on both
        assert len(first) - len(second) in (0, 1)
        np.testing.assert_array_equal(np.concatenate([first, second]), ids)

    with strategy.scope():
        model = _tiny_classifier()
    train_step = model.train_step
    enable_multi_worker_fit(model, strategy, data.element_spec)
    assert model.train_step == train_step  # only multi-worker runs are changed
    history = model.fit(data, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2
    assert all(np.ndim(value) == 0 and np.isfinite(value) for value in history.history["loss"])


def test_multi_worker_is_recognised_only_across_workers():
    assert not is_multi_worker(tf.distribute.get_strategy())
    assert not is_multi_worker(get_strategy("mirrored"))
    model = _tiny_classifier()
    enable_multi_worker_fit(model, tf.distribute.get_strategy(), None)
    assert "train_step" not in vars(model) and "_maybe_symbolic_build" not in vars(model)
