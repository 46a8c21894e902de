"""PositionalMultiHeadAttention against an independent numpy attention."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers.positional_attention import PositionalMultiHeadAttention

FEATURES, HEADS, HEAD_DIM = 16, 2, 8
SCHEMES = ("none", "rotary", "xpos", "alibi", "t5", "fire", "kerple")
# Small xPos scale base, T5 distances and FIRE threshold so short test
# sequences feel them.
TEST_CONFIGS = {
    "xpos": {"xpos_scale_base": 4.0},
    "t5": {"num_buckets": 8, "max_distance": 6},
    "fire": {"initial_threshold": 4.0},
}


# -- numpy reference -----------------------------------------------------------------
def np_rotate(x, positions, xpos_sign=0, xpos_scale_base=4.0, gamma=0.4):
    """Half-split RoPE of x [b, s, n, h] at `positions` [s]; xPos when sign != 0."""
    half = x.shape[-1] // 2
    frequencies = 10000.0 ** (-np.arange(half) * 2.0 / x.shape[-1])
    angles = positions[:, None] * frequencies[None, :]  # [s, half]
    cos, sin = np.cos(angles)[None, :, None, :], np.sin(angles)[None, :, None, :]
    first, second = x[..., :half], x[..., half:]
    rotated = np.concatenate([first * cos - second * sin, second * cos + first * sin], -1)
    if xpos_sign:
        zeta = (np.arange(half) * 2.0 / x.shape[-1] + gamma) / (1.0 + gamma)
        decay = zeta[None, :] ** (xpos_sign * positions[:, None] / xpos_scale_base)
        rotated = rotated * np.tile(decay, 2)[None, :, None, :]
    return rotated


def np_t5_bucket(relative_position, num_buckets, max_distance):
    """T5's bidirectional bucket (mesh TensorFlow), numpy."""
    n = -relative_position
    num_buckets //= 2
    ret = (n < 0).astype(np.int64) * num_buckets
    n = np.abs(n)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        large = max_exact + (
            np.log(n / max_exact) / np.log(max_distance / max_exact) * (num_buckets - max_exact)
        ).astype(np.int64)
    return ret + np.where(n < max_exact, n, np.minimum(large, num_buckets - 1))


def np_fire_bias(fire, query_positions, key_positions):
    """Causal FIRE: f(psi(i - j) / psi(max(L, i))), psi(x) = log(|c| x + 1)."""
    c, multiplier, w1, b1, w2, b2 = (
        np.asarray(w, "float64") for w in (
            fire.c, fire.threshold_multiplier, fire.hidden_kernel, fire.hidden_bias,
            fire.output_kernel, fire.output_bias,
        )
    )

    def psi(x):
        return np.log(abs(c) * x + 1.0)

    threshold = abs(multiplier * fire.initial_threshold)
    distance = np.maximum(query_positions[:, None] - key_positions[None, :], 0.0)  # [T, S]
    x = psi(distance) / psi(np.maximum(query_positions, threshold))[:, None]
    hidden = np.maximum(x[..., None] * w1[0] + b1, 0.0)  # [T, S, d]
    return np.transpose(hidden @ w2 + b2, (2, 0, 1))  # [n, T, S]


def np_kerple_bias(kerple, query_positions, key_positions):
    """KERPLE's log kernel: -r1 log(1 + r2 |i - j|)."""
    r1 = np.maximum(np.asarray(kerple.r1, "float64"), 0.01)[:, None, None]
    r2 = np.maximum(np.asarray(kerple.r2, "float64"), 0.01)[:, None, None]
    distance = np.abs(query_positions[:, None] - key_positions[None, :])  # [T, S]
    return -r1 * np.log(1.0 + r2 * distance[None])


