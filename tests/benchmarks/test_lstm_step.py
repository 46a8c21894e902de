"""`python -m kerapos.benchmarks.lstm_step` in its smoke mode, and its FLOP count."""

import json

import keras
import numpy as np
import tensorflow as tf
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


def test_projected_input_lstm_is_keras_lstm():
    """The `projected_input` lever computes Keras' LSTM: same outputs and gradients
    with the same weights, on right-padded rows (masked steps carry the state)."""
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(3, 7, 5)).astype("float32"))
    mask = tf.sequence_mask([7, 4, 1], 7)
    reference = keras.layers.LSTM(6, return_sequences=True)
    projected = lstm_step.ProjectedInputLSTM(6, return_sequences=True)
    reference(inputs)
    projected(inputs)
    weights = [rng.normal(size=w.shape).astype("float32") for w in reference.get_weights()]
    reference.set_weights(weights)
    projected.set_weights(weights)

    def outputs_and_gradients(layer):
        with tf.GradientTape() as tape:
            outputs = layer(inputs, mask=mask)  # [batch, seq, units]
            loss = tf.reduce_sum(outputs * tf.range(1.0, 7.0))
        return outputs, tape.gradient(loss, layer.trainable_weights)

    expected, expected_gradients = outputs_and_gradients(reference)
    actual, actual_gradients = outputs_and_gradients(projected)
    np.testing.assert_allclose(actual, expected, atol=1e-6)
    for got, want in zip(actual_gradients, expected_gradients, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
