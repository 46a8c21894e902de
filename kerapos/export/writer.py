"""The one SavedModel writer behind every kerapos export, for TF Serving.

TF Serving polls `<base_path>/<integer version>/` and loads the highest
version it finds. A version must therefore appear complete or not at all:
it is written into a hidden `.incomplete-*` directory beside the versions
(same filesystem), checked for its `saved_model.pb`, and renamed into place
in one `os.rename`. Existing versions are never overwritten, numbers never
go down (a new version is one more than the highest present, so a deleted
version below it is not reused; deleting the highest version lets its
number come back with the next export), and a failed write leaves nothing
behind.

An exporter builds its serving function(s) and hands them here:

Example:
```python
from kerapos.export import writer

def serve(text):  # text: tf.string [batch]
    return {"length": tf.strings.length(text)}

writer.write_saved_model(
    "saved_models/lengths", {"serving_default": writer.Endpoint(serve)}
)  # -> saved_models/lengths/1
```

Files TF Serving reads beside the graph (`assets.extra/`) are written by the
`assets_extra` writers before the version appears. Every export with a text
signature gets TF Serving warmup requests for it
(`assets.extra/tf_serving_warmup_requests`, `kerapos.export.warmup`), and
the warmup file is replayed against the written SavedModel before the
version appears: an export whose warmup fails is refused, and nothing is
left under the base path.

What can go wrong, and what the writer then does:

- A base path that is itself a version (it holds a `saved_model.pb`, or it
  is named by an integer beside versions that do) is refused: writing into
  it would change a version TF Serving may already serve.
- A base path that cannot be written (read-only filesystem, no permission)
  or a disk that fills up during the write is refused with one line
  (`ExportError`, a `ValueError`, which the trainers print as `error: ...`):
  "no space left on <base path>: free space or choose another --export_dir"
  or "cannot write the export to <base path> (...): choose a writable
  --export_dir". The staging directory is removed; nothing is left.
- A writer killed outright (SIGKILL, OOM killer, power cut of the process)
  cannot clean up: its `.incomplete-<pid>@<host>-*` staging directory stays
  behind. TF Serving ignores it (not an integer), and no version ever
  appears half written, because a version only appears by the final rename.
  The next export under the same base path removes such leftovers: those of
  a process of this host that is no longer running, and any (whichever host
  wrote it, old names without a pid included) in which nothing has been
  written for `STALE_AFTER_SECONDS` (an hour). A running export's staging
  directory is never touched.
"""

import dataclasses
import errno
import os
import pathlib
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from kerapos.export import warmup

# The raw-text input of every kerapos serving signature: a batch of strings.
TEXT_SIGNATURE = (tf.TensorSpec([None], tf.string, name="text"),)
SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"
ASSETS_EXTRA = "assets.extra"
STAGING_PREFIX = ".incomplete-"
# A staging directory in which nothing was written for this long is a
# leftover of a dead writer, whoever wrote it.
STALE_AFTER_SECONDS = 3600
_STAGING_NAME = re.compile(r"^\.incomplete-(\d+)@([^@/]+)-[^-]*$")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


class ExportError(ValueError):
    """An export refused or failed for a reason the user can fix (one line)."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One signature of an export.

    Attributes:
        function: the serving function; it takes the tensors of
            `input_signature` (by their names) and returns a dict of tensors,
            the signature's outputs.
        input_signature: `tf.TensorSpec`s of its inputs; default one `text`
            `tf.string [None]`.
    """

    function: Callable
    input_signature: tuple = TEXT_SIGNATURE


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
    """Calls `write_fn(staged_dir)` and renames `staged_dir` to the next version.

    Args:
        base_path: the model base path (`saved_models/<model_name>`), created
            if missing.
        write_fn: callable writing a complete SavedModel into the directory
            path (str) it is given, which does not exist yet.

    Returns:
        `pathlib.Path` of the new version directory.

    Raises:
        RuntimeError: `write_fn` wrote no `saved_model.pb`.
        ExportError: `base_path` is a version directory, is not writable, or
            the disk filled up (nothing is left under `base_path`).
    """
    base_path = pathlib.Path(base_path)
    _check_base_path(base_path)
    staging = None
    try:
        base_path.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(base_path)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=base_path))
        staged_dir = staging / "export"
        write_fn(str(staged_dir))
        if not (staged_dir / "saved_model.pb").is_file():
            raise RuntimeError(f"The export into {staged_dir} wrote no saved_model.pb.")
        while True:
            version_dir = base_path / str(next_version(base_path))
            try:
                # Atomic on POSIX; fails (instead of overwriting) if another
                # writer created this version first, then we take the next one.
                os.rename(staged_dir, version_dir)
                return version_dir
            except OSError:
                if not version_dir.exists():
                    raise
    except (OSError, tf.errors.OpError) as error:
        reason = _storage_failure(base_path, error)
        if reason is None:
            raise
        raise ExportError(reason) from error
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _check_base_path(base_path):
    """Refuses a base path that is a version directory (or would make one)."""
    if (base_path / "saved_model.pb").exists():
        raise ExportError(
            f"{base_path} is a SavedModel version directory, not a model base path: "
            f"export to its parent {base_path.parent} (versions are numbered for you)."
        )
    if base_path.name.isdigit() and any(
            (base_path.parent / str(v) / "saved_model.pb").exists()
            for v in existing_versions(base_path.parent)):
        raise ExportError(
            f"{base_path} would be a version directory of {base_path.parent}, not a model "
            f"base path: export to {base_path.parent} (versions are numbered for you)."
        )
    if base_path.exists() and not base_path.is_dir():
        raise ExportError(f"{base_path} is a file, not a directory: choose another --export_dir.")