ALIBI_SLOPES = {2: [2.0**-4, 2.0**-8], 4: [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]}


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def np_attention(layer, query, value, scheme, mask=None, causal=False, logn=None):
    """Projection with the layer's weights, then positions, softmax, output."""
    def project(dense, x):
        out = np.einsum("btd,dnh->btnh", x, np.asarray(dense.kernel))
        return out + np.asarray(dense.bias) if dense.bias is not None else out

    q, k, v = (
        project(layer._query_dense, query),
        project(layer._key_dense, value),
        project(layer._value_dense, value),
    )
    T, S = q.shape[1], k.shape[1]
    query_positions = np.arange(T, dtype="float64") + (S - T)  # end-aligned
    key_positions = np.arange(S, dtype="float64")
    if scheme in ("rotary", "xpos"):
        sign = 1 if scheme == "xpos" else 0
        q = np_rotate(q, query_positions, xpos_sign=sign)
        k = np_rotate(k, key_positions, xpos_sign=-sign)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    if logn is not None:
        logits *= max(1.0, np.log(S) / np.log(logn))
    distance = query_positions[:, None] - key_positions[None, :]  # i - j
    if scheme == "alibi":  # default causal=True: -m (i - j)
        logits += -np.asarray(ALIBI_SLOPES[q.shape[2]])[:, None, None] * distance[None]
    if scheme == "t5":
        table = np.asarray(layer._position_layer.embeddings)  # [buckets, heads]
        buckets = np_t5_bucket(-distance.astype(int), **TEST_CONFIGS["t5"])
        logits += np.transpose(table[buckets], (2, 0, 1))[None]
    if scheme == "fire":  # default causal=True
        logits += np_fire_bias(layer._position_layer, query_positions, key_positions)[None]
    if scheme == "kerple":  # default kernel="log"
        logits += np_kerple_bias(layer._position_layer, query_positions, key_positions)[None]
    allowed = np.ones((q.shape[0], T, S), bool)
    if mask is not None:
        allowed &= mask
    if causal:
        allowed &= (key_positions[None, :] <= query_positions[:, None])[None]
    logits = np.where(allowed[:, None], logits, -1e9)
    probs = softmax(logits)
    context = np.einsum("bnts,bsnh->btnh", probs, v)
    dense = layer._output_dense
    out = np.einsum("btnh,nhd->btd", context, np.asarray(dense.kernel)) + np.asarray(dense.bias)
    return out, probs


def make(scheme, **kwargs):
    return PositionalMultiHeadAttention(
        HEADS, HEAD_DIM, position=scheme, position_config=TEST_CONFIGS.get(scheme), **kwargs
    )


def inputs(batch=2, query_length=7, key_length=7, seed=0):
    rng = np.random.RandomState(seed)
    query = rng.randn(batch, query_length, FEATURES).astype("float32")
    value = rng.randn(batch, key_length, FEATURES).astype("float32")
    return query, value


# -- the shared suite ------------------------------------------------------------------
class AttentionSuite(LayerSuite):
    input_shapes = ((None, FEATURES), (None, FEATURES))
    scheme = "none"
    expected_trainable_weights = 8  # query, key, value, output: kernel and bias each
    # The softmax over keys ignores what every key adds alike: q . key_bias.
    weights_without_gradient = ("key/bias",)
    mask_input = 1  # the value's mask masks the keys; the query carries none
    mask_passes_through = False

    def make_layer(self, **overrides):
        return make(self.scheme, **overrides)

    def make_inputs(self, batch, length):
        return inputs(batch, length, length, seed=np.random.randint(1000))


class TestRotarySuite(AttentionSuite):
    scheme = "rotary"
    weights_without_gradient = ()  # rotated, the key bias differs per key


class TestALiBiSuite(AttentionSuite):
    scheme = "alibi"


class TestT5Suite(AttentionSuite):
    scheme = "t5"
    expected_trainable_weights = 9  # and the bias table


class TestFireSuite(AttentionSuite):
    scheme = "fire"
    expected_trainable_weights = 14  # and c, the threshold multiplier, the MLP's 4
    # The MLP's output bias adds one constant per head to every logit, which
    # the softmax ignores (as the key bias), so its gradient is zero up to rounding.
    weights_without_gradient = ("key/bias", "output_bias")


class TestKerpleSuite(AttentionSuite):
    scheme = "kerple"
    expected_trainable_weights = 10  # and r1, r2


class TestXPosSuite(AttentionSuite):
    scheme = "xpos"
    weights_without_gradient = ()


class TestNoPositionSuite(AttentionSuite):
    scheme = "none"


