"""`python -m kerapos.benchmarks.padding`: token counts of the real bucketed pipeline."""

import json

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_python

from kerapos.benchmarks import padding

LENGTHS = [3, 5, 9, 12, 17, 30, 31, 40]


def _rows():
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(2, 50, size=n)) for n in LENGTHS]
    return tf.ragged.constant(rows, dtype=tf.int64), np.arange(len(rows)) % 2


def _by_hand(boundaries, max_length):
    # Batch larger than the data: each bucket is one batch, as wide as its longest row.
    cut = np.minimum(LENGTHS, max_length)
    bucket = np.searchsorted(boundaries, cut, side="right")
    return sum(int(cut[bucket == b].max()) * int(np.sum(bucket == b)) for b in np.unique(bucket))


@pytest.mark.parametrize("boundaries", [(), (8, 16, 32), (4, 10, 18, 35)])
@pytest.mark.parametrize("max_length", [64, 20])
def test_counts_match_the_bucket_rule(boundaries, max_length):
    ids, labels = _rows()
    result = padding.padding(ids, labels, batch_size=64, max_length=max_length,
                             bucket_boundaries=boundaries, seed=3)
    real = int(np.minimum(LENGTHS, max_length).sum())
    assert result["real_tokens"] == real
    assert result["padded_tokens"] == _by_hand(boundaries, max_length)
    assert result["padded_per_real"] == result["padded_tokens"] / real


def test_batches_of_one_have_no_padding():
    ids, labels = _rows()
    result = padding.padding(ids, labels, batch_size=1, max_length=64, bucket_boundaries=(8,))
    assert result["batches"] == len(LENGTHS)
    assert result["padded_per_real"] == 1.0


def test_run_on_the_fixture_writes_every_candidate(tmp_path):
    run_python(["-m", "kerapos.benchmarks.padding", "--dataset=tests/fixtures/imdb_sample.json",
                "--vocab_size=200", "--max_length=64", "--batch_size=4",
                f"--output_dir={tmp_path}"])
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {row["buckets"]: row for row in results["rows"]}
    assert list(rows) == list(padding.CANDIDATES)
    assert len({row["real_tokens"] for row in rows.values()}) == 1
    assert all(row["padded_per_real"] >= 1.0 for row in rows.values())
    # One bucket pads at least as much as any finer grid.
    assert rows["none"]["padded_tokens"] >= rows["every_32"]["padded_tokens"]
    assert "| every_8 |" in (tmp_path / "results.md").read_text()


def test_long_evenly_spaced_boundaries_are_shown_compactly():
    assert padding._shown(()) == "(one bucket)"
    assert padding._shown((32, 64, 96, 128, 192)) == "32, 64, 96, 128, 192"
    assert padding._shown((16, 32, 48, 64, 80, 768, 1024)) == "16, 32, ..., 80, 768, 1024"
