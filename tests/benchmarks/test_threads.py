"""`python -m kerapos.benchmarks.threads`: thread settings, each in its own process."""

import json
import os

from helpers import run_python

from kerapos.benchmarks import threads


def test_settings_are_the_default_then_one_or_all_cores_per_pool():
    assert threads.settings(2) == {"default": (0, 0), "intra1_inter1": (1, 1),
                                   "intra1_inter2": (1, 2), "intra2_inter1": (2, 1),
                                   "intra2_inter2": (2, 2)}
    assert threads.settings(1) == {"default": (0, 0), "intra1_inter1": (1, 1)}


def test_smoke_run_times_every_setting_in_its_own_process(tmp_path):
    # Each worker checks that TensorFlow ran with the pools it asked for.
    run_python(["-m", "kerapos.benchmarks.threads", "--smoke", "--rounds=1", "--steps=1",
                "--length=4", f"--output_dir={tmp_path}"])
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {row["setting"]: row for row in results["rows"]}
    assert list(rows) == list(threads.settings(os.cpu_count()))
    assert rows["default"]["ratio_to_default"] == 1.0
    for row in rows.values():
        assert row["median_ms"] > 0
        assert row["ratio_q25"] <= row["ratio_to_default"] <= row["ratio_q75"]
    assert "| intra1_inter2 | 1 | 2 |" in (tmp_path / "results.md").read_text()
