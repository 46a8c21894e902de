"""`python -m kerapos.benchmarks.lstm_step` in its smoke mode, and its FLOP count."""

import json

from helpers import run_python

from kerapos.benchmarks import lstm_step


def test_flops_per_token_by_hand():
    # 4 gates, each a [E + U, U] matmul: 2 FLOP per multiply-add, x3 with backward
    assert lstm_step.lstm_flops_per_token(128, 128) == 3 * 2 * 4 * 256 * 128


def test_smoke_run_writes_every_candidate(tmp_path):
    run_python(["-m", "kerapos.benchmarks.lstm_step", "--smoke", "--lengths=8,12", "--rounds=2",
                f"--output_dir={tmp_path}"])
    results = json.loads((tmp_path / "results.json").read_text())
    peak = results["machine"]["matmul_gflops"]
    assert [(r["length"], r["candidate"]) for r in results["rows"]] == [
        (n, c) for n in (8, 12) for c in lstm_step.CANDIDATES]
    for row in results["rows"]:
        assert row["median_ms"] > 0
        assert row["ratio_q25"] <= row["ratio_to_keras"] <= row["ratio_q75"]
        assert row["share_of_peak"] == row["lstm_gflops"] / peak
        if row["candidate"] == "keras":
            assert row["ratio_to_keras"] == 1.0
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.count("| lstm_only |") == 2
