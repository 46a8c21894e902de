"""What TensorBoard itself serves for a classifier run killed after its first
epoch and for a finished one (the real `tensorboard` binary, its HTTP data API).

One module fixture trains both on the committed fixture at once (the tiny
configuration of tests/trainers/test_train_classifier.py): `killed` is
`make run`'s flagfile shrunk to the fixture, SIGKILLed once its first epoch's
summaries are on disk; `finished` trains two epochs to the end. One
`tensorboard --logdir` over both then answers the scalars, hparams and images
plugins' routes, as the dashboard asks them.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from helpers import FIXTURE
from helpers import REPO_ROOT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kerapos.training import callbacks as kp_callbacks
from kerapos.training import skeleton

TRAINER = "trainers/train_classifier.py"
TINY = [
    f"--dataset={FIXTURE}", "--max_length=32", "--eval_max_lengths=16,64",
    "--vocab_size=2000", "--batch_size=16", "--num_layers=1", "--hidden_dim=32",
    "--num_heads=2", "--intermediate_dim=64", "--learning_rate=3e-3",
]
TENSORBOARD = os.path.join(os.path.dirname(sys.executable), "tensorboard")
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def _trainer(args, root, name):
    """`python trainers/train_classifier.py ARGS` into `root/name`, its
    output into `root/../name.log`."""
    with open(root.parent / f"{name}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, TRAINER, *args, f"--model_dir={root / name}",
             f"--export_dir={root.parent / 'exports'}", f"--model_name={name}"],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _log(root, name):
    return (root.parent / f"{name}.log").read_text()[-4000:]


def _first_epoch_done(run):
    """The first epoch's relation image is on disk (the last summary of an
    epoch: the task's callbacks run after TensorBoard's), or, should it never
    come, the second epoch's backup is (every summary of the first epoch's
    end was written before it)."""
    metadata = run / "backup" / "training_metadata.json"
    try:
        if json.loads(metadata.read_text())["epoch"] >= 2:
            return True
    except (OSError, ValueError, KeyError):
        pass
    if not (run / "logs").is_dir():
        return False
    events = EventAccumulator(str(run / "logs"), size_guidance={"tensors": 0})
    events.Reload()
    return "position_similarity" in events.Tags()["tensors"]


def _start_tensorboard(logdir):
    process = subprocess.Popen(
        [TENSORBOARD, f"--logdir={logdir}", "--host=127.0.0.1", "--port=0",
         "--load_fast=false", "--reload_interval=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    lines = []
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        found = re.search(r"http://[^\s/]+:(\d+)/", line)
        if found:
            return process, f"http://127.0.0.1:{found.group(1)}"
    process.kill()
    raise AssertionError("tensorboard did not start:\n" + "".join(lines))


class Board:
    """GET/POST JSON against a running tensorboard."""

    def __init__(self, url):
        self.url = url

    def get(self, route, **query):
        address = f"{self.url}/data/plugin/{route}"
        if query:
            address += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(address, timeout=30) as response:
            return json.loads(response.read())

    def post(self, route, body):
        request = urllib.request.Request(
            f"{self.url}/data/plugin/{route}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def experiment(self):
        return self.post("hparams/experiment",
                         {"experimentName": "", "hparamsLimit": 1000, "includeMetrics": True})

    def session_groups(self):
        """As the HParams table asks: every status, all hparams and metrics."""
        experiment = self.experiment()
        return self.post("hparams/session_groups", {
            "experimentName": "",
            "allowedStatuses": ALL_STATUSES,
            "colParams": [{"hparam": h["name"]} for h in experiment["hparamInfos"]]
            + [{"metric": m["name"]} for m in experiment.get("metricInfos", [])],
            "startIndex": 0, "sliceSize": 100,
        })["sessionGroups"]


class _FailingTask:
    def hparams(self):
        return kp_callbacks.HParams({"model": "lstm", "position": "none", "batch_size": 8},
                                    compared=("model", "position"))


def _failed_run(directory):
    """What the skeleton writes for a run that raised: its session, ended with failure."""
    import tensorflow as tf

    context = skeleton.Context(tf.distribute.get_strategy(), directory, True, directory)
    with pytest.raises(RuntimeError):
        with skeleton.hparams_session(_FailingTask(), context):
            raise RuntimeError("out of memory")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("live") / "runs"
    killed = _trainer(["--flagfile=trainers/configs/main.flags", *TINY, "--epochs=50",
                       "--patience=100"], root, "killed")
    finished = _trainer([*TINY, "--model=transformer", "--position=rotary", "--epochs=2"],
                        root, "finished")
    processes = [killed, finished]
    try:
        _failed_run(root / "failed")  # while they train
        deadline = time.time() + 300
        while killed.poll() is None and time.time() < deadline:
            if _first_epoch_done(root / "killed"):
                break
            time.sleep(0.2)
        assert killed.poll() is None, "the run ended before it was killed:\n" + _log(root, "killed")
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        assert finished.wait(timeout=300) == 0, _log(root, "finished")
        assert not (root / "killed" / "results.json").exists()
        assert (root / "finished" / "results.json").exists()
        tensorboard, url = _start_tensorboard(root)
        processes.append(tensorboard)
        board = Board(url)
        deadline = time.time() + 60
        wanted = {"killed/logs/validation", "finished/logs/validation", "finished/logs/test"}
        while time.time() < deadline:  # until it has loaded every run
            try:
                if wanted <= set(board.get("scalars/tags")):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        yield board
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _values(board, run, tag):
    return [point[2] for point in board.get("scalars/scalars", run=run, tag=tag)]


@pytest.mark.parametrize("name, epochs", [("killed", 1), ("finished", 2)])
def test_epoch_and_validation_curves(board, name, epochs):
    tags = board.get("scalars/tags")
    train, validation = tags[f"{name}/logs/train"], tags[f"{name}/logs/validation"]
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate", "batch_loss"):
        assert tag in train, (tag, sorted(train))
    for tag in ("epoch_loss", "epoch_accuracy"):
        assert tag in validation, (tag, sorted(validation))
    # the killed run: at least its first epoch (it may have run a few more)
    got = len(_values(board, f"{name}/logs/validation", "epoch_accuracy"))
    assert got >= epochs if name == "killed" else got == epochs
    assert len(_values(board, f"{name}/logs/train", "epoch_loss")) == got


def test_hparams_lists_both_runs_by_name(board):
    groups = {group["name"]: group for group in board.session_groups()}
    assert set(groups) == {"killed", "finished", "failed"}, list(groups)
    killed, = groups["killed"]["sessions"]
    finished, = groups["finished"]["sessions"]
    assert killed["name"] == "killed/logs" and finished["name"] == "finished/logs"
    # a killed run has no session end: listed, status unknown (running)
    assert killed.get("status", "STATUS_UNKNOWN") == "STATUS_UNKNOWN"
    assert finished["status"] == "STATUS_SUCCESS"
    assert groups["killed"]["hparams"]["model"] == "lstm"
    assert groups["killed"]["hparams"]["position"] == "sinusoidal"
    assert groups["finished"]["hparams"]["model"] == "transformer"
    assert groups["finished"]["hparams"]["position"] == "rotary"
    # the metrics come from the runs' subdirectories
    def metric(session, group, tag):
        for value in session.get("metricValues", []):
            if value["name"].get("group", "") == group and value["name"]["tag"] == tag:
                return value["value"]
        return None
    assert 0.0 <= metric(killed, "validation", "epoch_accuracy") <= 1.0
    assert 0.0 <= metric(finished, "validation", "epoch_accuracy") <= 1.0
    assert 0.0 <= metric(finished, "test", "test_accuracy_full") <= 1.0
    assert metric(killed, "test", "test_accuracy_full") is None


def test_hparams_shows_model_and_position_first(board):
    infos = board.experiment()["hparamInfos"]
    names = [info["name"] for info in infos]
    # TensorBoard's table checks the first five columns it is sent (the
    # backend sorts by `differs` first, then by name)
    assert names[:2] == ["model", "position"], names
    assert all(info.get("differs") for info in infos[:2])
    assert len(names) > 5  # so the order matters
    metrics = [(m["name"].get("group", ""), m["name"]["tag"])
               for m in board.experiment()["metricInfos"]]
    assert metrics[0] == ("validation", "epoch_accuracy"), metrics


@pytest.mark.parametrize("name, steps", [("killed", 1), ("finished", 2)])
def test_relation_image_from_the_first_epoch(board, name, steps):
    tags = board.get("images/tags")
    assert "position_similarity" in tags.get(f"{name}/logs", {}), tags
    images = board.get("images/images", run=f"{name}/logs", tag="position_similarity", sample=0)
    got = [image["step"] for image in images]
    assert got[0] == 1 and (len(got) >= steps if name == "killed" else len(got) == steps), got
    image = f"{board.url}/data/plugin/images/individualImage?{images[0]['query']}"
    with urllib.request.urlopen(image, timeout=30) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_failed_run_ends_its_session_with_the_error(board):
    groups = {group["name"]: group for group in board.session_groups()}
    failed, = groups["failed"]["sessions"]
    assert failed["name"] == "failed/logs" and failed["status"] == "STATUS_FAILURE"
    assert failed["endTimeSecs"] >= failed["startTimeSecs"] > 0
    assert "error" in board.get("text/tags")["failed/logs"]
    text = board.get("text/text", run="failed/logs", tag="error")
    assert "RuntimeError: out of memory" in json.dumps(text)


def test_tensorboard_callback_flushes_every_writer_at_epoch_end(tmp_path):
    # Keras' own writers flush on a full queue (10 events), every two minutes
    # or when a `with writer.as_default()` block ends (TensorFlow 2.21), so the
    # live runs above cannot tell this flush is there; this checks it is.
    import keras

    callback = kp_callbacks.flush_at_epoch_end(keras.callbacks.TensorBoard(str(tmp_path)))
    assert type(callback) is keras.callbacks.TensorBoard
    flushed = []

    class Writer:
        def __init__(self, name):
            self.name = name

        def flush(self):
            flushed.append(self.name)

    callback._writers = {"train": Writer("train"), "val": Writer("val")}
    callback.on_epoch_end(0, logs={})
    assert sorted(flushed) == ["train", "val"]
