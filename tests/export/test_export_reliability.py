"""Exports that go wrong never leave a partial version under the base path.

TF Serving polls `<base_path>/<int>/`; each case here checks that what it
could see there is complete, and that the user gets one clear line:
an export onto an existing version, a read-only base path, a full disk,
and exports killed by SIGKILL at random points of their run.

Read-only and full filesystems are small tmpfs mounts (this runs as root,
so permission bits would not stop the writer); where the OS refuses
`mount` the test is skipped and says so.
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import keras
import pytest
import tensorflow as tf

from kerapos.export import writer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _dense_endpoints(units, inputs):
    keras.utils.set_random_seed(1)
    layer = keras.layers.Dense(units)
    layer.build((None, inputs))

    def project(values):  # values: [batch, inputs] float32
        return {"projected": layer(values)}  # [batch, units]

    spec = (tf.TensorSpec([None, inputs], tf.float32, name="values"),)
    return {writer.SERVING_DEFAULT: writer.Endpoint(project, spec)}, (layer,)


@pytest.fixture(scope="module")
def tiny():
    return _dense_endpoints(3, 2)  # a SavedModel of ~40 KB


@pytest.fixture(scope="module")
def large():
    return _dense_endpoints(512, 1024)  # ~2 MB of variables


def _tree_digest(directory):
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(directory).rglob("*")):
        digest.update(str(path.relative_to(directory)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _assert_complete_saved_model(version_dir):
    version_dir = pathlib.Path(version_dir)
    assert (version_dir / "saved_model.pb").is_file(), version_dir
    assert (version_dir / "variables" / "variables.index").is_file(), version_dir
    tf.saved_model.load(str(version_dir))


@pytest.fixture
def mount_tmpfs(tmp_path):
    """`mount_tmpfs(options)` mounts a tmpfs (`mount -t tmpfs -o OPTIONS`) and
    returns its path; skips when the OS refuses; unmounted after the test."""
    mounted = []

    def mount(options):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command here to make a read-only or full filesystem")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"the OS refused `mount -t tmpfs -o {options}` "
                        f"({result.stderr.strip() or result.returncode}); needs root or CAP_SYS_ADMIN")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


# --- an export onto an existing version -------------------------------------


def test_versions_only_grow_and_existing_ones_are_untouched(tiny, tmp_path):
    endpoints, track = tiny
    base = tmp_path / "model"
    first = writer.write_saved_model(base, endpoints, track=track)
    second = writer.write_saved_model(base, endpoints, track=track)
    assert (first.name, second.name) == ("1", "2")
    second_before = _tree_digest(second)
    assert writer.write_saved_model(base, endpoints, track=track).name == "3"
    shutil.rmtree(first)  # a gap below the newest version is never filled
    assert writer.write_saved_model(base, endpoints, track=track).name == "4"
    assert _tree_digest(second) == second_before
    assert sorted(p.name for p in base.iterdir()) == ["2", "3", "4"]


def test_export_into_an_existing_version_is_refused(tiny, tmp_path):
    endpoints, track = tiny
    base = tmp_path / "model"
    first = writer.write_saved_model(base, endpoints, track=track)
    before = _tree_digest(first)
    with pytest.raises(writer.ExportError,
                       match=r"is a SavedModel version directory, not a model base path: "
                             r"export to its parent .*model \(versions are numbered for you\)\.$"):
        writer.write_saved_model(first, endpoints, track=track)
    # A new integer name beside versions would appear as an empty version first.
    with pytest.raises(writer.ExportError, match=r"would be a version directory of .*model"):
        writer.write_saved_model(base / "7", endpoints, track=track)
    assert _tree_digest(first) == before
    assert sorted(p.name for p in base.iterdir()) == ["1"]


def test_base_path_that_is_a_file_is_refused(tiny, tmp_path):
    endpoints, track = tiny
    (tmp_path / "model").write_text("not a directory")
    with pytest.raises(writer.ExportError, match="is a file, not a directory: choose another"):
        writer.write_saved_model(tmp_path / "model", endpoints, track=track)


# --- a read-only base path ----------------------------------------------------


@pytest.mark.parametrize("where", ["base path is the read-only mount", "base path to create"])
def test_read_only_base_path_is_refused_clearly(tiny, mount_tmpfs, where):
    endpoints, track = tiny
    point = mount_tmpfs("size=1m,ro")
    base = point if where.startswith("base path is") else point / "model"
    with pytest.raises(writer.ExportError) as caught:
        writer.write_saved_model(base, endpoints, track=track)
    assert str(caught.value) == (f"cannot write the export to {base} (read-only file system): "
                                 "choose a writable --export_dir.")
    assert list(point.iterdir()) == []


# --- a full disk ----------------------------------------------------------------


def _fill_with_assets(path):
    path.write_bytes(b"x" * (2 << 20))  # more than the filesystem holds


# Each size makes the disk fill at another step of the write.
FULL_DISK_CASES = {
    "variables data": ("large", "1m", None),
    "variables index": ("tiny", "8k", None),
    "saved_model.pb": ("tiny", "24k", None),
    "assets.extra (python write)": ("tiny", "100k", _fill_with_assets),
}


@pytest.mark.parametrize("case", list(FULL_DISK_CASES))
def test_full_disk_is_one_clear_error_and_leaves_nothing(request, mount_tmpfs, case):
    model, size, asset = FULL_DISK_CASES[case]
    endpoints, track = request.getfixturevalue(model)
    point = mount_tmpfs(f"size={size}")
    base = point / "model"
    with pytest.raises(writer.ExportError) as caught:
        writer.write_saved_model(base, endpoints, track=track,
                                 assets_extra={"big": asset} if asset else None)
    assert str(caught.value) == (f"no space left on {base}: "
                                 "free space or choose another --export_dir.")
    assert "\n" not in str(caught.value)
    assert list(base.iterdir()) == []  # no version, no .incomplete-* staging
    assert shutil.disk_usage(point).used < 16 << 10  # the space is given back


def test_a_fresh_export_works_once_space_is_freed(tiny, mount_tmpfs):
    endpoints, track = tiny
    point = mount_tmpfs("size=64k")
    base = point / "model"
    filler = point / "filler"
    filler.write_bytes(b"x" * (48 << 10))
    with pytest.raises(writer.ExportError, match="no space left on"):
        writer.write_saved_model(base, endpoints, track=track)
    filler.unlink()
    version = writer.write_saved_model(base, endpoints, track=track)
    assert version.name == "1"
    _assert_complete_saved_model(version)


# --- leftovers of killed writers --------------------------------------------------


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _staging(base, name, age_seconds=0.0):
    directory = base / name
    (directory / "export" / "variables").mkdir(parents=True)
    (directory / "export" / "variables" / "variables.index").write_bytes(b"half")
    stamp = time.time() - age_seconds
    for path in [*directory.rglob("*"), directory]:
        os.utime(path, (stamp, stamp))
    return directory


def test_next_export_removes_staging_of_dead_or_long_idle_writers(tiny, tmp_path):
    endpoints, track = tiny
    base = tmp_path / "model"
    base.mkdir()
    host = writer._host()
    dead = _staging(base, f".incomplete-{_dead_pid()}@{host}-abc123")
    alive = _staging(base, f".incomplete-{os.getppid()}@{host}-def456")  # pytest's parent runs
    other_host = _staging(base, f".incomplete-{_dead_pid()}@not-{host}-ghi789")
    idle = _staging(base, f".incomplete-{os.getppid()}@not-{host}-jkl012",
                    age_seconds=writer.STALE_AFTER_SECONDS + 60)
    old_style = _staging(base, ".incomplete-mno345", age_seconds=writer.STALE_AFTER_SECONDS + 60)
    recent_old_style = _staging(base, ".incomplete-pqr678", age_seconds=60)

    version = writer.write_saved_model(base, endpoints, track=track)
    assert version.name == "1"
    left = sorted(p.name for p in base.iterdir())
    assert left == sorted(["1", alive.name, other_host.name, recent_old_style.name])
    for gone in (dead, idle, old_style):
        assert not gone.exists()


def test_staging_name_carries_pid_and_host(tmp_path):
    names = []

    def write(directory):
        names.append(pathlib.Path(directory).parent.name)
        pathlib.Path(directory).mkdir()
        (pathlib.Path(directory) / "saved_model.pb").write_bytes(b"pb")

    writer.write_new_version(tmp_path / "model", write)
    match = writer._STAGING_NAME.match(names[0])
    assert match and match.groups() == (str(os.getpid()), writer._host()), names


# --- SIGKILL at random points ---------------------------------------------------------

# One warm process (TensorFlow imported, no op run) forks a child per trial.
# Child i: checks what the previous kill left (every integer directory a
# loadable SavedModel), makes a fresh export (it must get the next version
# and clear the dead writer's staging), reports that on the pipe, then
# starts one more export, which the parent SIGKILLs after a random delay
# spread over that export's run time (estimated from the trials whose export
# finished before the kill, at first from the fresh export's). The last
# child only checks.
_KILL_SCRIPT = r"""
import json, os, pathlib, random, signal, sys, time
import kerapos  # noqa: F401  (quiet TensorFlow start-up)
import keras
import tensorflow as tf
from kerapos.export import writer

