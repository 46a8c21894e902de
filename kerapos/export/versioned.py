"""Versioned, atomic writes into a TF Serving model base path.

TF Serving polls `<base_path>/<integer version>/` and loads the highest
version it finds. A version must therefore appear complete or not at all:
it is written into a hidden temporary directory beside the versions (same
filesystem) and renamed into place in one `os.rename`. Existing versions are
never overwritten; a failed write leaves nothing behind.
"""

import os
import pathlib
import shutil
import tempfile


def existing_versions(base_path):
    """Integer versions present under `base_path` (sorted)."""
    base_path = pathlib.Path(base_path)
    if not base_path.is_dir():
        return []
    return sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit() and p.is_dir())


def next_version(base_path):
    """The version a new export gets: one more than the highest present (1 if none)."""
    versions = existing_versions(base_path)
    return versions[-1] + 1 if versions else 1


def write_new_version(base_path, write_fn):
    """Calls `write_fn(tmp_dir)` and renames `tmp_dir` to the next version.

    Args:
        base_path: the model base path (`saved_models/<model_name>`), created
            if missing.
        write_fn: callable writing a complete SavedModel into the directory it
            is given (which does not exist yet).

    Returns:
        `pathlib.Path` of the new version directory.
    """
    base_path = pathlib.Path(base_path)
    base_path.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".incomplete-", dir=base_path))
    target_dir = staging / "export"
    try:
        write_fn(str(target_dir))
        if not (target_dir / "saved_model.pb").is_file():
            raise RuntimeError(f"The export into {target_dir} wrote no saved_model.pb.")
        while True:
            version_dir = base_path / str(next_version(base_path))
            try:
                # Atomic on POSIX; fails (instead of overwriting) if another
                # writer created this version first, then we take the next one.
                os.rename(target_dir, version_dir)
                return version_dir
            except OSError:
                if not version_dir.exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
