"""The export writer: growing atomic versions, endpoints, tracked layers, assets.extra."""

import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerapos.export import writer
from kerapos.export.writer import existing_versions
from kerapos.export.writer import next_version
from kerapos.export.writer import write_new_version


def _fake_saved_model(directory):
    directory = pathlib.Path(directory)
    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(b"pb")


def test_versions_only_grow_and_are_never_overwritten(tmp_path):
    base = tmp_path / "model"
    assert next_version(base) == 1
    first = write_new_version(base, _fake_saved_model)
    (first / "marker").write_text("v1")
    second = write_new_version(base, _fake_saved_model)
    assert (first.name, second.name) == ("1", "2")
    assert (first / "marker").read_text() == "v1"
    # A gap (someone deleted v1) never reuses a lower number.
    shutil.rmtree(first)
    assert write_new_version(base, _fake_saved_model).name == "3"
    assert existing_versions(base) == [2, 3]


def test_failed_write_leaves_no_version_and_no_temporary(tmp_path):
    base = tmp_path / "model"

    def broken(directory):
        pathlib.Path(directory).mkdir()
        (pathlib.Path(directory) / "variables").mkdir()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_new_version(base, broken)
    assert list(base.iterdir()) == []


def test_incomplete_export_is_refused(tmp_path):
    base = tmp_path / "model"
    with pytest.raises(RuntimeError, match="no saved_model.pb"):
        write_new_version(base, lambda d: pathlib.Path(d).mkdir())
    assert existing_versions(base) == []


@pytest.fixture(scope="module")
def dense():
    keras.utils.set_random_seed(3)
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    return layer


def _endpoints(dense):
    def lengths(text):  # text: [batch] tf.string
        return {"length": tf.strings.length(text, unit="UTF8_CHAR")}  # [batch] int32

    def project(values):  # values: [batch, 2] float32
        return {"projected": dense(values)}  # [batch, 3]

    return {
        writer.SERVING_DEFAULT: writer.Endpoint(lengths),
        "project": writer.Endpoint(project, (tf.TensorSpec([None, 2], tf.float32, name="values"),)),
    }


def test_endpoints_tracked_layers_and_assets_extra(dense, tmp_path):
    def write_notes(path):
        path.write_bytes(b"notes")

    version = writer.write_saved_model(
        tmp_path / "model", _endpoints(dense), track=(dense,),
        assets_extra={"notes.txt": write_notes},
    )
    assert version == tmp_path / "model" / "1"
    assert (version / "assets.extra" / "notes.txt").read_bytes() == b"notes"
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["1"]  # no staging left

    loaded = tf.saved_model.load(str(version))
    assert sorted(loaded.signatures) == ["project", "serving_default"]
    serve = loaded.signatures["serving_default"]
    assert serve.structured_input_signature[1] == {
        "text": tf.TensorSpec([None], tf.string, name="text")
    }
    lengths = serve(text=tf.constant(["", "abc", "Zürich"]))["length"]
    assert lengths.numpy().tolist() == [0, 3, 6]

    values = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    kernel, bias = (np.asarray(w) for w in dense.weights)
    projected = loaded.signatures["project"](values=tf.constant(values))["projected"]
    np.testing.assert_allclose(projected.numpy(), values @ kernel + bias, rtol=1e-6)


def test_failing_asset_writer_leaves_no_version(dense, tmp_path):
    def broken(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        writer.write_saved_model(
            tmp_path / "model", _endpoints(dense), track=(dense,), assets_extra={"warmup": broken}
        )
    assert list((tmp_path / "model").iterdir()) == []


@pytest.mark.parametrize("name", ["", "..", "sub/warmup", "/abs"])
def test_asset_names_must_be_plain_file_names(tmp_path, name):
    with pytest.raises(ValueError, match="`assets_extra` names must be plain file names"):
        writer.write_saved_model(tmp_path / "model", {}, assets_extra={name: lambda path: None})
    assert not (tmp_path / "model").exists()
