"""ALiBiBias: slopes and biases against the paper's reference, plus the suite."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers.alibi_bias import ALiBiBias

NUM_HEADS = 4


def reference_bias(slopes, query_length, key_length, causal):
    """-m * (i - j) (or -m * |i - j|), query i at key_length - query_length + i."""
    i = np.arange(query_length)[:, None] + (key_length - query_length)
    j = np.arange(key_length)[None, :]
    distance = (i - j).astype("float64")
    if not causal:
        distance = np.abs(distance)
    return -np.asarray(slopes)[:, None, None] * distance[None]


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


class TestALiBiSuite(LayerSuite):
    input_shapes = ((NUM_HEADS, None, None),)

    def make_layer(self, **overrides):
        return ALiBiBias(num_heads=NUM_HEADS, causal=False, **overrides)

    def make_inputs(self, batch, length):
        # [batch, heads, query_length, key_length]
        return (np.random.randn(batch, NUM_HEADS, length, length).astype("float32"),)


class TestALiBiCausalSuite(TestALiBiSuite):
    def make_layer(self, **overrides):
        return ALiBiBias(num_heads=NUM_HEADS, causal=True, **overrides)


# Written out from the fairseq reference (get_slopes in arXiv:2108.12409's code):
# n a power of two: 2^(-8/n), 2^(-16/n), ...; otherwise the slopes of the closest
# lower power of two p, then every other slope of the 2p set.
PAPER_SLOPES = {
    8: [2.0**-k for k in range(1, 9)],
    16: [2.0 ** (-k / 2) for k in range(1, 17)],
    12: [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5],
    1: [2.0**-8],
    2: [2.0**-4, 2.0**-8],
    3: [2.0**-4, 2.0**-8, 2.0**-2],
    4: [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8],
}


@pytest.mark.parametrize("num_heads", sorted(PAPER_SLOPES))
def test_slopes_match_paper(num_heads):
    slopes = ALiBiBias(num_heads).slopes
    assert slopes.dtype == np.float32 and slopes.shape == (num_heads,)
    np.testing.assert_allclose(slopes, PAPER_SLOPES[num_heads], rtol=1e-6)


def test_slopes_match_keras_hub():
    hub = keras_hub.layers.AlibiBias()
    for num_heads in (5, 6, 7, 12, 20, 32):
        np.testing.assert_allclose(
            ALiBiBias(num_heads).slopes, hub._get_slopes(num_heads), rtol=1e-6
        )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lengths", [(6, 6), (1, 9), (3, 7)])
def test_bias_matches_closed_form(causal, lengths):
    query_length, key_length = lengths
    layer = ALiBiBias(8, causal=causal)
    bias = np.asarray(layer.bias(query_length, key_length))
    assert bias.shape == (1, 8, query_length, key_length) and bias.dtype == np.float32
    expected = reference_bias(PAPER_SLOPES[8], query_length, key_length, causal)
    np.testing.assert_allclose(bias[0], expected, atol=1e-6)


def test_symmetric_bias_is_minus_slope_times_abs_distance():
    bias = np.asarray(ALiBiBias(2, causal=False).bias(4, 4))[0]
    distance = np.abs(np.arange(4)[:, None] - np.arange(4)[None, :])
    np.testing.assert_allclose(bias[0], -distance / 16.0)
    np.testing.assert_allclose(bias[1], -distance / 256.0)
    np.testing.assert_allclose(bias[0], bias[0].T)  # symmetric


def test_causal_end_aligned_queries_match_full_bias_rows():
    # Decoding the last 3 queries against 10 keys == the last 3 rows of 10x10.
    layer = ALiBiBias(4, causal=True)
    full = np.asarray(layer.bias(10, 10))
    tail = np.asarray(layer.bias(3, 10))
    np.testing.assert_allclose(tail, full[:, :, -3:, :])
    # The key at the query's own position gets zero bias, earlier keys negative.
    np.testing.assert_allclose(np.diagonal(full[0], axis1=1, axis2=2), 0.0)
    assert np.all(np.tril(full[0, 0], -1)[np.tril_indices(10, -1)] < 0)


def test_call_adds_bias_in_scores_dtype():
    scores = np.random.RandomState(0).randn(2, 4, 5, 7).astype("float32")
    layer = ALiBiBias(4, causal=False)
    out = layer(scores)
    expected = scores + reference_bias(PAPER_SLOPES[4], 5, 7, causal=False)[None]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    out16 = ALiBiBias(4, causal=False, dtype="float16")(tf.constant(scores, tf.float16))
    assert out16.dtype == tf.float16
    np.testing.assert_allclose(np.asarray(out16, "float32"), expected, atol=1e-2)


def test_causal_softmax_matches_keras_hub_alibi():
    """keras-hub adds m * (j - (k - 1)): a per-row constant shift of ours."""
    length, heads = 9, 8
    scores = np.random.RandomState(1).randn(2, heads, length, length).astype("float32")
    ours = np.array(ALiBiBias(heads, causal=True)(scores))
    hub = np.array(keras_hub.layers.AlibiBias()(scores))
    future = np.triu(np.ones((length, length), bool), 1)
    ours[..., future] = -np.inf
    hub[..., future] = -np.inf
    np.testing.assert_allclose(softmax(ours), softmax(hub), atol=1e-6)
    # ...and they are not the same logits (the shift is real), so the
    # comparison above is not trivially true.
    assert not np.allclose(ours[..., ~future], hub[..., ~future])


def test_dynamic_lengths_under_xla():
    layer = ALiBiBias(4, causal=True)
    spec = tf.TensorSpec([None, 4, None, None], tf.float32)
    compiled = tf.function(layer, input_signature=[spec], jit_compile=True)
    scores = np.zeros((1, 4, 2, 6), "float32")
    np.testing.assert_allclose(
        compiled(scores)[0], reference_bias(PAPER_SLOPES[4], 2, 6, True), atol=1e-6
    )


@pytest.mark.parametrize("num_heads", [0, -2, 2.0, True, "8"])
def test_bad_num_heads(num_heads):
    with pytest.raises(ValueError, match="num_heads"):
        ALiBiBias(num_heads)


def test_bad_causal():
    with pytest.raises(ValueError, match="causal"):
        ALiBiBias(4, causal="yes")


def test_bad_scores_rank():
    with pytest.raises(ValueError, match="rank 4"):
        ALiBiBias(4)(np.zeros((2, 4, 5), "float32"))


def test_heads_mismatch():
    with pytest.raises(ValueError, match="num_heads=4.*3 heads"):
        ALiBiBias(4)(np.zeros((2, 3, 5, 5), "float32"))


def test_registered_name():
    assert keras.saving.get_registered_name(ALiBiBias) == "kerapos>ALiBiBias"
