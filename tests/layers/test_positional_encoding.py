"""Tests for `kerapos.layers.positional_encoding.PositionalEncoding`."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers.positional_encoding import PositionalEncoding

HIDDEN = 16


def reference_encoding(positions, hidden, max_wavelength=10000.0):
    """Closed form of Vaswani et al. in float64: dim 2i sin, dim 2i+1 cos."""
    positions = np.asarray(positions, dtype=np.float64)
    encoding = np.zeros(positions.shape + (hidden,), dtype=np.float64)
    for i in range(hidden // 2):
        angle = positions / max_wavelength ** (2.0 * i / hidden)
        encoding[..., 2 * i] = np.sin(angle)
        encoding[..., 2 * i + 1] = np.cos(angle)
    return encoding


def random_inputs(batch, length, hidden=HIDDEN, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, length, hidden)).astype("float32")


class TestPositionalEncodingSuite(LayerSuite):
    mask_input = 0

    def make_layer(self, **overrides):
        return PositionalEncoding(**overrides)

    def make_inputs(self, batch, length):
        return (np.random.normal(size=(batch, length, HIDDEN)).astype("float32"),)


@pytest.mark.parametrize("length", [1, 7, 50])
@pytest.mark.parametrize("start_index", [0, 5, 1000])
@pytest.mark.parametrize("max_wavelength", [10000.0, 100.0])
def test_matches_numpy_reference(length, start_index, max_wavelength):
    x = random_inputs(2, length)
    layer = PositionalEncoding(max_wavelength=max_wavelength)
    got = np.asarray(layer(x, start_index=start_index))
    expected = x + reference_encoding(np.arange(length) + start_index, HIDDEN, max_wavelength)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_start_index_as_tensor_matches_int():
    x = random_inputs(2, 6)
    layer = PositionalEncoding()
    np.testing.assert_allclose(
        layer(x, start_index=tf.constant(37)), layer(x, start_index=37), atol=1e-6
    )
    expected = x + reference_encoding(np.arange(6) + 37, HIDDEN)
    np.testing.assert_allclose(layer(x, start_index=tf.constant(37, "int64")), expected, atol=1e-4)


def test_unbatched_positions_override_start_index():
    x = random_inputs(2, 5)
    positions = np.array([3, 0, 9, 9, 250], dtype="int32")
    got = PositionalEncoding()(x, start_index=100, positions=positions)
    np.testing.assert_allclose(got, x + reference_encoding(positions, HIDDEN), atol=1e-4)


def test_batched_positions():
    x = random_inputs(2, 4)
    positions = np.array([[0, 1, 2, 3], [10, 20, 30, 40]], dtype="int64")
    got = PositionalEncoding()(x, positions=tf.constant(positions))
    np.testing.assert_allclose(got, x + reference_encoding(positions, HIDDEN), atol=1e-4)


def test_incremental_decoding_matches_full_sequence():
    x = random_inputs(1, 9)
    layer = PositionalEncoding()
    full = np.asarray(layer(x))
    steps = [np.asarray(layer(x[:, t : t + 1], start_index=t)) for t in range(9)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)


def test_encoding_is_additive_and_pairs_lie_on_unit_circle():
    x = random_inputs(3, 12)
    layer = PositionalEncoding()
    encoding = np.asarray(layer(x)) - x
    zeros_encoding = np.asarray(layer(np.zeros_like(x)))
    np.testing.assert_allclose(encoding, zeros_encoding, atol=1e-5)
    pairs = zeros_encoding.reshape(3, 12, HIDDEN // 2, 2)
    np.testing.assert_allclose((pairs**2).sum(-1), 1.0, atol=1e-5)
    # Position 0: sin 0 = 0 on even features, cos 0 = 1 on odd ones.
    np.testing.assert_array_equal(zeros_encoding[0, 0, 0::2], 0.0)
    np.testing.assert_array_equal(zeros_encoding[0, 0, 1::2], 1.0)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("use_positions", [False, True])
def test_mixed_precision_far_position_is_accurate(policy, use_positions):
    hidden, position = 64, 32768
    layer = PositionalEncoding(dtype=policy)
    zeros = np.zeros((1, 1, hidden), "float32")
    if use_positions:
        outputs = layer(zeros, positions=np.array([position], "int32"))
    else:
        outputs = layer(zeros, start_index=position)
    assert outputs.dtype == keras.DTypePolicy(policy).compute_dtype
    got = np.asarray(tf.cast(outputs, "float32"), dtype=np.float64)[0, 0]
    np.testing.assert_allclose(got, reference_encoding(position, hidden), atol=1e-2)


def test_far_position_is_a_discriminating_check():
    """Angles computed in bfloat16 are off by whole radians at 32768."""
    hidden, position = 64, 32768
    exponents = np.arange(0, hidden, 2) / hidden
    inverse_frequencies = tf.constant(10000.0 ** -exponents, "bfloat16")
    angles = tf.constant(position, "bfloat16") * inverse_frequencies
    naive_sin = np.asarray(tf.cast(tf.sin(angles), "float32"))
    error = np.abs(naive_sin - reference_encoding(position, hidden)[0::2]).max()
    assert error > 0.1


@pytest.mark.parametrize("max_wavelength", [10000.0, 500.0])
def test_parity_with_keras_hub_sine_position_encoding(max_wavelength):
    # keras-hub 0.32's SinePositionEncoding uses the same interleaved layout
    # (even features sin, odd cos) and the same `max_wavelength`, and returns
    # only the encoding, so no reordering is needed: ours(x) - x == hub(x).
    x = random_inputs(2, 20)
    ours = PositionalEncoding(max_wavelength=max_wavelength)
    hub = keras_hub.layers.SinePositionEncoding(max_wavelength=max_wavelength)
    np.testing.assert_allclose(np.asarray(ours(x)) - x, hub(x), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(ours(x, start_index=7)) - x, hub(x, start_index=7), atol=1e-5
    )
    positions = np.array([[4, 8, 15, 16, 23, 42] + [0] * 14] * 2, "int32")
    np.testing.assert_allclose(
        np.asarray(ours(x, positions=positions)) - x,
        hub(x, positions=positions.astype("float32")),
        atol=1e-5,
    )


def test_compute_mask_returns_incoming_mask():
    layer = PositionalEncoding()
    mask = tf.constant([[True, False]])
    assert layer.compute_mask(tf.zeros((1, 2, 4)), mask) is mask
    assert layer.compute_mask(tf.zeros((1, 2, 4)), None) is None


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 1)])
def test_odd_hidden_size_raises(shape):
    with pytest.raises(ValueError, match="even hidden size"):
        PositionalEncoding()(np.zeros(shape, "float32"))


@pytest.mark.parametrize("shape", [(5, 8), (2, 5, 3, 8)])
def test_wrong_rank_raises(shape):
    with pytest.raises(ValueError, match="rank 3"):
        PositionalEncoding()(np.zeros(shape, "float32"))


@pytest.mark.parametrize("max_wavelength", [0, -10.0])
def test_non_positive_max_wavelength_raises(max_wavelength):
    with pytest.raises(ValueError, match="max_wavelength"):
        PositionalEncoding(max_wavelength=max_wavelength)


def test_float_positions_raise():
    with pytest.raises(ValueError, match="integer tensor"):
        PositionalEncoding()(np.zeros((1, 3, 4), "float32"), positions=np.array([0.0, 1.0, 2.0]))


def test_positions_of_wrong_rank_raise():
    with pytest.raises(ValueError, match=r"\[seq\] or \[batch, seq\]"):
        PositionalEncoding()(np.zeros((1, 3, 4), "float32"), positions=np.zeros((1, 1, 3), "int32"))


def test_config_holds_max_wavelength():
    layer = PositionalEncoding(max_wavelength=500, name="pe")
    config = layer.get_config()
    assert config["max_wavelength"] == 500.0
    assert PositionalEncoding.from_config(config).max_wavelength == 500.0
