"""`kerapos.utils.atomic` under SIGKILL: a results file killed mid-write is
the old one or the new one, never half of either (every JSON a trainer or a
benchmark writes goes through it)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

from kerapos.utils import atomic

# Rewrites the file as fast as it can, each version ~1 MB, so a kill at a
# random moment lands inside a write most of the time.
# The module is loaded from its file: importing the kerapos package would
# start TensorFlow in every writer.
_WRITER = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("atomic", sys.argv[2])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
path, n = sys.argv[1], 0
while True:
    n += 1
    atomic.write_json(path, {"version": n, "padding": "x" * 1_000_000, "last": n})
"""


def test_json_killed_mid_write_is_whole(tmp_path):
    path = tmp_path / "results.json"
    rng = random.Random(0)
    versions = []
    for _ in range(10):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), atomic.__file__])
        try:
            deadline = time.time() + 60
            while not path.exists() and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
        content = json.loads(path.read_text())  # raises if half written
        assert content["version"] == content["last"]
        versions.append(content["version"])
    assert max(versions) > 1  # the kills did land while it was rewriting


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    atomic.write_json(path, {"ok": 1})
    try:
        atomic.write_json(path, {"bad": object()})
    except TypeError:
        pass
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
