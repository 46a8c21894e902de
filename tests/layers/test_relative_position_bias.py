"""RelativePositionBias (T5): buckets against the T5 reference, plus the suite."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers.attention_bias import end_aligned_positions
from kerapos.layers.relative_position_bias import RelativePositionBias

NUM_HEADS = 4


def t5_reference_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """Mesh TensorFlow's `_relative_position_bucket`, transcribed to numpy."""
    ret = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore", invalid="ignore"):
        val_if_large = max_exact + (
            np.log(n.astype(np.float32) / max_exact)
            / np.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).astype(np.int32)
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    ret += np.where(is_small, n, val_if_large)
    return ret


def layer_with_readable_table(num_heads=2, **kwargs):
    """A layer whose table entry [bucket, head] is bucket + 1000 * head."""
    layer = RelativePositionBias(num_heads, **kwargs)
    layer.build()
    table = np.arange(layer.num_buckets)[:, None] + 1000 * np.arange(num_heads)[None, :]
    layer.set_weights([table.astype("float32")])
    return layer


class TestRelativePositionBiasSuite(LayerSuite):
    input_shapes = ((NUM_HEADS, None, None),)
    expected_trainable_weights = 1

    def make_layer(self, **overrides):
        return RelativePositionBias(
            num_heads=NUM_HEADS, num_buckets=8, max_distance=6, **overrides
        )

    def make_inputs(self, batch, length):
        # [batch, heads, query_length, key_length]
        return (np.random.randn(batch, NUM_HEADS, length, length).astype("float32"),)


class TestRelativePositionBiasCausalSuite(TestRelativePositionBiasSuite):
    def make_layer(self, **overrides):
        return RelativePositionBias(
            num_heads=NUM_HEADS, num_buckets=8, max_distance=6, bidirectional=False,
            **overrides,
        )


@pytest.mark.parametrize(
    "config",
    [
        dict(bidirectional=True, num_buckets=32, max_distance=128),
        dict(bidirectional=False, num_buckets=32, max_distance=128),
        dict(bidirectional=True, num_buckets=16, max_distance=20),
        dict(bidirectional=False, num_buckets=10, max_distance=50),
        dict(bidirectional=True, num_buckets=64, max_distance=400),
    ],
)
def test_buckets_match_t5_reference(config):
    """Every relative position in [-599, 599], i.e. far beyond max_distance."""
    length = 600
    layer = layer_with_readable_table(**config)
    bias = np.asarray(layer.bias(length, length))  # [1, 2, q, k]
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
    expected = t5_reference_bucket(relative, **config)
    np.testing.assert_array_equal(bias[0, 0], expected)
    np.testing.assert_array_equal(bias[0, 1], expected + 1000)
    # Far distances share the last bucket of their direction: the extrapolation.
    last = config["num_buckets"] // (2 if config["bidirectional"] else 1) - 1
    assert bias[0, 0, -1, 0] == last
    assert np.all(bias[0, 0, -1, : length - config["max_distance"]] == last)
    if config["bidirectional"]:
        assert bias[0, 0, 0, -1] == config["num_buckets"] - 1
    else:
        assert np.all(bias[0, 0][relative > 0] == 0)  # the future: bucket 0


def test_buckets_hand_checked_t5_defaults():
    # Bidirectional, 32 buckets, max_distance 128: keys before the query use
    # buckets 0-15 (0-7 exact), keys after it 16-31.
    relative = np.array([0, -1, -7, -8, -127, -128, -5000, 1, 7, 8, 5000])
    layer = layer_with_readable_table(num_heads=1)
    got = []
    for r in relative:  # one query, key at offset r from it
        query_pos, key_pos = max(0, -r), max(0, r)
        length = max(query_pos, key_pos) + 1
        full = np.asarray(layer.bias(length, length))[0, 0]
        got.append(full[query_pos, key_pos])
    np.testing.assert_array_equal(got, [0, 1, 7, 8, 15, 15, 15, 17, 23, 24, 31])


def test_end_aligned_queries():
    layer = layer_with_readable_table(num_heads=3)
    full = np.asarray(layer.bias(12, 12))
    np.testing.assert_array_equal(np.asarray(layer.bias(1, 12)), full[:, :, -1:, :])
    np.testing.assert_array_equal(np.asarray(layer.bias(5, 12)), full[:, :, -5:, :])


def test_call_adds_table_values():
    layer = RelativePositionBias(NUM_HEADS, num_buckets=8, max_distance=10)
    scores = np.random.RandomState(0).randn(2, NUM_HEADS, 5, 5).astype("float32")
    out = np.asarray(layer(scores))
    table = layer.get_weights()[0]  # [buckets, heads]
    relative = np.arange(5)[None, :] - np.arange(5)[:, None]
    buckets = t5_reference_bucket(relative, True, 8, 10)
    expected = scores + np.transpose(table[buckets], (2, 0, 1))[None]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert layer.trainable_weights and layer.trainable_weights[0].shape == (8, NUM_HEADS)


