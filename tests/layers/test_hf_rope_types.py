"""Every Hugging Face rope type against numpy ports of Hugging Face's functions.

The references below are written from transformers 5.23's
`src/transformers/modeling_rope_utils.py` (`_compute_*_parameters` and the
models' `apply_rotary_pos_emb`), in float64 numpy, independently of
`kerapos.layers.rope_types`. Each takes the `rope_parameters` dict, the head
size and, where Hugging Face reads the config, `max_position_embeddings`, and
returns `(inv_freq, attention_factor)` as Hugging Face does.
"""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers import rope_types
from kerapos.layers.rotary_embedding import RotaryEmbedding

# -- numpy ports of Hugging Face's functions ------------------------------------------


def hf_dim(head_dim, params):
    return int(head_dim * params.get("partial_rotary_factor", 1.0))


def hf_default(params, head_dim, seq_len=None, max_position_embeddings=None):
    dim = hf_dim(head_dim, params)
    return 1.0 / (params["rope_theta"] ** (np.arange(0, dim, 2) / dim)), 1.0


def hf_linear(params, head_dim, seq_len=None, max_position_embeddings=None):
    inv_freq, attention_factor = hf_default(params, head_dim)
    return inv_freq / params["factor"], attention_factor


def hf_dynamic(params, head_dim, seq_len=None, max_position_embeddings=None):
    dim = hf_dim(head_dim, params)
    factor = params["factor"]
    seq_len = max_position_embeddings if seq_len is None else max(seq_len, max_position_embeddings)
    base = params["rope_theta"] * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (
        dim / (dim - 2)
    )
    return 1.0 / (base ** (np.arange(0, dim, 2) / dim)), 1.0


