import keras
import numpy as np
import pytest

from kerapos.training.callbacks import AtomicBackupAndRestore


def _model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_backup_survives_a_write_killed_halfway(tmp_path):
    model = _model()
    backup = AtomicBackupAndRestore(str(tmp_path))
    backup.set_model(model)
    backup._current_epoch, backup._last_batch_seen = 1, 0
    backup._save_model()
    saved = [w.copy() for w in model.get_weights()]

    def dies_halfway(filepath, overwrite=True):
        with open(filepath, "wb") as file:
            file.write(b"\x89HDF\r\n partial")
        raise OSError("killed during the write")

    model.save_weights = dies_halfway
    with pytest.raises(OSError, match="killed"):
        backup._save_model()
    restored = _model()
    restored.load_weights(backup._weights_path)  # Keras' in-place write cannot be opened here
    for expected, got in zip(saved, restored.get_weights()):
        np.testing.assert_array_equal(expected, got)
