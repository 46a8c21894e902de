"""The one SavedModel writer behind every kerapos export, for TF Serving.

TF Serving polls `<base_path>/<integer version>/` and loads the highest
version it finds. A version must therefore appear complete or not at all:
it is written into a hidden `.incomplete-*` directory beside the versions
(same filesystem), checked for its `saved_model.pb`, and renamed into place
in one `os.rename`. Existing versions are never overwritten, numbers never
go down (a deleted version is not reused), and a failed write leaves nothing
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
"""

import dataclasses
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable

import keras
import tensorflow as tf

from kerapos.export import warmup

# The raw-text input of every kerapos serving signature: a batch of strings.
TEXT_SIGNATURE = (tf.TensorSpec([None], tf.string, name="text"),)
SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"
ASSETS_EXTRA = "assets.extra"


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
    """
    base_path = pathlib.Path(base_path)
    base_path.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".incomplete-", dir=base_path))
    staged_dir = staging / "export"
    try:
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
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
