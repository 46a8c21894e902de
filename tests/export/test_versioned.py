import pathlib

import pytest

from kerapos.export.versioned import existing_versions
from kerapos.export.versioned import next_version
from kerapos.export.versioned import write_new_version


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
    import shutil

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
