"""TransformerBlock against a numpy pre-norm block, and the shared layer suite."""

import math

import keras
import numpy as np
import pytest
from layer_suite import LayerSuite

from kerapos.layers.transformer_block import TransformerBlock
from tests.layers.test_positional_attention import np_attention

HIDDEN, HEADS, INTERMEDIATE = 16, 2, 24
erf = np.vectorize(math.erf)


def random_inputs(batch=2, length=7, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, length, HIDDEN)).astype("float32")


# -- numpy reference -----------------------------------------------------------------
def np_layer_norm(norm, x):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + 1e-5) * np.asarray(norm.gamma) + np.asarray(norm.beta)


def np_dense(dense, x):
    return x @ np.asarray(dense.kernel) + np.asarray(dense.bias)


def np_block(block, x, scheme, mask=None, causal=False):
    """x + attention(LN(x)), then + W2 gelu(W1 LN(.)), in float64."""
    x = x.astype(np.float64)
    normed = np_layer_norm(block.attention_norm, x)
    key_mask = None if mask is None else np.broadcast_to(mask[:, None, :], (len(x), x.shape[1], x.shape[1]))
    attended, _ = np_attention(block.attention, normed, normed, scheme, mask=key_mask, causal=causal)
    x = x + attended
    hidden = np_dense(block.feedforward_in, np_layer_norm(block.feedforward_norm, x))
    hidden = 0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0)))  # exact GELU
    return x + np_dense(block.feedforward_out, hidden)


@pytest.mark.parametrize("scheme", ["none", "rotary"])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_numpy_pre_norm_block(scheme, causal):
    block = TransformerBlock(HEADS, HIDDEN, INTERMEDIATE, position=scheme, causal=causal)
    x = random_inputs()
    mask = np.ones(x.shape[:2], bool)
    mask[1, -2:] = False
    outputs = np.asarray(block(x, mask=mask))
    expected = np_block(block, x, scheme, mask=mask, causal=causal)
    np.testing.assert_allclose(outputs, expected, atol=2e-5)


def test_input_schemes_get_plain_attention():
    block = TransformerBlock(
        HEADS, HIDDEN, INTERMEDIATE, position="learned", position_config={"max_length": 4}
    )
    assert block.attention.position == "none" and block.attention._position_layer is None
    x = random_inputs(length=9)  # longer than the table: no table is used here
    np.testing.assert_allclose(block(x), np_block(block, x, "none"), atol=2e-5)
    assert block.get_config()["position_config"] == {"max_length": 4}


def test_attention_schemes_reach_the_attention():
    block = TransformerBlock(
        HEADS, HIDDEN, INTERMEDIATE, position="alibi", position_config={"causal": False}, logn_train_length=4
    )
    assert block.attention.position == "alibi" and block.attention._position_layer.causal is False
    assert block.attention.logn_train_length == 4


def test_causal_future_tokens_do_not_leak():
    block = TransformerBlock(HEADS, HIDDEN, INTERMEDIATE, position="rotary", causal=True)
    x = random_inputs(length=8)
    changed = x.copy()
    changed[:, 5:] += 3.0
    np.testing.assert_allclose(np.asarray(block(x))[:, :5], np.asarray(block(changed))[:, :5], atol=1e-5)


def test_dropout_only_in_training():
    block = TransformerBlock(HEADS, HIDDEN, INTERMEDIATE, dropout=0.5)
    x = random_inputs()
    np.testing.assert_allclose(block(x), block(x), atol=1e-6)
    assert not np.allclose(block(x, training=True), block(x))


def test_config_is_complete():
    block = TransformerBlock(
        HEADS, HIDDEN, INTERMEDIATE, dropout=0.1, position="t5", position_config={"num_buckets": 8},
        causal=True, logn_train_length=16, name="block",
    )
    config = block.get_config()
    assert {key: config[key] for key in (
        "num_heads", "hidden_dim", "intermediate_dim", "dropout", "position", "position_config",
        "causal", "logn_train_length", "name",
    )} == {
        "num_heads": HEADS, "hidden_dim": HIDDEN, "intermediate_dim": INTERMEDIATE, "dropout": 0.1,
        "position": "t5", "position_config": {"num_buckets": 8}, "causal": True,
        "logn_train_length": 16, "name": "block",
    }


def test_safe_mode_load_after_importing_kerapos_layers(tmp_path):
    inputs = keras.Input((None, HIDDEN))
    model = keras.Model(inputs, TransformerBlock(HEADS, HIDDEN, INTERMEDIATE, position="xpos")(inputs))
    path = str(tmp_path / "block.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.layers[1]) is TransformerBlock
    np.testing.assert_allclose(loaded(random_inputs()), model(random_inputs()), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_heads=3), "divisible by num_heads"),
        (dict(num_heads=True), "num_heads"),
        (dict(intermediate_dim=0), "intermediate_dim"),
        (dict(dropout=1.0), "dropout"),
        (dict(position="rope"), "Unknown position scheme"),
        (dict(causal="yes"), "causal"),
        (dict(logn_train_length=1), "logn_train_length"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {**dict(num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE), **kwargs}
    with pytest.raises(ValueError, match=match):
        TransformerBlock(**arguments)


# -- the shared suite ------------------------------------------------------------------
class TestEncoderBlockSuite(LayerSuite):
    input_shapes = ((None, HIDDEN),)
    expected_trainable_weights = 16  # 2 LayerNorms, 4 attention projections, 2 Dense: 2 each
    expected_non_trainable_variables = 2  # the dropout seeds of attention and residuals
    mask_input = 0
    atol = 2e-5

    def make_layer(self, **overrides):
        return TransformerBlock(HEADS, HIDDEN, INTERMEDIATE, dropout=0.1, position="rotary", **overrides)

    def make_inputs(self, batch, length):
        return (np.random.randn(batch, length, HIDDEN).astype("float32"),)


class TestDecoderBlockSuite(TestEncoderBlockSuite):
    expected_trainable_weights = 17  # and T5's bias table
    expected_non_trainable_variables = 0
    weights_without_gradient = ("key/bias",)  # unrotated, softmax ignores it

    def make_layer(self, **overrides):
        return TransformerBlock(
            HEADS, HIDDEN, INTERMEDIATE, position="t5", position_config={"bidirectional": False},
            causal=True, **overrides,
        )


class TestPlainAttentionBlockSuite(TestEncoderBlockSuite):
    expected_non_trainable_variables = 0
    weights_without_gradient = ("key/bias",)

    def make_layer(self, **overrides):
        return TransformerBlock(HEADS, HIDDEN, INTERMEDIATE, position="sinusoidal", **overrides)
