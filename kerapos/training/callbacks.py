"""Callbacks and TensorBoard writers shared by every kerapos trainer."""

import dataclasses
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from kerapos.utils import atomic


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the current learning rate into the batch and epoch logs.

    Placed before `keras.callbacks.TensorBoard` in the callback list, it makes
    TensorBoard write `batch_learning_rate` per step (Keras itself logs the
    learning rate per epoch only).
    """

    def _learning_rate(self):
        optimizer = self.model.optimizer
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(logs, dict):
            logs["learning_rate"] = self._learning_rate()


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup files are replaced, never rewritten in place.

    Keras 3.15 writes `latest.weights.h5` in place, so a kill during that write
    leaves a file the rerun cannot open ("bad object header version number";
    caught by tests/trainers/test_train_classifier.py::test_main_job_resumes_after_kill).
    Here the weights and then the metadata are each written beside the
    backup and renamed over it (`kerapos.utils.atomic`): a kill keeps the last
    complete backup (at worst new weights with the previous epoch count, so
    one epoch reruns).
    """

    def _save_model(self):
        with atomic.staged(self._weights_path) as weights:
            self.model.save_weights(str(weights), overwrite=True)
        atomic.write_json(
            self._training_metadata_path,
            {"epoch": self._current_epoch, "batch": self._last_batch_seen},
        )


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Saves the weights of the best epoch so far, never a half-written file.

    The weights are written beside `filepath` and renamed over it
    (`kerapos.utils.atomic`), so a kill during the save leaves the previous
    best checkpoint intact.

    Args:
        filepath: destination, ending in `.weights.h5`.
        monitor: the epoch-log metric to compare (e.g. "val_accuracy").
        mode: "max" or "min".
    """

    def __init__(self, filepath, monitor="val_accuracy", mode="max"):
        super().__init__()
        self.filepath = pathlib.Path(filepath)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or self.sign * value <= self.best:
            return
        self.best = self.sign * value
        with atomic.staged(self.filepath) as weights:
            self.model.save_weights(str(weights), overwrite=True)


def write_hparams(log_dir, hparams, metrics):
    """Records one run for TensorBoard's HParams dashboard, all at once (after
    training; `start_hparams_session` / `end_hparams_session` with an
    `HParams`, as `kerapos.training.skeleton.hparams_session` writes them, list
    the run from its start).

    Args:
        log_dir: the run's TensorBoard directory.
        hparams: dict name -> python scalar (str, bool, int, float).
        metrics: dict metric tag -> display name; the tags must be scalars
            written to the same run (e.g. "epoch_accuracy").
    """
    values = {k: v for k, v in hparams.items() if isinstance(v, (str, bool, int, float))}
    with tf.summary.create_file_writer(str(log_dir)).as_default():
        hparams_api.hparams_config(
            hparams=[hparams_api.HParam(name) for name in sorted(values)],
            metrics=[hparams_api.Metric(tag, display_name=name) for tag, name in metrics.items()],
        )
        hparams_api.hparams(values)


def write_matrix_image(log_dir, tag, matrix, description="", step=0, writer=None):
    """Writes a 2-D array as a grayscale heat map image summary (min->black),
    flushed (into `writer` if given, else a writer of its own on `log_dir`)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    low, high = float(matrix.min()), float(matrix.max())
    scaled = (matrix - low) / (high - low) if high > low else np.zeros_like(matrix)
    image = tf.constant(scaled[None, :, :, None])  # [1, height, width, 1]
    own = writer is None
    writer = tf.summary.create_file_writer(str(log_dir)) if own else writer
    with writer.as_default():
        tf.summary.image(tag, image, step=step, description=description)
    if own:
        writer.close()
    else:
        writer.flush()


def flush_at_epoch_end(tensorboard):
    """Makes a `keras.callbacks.TensorBoard` flush its writers at every epoch
    end; returns it (still of that class).

    Keras' writers flush when their queue of 10 events fills, every two
    minutes, and when closed at the end of training (TensorFlow 2.21 also
    flushes when a `writer.as_default()` block ends, which Keras' epoch
    logging happens to use): here each epoch's train and validation
    summaries are on disk when the epoch ends however Keras writes them, so a
    run watched while it trains, or killed, shows its `epoch_*` curves.
    """
    on_epoch_end = tensorboard.on_epoch_end

    def flushed(epoch, logs=None):
        on_epoch_end(epoch, logs)
        for writer in tensorboard._writers.values():
            writer.flush()

    tensorboard.on_epoch_end = flushed
    return tensorboard


