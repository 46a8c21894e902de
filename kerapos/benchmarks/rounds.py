"""Timing in interleaved rounds, shared by the speed benchmarks.

Each round runs one step of every candidate in turn, so machine load falls
on all alike; a candidate's ratio to the baseline is taken within each round
and reported as its median and interquartile range (a difference is real
when the range excludes 1).
"""

import statistics
import time

import numpy as np


def time_rounds(steps, rounds, warmup=2):
    """`{name: [seconds, one per round]}` of `steps` (`{name: callable}`,
    each call one blocking step), after `warmup` untimed calls of each."""
    for step in steps.values():  # trace, compile, warm up
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():  # one round: every candidate in turn
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return times


def against(seconds, baseline_seconds):
    """`{"median_ms", "ratio", "ratio_q25", "ratio_q75"}` of one candidate's
    per-round times against the baseline's of the same rounds."""
    ratios = np.asarray(seconds) / np.asarray(baseline_seconds)  # [rounds]
    return {
        "median_ms": 1000 * statistics.median(seconds),
        "ratio": float(np.median(ratios)),
        "ratio_q25": float(np.quantile(ratios, 0.25)),
        "ratio_q75": float(np.quantile(ratios, 0.75)),
    }
