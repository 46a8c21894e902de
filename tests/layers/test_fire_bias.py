"""FireBias: causal and symmetric biases against the paper's formula, plus the suite."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers.fire_bias import FireBias

NUM_HEADS = 4
LENGTHS = [(6, 6), (1, 9), (3, 7), (5, 12)]


def reference_bias(weights, threshold, query_length, key_length, causal):
    """float64 FIRE (arXiv:2310.04418, Section 3): f(psi(i - j) / psi(max(L, i))),
    psi(x) = log(c x + 1), f = relu MLP; query i at key_length - query_length + i.
    Symmetric (causal=False): f(psi(|i - j|) / psi(max(L, i, j)))."""
    c, w1, b1, w2, b2 = (np.asarray(w, "float64") for w in weights)
    i = (np.arange(query_length) + (key_length - query_length))[:, None].astype("float64")
    j = np.arange(key_length)[None, :].astype("float64")
    if causal:
        distance, position = np.maximum(i - j, 0.0), np.broadcast_to(i, (query_length, key_length))
    else:
        distance, position = np.abs(i - j), np.maximum(i, j)
    x = np.log(c * distance + 1.0) / np.log(c * np.maximum(threshold, position) + 1.0)  # [q, k]
    hidden = np.maximum(x[..., None] * w1[0] + b1, 0.0)  # [q, k, d]
    return np.transpose(hidden @ w2 + b2, (2, 0, 1))  # [h, q, k]


def readable_layer(causal, threshold=4.0, c=0.3, hidden_dim=5, seed=0):
    """A built layer with random MLP weights, the given c and L, and its
    weights for the reference (c, w1, b1, w2, b2)."""
    rng = np.random.RandomState(seed)
    layer = FireBias(NUM_HEADS, causal=causal, hidden_dim=hidden_dim, initial_threshold=threshold)
    layer.build()
    w1, b1 = rng.randn(1, hidden_dim), rng.randn(hidden_dim)
    w2, b2 = rng.randn(hidden_dim, NUM_HEADS), rng.randn(NUM_HEADS)
    layer.c.assign(c)
    for weight, value in zip(
        (layer.hidden_kernel, layer.hidden_bias, layer.output_kernel, layer.output_bias),
        (w1, b1, w2, b2),
    ):
        weight.assign(value.astype("float32"))
    return layer, (c, w1, b1, w2, b2)


class TestFireCausalSuite(LayerSuite):
    input_shapes = ((NUM_HEADS, None, None),)
    # c, the threshold multiplier, and the MLP's two kernels and two biases.
    expected_trainable_weights = 6
    causal = True

    def make_layer(self, **overrides):
        # A threshold inside the test lengths, so both sides of max(L, i) run.
        return FireBias(num_heads=NUM_HEADS, causal=self.causal, initial_threshold=4.0, **overrides)

    def make_inputs(self, batch, length):
        # [batch, heads, query_length, key_length]
        return (np.random.randn(batch, NUM_HEADS, length, length).astype("float32"),)


class TestFireSymmetricSuite(TestFireCausalSuite):
    causal = False


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("threshold", [4.0, 512.0])
def test_bias_matches_closed_form(causal, lengths, threshold):
    query_length, key_length = lengths
    layer, weights = readable_layer(causal, threshold=threshold)
    bias = np.asarray(layer.bias(query_length, key_length))
    assert bias.shape == (1, NUM_HEADS, query_length, key_length) and bias.dtype == np.float32
    expected = reference_bias(weights, threshold, query_length, key_length, causal)
    np.testing.assert_allclose(bias[0], expected, rtol=1e-5, atol=1e-5)


def test_learned_threshold_is_multiplier_times_initial_threshold():
    layer, weights = readable_layer(True, threshold=4.0)
    layer.threshold_multiplier.assign(-1.5)  # |m * L|: the sign does not matter
    expected = reference_bias(weights, 6.0, 4, 10, True)
    np.testing.assert_allclose(np.asarray(layer.bias(4, 10))[0], expected, rtol=1e-5, atol=1e-5)


def test_initial_values_follow_the_paper():
    layer = FireBias(8)
    layer.build()
    assert (layer.causal, layer.hidden_dim, layer.initial_threshold) == (True, 32, 512.0)
    np.testing.assert_allclose(np.asarray(layer.c), 0.1)
    np.testing.assert_allclose(np.asarray(layer.threshold_multiplier), 1.0)
    assert layer.hidden_kernel.shape == (1, 32) and layer.output_kernel.shape == (32, 8)
    # PyTorch nn.Linear's default, as in the paper's code: U(+-1/sqrt(fan_in)).
    assert np.abs(np.asarray(layer.hidden_bias)).max() <= 1.0
    assert np.abs(np.asarray(layer.output_kernel)).max() <= 1.0 / np.sqrt(32)


def test_interpolation_depends_on_the_query_position():
    # Past the threshold the MLP's input is psi(i - j) / psi(i): the same
    # distance reads smaller for a later query, and the first key reads 1.
    layer, _ = readable_layer(True, threshold=2.0)
    layer.output_kernel.assign(np.eye(5, NUM_HEADS, dtype="float32"))  # head 0: hidden unit 0
    layer.output_bias.assign(np.zeros(NUM_HEADS, "float32"))
    layer.hidden_kernel.assign(np.ones((1, 5), "float32"))
    layer.hidden_bias.assign(np.zeros(5, "float32"))  # head 0 = the MLP's input itself
    x = np.asarray(layer.bias(20, 20))[0, 0]  # [q, k]
    np.testing.assert_allclose(x[np.arange(2, 20), 0], 1.0, rtol=1e-5)
    assert x[10, 7] > x[19, 16] > 0  # distance 3, later query
    np.testing.assert_allclose(np.diagonal(x), 0.0, atol=1e-7)


@pytest.mark.parametrize("causal", [True, False])
def test_max_position_keeps_the_bias_of_the_last_position(causal):
    # Up to max_position P the bias is the paper's; past it a query keeps, for
    # its nearest P keys, the bias the query at P had, and farther keys share
    # the bias of distance P (symmetric form: the same with the later of i, j).
    cap = 6
    plain, _ = readable_layer(causal, threshold=2.0)
    capped = FireBias(NUM_HEADS, causal=causal, hidden_dim=5, initial_threshold=2.0,
                      max_position=cap)
    capped.build()
    capped.set_weights(plain.get_weights())
    short = cap + 1  # positions 0 .. P
    np.testing.assert_allclose(np.asarray(capped.bias(short, short)),
                               np.asarray(plain.bias(short, short)), rtol=1e-6, atol=1e-6)
    at_cap = np.asarray(plain.bias(short, short))[0, :, cap, ::-1]  # [h, distance 0 .. P]
    long = 20
    got = np.asarray(capped.bias(long, long))[0]  # [h, q, k]
    for query in range(cap + 1, long):
        distance = np.minimum(query - np.arange(query + 1), cap)  # keys 0 .. query
        np.testing.assert_allclose(got[:, query, :query + 1], at_cap[:, distance],
                                   rtol=1e-6, atol=1e-6)
    if not causal:
        np.testing.assert_allclose(got, np.transpose(got, (0, 2, 1)), rtol=1e-6)
    assert np.abs(got - np.asarray(plain.bias(long, long))[0]).max() > 1e-3
    config = capped.get_config()
    assert config["max_position"] == cap
    assert FireBias.from_config(config).max_position == cap


def test_symmetric_bias_is_symmetric_and_causal_is_end_aligned():
    symmetric, _ = readable_layer(False)
    full = np.asarray(symmetric.bias(9, 9))[0]
    np.testing.assert_allclose(full, np.transpose(full, (0, 2, 1)), rtol=1e-6)
    causal, _ = readable_layer(True)
    full = np.asarray(causal.bias(10, 10))
    np.testing.assert_allclose(np.asarray(causal.bias(3, 10)), full[:, :, -3:, :], rtol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_gradients_reach_every_weight(causal):
    layer, _ = readable_layer(causal, threshold=6.0)
    scores = tf.zeros((1, NUM_HEADS, 5, 8))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(scores) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == 6
    for weight, grad in zip(layer.trainable_weights, grads):
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)) and np.any(grad != 0), weight.path


def test_call_adds_bias_in_scores_dtype():
    layer, weights = readable_layer(True)
    scores = np.random.RandomState(0).randn(2, NUM_HEADS, 5, 7).astype("float32")
    expected = scores + reference_bias(weights, 4.0, 5, 7, True)[None]
    np.testing.assert_allclose(layer(scores), expected, rtol=1e-5, atol=1e-5)
    half = FireBias(NUM_HEADS, hidden_dim=5, initial_threshold=4.0, dtype="float16")
    half.build()
    half.set_weights(layer.get_weights())
    out16 = half(tf.constant(scores, tf.float16))
    assert out16.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(out16, "float32"), expected, atol=3e-2)


def test_dynamic_lengths_under_xla():
    layer, weights = readable_layer(False)
    spec = tf.TensorSpec([None, NUM_HEADS, None, None], tf.float32)
    compiled = tf.function(layer, input_signature=[spec], jit_compile=True)
    got = compiled(np.zeros((1, NUM_HEADS, 2, 6), "float32"))[0]
    np.testing.assert_allclose(got, reference_bias(weights, 4.0, 2, 6, False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_heads=0), "num_heads"),
        (dict(num_heads=4, causal="yes"), "causal"),
        (dict(num_heads=4, hidden_dim=0), "hidden_dim"),
        (dict(num_heads=4, initial_c=0.0), "`initial_c` must be a number > 0.0"),
        (dict(num_heads=4, initial_threshold=-5), "initial_threshold"),
        (dict(num_heads=4, initial_threshold="512"), "initial_threshold"),
        (dict(num_heads=4, max_position=0), "max_position"),
        (dict(num_heads=4, max_position=2.5), "max_position"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FireBias(**kwargs)


def test_bad_scores():
    layer = FireBias(NUM_HEADS)
    with pytest.raises(ValueError, match="rank 4"):
        layer(np.zeros((2, 4, 5), "float32"))
    with pytest.raises(ValueError, match="num_heads=4.*3 heads"):
        layer(np.zeros((2, 3, 5, 5), "float32"))


def test_registered_name():
    assert keras.saving.get_registered_name(FireBias) == "kerapos>FireBias"