# -- against numpy -----------------------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("return_scores", [False, True])
def test_matches_numpy(scheme, return_scores):
    query, value = inputs()
    layer = make(scheme)
    outputs = layer(query, value, return_attention_scores=return_scores)
    expected, probs = np_attention(layer, query, value, scheme)
    if return_scores:
        outputs, scores = outputs
        np.testing.assert_allclose(scores, probs, atol=1e-5)
    np.testing.assert_allclose(outputs, expected, atol=1e-4)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("return_scores", [False, True])
def test_matches_numpy_with_padding_and_causal_masks(scheme, return_scores):
    query, value = inputs()
    value_mask = np.ones((2, 7), bool)
    value_mask[0, 5:] = False
    value_mask[1, 3:] = False
    layer = make(scheme)
    outputs = layer(
        query, value, value_mask=value_mask, use_causal_mask=True,
        return_attention_scores=return_scores,
    )
    expected, probs = np_attention(
        layer, query, value, scheme, mask=value_mask[:, None, :], causal=True
    )
    if return_scores:
        outputs, scores = outputs
        np.testing.assert_allclose(scores, probs, atol=1e-5)
    np.testing.assert_allclose(outputs, expected, atol=1e-4)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_matches_numpy_with_attention_mask_and_fewer_queries(scheme):
    # 3 queries at positions 6, 7, 8 against 9 keys (end-aligned, as in decoding).
    query, value = inputs(query_length=3, key_length=9, seed=3)
    attention_mask = np.random.RandomState(4).rand(2, 3, 9) > 0.3
    attention_mask[..., -1] = True
    layer = make(scheme)
    outputs = layer(query, value, attention_mask=attention_mask, use_causal_mask=True)
    expected, _ = np_attention(
        layer, query, value, scheme, mask=attention_mask, causal=True
    )
    np.testing.assert_allclose(outputs, expected, atol=1e-4)


def test_schemes_differ():
    """The positions really enter: same projections, different outputs."""
    query, value = inputs()
    reference = make("none")
    expected = np.asarray(reference(query, value))
    projections = {w.path.split("/", 1)[1]: np.asarray(w) for w in reference.weights}
    for scheme in SCHEMES[1:]:
        layer = make(scheme)
        layer(query, value)
        for weight in layer.weights:
            weight.assign(projections.get(weight.path.split("/", 1)[1], weight))
        assert not np.allclose(layer(query, value), expected, atol=1e-3), scheme


# -- causality, probabilities, log-n ----------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_causal_future_tokens_do_not_leak(scheme):
    x, _ = inputs(batch=1, query_length=8)
    layer = make(scheme)
    before = np.asarray(layer(x, x, use_causal_mask=True))
    changed = x.copy()
    changed[:, 5] += 3.0
    after = np.asarray(layer(changed, changed, use_causal_mask=True))
    np.testing.assert_allclose(after[:, :5], before[:, :5], atol=1e-5)
    assert not np.allclose(after[:, 5:], before[:, 5:], atol=1e-3)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_attention_scores_rows_sum_to_one(scheme, dropout):
    query, value = inputs(query_length=4, key_length=6)
    layer = make(scheme, dropout=dropout)
    value_mask = np.ones((2, 6), bool)
    value_mask[1, 4:] = False
    _, scores = layer(
        query, value, value_mask=value_mask, return_attention_scores=True, training=True
    )
    scores = np.asarray(scores)
    assert scores.shape == (2, HEADS, 4, 6)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(scores[1, :, :, 4:], 0.0, atol=1e-6)


def test_dropout_only_in_training():
    query, value = inputs()
    layer = make("alibi", dropout=0.5, seed=1)
    inference = np.asarray(layer(query, value, training=False))
    expected, _ = np_attention(layer, query, value, "alibi")
    np.testing.assert_allclose(inference, expected, atol=1e-4)
    assert not np.allclose(layer(query, value, training=True), inference, atol=1e-3)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_logn_scaling(scheme):
    layer = make(scheme, logn_train_length=4)
    plain = make(scheme)
    short_query, short_value = inputs(query_length=4, key_length=4)
    plain(short_query, short_value)
    layer(short_query, short_value)
    plain.set_weights(layer.get_weights())
    # Up to the training length: no effect.
    np.testing.assert_allclose(
        layer(short_query, short_value), plain(short_query, short_value), atol=1e-6
    )
    # Longer: logits times log(9) / log(4).
    query, value = inputs(query_length=9, key_length=9)
    got = np.asarray(layer(query, value))
    expected, _ = np_attention(layer, query, value, scheme, logn=4)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert not np.allclose(got, plain(query, value), atol=1e-3)