def _storage_failure(base_path, error):
    """The one-line message for a full disk or an unwritable base path, else None."""
    code = getattr(error, "errno", None)
    text = str(error)
    if code in _NO_SPACE or "No space left on device" in text or "Disk quota exceeded" in text:
        return f"no space left on {base_path}: free space or choose another --export_dir."
    if (code in _NOT_WRITABLE or isinstance(error, tf.errors.PermissionDeniedError)
            or "Read-only file system" in text):
        why = os.strerror(code) if code in _NOT_WRITABLE else "not writable"
        return (f"cannot write the export to {base_path} ({why.lower()}): "
                f"choose a writable --export_dir.")
    return None


def _host():
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname()) or "localhost"


def _staging_prefix():
    return f"{STAGING_PREFIX}{os.getpid()}@{_host()}-"


def _pid_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _last_write(path):
    """The newest modification time in the tree at `path`."""
    newest = path.lstat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


def remove_stale_staging(base_path, now=None):
    """Removes the `.incomplete-*` leftovers of dead writers under `base_path`.

    Stale: one of a process of this host that is not running, or any in
    which nothing was written for `STALE_AFTER_SECONDS`. Never fails (a
    leftover that cannot be removed stays; TF Serving ignores it).

    Returns:
        the names removed (sorted).
    """
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(pathlib.Path(base_path).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(STAGING_PREFIX):
            continue
        try:
            if not entry.is_dir() or entry.is_symlink():
                continue
            match = _STAGING_NAME.match(entry.name)
            dead = (match is not None and match.group(2) == _host()
                    and int(match.group(1)) != os.getpid()
                    and not _pid_running(int(match.group(1))))
            if dead or now - _last_write(entry) > STALE_AFTER_SECONDS:
                shutil.rmtree(entry)
                removed.append(entry.name)
        except OSError:
            continue
    return sorted(removed)


def _check_asset_names(assets_extra):
    for name in assets_extra:
        if not isinstance(name, str) or name in ("", ".", "..") or name != os.path.basename(name):
            raise ValueError(
                f"`assets_extra` names must be plain file names (written into "
                f"{ASSETS_EXTRA}/), got {name!r}."
            )


def write_saved_model(base_path, endpoints, track=(), assets_extra=None, warmup_requests=True):
    """Writes the next version of a SavedModel under `base_path`.

    Args:
        base_path: TF Serving model base path (`saved_models/<name>`).
        endpoints: dict signature name -> `Endpoint`; the default signature
            is `SERVING_DEFAULT`.
        track: Keras layers and models whose variables and lookup tables the
            endpoints use (they are saved with the graph).
        assets_extra: optional dict file name -> `write(path)`: each callable
            writes its file at `path`, `<version>/assets.extra/<name>`, after
            the graph is written and before the version appears.
        warmup_requests: write TF Serving warmup requests for every endpoint
            with the text signature (unless `assets_extra` writes its own
            `tf_serving_warmup_requests`). The warmup file, whoever wrote
            it, is replayed against the SavedModel before the version appears.

    Returns:
        `pathlib.Path` of the version directory written.

    Raises:
        ValueError: a warmup request failed on the written SavedModel (the
            version is not written).
        ExportError: (a ValueError) `base_path` is a version directory, is
            not writable, or the disk filled up; nothing was written.
    """
    assets_extra = dict(assets_extra or {})
    _check_asset_names(assets_extra)
    text_endpoints = [name for name, endpoint in endpoints.items()
                      if tuple(endpoint.input_signature) == TEXT_SIGNATURE]
    if warmup_requests and text_endpoints and warmup.WARMUP_FILE not in assets_extra:
        requests = [request for name in text_endpoints for request in warmup.text_requests(name)]
        assets_extra[warmup.WARMUP_FILE] = lambda path: warmup.write_requests(path, requests)

    def write(directory):
        archive = keras.export.ExportArchive()
        for resource in track:
            archive.track(resource)
        for name, endpoint in endpoints.items():
            archive.add_endpoint(
                name, endpoint.function, input_signature=list(endpoint.input_signature)
            )
        archive.write_out(directory, verbose=False)
        for name, write_asset in assets_extra.items():
            asset_path = pathlib.Path(directory) / ASSETS_EXTRA / name
            asset_path.parent.mkdir(exist_ok=True)
            write_asset(asset_path)
        warmup_path = pathlib.Path(directory) / ASSETS_EXTRA / warmup.WARMUP_FILE
        if warmup_path.is_file():
            try:
                warmup.replay(tf.saved_model.load(directory), warmup.read_requests(warmup_path))
            except ValueError as error:
                raise ValueError(f"The export to {base_path} was refused, nothing was written: "
                                 f"its TF Serving {error}") from error

    return write_new_version(base_path, write)
