"""ReRoPE, Self-Extend and Dual Chunk Attention against brute-force numpy.

The reference computes, for every query-key pair on its own, the relative
position the paper assigns to it (written from the papers' formulas, not from
`context_extension.passes`), rotates the query by it (the key by 0) and takes
the masked softmax of the logits.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerapos.layers.positional_attention import PositionalMultiHeadAttention

FEATURES, HEADS, HEAD_DIM, LENGTH = 16, 2, 8, 20
METHODS = {
    "rerope": {"method": "rerope", "window": 4},
    "leaky_rerope": {"method": "rerope", "window": 4, "leaky_factor": 2.5,
                     "logn_train_length": 8},
    "self_extend": {"method": "self_extend", "neighbor_window": 4, "group_size": 3},
    "dual_chunk": {"method": "dual_chunk", "chunk_size": 8, "local_window": 4},
}
WINDOWS = {"rerope": 4, "leaky_rerope": 4, "self_extend": 4, "dual_chunk": 8}
XPOS = {"xpos_scale_base": 4.0}


def relative_position(config, a, b):
    """The position the method gives query position a and key position b."""
    d = a - b
    sign = 1.0 if d > 0 else -1.0
    if config["method"] == "rerope":
        w, k = config["window"], config.get("leaky_factor")
        if abs(d) < w:
            return d
        return sign * (w if k is None else w + (abs(d) - w) / k)
    if config["method"] == "self_extend":
        w, g = config["neighbor_window"], config["group_size"]
        if abs(d) < w:
            return d
        return a // g - b // g + sign * (w - w // g)
    size = config["chunk_size"]
    c = size - config["local_window"]
    chunk_a, chunk_b = a // c, b // c
    inter = min(2 * c - 1, size)
    if chunk_a == chunk_b:
        return d
    if chunk_a == chunk_b + 1:
        return min(a % c + c, size) - b % c
    if chunk_a > chunk_b + 1:
        return inter - b % c
    if chunk_b == chunk_a + 1:
        return a % c - min(b % c + c, size)
    return a % c - inter


def rotate(x, position, xpos_sign):
    """Half-split RoPE of x [..., h] by one position; xPos when sign != 0."""
    half = x.shape[-1] // 2
    frequencies = 10000.0 ** (-np.arange(half) * 2.0 / x.shape[-1])
    cos, sin = np.cos(position * frequencies), np.sin(position * frequencies)
    first, second = x[..., :half], x[..., half:]
    rotated = np.concatenate([first * cos - second * sin, second * cos + first * sin], -1)
    if xpos_sign:
        zeta = (np.arange(half) * 2.0 / x.shape[-1] + 0.4) / 1.4
        rotated = rotated * np.tile(zeta ** (xpos_sign * position / XPOS["xpos_scale_base"]), 2)
    return rotated


def reference_probabilities(layer, query_input, key_input, mask):
    """`[b, n, T, S]` attention probabilities, pair by pair."""
    def project(dense, x):
        kernel, bias = (np.asarray(w) for w in dense.weights)
        return np.einsum("bsf,fnh->bsnh", x, kernel) + bias

    config, xpos = layer.context_extension, layer.position == "xpos"
    q, k = project(layer._query_dense, query_input), project(layer._key_dense, key_input)
    queries, keys = q.shape[1], k.shape[1]
    logits = np.zeros((q.shape[0], HEADS, queries, keys))
    for i in range(queries):
        a = keys - queries + i
        scale = 1.0
        if config.get("logn_train_length"):
            scale = max(1.0, np.log(a + 1) / np.log(config["logn_train_length"]))
        for j in range(keys):
            r = relative_position(config, a, j)
            rotated_q = rotate(q[:, i], r, 1 if xpos else 0)  # [b, n, h]
            rotated_k = rotate(k[:, j], 0.0, -1 if xpos else 0)
            logits[:, :, i, j] = scale * np.sum(rotated_q * rotated_k, -1) / np.sqrt(HEAD_DIM)
    logits = np.where(mask[:, None], logits, -1e9)
    logits -= logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(-1, keepdims=True)


def make_layer(method, position="rotary"):
    layer = PositionalMultiHeadAttention(
        HEADS, HEAD_DIM, position=position,
        position_config=XPOS if position == "xpos" else None,
        context_extension=METHODS[method],
    )
    layer.build((None, None, FEATURES), (None, None, FEATURES))
    return layer


def inputs(length, seed=0):
    return np.random.default_rng(seed).normal(size=(2, length, FEATURES)).astype("float32")


def causal_mask(queries, keys):
    return np.tril(np.ones((queries, keys), bool), k=keys - queries)[None].repeat(2, 0)


@pytest.mark.parametrize("position", ["rotary", "xpos"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_causal_attention_equals_reference(method, position):
    layer = make_layer(method, position)
    x = inputs(LENGTH)
    _, probabilities = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(
        np.asarray(probabilities), reference_probabilities(layer, x, x, causal_mask(20, 20)),
        atol=2e-5,
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bidirectional_with_padding_mask_equals_reference(method):
    layer = make_layer(method)
    x = inputs(LENGTH, seed=1)
    keep = np.ones((2, LENGTH), bool)
    keep[1, 13:] = False  # the second row is padded after 13 tokens
    mask = keep[:, None, :] & keep[:, :, None]
    _, probabilities = layer(x, x, attention_mask=mask, return_attention_scores=True)
    expected = reference_probabilities(layer, x, x, mask)
    np.testing.assert_allclose(np.asarray(probabilities)[0], expected[0], atol=2e-5)
    np.testing.assert_allclose(  # padded queries are ignored; real ones must match
        np.asarray(probabilities)[1, :, :13], expected[1, :, :13], atol=2e-5
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_equals_plain_rotary_up_to_its_window(method):
    layer = make_layer(method)
    plain = PositionalMultiHeadAttention(HEADS, HEAD_DIM, position="rotary")
    plain.build((None, None, FEATURES), (None, None, FEATURES))
    plain.set_weights(layer.get_weights())
    x = inputs(WINDOWS[method])
    for causal in (True, False):
        np.testing.assert_allclose(
            np.asarray(layer(x, x, use_causal_mask=causal)),
            np.asarray(plain(x, x, use_causal_mask=causal)), atol=1e-6,
        )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_decoding_queries_align_to_the_end_of_the_keys(method):
    layer = make_layer(method)
    x = inputs(LENGTH, seed=2)
    full = np.asarray(layer(x, x, use_causal_mask=True))
    last = np.asarray(layer(x[:, -3:], x, use_causal_mask=True))
    np.testing.assert_allclose(last, full[:, -3:], atol=1e-5)


def test_xla_and_mixed_precision():
    layer = make_layer("dual_chunk")
    x = inputs(LENGTH, seed=3)
    eager = np.asarray(layer(x, x, use_causal_mask=True))
    compiled = tf.function(lambda t: layer(t, t, use_causal_mask=True), jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(tf.constant(x))), eager, atol=1e-5)
    mixed = PositionalMultiHeadAttention(
        HEADS, HEAD_DIM, position="rotary", context_extension=METHODS["dual_chunk"],
        dtype="mixed_bfloat16",
    )
    mixed.build((None, None, FEATURES), (None, None, FEATURES))
    mixed.set_weights(layer.get_weights())
    outputs = mixed(x, x, use_causal_mask=True)
    assert outputs.dtype == "bfloat16"
    np.testing.assert_allclose(np.asarray(outputs, "float32"), eager, atol=0.05)


def test_config_round_trip_and_keras_file(tmp_path):
    layer = make_layer("leaky_rerope")
    restored = PositionalMultiHeadAttention.from_config(layer.get_config())
    assert restored.context_extension == layer.context_extension
    inputs_ = keras.Input((None, FEATURES))
    model = keras.Model(inputs_, layer(inputs_, inputs_, use_causal_mask=True))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    x = inputs(LENGTH)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


@pytest.mark.parametrize(
    "position, config, message",
    [
        ("rotary", {"method": "rope"}, "method"),
        ("rotary", {"method": "rerope"}, "needs 'window'"),
        ("rotary", {"method": "rerope", "window": 4, "windw": 2}, "windw"),
        ("rotary", {"method": "rerope", "window": 0}, "window"),
        ("rotary", {"method": "rerope", "window": 4, "leaky_factor": 1.0}, "leaky_factor"),
        ("rotary", {"method": "dual_chunk", "chunk_size": 4, "local_window": 4}, "local_window"),
        ("rotary", "rerope", "must be a dict"),
        ("alibi", {"method": "rerope", "window": 4}, "position='rotary' or 'xpos'"),
    ],
)
def test_bad_configs_are_refused(position, config, message):
    with pytest.raises(ValueError, match=message):
        PositionalMultiHeadAttention(HEADS, HEAD_DIM, position=position,
                                     context_extension=config)