def hf_yarn(params, head_dim, seq_len=None, max_position_embeddings=None):
    base = params["rope_theta"]
    dim = hf_dim(head_dim, params)
    factor = params["factor"]
    attention_factor = params.get("attention_factor")
    mscale = params.get("mscale")
    mscale_all_dim = params.get("mscale_all_dim")
    original = params["original_max_position_embeddings"]

    def get_mscale(scale, mscale=1):
        if scale <= 1:
            return 1.0
        return 0.1 * mscale * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def find_correction_dim(num_rotations):
        return (dim * math.log(original / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low = find_correction_dim(beta_fast)
    high = find_correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
    pos_freqs = base ** (np.arange(0, dim, 2) / dim)
    extrapolation_factor = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_factor) + (
        1.0 / pos_freqs
    ) * extrapolation_factor
    return inv_freq, attention_factor


def hf_longrope(params, head_dim, seq_len=None, max_position_embeddings=None):
    dim = hf_dim(head_dim, params)
    original = params["original_max_position_embeddings"]
    factor = params.get("factor")
    if factor is None:
        factor = max_position_embeddings / original
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    if seq_len and seq_len > original:
        ext_factors = np.asarray(params["long_factor"], np.float64)
    else:
        ext_factors = np.asarray(params["short_factor"], np.float64)
    return 1.0 / (ext_factors * params["rope_theta"] ** (np.arange(0, dim, 2) / dim)), attention_factor


def hf_llama3(params, head_dim, seq_len=None, max_position_embeddings=None):
    inv_freq, attention_factor = hf_default(params, head_dim)
    factor = params["factor"]
    low_freq_factor = params["low_freq_factor"]
    high_freq_factor = params["high_freq_factor"]
    old_context_len = params["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama), attention_factor


def hf_proportional(params, head_dim, seq_len=None, max_position_embeddings=None):
    base = params["rope_theta"]
    factor = params.get("factor", 1.0)
    rope_angles = int(params.get("partial_rotary_factor", 1.0) * head_dim // 2)
    rotated = 1.0 / (base ** (np.arange(0, 2 * rope_angles, 2) / head_dim))
    inv_freq = np.concatenate([rotated, np.zeros(head_dim // 2 - rope_angles)])
    return inv_freq / factor, 1.0


HF_FUNCTIONS = {
    "default": hf_default,
    "linear": hf_linear,
    "dynamic": hf_dynamic,
    "yarn": hf_yarn,
    "longrope": hf_longrope,
    "llama3": hf_llama3,
    "proportional": hf_proportional,
}


def hf_rope(x, positions, inv_freq, attention_factor):
    """Hugging Face's `apply_rotary_pos_emb` with `rotate_half`, on the first
    `2 * len(inv_freq)` features (partial rotary passes the rest through)."""
    x = np.asarray(x, np.float64)  # [batch, seq, heads, head_dim]
    rotary_dim = 2 * len(inv_freq)
    freqs = np.asarray(positions, np.float64)[:, None] * inv_freq[None, :]  # [seq, half]
    emb = np.concatenate([freqs, freqs], axis=-1)[None, :, None, :]  # [1, seq, 1, rotary_dim]
    cos, sin = np.cos(emb) * attention_factor, np.sin(emb) * attention_factor
    rotated, passthrough = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotate_half = np.concatenate([-rotated[..., half:], rotated[..., :half]], axis=-1)
    return np.concatenate([rotated * cos + rotate_half * sin, passthrough], axis=-1)


def hf_params(params):
    """What Hugging Face's `standardize_rope_params` makes of a dict: a
    `rope_type` (from the legacy `type`) and a `rope_theta`."""
    params = dict(params)
    params.setdefault("rope_type", params.pop("type", "default"))
    params.setdefault("rope_theta", 10000.0)
    return params


def random_factors(count, seed):
    return [float(value) for value in np.random.default_rng(seed).uniform(1.0, 6.0, count).round(3)]


# Cases: (rope_parameters dict, head_dim, lengths to check, max_position_embeddings
# for the references that read the config).
CASES = {
    "default": ({"rope_type": "default", "rope_theta": 10000.0}, 64, [None], None),
    "default-partial": (
        {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}, 64, [None], None),
    "linear": ({"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0}, 32, [None], None),
    "linear-legacy-type": ({"type": "linear", "factor": 2.5}, 16, [None], None),
    "dynamic": (
        {"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": 64}, 32,
        [None, 10, 64, 65, 300], 64),
    "dynamic-partial": (
        {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16,
         "partial_rotary_factor": 0.5}, 32, [8, 100], 16),
    "yarn": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}, 64, [None], None),
    "yarn-mscale": (
        {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
         "mscale": 1.0, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1}, 64, [None], None),
    "yarn-deepseek-v3": (
        {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "mscale": 1.0,
         "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1}, 64, [None], None),
    "yarn-mscale-without-all-dim": (
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512, "mscale": 0.5,
         "mscale_all_dim": 0}, 32, [None], None),
    "yarn-untruncated": (
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512, "truncate": False,
         "rope_theta": 150000.0}, 64, [None], None),
    "yarn-partial-betas": (
        {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 1024, "beta_fast": 16,
         "beta_slow": 2, "partial_rotary_factor": 0.25, "attention_factor": 1.2}, 128, [None], None),
    "longrope": (
        {"rope_type": "longrope", "factor": 32.0, "original_max_position_embeddings": 64,
         "short_factor": random_factors(16, 1), "long_factor": random_factors(16, 2)}, 32,
        [None, 10, 64, 65, 1000], None),
    "longrope-attention-factor-partial": (
        {"type": "longrope", "attention_factor": 1.3, "original_max_position_embeddings": 32,
         "short_factor": random_factors(8, 3), "long_factor": random_factors(8, 4),
         "partial_rotary_factor": 0.5}, 32, [32, 33], 128),
    "llama3.1": (
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 8192, "rope_theta": 500000.0}, 128, [None], None),
    "llama3-partial": (
        {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0,
         "original_max_position_embeddings": 256, "partial_rotary_factor": 0.5}, 64, [None], None),
    "proportional": (
        {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0,
         "factor": 8.0}, 64, [None], None),
    "proportional-none-rotated": (
        {"rope_type": "proportional", "partial_rotary_factor": 0.0}, 16, [None], None),
    "proportional-whole": ({"rope_type": "proportional"}, 16, [None], None),
}


def layer_for(params, head_dim):
    layer = RotaryEmbedding(scaling=params)
    layer.build((None, None, 1, head_dim))
    return layer


@pytest.mark.parametrize("case", sorted(CASES))
def test_frequencies_and_attention_factor_equal_hugging_face(case):
    params, head_dim, lengths, max_position_embeddings = CASES[case]
    layer = layer_for(params, head_dim)
    reference = HF_FUNCTIONS[hf_params(params)["rope_type"]]
    for length in lengths:
        inv_freq, attention_factor = reference(hf_params(params), head_dim, length, max_position_embeddings)
        np.testing.assert_allclose(layer.frequencies(length), inv_freq, rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(layer.attention_factor(length), attention_factor, rtol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rotation_equals_hugging_face_apply_rotary_pos_emb(case):
    params, head_dim, lengths, max_position_embeddings = CASES[case]
    layer = RotaryEmbedding(scaling=params)
    x = np.random.default_rng(0).standard_normal((2, 5, 3, head_dim)).astype("float32")
    reference = HF_FUNCTIONS[hf_params(params)["rope_type"]]
    for start in sorted({0, *(n - 5 for n in lengths if n is not None and n >= 5)}):
        # Hugging Face's dynamic/longrope updates read max(position_ids) + 1.
        length = start + 5 if any(n is not None for n in lengths) else None
        inv_freq, attention_factor = reference(hf_params(params), head_dim, length, max_position_embeddings)
        expected = hf_rope(x, np.arange(start, start + 5), inv_freq, attention_factor)
        # float32 angles: the error grows with the position.
        np.testing.assert_allclose(
            layer(x, start_index=start), expected, atol=2e-5 * max(1.0, (start + 5) / 64))


def test_the_cases_cover_every_type_and_option():
    given = {(hf_params(p)["rope_type"], key) for p, *_ in CASES.values() for key in p}
    assert {rope_type for rope_type, _ in given} == set(rope_types.ROPE_INIT_FUNCTIONS) - {"ntk"}
    for rope_type, keys in {
        "yarn": ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"),
        "longrope": ("short_factor", "long_factor", "attention_factor", "factor"),
        "llama3": ("low_freq_factor", "high_freq_factor"),
    }.items():
        assert {(rope_type, key) for key in keys} <= given
    partial = {rope_type for rope_type, key in given if key == "partial_rotary_factor"}
    assert partial == set(HF_FUNCTIONS) - {"linear"}


# -- what each option does, in closed form --------------------------------------------


def test_yarn_attention_factor_from_mscale():
    def attention(**keys):
        scaling = {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, **keys}
        return RotaryEmbedding(scaling=scaling, rotary_dim=8).attention_factor()

    np.testing.assert_allclose(attention(), 0.1 * math.log(40.0) + 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        attention(mscale=1.0, mscale_all_dim=0.5),
        (0.1 * math.log(40.0) + 1.0) / (0.05 * math.log(40.0) + 1.0), rtol=1e-12)
    assert attention(mscale=1.0, mscale_all_dim=1.0) == 1.0  # DeepSeek-V3
    np.testing.assert_allclose(attention(mscale=0.5), 0.1 * math.log(40.0) + 1.0, rtol=1e-12)
    assert attention(mscale=1.0, mscale_all_dim=0.5, attention_factor=0.9) == 0.9


def test_yarn_truncate_rounds_the_ramp_ends_to_whole_pairs():
    scaling = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512}
    truncated = np.asarray(RotaryEmbedding(scaling=scaling, rotary_dim=64).frequencies())
    untruncated = np.asarray(
        RotaryEmbedding(scaling={**scaling, "truncate": False}, rotary_dim=64).frequencies())
    plain = 10000.0 ** (-np.arange(0, 64, 2) / 64)
    weight = lambda frequencies: (plain - frequencies) / (plain - plain / 8.0)  # noqa: E731
    # The ramp ends: the pairs completing 32 and 1 rotations over 512 positions.
    low = 64 * math.log(512 / (32 * 2 * math.pi)) / (2 * math.log(10000.0))
    high = 64 * math.log(512 / (1 * 2 * math.pi)) / (2 * math.log(10000.0))
    assert low % 1 and high % 1
    # Truncated, they are rounded out to whole pairs; untruncated, kept.
    first, last = math.floor(low), math.ceil(high)
    np.testing.assert_allclose(np.diff(weight(truncated))[first:last], 1 / (last - first), rtol=1e-4)
    np.testing.assert_allclose(weight(truncated)[[first, last]], [0, 1], atol=1e-5)
    first, last = math.ceil(low), math.floor(high)
    np.testing.assert_allclose(np.diff(weight(untruncated))[first:last], 1 / (high - low), rtol=1e-4)
    np.testing.assert_allclose(weight(untruncated)[first], (first - low) / (high - low), rtol=1e-4)


def test_llama3_band():
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
    frequencies = np.asarray(RotaryEmbedding(scaling=scaling, rotary_dim=128).frequencies(), np.float64)
    plain = 500000.0 ** (-np.arange(0, 128, 2) / 128)
    wavelengths = 2 * math.pi / plain
    short, long = wavelengths < 8192 / 4, wavelengths > 8192 / 1
    band = ~short & ~long
    assert short.any() and long.any() and band.sum() >= 3
    np.testing.assert_allclose(frequencies[short], plain[short], rtol=1e-6)
    np.testing.assert_allclose(frequencies[long], plain[long] / 8, rtol=1e-6)
    # In the band the wavelength's share of the context moves the mix linearly:
    # 1/f = (1 - t) * 8 / f_0 + t / f_0 ... as f = ((1 - t) / 8 + t) f_0, t = (8192/wavelength - 1) / 3.
    smooth = (8192 / wavelengths[band] - 1.0) / 3.0
    np.testing.assert_allclose(frequencies[band], ((1 - smooth) / 8 + smooth) * plain[band], rtol=1e-6)
    assert np.all(np.diff(frequencies) < 0)  # still highest first


def test_longrope_switches_factors_past_the_original_length():
    short, long = random_factors(4, 5), random_factors(4, 6)
    scaling = {"rope_type": "longrope", "factor": 16.0, "original_max_position_embeddings": 12,
               "short_factor": short, "long_factor": long}
    layer = RotaryEmbedding(max_wavelength=100.0, scaling=scaling, rotary_dim=8)
    plain = 100.0 ** (-np.arange(0, 8, 2) / 8)
    for length, factors in [(None, short), (1, short), (12, short), (13, long), (500, long)]:
        np.testing.assert_allclose(layer.frequencies(length), plain / np.asarray(factors), rtol=1e-6)
    attention_factor = math.sqrt(1 + math.log(16) / math.log(12))
    np.testing.assert_allclose(layer.attention_factor(), attention_factor, rtol=1e-7)
    # In a call, the length is start_index + sequence_length or max(positions) + 1.
    x = np.random.default_rng(1).standard_normal((1, 4, 1, 8)).astype("float32")
    for start, factors in [(8, short), (9, long)]:
        expected = hf_rope(x, np.arange(start, start + 4), plain / np.asarray(factors), attention_factor)
        np.testing.assert_allclose(layer(x, start_index=start), expected, atol=2e-5)
        np.testing.assert_allclose(layer(x, positions=np.arange(start, start + 4)), expected, atol=2e-5)
    # ... also traced, with the length unknown until run time (XLA).
    traced = tf.function(
        lambda x, start: layer(x, start_index=start),
        input_signature=[tf.TensorSpec([None, None, 1, 8]), tf.TensorSpec([], tf.int32)],
        jit_compile=True,
    )
    for start in (8, 9):
        np.testing.assert_allclose(traced(x, tf.constant(start)), layer(x, start_index=start), atol=1e-5)
    # numpy factor lists are kept as Python floats, so the config is JSON.
    numpy_scaling = {**scaling, "short_factor": np.asarray(short), "long_factor": np.float32(long)}
    config = RotaryEmbedding(max_wavelength=100.0, scaling=numpy_scaling).get_config()
    assert json.loads(json.dumps(config))["scaling"]["short_factor"] == short
    assert not np.allclose(traced(x, tf.constant(8)), traced(x, tf.constant(9))[:, :])


def test_longrope_attention_factor():
    def attention(**keys):
        scaling = {"rope_type": "longrope", "original_max_position_embeddings": 4096,
                   "short_factor": [1.0] * 4, "long_factor": [2.0] * 4, **keys}
        return RotaryEmbedding(scaling=scaling, rotary_dim=8).attention_factor()

    # Phi-3-mini-128k: max_position_embeddings 131072 over 4096 gives factor 32.
    expected = math.sqrt(1 + math.log(32) / math.log(4096))
    np.testing.assert_allclose(attention(factor=32.0), expected, rtol=1e-12)
    assert attention(factor=1.0) == 1.0
    assert attention(attention_factor=1.19, factor=32.0) == 1.19


def test_proportional_rotates_a_prefix_of_pairs_over_the_whole_head():
    scaling = {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 100.0}
    layer = RotaryEmbedding(scaling=scaling)
    x = np.random.default_rng(2).standard_normal((1, 6, 2, 32)).astype("float32")
    outputs = np.asarray(layer(x, start_index=3))
    assert layer.rotated_dim == 32
    # Pairs 4.. of 16 (and their halves 20..) are not rotated.
    np.testing.assert_array_equal(outputs[..., 4:16], x[..., 4:16])
    np.testing.assert_array_equal(outputs[..., 20:], x[..., 20:])
    np.testing.assert_allclose(
        layer.frequencies()[:4], 100.0 ** (-np.arange(0, 8, 2) / 32), rtol=1e-6)  # exponents over 32


# -- config spellings --------------------------------------------------------------------


def test_partial_rotary_factor_sets_the_rotated_size_as_hugging_face():
    for head_dim, factor in [(64, 0.5), (80, 0.4), (128, 0.25), (96, 1.0)]:
        layer = RotaryEmbedding(scaling={"rope_type": "default", "partial_rotary_factor": factor})
        x = np.random.default_rng(3).standard_normal((1, 3, 1, head_dim)).astype("float32")
        outputs = np.asarray(layer(x))
        assert layer.rotated_dim == int(head_dim * factor)
        np.testing.assert_array_equal(outputs[..., layer.rotated_dim:], x[..., layer.rotated_dim:])
    assert RotaryEmbedding(scaling={"partial_rotary_factor": 0.5}, rotary_dim=0.5).rotary_dim == 0.5


def test_both_spellings_and_whole_config_dicts_give_the_same_layer():
    llama = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 8192}
    # transformers 4.x config.json: "rope_scaling" beside "rope_theta";
    # 5.x: "rope_parameters" with rope_theta inside; older: the key "type".
    rope_scaling = {**llama, "rope_type": "llama3"}
    rope_parameters = {**llama, "rope_type": "llama3", "rope_theta": 500000.0}
    legacy = {**llama, "type": "llama3"}
    expected, _ = hf_llama3(hf_params({**rope_scaling, "rope_theta": 500000.0}), 64)
    for layer in [
        RotaryEmbedding(max_wavelength=500000.0, scaling=rope_scaling),
        RotaryEmbedding(scaling=rope_parameters),
        RotaryEmbedding(max_wavelength=500000.0, scaling=rope_parameters),
        RotaryEmbedding(max_wavelength=500000.0, scaling=legacy),
        RotaryEmbedding(scaling={**legacy, "rope_type": "llama3", "rope_theta": 500000.0}),
    ]:
        layer.build((None, None, 1, 64))
        assert layer.rope_type == "llama3" and layer.max_wavelength == 500000.0
        np.testing.assert_allclose(layer.frequencies(), expected, rtol=1e-6)
        again = RotaryEmbedding.from_config(layer.get_config())
        again.build((None, None, 1, 64))
        np.testing.assert_allclose(again.frequencies(), expected, rtol=1e-6)
    assert RotaryEmbedding().max_wavelength == 10000.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scaling": {"rope_type": "su", "factor": 2.0}},
         r"Unknown rope_type 'su'.*longrope, llama3, proportional"),
        ({"scaling": {"type": "linear2", "factor": 2.0}}, "Unknown rope_type 'linear2'"),
        ({"scaling": {"rope_type": "yarn", "factor": 4.0}},
         "'yarn' needs 'original_max_position_embeddings'"),
        ({"scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}},
         "'llama3' needs 'original_max_position_embeddings'"),
        ({"scaling": {"rope_type": "longrope", "factor": 8.0, "short_factor": [1.0], "long_factor": [1.0]}},
         "'longrope' needs 'original_max_position_embeddings'"),
        ({"scaling": {"rope_type": "dynamic", "factor": 2.0}},
         "'dynamic' needs 'original_max_position_embeddings'.*max_position_embeddings"),
        ({"scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
                      "low_freq_factor": 1.0}}, "'llama3' needs 'high_freq_factor'"),
        ({"scaling": {"rope_type": "longrope", "original_max_position_embeddings": 64,
                      "short_factor": [1.0], "long_factor": [1.0]}}, "needs 'factor'.*or 'attention_factor'"),
        ({"scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                      "mscale_all": 1.0}}, r"Unknown keys \['mscale_all'\].*'yarn'"),
        ({"scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "beta_fast": 32}},
         r"Unknown keys \['beta_fast'\]"),
        ({"scaling": {"rope_type": "proportional", "low_freq_factor": 1.0}},
         r"Unknown keys \['low_freq_factor'\]"),
        ({"scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                      "truncate": "no"}}, r"`scaling\['truncate'\]` must be one of True, False"),
        ({"scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
                      "low_freq_factor": 4.0, "high_freq_factor": 4.0}},
         r"`scaling\['high_freq_factor'\]` must be a number > 4.0"),
        ({"scaling": {"rope_type": "longrope", "factor": 8.0, "original_max_position_embeddings": 64,
                      "short_factor": 1.0, "long_factor": [1.0]}},
         r"`scaling\['short_factor'\]` must be a list"),
        ({"scaling": {"rope_type": "longrope", "factor": 8.0, "original_max_position_embeddings": 64,
                      "short_factor": [1.0, -1.0], "long_factor": [1.0]}},
         r"`scaling\['short_factor'\]\[1\]` must be a number > 0"),
        ({"scaling": {"rope_type": "default", "partial_rotary_factor": 1.5}},
         r"`scaling\['partial_rotary_factor'\]` must be a number > 0 and <= 1"),
        ({"scaling": {"rope_type": "default", "rope_theta": 1.0}},
         r"`scaling\['rope_theta'\]` must be a number > 1"),
        ({"max_wavelength": 10000.0, "scaling": {"rope_type": "default", "rope_theta": 500000.0}},
         r"`max_wavelength`=10000.0 and `scaling\['rope_theta'\]`=500000.0 disagree"),
        ({"rotary_dim": 32, "scaling": {"rope_type": "default", "partial_rotary_factor": 0.5}},
         r"`rotary_dim`=32 and `scaling\['partial_rotary_factor'\]`=0.5 disagree"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(**kwargs)


def test_longrope_factor_lists_must_match_the_rotated_pairs():
    scaling = {"rope_type": "longrope", "factor": 8.0, "original_max_position_embeddings": 64,
               "short_factor": [1.0] * 3, "long_factor": [1.0] * 4}
    with pytest.raises(ValueError, match=r"`scaling\['short_factor'\]` has 3 numbers; rotary_dim=8 needs 4"):
        RotaryEmbedding(scaling=scaling)(np.zeros((1, 2, 1, 8), "float32"))


# -- the shared layer suite on two new types --------------------------------------------


class TestLlama3Suite(LayerSuite):
    input_shapes = ((None, 2, 8),)
    mask_input = 0

    def make_layer(self, **overrides):
        # Original length 16 with head_dim 8, base 100: pairs in all three regimes.
        scaling = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 16}
        return RotaryEmbedding(max_wavelength=100.0, scaling=scaling, **overrides)

    def make_inputs(self, batch, length):
        return (np.random.randn(batch, length, 2, 8).astype("float32"),)


class TestLongropeSuite(TestLlama3Suite):
    # Original length 4 < the suite's build length 8: the checks run the long
    # factors, and the switch depends on the (possibly unknown) length.
    def make_layer(self, **overrides):
        scaling = {"rope_type": "longrope", "factor": 4.0, "original_max_position_embeddings": 4,
                   "short_factor": [1.0, 1.5, 2.0, 3.0], "long_factor": [1.0, 2.0, 4.0, 6.0]}
        return RotaryEmbedding(max_wavelength=100.0, scaling=scaling, **overrides)
