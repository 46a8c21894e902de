"""The benchmark table: one row per results.json, and seed means computed from them."""

import json

import numpy as np

from kerapos.benchmarks.classification import write_table


def _write_run(directory, name, seed, accuracy):
    run = directory / name
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "model": "lstm", "position": "sinusoidal", "max_length": 512,
        "test_accuracy": accuracy, "examples_per_second": 150.0, "train_seconds": 600.0,
        "device": "CPU (2 cores)", "flags": {"seed": seed, "logn_scaling": False},
    }))


def test_seed_means_come_from_every_seed_of_a_run(tmp_path):
    seeds = {
        "main": (0, {"128": 0.80, "256": 0.85, "512": 0.881, "full": 0.8845}),
        "main_seed1": (1, {"128": 0.82, "256": 0.86, "512": 0.887, "full": 0.8878}),
        "main_seed2": (2, {"128": 0.83, "256": 0.87, "512": 0.885, "full": 0.8876}),
        "main_long": (0, {"128": 0.70, "256": 0.75, "512": 0.80}),  # not a seed: no "full"
    }
    for name, (seed, accuracy) in seeds.items():
        _write_run(tmp_path, name, seed, accuracy)

    table = write_table(tmp_path)

    assert (tmp_path / "results.md").read_text() == table + "\n"
    assert "| main_long | lstm | sinusoidal | 512 | 70.00 | 75.00 | 80.00 | - |" in table
    means = [100 * np.mean([seeds[n][1][k] for n in ("main", "main_seed1", "main_seed2")])
             for k in ("128", "256", "512", "full")]
    expected = "| main | 0, 1, 2 | " + " | ".join(f"{m:.2f}" for m in means) + " | 88.45-88.78 |"
    assert expected in table, table
    assert table.count("| 0, 1, 2 |") == 1  # seed rows are not summarised again


def test_no_seed_table_without_repeated_runs(tmp_path):
    _write_run(tmp_path, "only", 0, {"128": 0.8, "full": 0.85})
    assert "Mean test accuracy" not in write_table(tmp_path)