def test_gradients_reach_the_table():
    layer = RelativePositionBias(2, num_buckets=8, max_distance=10)
    scores = tf.zeros((1, 2, 4, 4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(scores) ** 2)
    (grad,) = tape.gradient(loss, layer.trainable_weights)
    assert np.any(np.asarray(grad) != 0)


def test_dynamic_lengths_under_xla():
    layer = layer_with_readable_table(num_heads=NUM_HEADS)
    spec = tf.TensorSpec([None, NUM_HEADS, None, None], tf.float32)
    compiled = tf.function(layer, input_signature=[spec], jit_compile=True)
    out = np.asarray(compiled(np.zeros((1, NUM_HEADS, 3, 300), "float32")))
    relative = np.arange(300)[None, :] - (np.arange(3)[:, None] + 297)
    np.testing.assert_array_equal(out[0, 0], t5_reference_bucket(relative))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_heads=0), "num_heads"),
        (dict(num_heads=4, num_buckets=-1), "num_buckets"),
        (dict(num_heads=4, max_distance=0), "max_distance"),
        (dict(num_heads=4, num_buckets=2), "num_buckets=2 is too small"),
        (dict(num_heads=4, num_buckets=8, max_distance=2), "max_distance=2 must exceed"),
        (dict(num_heads=4, bidirectional="no"), "bidirectional"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RelativePositionBias(**kwargs)


def test_bad_scores():
    layer = RelativePositionBias(NUM_HEADS)
    with pytest.raises(ValueError, match="rank 4"):
        layer(np.zeros((2, 5, 5), "float32"))
    with pytest.raises(ValueError, match="num_heads=4.*2 heads"):
        layer(np.zeros((1, 2, 5, 5), "float32"))


def test_registered_name():
    assert (
        keras.saving.get_registered_name(RelativePositionBias)
        == "kerapos>RelativePositionBias"
    )


@pytest.mark.parametrize("bidirectional", [True, False])
def test_toeplitz_bias_equals_the_pairwise_lookup_and_its_gradient(bidirectional):
    # `bias` lays one lookup per distance out by a skewed reshape, its gradient
    # sums the band |d| < max_distance per distance and the rest per side
    # (`_table_gradient`); `bias_at` looks every (query, key) pair up and
    # differentiates the gather. Same values; the same gradient up to float32
    # summation order (the last buckets sum hundreds of terms).
    layer = RelativePositionBias(3, bidirectional=bidirectional, max_distance=20)
    layer.build()
    layer.embeddings.assign(np.random.default_rng(0).normal(size=(32, 3)).astype("float32"))
    for q, k in [(1, 1), (1, 9), (4, 4), (3, 11), (11, 3), (40, 40), (5, 60), (60, 5)]:
        weights = tf.constant(np.random.default_rng(q * k).normal(size=(1, 3, q, k)), tf.float32)
        gradients = []
        for make, lengths in ((layer.bias, (q, k)),
                              (layer.bias_at, end_aligned_positions(q, k))):
            with tf.GradientTape() as tape:
                bias = make(*lengths)
                loss = tf.reduce_sum(bias * weights)
            gradient = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings))  # of a gather
            gradients.append((bias.numpy(), gradient.numpy()))
        (toeplitz, toeplitz_gradient), (pairwise, pairwise_gradient) = gradients
        np.testing.assert_array_equal(toeplitz, pairwise, err_msg=f"{q}x{k}")
        np.testing.assert_allclose(toeplitz_gradient, pairwise_gradient, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{q}x{k}")


@pytest.mark.parametrize("jit_compile", [False, True])
def test_table_gradient_with_lengths_known_only_when_run(jit_compile):
    # Dynamic lengths take the int64 gather index and a band width computed in
    # the graph; the gradient is the eager one, XLA or not.
    layer = RelativePositionBias(3, bidirectional=False, max_distance=20)
    layer.build()
    layer.embeddings.assign(np.random.default_rng(0).normal(size=(32, 3)).astype("float32"))
    weights = tf.constant(np.random.default_rng(1).normal(size=(2, 3, 37, 50)), tf.float32)

    def table_gradient(scores):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(scores) * weights)
        return tape.gradient(loss, layer.embeddings)

    scores = tf.zeros((2, 3, 37, 50))
    dynamic = tf.function(table_gradient, jit_compile=jit_compile,
                          input_signature=[tf.TensorSpec([None, 3, None, None], tf.float32)])
    np.testing.assert_allclose(dynamic(scores), table_gradient(scores), rtol=1e-5, atol=1e-5)