base = pathlib.Path(sys.argv[1])
kills_wanted, max_trials, seed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def child(out_fd, final):
    report = {}
    versions = writer.existing_versions(base)
    report["versions_before"] = versions
    report["staging_before"] = sorted(p.name for p in base.iterdir()
                                      if p.name.startswith(".incomplete-")) if base.is_dir() else []
    incomplete = []
    for v in versions:
        d = base / str(v)
        try:
            assert (d / "saved_model.pb").is_file() and (d / "variables" / "variables.index").is_file()
            if v not in verified:  # loaded once: versions are never changed afterwards
                tf.saved_model.load(str(d))
        except Exception as error:
            incomplete.append([v, f"{type(error).__name__}: {error}"[:300]])
    report["incomplete"] = incomplete
    if not final:
        keras.utils.set_random_seed(0)
        layer = keras.layers.Dense(16)
        layer.build((None, 8))
        def project(values):
            return {"projected": layer(values)}
        endpoints = {writer.SERVING_DEFAULT: writer.Endpoint(
            project, (tf.TensorSpec([None, 8], tf.float32, name="values"),))}
        start = time.monotonic()
        fresh = writer.write_saved_model(base, endpoints, track=(layer,))
        report["fresh_seconds"] = time.monotonic() - start
        report["fresh_version"] = int(fresh.name)
        report["staging_after_fresh"] = sorted(p.name for p in base.iterdir()
                                               if p.name.startswith(".incomplete-"))
    os.write(out_fd, (json.dumps(report) + "\n").encode())
    if not final:
        writer.write_saved_model(base, endpoints, track=(layer,))  # the one killed
    os._exit(0)