class MatrixImageEachEpoch(keras.callbacks.Callback):
    """Writes `matrix(model)` as an image summary at the end of every epoch
    (step = epochs done), flushed, so it is in TensorBoard from the first
    epoch on rather than after training.

    Args:
        log_dir: the TensorBoard directory (run) the image goes to.
        tag: the image's tag.
        matrix: `f(model)` -> a 2-D array, or None to write nothing.
        description: `f(matrix)` -> the image's description.
    """

    def __init__(self, log_dir, tag, matrix, description=lambda matrix: ""):
        super().__init__()
        self.log_dir, self.tag = str(log_dir), tag
        self.matrix, self.description = matrix, description
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        matrix = self.matrix(self.model)
        if matrix is None:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        write_matrix_image(self.log_dir, self.tag, matrix, self.description(matrix),
                           step=epoch + 1, writer=self._writer)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclasses.dataclass
class HParams:
    """What a run shows in TensorBoard's HParams dashboard (`Task.hparams`).

    Attributes:
        values: name -> python scalar (str, bool, int, float); others are
            left out. Listed in this order after `compared`.
        metrics: `(group, tag, display name)` of the metrics compared; the
            tags are scalars written to the run's subdirectory `group`
            (e.g. `("validation", "epoch_accuracy", "validation accuracy")`).
        compared: the hparams users compare runs by (e.g. model and position):
            listed first and marked `differs`. TensorBoard sorts the hparams
            by (`differs` first, then name) and checks only the first five
            columns by default, so unmarked ones sorted by name would hide
            `model` and `position` behind `batch_size` and the like.
        domains: name -> the values an hparam can take (its choices), for
            TensorBoard's filter; others get none (any value).
    """

    values: dict
    metrics: tuple = ()
    compared: tuple = ()
    domains: dict = dataclasses.field(default_factory=dict)

    def scalars(self):
        """`values` kept (scalars only), `compared` first."""
        kept = {k: v for k, v in self.values.items() if isinstance(v, (str, bool, int, float))}
        order = [k for k in self.compared if k in kept] + [k for k in kept if k not in self.compared]
        return {k: kept[k] for k in order}

    def experiment_pb(self):
        """The `hparams_config` summary (hparams in order, `compared` marked `differs`)."""
        infos = []
        for name, value in self.scalars().items():
            info = api_pb2.HParamInfo(name=name, differs=name in self.compared)
            if isinstance(value, bool):
                info.type = api_pb2.DATA_TYPE_BOOL
                info.domain_discrete.extend([False, True])
            elif isinstance(value, str):
                info.type = api_pb2.DATA_TYPE_STRING
                if name in self.domains:
                    info.domain_discrete.extend([str(v) for v in self.domains[name]])
            else:
                info.type = api_pb2.DATA_TYPE_FLOAT64
            infos.append(info)
        metrics = [
            api_pb2.MetricInfo(name=api_pb2.MetricName(group=group, tag=tag), display_name=shown)
            for group, tag, shown in self.metrics
        ]
        return hparams_summary.experiment_pb(infos, metrics, time_created_secs=time.time())


def start_hparams_session(log_dir, hparams, trial_id):
    """Writes (and flushes) the HParams experiment and this run's session
    start into `log_dir`: from then on the run is listed in TensorBoard's
    HParams table (status unknown until `end_hparams_session`; a killed run
    stays listed so).

    Args:
        log_dir: the run's TensorBoard directory (its metrics' groups are
            subdirectories of it).
        hparams: an `HParams`.
        trial_id: the name the run is listed by (TensorBoard's session group
            name; otherwise a hash of the values).
    """
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(
            hparams.experiment_pb().SerializeToString(), step=0, name="hparams_config")
        hparams_api.hparams(hparams.scalars(), trial_id=trial_id)
    writer.close()


def end_hparams_session(log_dir, error=None):
    """Writes (and flushes) the session end into `log_dir`: success, or
    failure with `error` (an exception) also written as text `error`."""
    status = api_pb2.STATUS_SUCCESS if error is None else api_pb2.STATUS_FAILURE
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(
            hparams_summary.session_end_pb(status).SerializeToString(), step=0,
            name="session_end")
        if error is not None:
            tf.summary.text("error", f"{type(error).__name__}: {error}", step=0)
    writer.close()
