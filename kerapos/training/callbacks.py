"""Callbacks and TensorBoard writers shared by every kerapos trainer."""

import pathlib

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

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
    """Records one run for TensorBoard's HParams dashboard.

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


def write_matrix_image(log_dir, tag, matrix, description=""):
    """Writes a 2-D array as a grayscale heat map image summary (min->black)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    low, high = float(matrix.min()), float(matrix.max())
    scaled = (matrix - low) / (high - low) if high > low else np.zeros_like(matrix)
    image = tf.constant(scaled[None, :, :, None])  # [1, height, width, 1]
    with tf.summary.create_file_writer(str(log_dir)).as_default():
        tf.summary.image(tag, image, step=0, description=description)
