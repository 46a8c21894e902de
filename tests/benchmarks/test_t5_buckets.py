"""The T5 bucket report: which buckets a training length can reach."""

import numpy as np
import pytest
import tensorflow as tf

from kerapos.benchmarks.t5_buckets import bucket_report
from kerapos.layers.relative_position_bias import RelativePositionBias


def _layer(**config):
    layer = RelativePositionBias(num_heads=2, **config)
    layer(tf.zeros([1, 2, 4, 4]))
    return layer


def test_default_buckets_past_64_are_out_of_reach_of_64_token_training():
    # T5 defaults: 16 buckets per direction, 8 exact, log-spaced up to 128:
    # bucket(d) = 8 + floor(log(d / 8) / log(16) * 8) -> 64 is the first d in 14.
    rows = bucket_report(_layer(num_buckets=32, max_distance=128), train_length=64, eval_length=1024)
    ranges = {r["bucket"]: (r["min_distance"], r["max_distance"], r["trained"]) for r in rows}
    assert [ranges[b] for b in range(8)] == [(b, b, True) for b in range(8)]
    assert ranges[13] == (46, 63, True)
    assert ranges[14] == (64, 90, False)
    assert ranges[15] == (91, 1023, False)
    expected = [8 + int(np.floor(np.log(d / 8) / np.log(16) * 8)) for d in (46, 63, 64, 90, 91)]
    assert expected == [13, 13, 14, 14, 15]


def test_training_changes_exactly_the_reached_buckets():
    layer = _layer(num_buckets=32, max_distance=128)
    train_length = 20
    with tf.GradientTape() as tape:
        scores = layer(tf.zeros([1, 2, train_length, train_length]))
        # A causal model only ever reads keys at or before the query.
        causal = tf.linalg.band_part(tf.ones([train_length, train_length]), -1, 0)
        loss = tf.reduce_sum(scores * causal)
    gradient = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings)).numpy()  # [buckets, heads]
    rows = bucket_report(layer, train_length=train_length, eval_length=256)
    for row in rows:
        assert bool(np.any(gradient[row["bucket"]] != 0)) == row["trained"], row


def test_paper_ratio_trains_the_last_bucket():
    # max_distance a quarter of the training length, as in the ALiBi paper's T5
    # (128 vs 512): every bucket up to any eval length was reached.
    rows = bucket_report(_layer(num_buckets=32, max_distance=16), train_length=64, eval_length=1024)
    assert all(r["trained"] for r in rows)
    assert rows[-1]["max_distance"] == 1023


def test_lengths_are_checked():
    layer = _layer(num_buckets=32, max_distance=128)
    assert bucket_report(layer, np.int64(64), np.int32(8)) == bucket_report(layer, 64, 8)
    with pytest.raises(ValueError, match="`train_length` must be an integer >= 1"):
        bucket_report(layer, train_length=0, eval_length=8)
    with pytest.raises(ValueError, match="`eval_length` must be an integer >= 1"):
        bucket_report(layer, train_length=8, eval_length=True)
