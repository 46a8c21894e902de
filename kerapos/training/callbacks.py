"""Callbacks and TensorBoard writers shared by every kerapos trainer."""

import json
import os
import pathlib
import tempfile

import kerapos  # noqa: F401
import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api


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
    caught by tests/trainers/test_train_classifier.py::test_resume_after_kill).
    Here the weights and then the metadata are written to temporary files and
    renamed over the previous backup: a kill keeps the last complete backup
    (at worst new weights with the previous epoch count, so one epoch reruns).
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        weights_tmp = f"{self._weights_path[: -len('.weights.h5')]}.tmp.weights.h5"
        self.model.save_weights(weights_tmp, overwrite=True)
        metadata_tmp = f"{self._training_metadata_path}.tmp"
        with open(metadata_tmp, "w", encoding="utf-8") as file:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, file)
        os.replace(weights_tmp, self._weights_path)
        os.replace(metadata_tmp, self._training_metadata_path)


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Saves the weights of the best epoch so far, never a half-written file.

    The weights are written to a temporary file in the same directory and
    renamed over `filepath`, so a kill during the save leaves the previous
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
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(
            prefix=".tmp-", suffix=".weights.h5", dir=self.filepath.parent
        )
        os.close(handle)
        try:
            self.model.save_weights(tmp, overwrite=True)
            os.replace(tmp, self.filepath)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def write_json_atomically(path, payload):
    """Writes `payload` as indented JSON via a temporary file and a rename."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(payload, file, indent=2, sort_keys=True, default=_json_default)
        file.write("\n")
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (pathlib.Path,)):
        return str(value)
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


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


def training_callbacks(model_dir, own_dir, chief, steps_per_epoch, patience):
    """The callbacks every supervised kerapos run uses.

    Resume from `own_dir/backup` (atomic `BackupAndRestore`), the learning
    rate per step, TensorBoard in `own_dir/logs` (about 20 step points per
    epoch), early stopping on validation accuracy with the best weights
    restored, and for the chief the best epoch's weights in
    `model_dir/best.weights.h5`.
    """
    callbacks = [
        AtomicBackupAndRestore(str(pathlib.Path(own_dir) / "backup")),
        LearningRateLogger(),
        keras.callbacks.TensorBoard(
            str(pathlib.Path(own_dir) / "logs"), update_freq=max(1, steps_per_epoch // 20)
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=patience, restore_best_weights=True
        ),
    ]
    if chief:
        callbacks.append(AtomicBestCheckpoint(pathlib.Path(model_dir) / "best.weights.h5"))
    return callbacks
