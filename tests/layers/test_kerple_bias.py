"""KerpleBias: both kernels against the paper's closed form, plus the suite."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers.kerple_bias import KerpleBias

NUM_HEADS = 4
LENGTHS = [(6, 6), (1, 9), (3, 7), (5, 12)]


def reference_bias(r1, r2, query_length, key_length, kernel):
    """float64 KERPLE (arXiv:2205.09921, Section 3): -r1 log(1 + r2 |i - j|)
    or -r1 |i - j|^r2, query i at absolute position key_length - query_length + i."""
    i = np.arange(query_length)[:, None] + (key_length - query_length)
    j = np.arange(key_length)[None, :]
    distance = np.abs(i - j).astype("float64")[None]  # [1, q, k]
    r1 = np.asarray(r1, "float64")[:, None, None]
    r2 = np.asarray(r2, "float64")[:, None, None]
    if kernel == "log":
        return -r1 * np.log(1.0 + r2 * distance)
    return -r1 * distance**r2


def layer_with(r1, r2, kernel):
    layer = KerpleBias(len(r1), kernel=kernel)
    layer.build()
    layer.set_weights([np.asarray(r1, "float32"), np.asarray(r2, "float32")])
    return layer


class TestKerpleLogSuite(LayerSuite):
    input_shapes = ((NUM_HEADS, None, None),)
    expected_trainable_weights = 2

    def make_layer(self, **overrides):
        return KerpleBias(num_heads=NUM_HEADS, kernel="log", **overrides)

    def make_inputs(self, batch, length):
        # [batch, heads, query_length, key_length]
        return (np.random.randn(batch, NUM_HEADS, length, length).astype("float32"),)


class TestKerplePowerSuite(TestKerpleLogSuite):
    def make_layer(self, **overrides):
        return KerpleBias(num_heads=NUM_HEADS, kernel="power", **overrides)


@pytest.mark.parametrize("kernel", ["log", "power"])
@pytest.mark.parametrize("lengths", LENGTHS)
def test_bias_matches_closed_form(kernel, lengths):
    query_length, key_length = lengths
    r1, r2 = [0.5, 1.3, 0.02, 2.0], [0.7, 0.05, 1.9, 1.0]
    layer = layer_with(r1, r2, kernel)
    bias = np.asarray(layer.bias(query_length, key_length))
    assert bias.shape == (1, 4, query_length, key_length) and bias.dtype == np.float32
    expected = reference_bias(r1, r2, query_length, key_length, kernel)
    np.testing.assert_allclose(bias[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", ["log", "power"])
def test_default_initialisation_matches_the_reference(kernel):
    # Reference code: uniform [0, 2) for the log kernel's r1 and the power
    # kernel's r2 (the exponent), uniform [0, 1) for the other.
    layer = KerpleBias(512, kernel=kernel)
    layer.build()
    r1, r2 = (np.asarray(w) for w in (layer.r1, layer.r2))
    big, small = (r1, r2) if kernel == "log" else (r2, r1)
    assert 0.0 <= big.min() and big.max() < 2.0 and big.max() > 1.5
    assert 0.0 <= small.min() and small.max() < 1.0 and small.max() > 0.75


def test_out_of_range_parameters_are_used_clipped():
    # r < 0.01 acts as 0.01; the power kernel's r2 > 2 acts as 2.
    for kernel, r2, used in (("log", -1.0, 0.01), ("power", 3.0, 2.0), ("power", 0.0, 0.01)):
        layer = layer_with([0.001], [r2], kernel)
        expected = reference_bias([0.01], [used], 4, 4, kernel)
        np.testing.assert_allclose(np.asarray(layer.bias(4, 4))[0], expected, rtol=1e-5)


def test_constraint_projects_weights_after_a_step():
    layer = layer_with([0.5, 0.5], [1.0, 1.9], "power")
    optimizer = keras.optimizers.SGD(10.0)
    with tf.GradientTape() as tape:
        # Pushes r1 down and r2 up, far past their bounds.
        loss = tf.reduce_sum(layer.r1) - tf.reduce_sum(layer.r2)
    optimizer.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights))
    np.testing.assert_allclose(np.asarray(layer.r1), [0.01, 0.01])
    np.testing.assert_allclose(np.asarray(layer.r2), [2.0, 2.0])


@pytest.mark.parametrize("kernel", ["log", "power"])
def test_bias_is_symmetric_zero_on_the_diagonal_and_decays(kernel):
    layer = layer_with([0.5, 1.5], [0.3, 1.2], kernel)
    full = np.asarray(layer.bias(10, 10))[0]  # [h, q, k]
    np.testing.assert_allclose(full, np.transpose(full, (0, 2, 1)))
    np.testing.assert_allclose(np.diagonal(full, axis1=1, axis2=2), 0.0)
    assert np.all(np.diff(full[:, -1, :], axis=-1) > 0)  # nearer keys: smaller penalty
    # End-aligned: 3 queries against 10 keys are the last 3 rows.
    np.testing.assert_allclose(np.asarray(layer.bias(3, 10))[0], full[:, -3:, :], rtol=1e-6)


@pytest.mark.parametrize("kernel", ["log", "power"])
def test_gradients_reach_every_weight_and_are_finite(kernel):
    layer = layer_with([0.5, 1.5], [0.3, 1.2], kernel)
    scores = tf.zeros((1, 2, 5, 8))  # distance 0 included
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(scores) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    for weight, grad in zip(layer.trainable_weights, grads):
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)) and np.all(grad != 0), weight.path


def test_call_adds_bias_in_scores_dtype():
    scores = np.random.RandomState(0).randn(2, 2, 5, 7).astype("float32")
    layer = layer_with([0.5, 1.5], [0.3, 1.2], "log")
    expected = scores + reference_bias([0.5, 1.5], [0.3, 1.2], 5, 7, "log")[None]
    np.testing.assert_allclose(layer(scores), expected, atol=1e-5)
    half = KerpleBias(2, dtype="float16")
    half.build()
    half.set_weights(layer.get_weights())
    out16 = half(tf.constant(scores, tf.float16))
    assert out16.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(out16, "float32"), expected, atol=1e-2)


def test_dynamic_lengths_under_xla():
    layer = layer_with([0.5, 1.5], [0.3, 1.2], "power")
    spec = tf.TensorSpec([None, 2, None, None], tf.float32)
    compiled = tf.function(layer, input_signature=[spec], jit_compile=True)
    got = compiled(np.zeros((1, 2, 2, 6), "float32"))[0]
    expected = reference_bias([0.5, 1.5], [0.3, 1.2], 2, 6, "power")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_heads=0), "num_heads"),
        (dict(num_heads=2.0), "num_heads"),
        (dict(num_heads=4, kernel="cubic"), "`kernel` must be one of 'log', 'power'; got 'cubic'"),
        (dict(num_heads=4, kernel="Power"), "Did you mean 'power'"),
        (dict(num_heads=4, kernel=None), "`kernel` must be one of"),
        (dict(num_heads=4, r1_initializer="no_such_initializer"), "no_such_initializer"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KerpleBias(**kwargs)


def test_bad_scores():
    layer = KerpleBias(NUM_HEADS)
    with pytest.raises(ValueError, match="rank 4"):
        layer(np.zeros((2, 4, 5), "float32"))
    with pytest.raises(ValueError, match="num_heads=4.*3 heads"):
        layer(np.zeros((2, 3, 5, 5), "float32"))


def test_registered_name():
    assert keras.saving.get_registered_name(KerpleBias) == "kerapos>KerpleBias"