def fork_child(final):
    # Forks a child running child(..., final); returns (pid, the pipe it reports on).
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child(write_fd, final)
    os.close(write_fd)
    return pid, os.fdopen(read_fd)


rng = random.Random(seed)
trials = []
verified = set()  # versions a child loaded; children inherit it through fork
estimate = None  # seconds the killed export runs, from the exports not killed
while len([t for t in trials if t["killed"]]) < kills_wanted and len(trials) < max_trials:
    pid, pipe = fork_child(False)
    with pipe:
        line = pipe.readline()
        report = json.loads(line) if line else {"error": "child died before reporting"}
        if "fresh_seconds" in report:
            ready = time.monotonic()
            delay = rng.uniform(0.0, estimate or 0.5 * report["fresh_seconds"])
            time.sleep(delay)
            report["delay"] = delay
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    report["killed"] = status == -signal.SIGKILL
    if status == 0 and "delay" in report:
        estimate = max(estimate or 0.0, time.monotonic() - ready)
    verified.update(v for v in report.get("versions_before", ())
                    if v not in dict(report.get("incomplete", ())))
    report["exit"] = status
    report["staging_after_kill"] = sorted(p.name for p in base.iterdir()
                                          if p.name.startswith(".incomplete-"))
    trials.append(report)
    if "error" in report:
        break

pid, pipe = fork_child(True)
with pipe:
    line = pipe.readline()
os.waitpid(pid, 0)
final_report = json.loads(line) if line else {"error": "final check died"}
print("RESULT " + json.dumps({"trials": trials, "final": final_report}))
"""

KILLS = 20


def test_exports_killed_by_sigkill_never_leave_a_partial_version(tmp_path):
    base = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(base), str(KILLS), str(2 * KILLS), "20261202"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-4000:]
    outcome = json.loads(lines[-1][len("RESULT "):])
    trials, final = outcome["trials"], outcome["final"]
    assert all("error" not in t for t in trials) and "error" not in final, outcome

    kills = [t for t in trials if t["killed"]]
    assert len(kills) >= KILLS, [t["exit"] for t in trials]
    for before, after in zip(trials, [*trials[1:], final]):
        # Whatever the kill of `before` left: only complete versions, ...
        assert after["incomplete"] == [], after["incomplete"]
        # ... the killed export either appeared whole (the rename ran) or not at all ...
        assert after["versions_before"][-1] in (before["fresh_version"], before["fresh_version"] + 1)
        if "fresh_version" in after:
            # ... and a fresh export gets the next version and clears dead staging.
            assert after["fresh_version"] == (after["versions_before"] or [0])[-1] + 1
            assert after["staging_after_fresh"] == []
    # The kills landed inside the export: most left a staging directory behind.
    left_staging = [t for t in kills if t["staging_after_kill"]]
    assert len(left_staging) >= KILLS // 4, [(t["delay"], t["staging_after_kill"]) for t in kills]
    versions = writer.existing_versions(base)
    assert versions == final["versions_before"]
    for version in versions[-3:]:
        _assert_complete_saved_model(base / str(version))
