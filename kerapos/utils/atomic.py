"""Writes that are all or nothing: a reader sees the old file or the new one,
never half of one, even when the writer is killed midway.

Everything is written beside its target under a `.tmp-` name, flushed to
disk, and renamed over the target (`os.replace`, atomic on POSIX). A failed
write removes its temporary file or directory and leaves the target as it
was.

Example:
```python
from kerapos.utils import atomic
atomic.write_json("runs/x/results.json", {"accuracy": 0.9})
with atomic.staged("runs/x/classifier.keras") as tmp:   # a path to write to
    model.save(tmp)
```
"""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile


def _json_default(value):
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


@contextlib.contextmanager
def staged(path, directory=False):
    """Yields a temporary path beside `path`; on a clean exit it replaces `path`.

    Args:
        path: the final file (or directory) path. Its parent is created.
        directory: the writer makes a directory (the yielded path does not
            exist yet); an existing directory at `path` is replaced whole.

    The temporary name keeps `path`'s suffix (Keras wants `.keras`), and on
    any exception it is removed and `path` is left untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    tmp = scratch / path.name
    try:
        yield tmp
        if directory:
            if not tmp.is_dir():
                raise RuntimeError(f"The writer of {path} made no directory.")
            old = scratch / ".old"
            if path.is_dir():
                os.replace(path, old)
            os.replace(tmp, path)
        else:
            _fsync(tmp)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fsync(path):
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def write_bytes(path, data):
    """Writes `data` to `path` atomically; returns `path` as a pathlib.Path."""
    with staged(path) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(path)


def write_text(path, text, encoding="utf-8"):
    """Writes `text` to `path` atomically."""
    return write_bytes(path, text.encode(encoding))


def write_json(path, payload):
    """Writes `payload` as indented, key-sorted JSON (numpy scalars and paths
    converted) to `path` atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"
    return write_text(path, text)