def test_logn_scaling_with_dynamic_length():
    layer = make("rotary", logn_train_length=4)
    spec = tf.TensorSpec([None, None, FEATURES], tf.float32)
    traced = tf.function(lambda q, v: layer(q, v), input_signature=[spec, spec])
    for length in (3, 10):
        query, value = inputs(query_length=length, key_length=length, seed=length)
        got = traced(query, value)
        expected, _ = np_attention(layer, query, value, "rotary", logn=4)
        np.testing.assert_allclose(got, expected, atol=1e-4)


# -- config, errors ------------------------------------------------------------------------
def test_config_round_trip_keeps_position_settings():
    layer = PositionalMultiHeadAttention(
        4, 8, position="alibi", position_config={"causal": False},
        logn_train_length=128, dropout=0.1, value_dim=6,
    )
    config = layer.get_config()
    assert config["position"] == "alibi"
    assert config["position_config"] == {"causal": False}
    assert config["logn_train_length"] == 128
    assert config["value_dim"] == 6 and config["dropout"] == 0.1
    clone = PositionalMultiHeadAttention.from_config(config)
    assert clone.get_config() == config
    assert clone._position_layer.causal is False and clone._position_layer.num_heads == 4


def test_position_layers_follow_the_dtype_policy():
    layer = make("t5", dtype="mixed_bfloat16")
    query, value = inputs()
    assert layer(query, value).dtype == "bfloat16"
    assert layer._position_layer.dtype_policy.name == "mixed_bfloat16"


@pytest.mark.parametrize("position", ["rope", "sinusoidal", "learned", None])
def test_unknown_position(position):
    with pytest.raises(ValueError, match="valid names are: none, rotary, xpos, alibi, t5, fire, kerple"):
        PositionalMultiHeadAttention(2, 8, position=position)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(position="alibi", position_config={"num_heads": 3}), "num_heads=3"),
        (dict(position="alibi", position_config={"slope": 1}), "does not take 'slope'"),
        (dict(position="rotary", position_config=[1]), "position_config"),
        (dict(position="none", position_config={"a": 1}), "takes no config"),
        (dict(logn_train_length=1), "logn_train_length"),
        (dict(logn_train_length=2.5), "logn_train_length"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PositionalMultiHeadAttention(2, 8, **kwargs)


def test_rotary_needs_even_key_dim():
    layer = PositionalMultiHeadAttention(2, 7, position="rotary")
    query, value = inputs()
    with pytest.raises(ValueError, match="even"):
        layer(query, value)


def test_rotary_needs_no_more_queries_than_keys():
    layer = make("rotary")
    query, value = inputs(query_length=5, key_length=3)
    with pytest.raises(ValueError, match="query length <= key length"):
        layer(query, value)


def test_position_needs_one_attention_axis():
    layer = make("alibi")
    images = np.zeros((1, 3, 3, FEATURES), "float32")
    with pytest.raises(ValueError, match=r"\[batch, seq, features\]"):
        layer(images, images)


def test_registered_name():
    assert (
        keras.saving.get_registered_name(PositionalMultiHeadAttention)
        == "kerapos>PositionalMultiHeadAttention"
    )


@pytest.mark.parametrize("scheme", ["alibi", "none"])
def test_flash_attention_refuses_to_return_scores(scheme):
    # Reachable in Keras 3.15 (flash_attention=True, dropout 0): bias schemes
    # refuse it as MultiHeadAttention does for the others.
    layer = make(scheme, flash_attention=True)
    query, value = inputs()
    with pytest.raises(ValueError, match="Returning attention scores is not supported"):
        layer(query, value, return_attention_scores=True)
