"""The machine-speed probe: its formula (2 n^3 FLOP per product over the
median time) and the command's JSON."""

import itertools
import json
import time

from helpers import run_python

from kerapos.training import runtime


def test_matmul_gflops_is_two_n_cubed_over_the_median_time(monkeypatch):
    # Each timed product takes 0.5 s on this fake clock: 2 * 64^3 / 0.5 FLOP/s.
    ticks = itertools.count(step=0.5)
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    assert runtime.matmul_gflops(size=64, repeats=3) == 2 * 64**3 / 0.5 / 1e9


def test_machine_command_prints_device_and_gflops():
    answer = json.loads(run_python(["-m", "kerapos.benchmarks.machine"]).stdout)
    assert answer["device"].startswith(("CPU", "1 GPU", "2 GPU")) and answer["matmul_gflops"] > 1
    assert run_python(["-m", "kerapos.benchmarks.machine", "extra"], check=False).returncode == 2
