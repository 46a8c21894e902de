"""Tests for `RotaryEmbedding` against an independent float64 numpy reference."""

import inspect
import math

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers.rotary_embedding import RotaryEmbedding

# -- independent numpy reference ---------------------------------------------------


def reference_frequencies(rotary_dim, base):
    """theta_i = base^(-2i/d), RoFormer eq. 15, highest first."""
    return np.array([base ** (-2.0 * i / rotary_dim) for i in range(rotary_dim // 2)])


def reference_rope(x, positions, frequencies, rotary_dim=None, scale=1.0, xpos=None):
    """Rotates each half-split pair `(x[i], x[i + d/2])` by `position * theta_i`.

    x: [batch, seq, heads, head_dim]; positions: [seq] or [batch, seq];
    scale: multiplies the rotation (YaRN's attention factor);
    xpos: None or `(gamma, scale_base, is_key)`. Plain loops, float64.
    """
    x = np.asarray(x, np.float64)
    batch, seq, _, head_dim = x.shape
    rotary_dim = rotary_dim or head_dim
    half = rotary_dim // 2
    positions = np.broadcast_to(np.asarray(positions, np.float64), (batch, seq))
    out = x.copy()
    for b in range(batch):
        for t in range(seq):
            n = positions[b, t]
            for i in range(half):
                angle = n * frequencies[i]
                rotation = scale * np.array(
                    [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
                )
                if xpos is not None:
                    gamma, scale_base, is_key = xpos
                    zeta = (2.0 * i / rotary_dim + gamma) / (1.0 + gamma)
                    rotation *= zeta ** ((-n if is_key else n) / scale_base)
                pair = np.stack([x[b, t, :, i], x[b, t, :, i + half]])  # [2, heads]
                out[b, t, :, i], out[b, t, :, i + half] = rotation @ pair
    return out


def reference_ntk_frequencies(rotary_dim, base, factor):
    return reference_frequencies(rotary_dim, base * factor ** (rotary_dim / (rotary_dim - 2)))


def reference_yarn_frequencies(rotary_dim, base, factor, original_length, beta_fast=32, beta_slow=1):
    """YaRN as in the authors' code (jquesnelle/yarn) and Hugging Face.

    The ramp runs over the pair index, between the pairs that complete
    `beta_fast` and `beta_slow` rotations over the original context.
    """
    def pair_with_rotations(rotations):
        # wavelength of pair i: 2 pi base^(2i/d); solve L / wavelength = rotations.
        return rotary_dim * math.log(original_length / (2 * math.pi * rotations)) / (2 * math.log(base))

    low = max(math.floor(pair_with_rotations(beta_fast)), 0)
    high = min(math.ceil(pair_with_rotations(beta_slow)), rotary_dim - 1)
    original = reference_frequencies(rotary_dim, base)
    out = []
    for i, theta in enumerate(original):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        out.append(theta / factor * ramp + theta * (1.0 - ramp))
    return np.array(out)


def random_heads(batch=2, seq=5, heads=3, head_dim=8, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, seq, heads, head_dim)).astype("float32")


def pair_norms(x, rotary_dim):
    half = rotary_dim // 2
    x = np.asarray(x, np.float64)
    return np.hypot(x[..., :half], x[..., half:rotary_dim])


# -- forward against the reference --------------------------------------------------


@pytest.mark.parametrize("start_index", [0, 7])
def test_matches_reference_full_rotation(start_index):
    x = random_heads()
    outputs = RotaryEmbedding(max_wavelength=100.0)(x, start_index=start_index)
    expected = reference_rope(x, np.arange(5) + start_index, reference_frequencies(8, 100.0))
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_start_index_tensor_in_traced_function():
    x = random_heads()
    layer = RotaryEmbedding()
    traced = tf.function(lambda x, start: layer(x, start_index=start))
    expected = reference_rope(x, np.arange(5) + 11, reference_frequencies(8, 10000.0))
    np.testing.assert_allclose(traced(x, tf.constant(11)), expected, atol=1e-5)
    np.testing.assert_allclose(layer(x, start_index=tf.constant(11, "int64")), expected, atol=1e-5)


def test_positions_override_start_index():
    x = random_heads()
    layer = RotaryEmbedding(max_wavelength=50.0)
    frequencies = reference_frequencies(8, 50.0)
    shared = np.array([3, 1, 4, 1, 5])
    np.testing.assert_allclose(
        layer(x, start_index=9, positions=shared), reference_rope(x, shared, frequencies), atol=1e-5
    )
    per_example = np.array([[0, 2, 4, 6, 8], [20, 21, 22, 23, 24]])
    np.testing.assert_allclose(
        layer(x, positions=per_example), reference_rope(x, per_example, frequencies), atol=1e-5
    )


@pytest.mark.parametrize(
    "head_dim, rotary_dim, rotated",
    [(8, 4, 4), (8, 0.5, 4), (10, 0.3, 2), (10, 1.0, 10), (7, 4, 4)],
)
def test_partial_rotary(head_dim, rotary_dim, rotated):
    x = random_heads(head_dim=head_dim)
    layer = RotaryEmbedding(max_wavelength=100.0, rotary_dim=rotary_dim)
    outputs = np.asarray(layer(x, start_index=3))
    assert layer.rotated_dim == rotated
    frequencies = reference_frequencies(rotated, 100.0)
    expected = reference_rope(x, np.arange(5) + 3, frequencies, rotary_dim=rotated)
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    np.testing.assert_array_equal(outputs[..., rotated:], x[..., rotated:])
    assert layer.frequencies().shape == (rotated // 2,)


@pytest.mark.parametrize("is_key", [False, True])
def test_xpos_matches_reference(is_key):
    x = random_heads()
    layer = RotaryEmbedding(max_wavelength=100.0, xpos=True, xpos_scale_base=8.0)
    outputs = layer(x, start_index=4, is_key=is_key)
    expected = reference_rope(
        x, np.arange(5) + 4, reference_frequencies(8, 100.0), xpos=(0.4, 8.0, is_key)
    )
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


# -- properties -------------------------------------------------------------------------


def test_rope_preserves_norms():
    x = random_heads()
    outputs = RotaryEmbedding()(x, start_index=1000)
    np.testing.assert_allclose(pair_norms(outputs, 8), pair_norms(x, 8), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(outputs, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@pytest.mark.parametrize("is_key", [False, True])
def test_xpos_scales_each_pair_by_zeta_power(is_key):
    x = random_heads()
    outputs = RotaryEmbedding(xpos=True, xpos_scale_base=64.0)(x, start_index=100, is_key=is_key)
    zeta = (np.arange(4) * 2 / 8 + 0.4) / 1.4  # [pairs]
    positions = (np.arange(5) + 100.0)[:, None, None]  # [seq, 1, 1]
    sign = -1.0 if is_key else 1.0
    expected = pair_norms(x, 8) * zeta ** (sign * positions / 64.0)
    np.testing.assert_allclose(pair_norms(outputs, 8), expected, rtol=1e-5)


def _dot_at(layer, query, key, m, n):
    rotated_query = np.asarray(layer(query, start_index=m), np.float64)
    rotated_key = np.asarray(layer(key, start_index=n, is_key=True), np.float64)
    return float(np.sum(rotated_query * rotated_key))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"rotary_dim": 4},
        {"xpos": True, "xpos_scale_base": 64.0},
        {"scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}},
    ],
    ids=["rope", "partial", "xpos", "yarn"],
)
def test_dot_product_depends_only_on_distance(kwargs):
    layer = RotaryEmbedding(max_wavelength=100.0, **kwargs)
    query, key = random_heads(1, 1, 1, 8, seed=1), random_heads(1, 1, 1, 8, seed=2)
    dots = [_dot_at(layer, query, key, m, m - 3) for m in (3, 10, 50, 200)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-4, atol=1e-5)
    # ...and it does depend on the distance.
    assert abs(_dot_at(layer, query, key, 10, 5) - dots[0]) > 1e-3


def test_xpos_decays_with_distance_as_zeta_power():
    # One pair active: q . k = zeta_0^((m - n)/base) * cos((m - n) theta_0) * |q||k|.
    layer = RotaryEmbedding(xpos=True, xpos_scale_base=16.0)
    query = np.zeros((1, 1, 1, 8), "float32")
    query[..., 0] = 1.0
    for distance in (0, 3, 9):
        dot = _dot_at(layer, query, query, 20 + distance, 20)
        expected = (0.4 / 1.4) ** (distance / 16.0) * math.cos(distance * 1.0)
        np.testing.assert_allclose(dot, expected, rtol=1e-5, atol=1e-6)


def test_linear_scaling_is_position_interpolation():
    x = random_heads()
    scaled = RotaryEmbedding(max_wavelength=100.0, scaling={"type": "linear", "factor": 4.0})
    unscaled = RotaryEmbedding(max_wavelength=100.0)
    np.testing.assert_allclose(
        scaled(x, positions=4 * np.arange(5)), unscaled(x, positions=np.arange(5)), atol=1e-5
    )
    scaled(x)
    np.testing.assert_allclose(scaled.frequencies(), reference_frequencies(8, 100.0) / 4.0, rtol=1e-6)


def test_ntk_keeps_highest_frequency_and_divides_lowest_by_factor():
    layer = RotaryEmbedding(scaling={"rope_type": "ntk", "factor": 8.0}, rotary_dim=16)
    frequencies = np.asarray(layer.frequencies(), np.float64)
    unscaled = reference_frequencies(16, 10000.0)
    assert frequencies[0] == 1.0
    np.testing.assert_allclose(frequencies[-1], unscaled[-1] / 8.0, rtol=1e-6)
    np.testing.assert_allclose(frequencies, reference_ntk_frequencies(16, 10000.0, 8.0), rtol=1e-6)
    # Every frequency in between is divided by less than the factor.
    ratio = unscaled / frequencies
    assert np.all(np.diff(ratio) > 0) and ratio[-2] < 8.0


def test_dynamic_is_unscaled_up_to_original_length_then_ntk():
    dynamic = RotaryEmbedding(
        max_wavelength=100.0,
        scaling={"rope_type": "dynamic", "factor": 1.0, "original_max_position_embeddings": 16},
    )
    base = reference_frequencies(8, 100.0)

    def ntk(length):
        return reference_ntk_frequencies(8, 100.0, length / 16)

    for seq, start in [(16, 0), (10, 6), (5, 0)]:
        x = random_heads(seq=seq)
        expected = reference_rope(x, np.arange(seq) + start, base)
        np.testing.assert_allclose(dynamic(x, start_index=start), expected, atol=1e-5)
    for seq, start in [(24, 0), (1, 31), (4, 36)]:
        x = random_heads(seq=seq)
        expected = reference_rope(x, np.arange(seq) + start, ntk(start + seq))
        np.testing.assert_allclose(dynamic(x, start_index=start), expected, atol=1e-4)
    # With positions, the length is max(positions) + 1.
    x = random_heads(seq=3)
    positions = np.array([2, 39, 7])
    expected = reference_rope(x, positions, ntk(40))
    np.testing.assert_allclose(dynamic(x, positions=positions), expected, atol=1e-4)
    np.testing.assert_allclose(dynamic.frequencies(), base, rtol=1e-6)
    np.testing.assert_allclose(dynamic.frequencies(32), ntk(32), rtol=1e-6)


def test_dynamic_factor_follows_hugging_face_formula():
    # HF: base * (s * l / L - (s - 1))^(d/(d-2)); s=2, l=32, L=16 -> NTK with 3.
    layer = RotaryEmbedding(
        scaling={"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16},
        rotary_dim=8,
    )
    np.testing.assert_allclose(layer.frequencies(32), reference_ntk_frequencies(8, 10000.0, 3.0), rtol=1e-6)
    np.testing.assert_allclose(layer.frequencies(16), reference_frequencies(8, 10000.0), rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dynamic_with_unknown_length_in_traced_function(jit_compile):
    layer = RotaryEmbedding(
        scaling={"rope_type": "dynamic", "factor": 1.0, "original_max_position_embeddings": 8}
    )
    traced = tf.function(
        lambda x, start: layer(x, start_index=start),
        input_signature=[tf.TensorSpec([None, None, 2, 8]), tf.TensorSpec([], tf.int32)],
        jit_compile=jit_compile,
    )
    for seq, start in [(4, 0), (6, 10), (20, 0)]:
        x = random_heads(1, seq, 2, 8)
        expected = layer(x, start_index=start)
        np.testing.assert_allclose(traced(x, tf.constant(start)), expected, atol=1e-5)
    assert not np.allclose(layer.frequencies(40), layer.frequencies(8))


def test_yarn_frequencies_and_attention_factor():
    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
    layer = RotaryEmbedding(scaling=scaling, rotary_dim=32)
    frequencies = np.asarray(layer.frequencies(), np.float64)
    np.testing.assert_allclose(frequencies, reference_yarn_frequencies(32, 10000.0, 4.0, 256), rtol=1e-6)
    # The paper's regimes: pairs that rotate more than beta_fast=32 times over
    # the original context keep their frequency; fewer than beta_slow=1 times
    # are interpolated (divided by s); the ramp lies in between.
    original = reference_frequencies(32, 10000.0)
    rotations = 256 * original / (2 * math.pi)
    fast, slow = rotations > 32, rotations < 1
    assert fast.any() and slow.any() and (~fast & ~slow).any()
    np.testing.assert_allclose(frequencies[fast], original[fast], rtol=1e-6)
    np.testing.assert_allclose(frequencies[slow], original[slow] / 4.0, rtol=1e-6)
    middle = ~fast & ~slow
    assert np.all(frequencies[middle] <= original[middle])
    assert np.all(frequencies[middle] >= original[middle] / 4)

    np.testing.assert_allclose(layer.attention_factor(), 1.1386294, rtol=1e-7)
    x = random_heads(head_dim=32)
    outputs = layer(x, start_index=5)
    yarn = reference_yarn_frequencies(32, 10000.0, 4.0, 256)
    expected = reference_rope(x, np.arange(5) + 5, yarn, scale=1.1386294361)
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    np.testing.assert_allclose(
        np.linalg.norm(outputs, axis=-1), 1.1386294 * np.linalg.norm(x, axis=-1), rtol=1e-5
    )


@pytest.mark.parametrize(
    "rotary_dim, base, factor, original_length",
    [(8, 100.0, 4.0, 4096), (16, 10000.0, 16.0, 64), (64, 500000.0, 8.0, 8192)],
)
def test_yarn_frequencies_other_configs(rotary_dim, base, factor, original_length):
    # (8, 100, 4, 4096): the beta_slow pair lies past the last pair, so the
    # ramp is cut short (Hugging Face clamps to rotary_dim - 1, not d/2 - 1).
    scaling = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original_length}
    layer = RotaryEmbedding(max_wavelength=base, scaling=scaling, rotary_dim=rotary_dim)
    np.testing.assert_allclose(
        layer.frequencies(),
        reference_yarn_frequencies(rotary_dim, base, factor, original_length),
        rtol=1e-6,
    )


def test_yarn_overridable_keys():
    scaling = {
        "type": "yarn",
        "factor": 8.0,
        "original_max_position_embeddings": 512,
        "beta_fast": 16,
        "beta_slow": 2,
        "attention_factor": 1.0,
    }
    layer = RotaryEmbedding(scaling=scaling, rotary_dim=64)
    np.testing.assert_allclose(
        layer.frequencies(), reference_yarn_frequencies(64, 10000.0, 8.0, 512, 16, 2), rtol=1e-6
    )
    x = random_heads(head_dim=64)
    np.testing.assert_allclose(np.linalg.norm(layer(x), axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@pytest.mark.parametrize(
    "scaling, first",
    [
        (None, 1.0),
        ({"rope_type": "default"}, 1.0),
        ({"rope_type": "linear", "factor": 2.0}, 0.5),
        ({"rope_type": "ntk", "factor": 2.0}, 1.0),
        ({"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 8}, 1.0),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 2048}, 1.0),
    ],
)
def test_frequencies_shape_and_order(scaling, first):
    layer = RotaryEmbedding(scaling=scaling)
    with pytest.raises(ValueError, match="call or build"):
        layer.frequencies()
    layer(random_heads(head_dim=12))
    frequencies = np.asarray(layer.frequencies())
    assert frequencies.shape == (6,) and frequencies.dtype == np.float32
    assert frequencies[0] == first
    assert np.all(np.diff(frequencies) < 0)


def test_passes_keras_mask_through():
    inputs = keras.Input((None, 2, 8))
    masked = keras.layers.Masking()(inputs)
    outputs = RotaryEmbedding()(masked)
    assert outputs._keras_mask is masked._keras_mask


# -- keras-hub parity ------------------------------------------------------------------


def test_linear_matches_keras_hub():
    x = random_heads(2, 6, 3, 8)
    hub = keras_hub.layers.RotaryEmbedding(max_wavelength=500, scaling_factor=4.0)
    ours = RotaryEmbedding(max_wavelength=500.0, scaling={"rope_type": "linear", "factor": 4.0})
    np.testing.assert_allclose(ours(x, start_index=5), hub(x, start_index=5), atol=1e-5)
    positions = np.array([[0, 3, 9, 27, 81, 243]] * 2)
    np.testing.assert_allclose(ours(x, positions=positions), hub(x, positions=positions), atol=1e-5)


def _observed_frequencies(layer, head_dim=8):
    """Frequencies read off the output: rotate unit vectors to position 1."""
    half = head_dim // 2
    unit = np.zeros((1, 1, half, head_dim), "float32")
    unit[0, 0, np.arange(half), np.arange(half)] = 1.0  # head i holds e_i
    rotated = np.asarray(layer(unit, start_index=1), np.float64)[0, 0]
    pairs = np.arange(half)
    return np.arctan2(rotated[pairs, pairs + half], rotated[pairs, pairs])


def test_keras_hub_dynamic_divides_every_frequency_alike():
    if "rope_type" not in inspect.signature(keras_hub.layers.RotaryEmbedding).parameters:
        pytest.skip("installed keras-hub has no rope_type")
    hub = keras_hub.layers.RotaryEmbedding(rope_type="dynamic", scaling_factor=4.0)
    ratio = reference_frequencies(8, 10000.0) / _observed_frequencies(hub)
    # keras-hub's "dynamic" is a fixed division of all frequencies by s^(d/(d-2))
    # (highest frequency changes too), not NTK's base change, and ignores length.
    np.testing.assert_allclose(ratio, 4.0 ** (8 / 6), rtol=1e-4)
    ours = RotaryEmbedding(scaling={"rope_type": "ntk", "factor": 4.0})
    ours_ratio = reference_frequencies(8, 10000.0) / _observed_frequencies(ours)
    np.testing.assert_allclose(ours_ratio[[0, -1]], [1.0, 4.0], rtol=1e-4)


# -- precision ----------------------------------------------------------------------


def test_mixed_bfloat16_at_long_position():
    x = np.asarray(tf.cast(tf.cast(random_heads(1, 4, 2, 8), "bfloat16"), "float32"))
    layer = RotaryEmbedding(dtype="mixed_bfloat16")
    outputs = layer(x, start_index=32768)
    assert outputs.dtype == "bfloat16"
    expected = reference_rope(x, np.arange(4) + 32768, reference_frequencies(8, 10000.0))
    np.testing.assert_allclose(np.asarray(tf.cast(outputs, "float32")), expected, atol=1e-2, rtol=1e-2)


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rotary_dim": 3}, "positive even"),
        ({"rotary_dim": 0}, "positive even"),
        ({"rotary_dim": 1.5}, r"\(0, 1\]"),
        ({"rotary_dim": 0.0}, r"\(0, 1\]"),
        ({"rotary_dim": "half"}, "must be None"),
        ({"max_wavelength": 1.0}, "max_wavelength"),
        ({"scaling": {"rope_type": "su", "factor": 2.0}}, "linear, ntk, dynamic, yarn"),
        ({"scaling": {"rope_type": "linear", "factor": 0.5}}, ">= 1"),
        ({"scaling": {"rope_type": "linear"}}, "needs a numeric 'factor'"),
        ({"scaling": {"rope_type": "dynamic", "factor": 2.0}}, "original_max_position_embeddings"),
        ({"scaling": {"rope_type": "yarn", "factor": 2.0}}, "original_max_position_embeddings"),
        ({"scaling": {"rope_type": "linear", "factor": 2.0, "beta_fast": 8}}, "Unknown keys"),
        ({"scaling": {"rope_type": "linear", "type": "ntk", "factor": 2.0}}, "give one"),
        ({"scaling": "linear"}, "must be None or a dict"),
        ({"xpos": True, "xpos_gamma": 0.0}, "xpos_gamma"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(**kwargs)


@pytest.mark.parametrize(
    "shape, kwargs, match",
    [
        ((2, 5, 8), {}, "rank 4"),
        ((2, 5, 2, 7), {}, "must be even"),
        ((2, 5, 2, 8), {"rotary_dim": 10}, "larger than head_dim"),
        ((2, 5, 2, 8), {"rotary_dim": 0.2}, "no feature pair"),
    ],
)
def test_bad_inputs(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(**kwargs)(np.zeros(shape, "float32"))


def test_bad_call_arguments():
    layer = RotaryEmbedding()
    x = random_heads()
    with pytest.raises(ValueError, match="start_index"):
        layer(x, start_index=-1)
    with pytest.raises(ValueError, match="positions"):
        layer(x, positions=np.zeros((1, 2, 5), "int32"))
    with pytest.raises(ValueError, match="rank 4"):
        layer(x[:, :, 0])


# -- the shared layer suite -----------------------------------------------------------


class TestRotaryEmbeddingSuite(LayerSuite):
    input_shapes = ((None, 2, 8),)
    mask_input = 0  # the mask of [batch, seq, heads, head_dim] passes through

    def make_layer(self, **overrides):
        return RotaryEmbedding(max_wavelength=100.0, **overrides)

    def make_inputs(self, batch, length):
        return (np.random.randn(batch, length, 2, 8).astype("float32"),)


class TestDynamicPartialRotarySuite(TestRotaryEmbeddingSuite):
    # Original length 4 < build_length 8: every suite check runs the scaled
    # path, whose frequencies depend on the (possibly unknown) length.
    def make_layer(self, **overrides):
        scaling = {"rope_type": "dynamic", "factor": 1.0, "original_max_position_embeddings": 4}
        return RotaryEmbedding(max_wavelength=100.0, scaling=scaling, rotary_dim=0.5, **overrides)


class TestXPosSuite(TestRotaryEmbeddingSuite):
    def make_layer(self, **overrides):
        return RotaryEmbedding(max_wavelength=100.0, xpos=True, xpos_scale_base=32.0, **overrides)
