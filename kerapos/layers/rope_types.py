"""RoPE scaling types: one function and one validator per `rope_type`.

The shape follows Hugging Face transformers' `modeling_rope_utils.py`
(transformers 5.23): a `rope_parameters` dict (the older name is
`rope_scaling`) names its `rope_type` (or, as an older alias, `type`);
`ROPE_VALIDATION_FUNCTIONS[rope_type](scaling)` checks the dict's keys and
values and returns the parameters the type reads; and
`ROPE_INIT_FUNCTIONS[rope_type](parameters, rotary_dim, base, sequence_length)`
returns `(inverse_frequencies, attention_factor)`: the float32 angular
frequency of each rotated pair `[rotary_dim // 2]` (highest first) and the
factor by which cos and sin are multiplied.

`sequence_length` is the length the frequencies are asked for
(`start_index + sequence_length`, or `max(positions) + 1`), a scalar tensor or
None (the model's original context); only length-dependent types read it.
Checks that need `rotary_dim` (which depends on the head size, known when the
layer is built) belong in the init function.

Every dict may also hold Hugging Face's `rope_theta` (the base) and
`partial_rotary_factor` (the fraction of each head that is rotated), which
`base_and_rotary_fraction` returns, so a config.json's dict can be given
whole.

The types (`s` = `factor`, `L` = `original_max_position_embeddings`,
`d` = rotary_dim; keys in brackets are optional):

* `default`: plain RoPE, `base^(-2i/d)`. Keys: [`factor`, `L`], accepted
  (rope_scaling dicts written for every type carry them) and unused.
* `linear`: position interpolation, every frequency / `s`. Keys: `factor`, [`L`].
* `ntk`: NTK-aware base change `base * s^(d/(d-2))`, static. Not a Hugging
  Face type (kerapos' own). Keys: `factor`, [`L`].
* `dynamic`: NTK with `max(1, s * l / L - (s - 1))` for length `l` (Hugging
  Face's dynamic NTK, whose `L` is the config's `max_position_embeddings`).
  Keys: `factor`, `L`.
* `yarn`: YaRN's ramp between interpolated and original frequencies and the
  attention factor `0.1 ln(s) + 1`, or with `mscale` and `mscale_all_dim`
  (DeepSeek) `(0.1 mscale ln(s) + 1) / (0.1 mscale_all_dim ln(s) + 1)`; with
  `truncate=False` the ramp's ends are not rounded to whole pairs. Keys:
  `factor`, `L`, [`beta_fast`, `beta_slow`, `attention_factor`, `mscale`,
  `mscale_all_dim`, `truncate`].
* `longrope`: LongRoPE (Phi-3): every frequency / `short_factor[i]` for
  lengths up to `L`, / `long_factor[i]` past it; attention factor
  `sqrt(1 + ln(s) / ln(L))` (1 if `s <= 1`). Keys: `short_factor`,
  `long_factor`, `L`, and `factor` or `attention_factor` (Hugging Face falls
  back on `max_position_embeddings / L` for `factor`, which this dict does not
  hold).
* `llama3`: Llama 3.1's band: wavelengths above `L / low_freq_factor` are
  / `s`, below `L / high_freq_factor` kept, and smoothly mixed in between.
  Keys: `factor`, `L`, `low_freq_factor`, `high_freq_factor`.
* `proportional`: p-RoPE (Gemma 4): the first
  `int(partial_rotary_factor * d // 2)` pairs get `base^(-2i/d)` (exponents
  over the whole `d`), the rest frequency 0 (not rotated), all / `s`. Here
  `partial_rotary_factor` is the type's own key, not a rotated fraction.
  Keys: [`factor`, `partial_rotary_factor`].

Adding a type is one init function and one validator, plus their entries in
the two dicts below (and an item in this list).

Example:
```python
from kerapos.layers import rope_types

rope_type, parameters = rope_types.parse({"rope_type": "linear", "factor": 4.0})
inverse_frequencies, attention_factor = rope_types.ROPE_INIT_FUNCTIONS[rope_type](
    parameters, rotary_dim=64, base=10000.0, sequence_length=None)
```

References:
    Su et al. 2021, RoFormer (arXiv:2104.09864); Chen et al. 2023, position
    interpolation (arXiv:2306.15595); bloc97 2023, NTK-aware scaled RoPE
    (reddit r/LocalLLaMA); Peng et al. 2023, YaRN (arXiv:2309.00071); Ding et
    al. 2024, LongRoPE (arXiv:2402.13753); Meta 2024, The Llama 3 Herd of
    Models (arXiv:2407.21783); Hugging Face transformers,
    `src/transformers/modeling_rope_utils.py`.
"""

import math

import numpy as np
from keras import ops

from kerapos.utils import checks

# -- init functions: (parameters, rotary_dim, base, sequence_length) -> (inverse frequencies, factor) --


def _plain_inverse_frequencies(rotary_dim, base):
    """`base^(-2i / rotary_dim)` for each pair `i`, float32 `[rotary_dim // 2]`."""
    exponents = ops.arange(0, rotary_dim, 2, dtype="float32") / rotary_dim
    return ops.power(ops.cast(base, "float32"), -exponents)


def _ntk_exponent(rotary_dim):
    """The exponent `d / (d - 2)` of NTK's base change (0 with a single pair)."""
    return rotary_dim / (rotary_dim - 2) if rotary_dim > 2 else 0.0


def _compute_default_parameters(parameters, rotary_dim, base, sequence_length=None):
    """Plain RoPE (Su et al. 2021): the attention factor is 1."""
    return _plain_inverse_frequencies(rotary_dim, base), 1.0


def _compute_linear_parameters(parameters, rotary_dim, base, sequence_length=None):
    """Position interpolation (Chen et al. 2023): every frequency / `factor`."""
    inverse_frequencies, attention_factor = _compute_default_parameters(parameters, rotary_dim, base)
    return inverse_frequencies / parameters["factor"], attention_factor


def _compute_ntk_parameters(parameters, rotary_dim, base, sequence_length=None):
    """NTK-aware base change: the highest frequency stays, the lowest is / `factor`."""
    base = base * parameters["factor"] ** _ntk_exponent(rotary_dim)
    return _plain_inverse_frequencies(rotary_dim, base), 1.0


def _compute_dynamic_parameters(parameters, rotary_dim, base, sequence_length=None):
    """NTK with `max(1, s * l / L - (s - 1))` for length `l` (unscaled without one)."""
    if sequence_length is None:
        return _compute_default_parameters(parameters, rotary_dim, base)
    factor = parameters["factor"]
    length = ops.cast(sequence_length, "float32")
    effective_factor = ops.maximum(
        1.0, factor * length / parameters["original_max_position_embeddings"] - (factor - 1.0)
    )
    base = base * ops.power(effective_factor, _ntk_exponent(rotary_dim))
    return _plain_inverse_frequencies(rotary_dim, base), 1.0


def _yarn_correction_dim(num_rotations, rotary_dim, base, original_length):
    """Pair index whose wavelength fits `num_rotations` times in the original
    context (Hugging Face's `find_correction_dim`; YaRN eq. 17)."""
    return rotary_dim * math.log(original_length / (num_rotations * 2.0 * math.pi)) / (2.0 * math.log(base))


def _compute_yarn_parameters(parameters, rotary_dim, base, sequence_length=None):
    """YaRN: frequencies ramp from interpolated (`/ s`) to original between the
    pairs completing `beta_slow` and `beta_fast` rotations over the original
    context, as Hugging Face's `_compute_yarn_parameters`."""
    original_length = parameters["original_max_position_embeddings"]
    low = _yarn_correction_dim(parameters["beta_fast"], rotary_dim, base, original_length)
    high = _yarn_correction_dim(parameters["beta_slow"], rotary_dim, base, original_length)
    if parameters["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp, as Hugging Face does
    inverse_frequencies = _plain_inverse_frequencies(rotary_dim, base)  # [rotary_dim // 2]
    pair_index = ops.arange(rotary_dim // 2, dtype="float32")
    # 0 = keep the original frequency (extrapolate), 1 = interpolate (/ s).
    interpolation_weight = ops.clip((pair_index - low) / (high - low), 0.0, 1.0)
    interpolated = inverse_frequencies / parameters["factor"]
    inverse_frequencies = interpolated * interpolation_weight + inverse_frequencies * (
        1.0 - interpolation_weight
    )
    return inverse_frequencies, parameters["attention_factor"]


def _compute_longrope_parameters(parameters, rotary_dim, base, sequence_length=None):
    """LongRoPE: frequency `i` / `short_factor[i]` up to the original context,
    / `long_factor[i]` past it (Hugging Face's `_compute_longrope_parameters`
    and its `longrope_frequency_update`)."""
    for key in ("short_factor", "long_factor"):
        if len(parameters[key]) != rotary_dim // 2:
            raise ValueError(
                f"`scaling[{key!r}]` has {len(parameters[key])} numbers; rotary_dim={rotary_dim} "
                f"needs {rotary_dim // 2} (one per rotated pair)."
            )
    rescale = ops.convert_to_tensor(parameters["short_factor"], "float32")  # [rotary_dim // 2]
    if sequence_length is not None:
        is_long = ops.cast(sequence_length, "float32") > parameters["original_max_position_embeddings"]
        rescale = ops.where(is_long, ops.convert_to_tensor(parameters["long_factor"], "float32"), rescale)
    return _plain_inverse_frequencies(rotary_dim, base) / rescale, parameters["attention_factor"]


def _compute_llama3_parameters(parameters, rotary_dim, base, sequence_length=None):
    """Llama 3.1: wavelengths past `L / low_freq_factor` are interpolated (/ s),
    those under `L / high_freq_factor` kept, the band between smoothly mixed
    (Hugging Face's `_compute_llama3_parameters`)."""
    factor = parameters["factor"]
    low_freq_factor, high_freq_factor = parameters["low_freq_factor"], parameters["high_freq_factor"]
    original_length = parameters["original_max_position_embeddings"]
    inverse_frequencies = _plain_inverse_frequencies(rotary_dim, base)  # [rotary_dim // 2]
    wavelengths = 2.0 * math.pi / inverse_frequencies
    low_freq_wavelength = original_length / low_freq_factor
    high_freq_wavelength = original_length / high_freq_factor
    inverse_frequencies = ops.where(
        wavelengths > low_freq_wavelength, inverse_frequencies / factor, inverse_frequencies
    )
    smooth = (original_length / wavelengths - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1.0 - smooth) * inverse_frequencies / factor + smooth * inverse_frequencies
    in_band = ops.logical_and(
        ops.logical_not(wavelengths < high_freq_wavelength),
        ops.logical_not(wavelengths > low_freq_wavelength),
    )
    return ops.where(in_band, smoothed, inverse_frequencies), 1.0


def _compute_proportional_parameters(parameters, rotary_dim, base, sequence_length=None):
    """p-RoPE: the first `int(f * d // 2)` pairs at `base^(-2i/d)`, the rest at
    frequency 0, all / `factor` (Hugging Face's `_compute_proportional_rope_parameters`)."""
    rotated_pairs = int(parameters["partial_rotary_factor"] * rotary_dim // 2)
    exponents = ops.arange(0, 2 * rotated_pairs, 2, dtype="float32") / rotary_dim
    rotated = ops.power(ops.cast(base, "float32"), -exponents)  # [rotated_pairs]
    unrotated = ops.zeros((rotary_dim // 2 - rotated_pairs,), "float32")
    return ops.concatenate([rotated, unrotated], axis=0) / parameters["factor"], 1.0


# rope_type -> init function. The order is the one error messages list.
ROPE_INIT_FUNCTIONS = {
    "default": _compute_default_parameters,
    "linear": _compute_linear_parameters,
    "ntk": _compute_ntk_parameters,
    "dynamic": _compute_dynamic_parameters,
    "yarn": _compute_yarn_parameters,
    "longrope": _compute_longrope_parameters,
    "llama3": _compute_llama3_parameters,
    "proportional": _compute_proportional_parameters,
}

# Types whose frequencies depend on the context length: a key rotated at one
# length is rotated differently once the context grows, so a key/value cache
# of these types holds unrotated keys and rotates them again at each step.
LENGTH_DEPENDENT_TYPES = ("dynamic", "longrope")

# -- validators: scaling dict -> the parameters its init function reads -------------------------------

# Keys every `rope_scaling` dict may hold: the type's name (and its alias),
# and Hugging Face's base and rotated fraction (read by `base_and_rotary_fraction`).
_SHARED_KEYS = ("rope_type", "type", "rope_theta", "partial_rotary_factor")

_KEY_DESCRIPTIONS = {
    "factor": "a numeric 'factor' (>= 1, the context extension ratio)",
    "original_max_position_embeddings": (
        "'original_max_position_embeddings' (the context length the model was trained on; a "
        "Hugging Face config.json may hold it outside `rope_scaling`, or as `max_position_embeddings` "
        "for 'dynamic': add it to the dict)"
    ),
}

# Types whose `partial_rotary_factor` shapes the frequencies instead of
# choosing how many features are rotated (the whole head is).
_OWN_PARTIAL_ROTARY_FACTOR = ("proportional",)


def _rope_type(scaling):
    return scaling.get("rope_type", scaling.get("type", "default"))


def _check_keys(scaling, required=(), optional=()):
    """Refuses keys the dict's rope type does not know, and required keys it misses."""
    allowed = _SHARED_KEYS + tuple(required) + tuple(optional)
    unknown = [key for key in scaling if key not in allowed]
    if unknown:
        raise ValueError(
            f"Unknown keys {unknown} in `scaling` for rope_type {_rope_type(scaling)!r}; allowed "
            f"keys are {', '.join(allowed)}."
        )
    for key in required:
        if key not in scaling:
            needed = _KEY_DESCRIPTIONS.get(key, repr(key))
            raise ValueError(f"`scaling` with rope_type {_rope_type(scaling)!r} needs {needed}.")


def _factor(scaling):
    return checks.number(scaling["factor"], "scaling['factor']", minimum=1)


def _original_length(scaling, required=True):
    return checks.integer(
        scaling.get("original_max_position_embeddings"),
        "scaling['original_max_position_embeddings']",
        minimum=1,
        allow_none=not required,
    )


def _optional_number(scaling, key, **bounds):
    return checks.number(scaling.get(key), f"scaling[{key!r}]", allow_none=True, **bounds)


def _validate_default(scaling):
    # factor and original_max_position_embeddings are accepted and unused.
    _check_keys(scaling, optional=("factor", "original_max_position_embeddings"))
    return {}


def _validate_factor(scaling):
    """Types that read only `factor` ("linear", "ntk")."""
    _check_keys(scaling, required=("factor",), optional=("original_max_position_embeddings",))
    _original_length(scaling, required=False)
    return {"factor": _factor(scaling)}


def _validate_dynamic(scaling):
    _check_keys(scaling, required=("factor", "original_max_position_embeddings"))
    return {"factor": _factor(scaling), "original_max_position_embeddings": _original_length(scaling)}


def _yarn_mscale(factor, mscale=1.0):
    """Hugging Face's `get_mscale`: `0.1 mscale ln(s) + 1`, 1 for `s <= 1`."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _validate_yarn(scaling):
    _check_keys(
        scaling,
        required=("factor", "original_max_position_embeddings"),
        optional=(
            "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"
        ),
    )
    factor = _factor(scaling)
    beta_fast, beta_slow, attention_factor = (
        _optional_number(scaling, key, above=0) for key in ("beta_fast", "beta_slow", "attention_factor")
    )
    mscale, mscale_all_dim = (
        _optional_number(scaling, key, minimum=0) for key in ("mscale", "mscale_all_dim")
    )
    if attention_factor is None:
        # As Hugging Face: the ratio only when both are given and non-zero.
        if mscale and mscale_all_dim:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(factor)
    return {
        "factor": factor,
        "original_max_position_embeddings": _original_length(scaling),
        "beta_fast": 32.0 if beta_fast is None else beta_fast,
        "beta_slow": 1.0 if beta_slow is None else beta_slow,
        "attention_factor": attention_factor,
        "truncate": bool(checks.choice(scaling.get("truncate", True), "scaling['truncate']", (True, False))),
    }


def _factor_list(scaling, key):
    values = scaling[key]
    if not (isinstance(values, (list, tuple)) or (isinstance(values, np.ndarray) and values.ndim == 1)):
        raise ValueError(
            f"`scaling[{key!r}]` must be a list of numbers (one per rotated pair), got {values!r}."
        )
    return tuple(checks.number(value, f"scaling[{key!r}][{i}]", above=0) for i, value in enumerate(values))


def _validate_longrope(scaling):
    _check_keys(
        scaling,
        required=("short_factor", "long_factor", "original_max_position_embeddings"),
        optional=("factor", "attention_factor"),
    )
    original_length = _original_length(scaling)
    attention_factor = _optional_number(scaling, "attention_factor", above=0)
    if attention_factor is None:
        if "factor" not in scaling:
            raise ValueError(
                "`scaling` with rope_type 'longrope' needs 'factor' (a Hugging Face config's "
                "max_position_embeddings / original_max_position_embeddings) or 'attention_factor'."
            )
        factor = _factor(scaling)
        attention_factor = (
            1.0 if factor <= 1 else math.sqrt(1.0 + math.log(factor) / math.log(original_length))
        )
    elif "factor" in scaling:
        _factor(scaling)
    return {
        "short_factor": _factor_list(scaling, "short_factor"),
        "long_factor": _factor_list(scaling, "long_factor"),
        "original_max_position_embeddings": original_length,
        "attention_factor": attention_factor,
    }


def _validate_llama3(scaling):
    required = ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor")
    _check_keys(scaling, required=required)
    low_freq_factor = checks.number(scaling["low_freq_factor"], "scaling['low_freq_factor']", above=0)
    high_freq_factor = checks.number(
        scaling["high_freq_factor"], "scaling['high_freq_factor']", above=low_freq_factor
    )
    return {
        "factor": _factor(scaling),
        "original_max_position_embeddings": _original_length(scaling),
        "low_freq_factor": low_freq_factor,
        "high_freq_factor": high_freq_factor,
    }


def _validate_proportional(scaling):
    _check_keys(scaling, optional=("factor",))
    partial = _optional_number(scaling, "partial_rotary_factor", minimum=0, maximum=1)
    return {
        "factor": _factor(scaling) if "factor" in scaling else 1.0,
        "partial_rotary_factor": 1.0 if partial is None else partial,
    }


# rope_type -> validator. Same keys as ROPE_INIT_FUNCTIONS.
ROPE_VALIDATION_FUNCTIONS = {
    "default": _validate_default,
    "linear": _validate_factor,
    "ntk": _validate_factor,
    "dynamic": _validate_dynamic,
    "yarn": _validate_yarn,
    "longrope": _validate_longrope,
    "llama3": _validate_llama3,
    "proportional": _validate_proportional,
}


def parse(scaling):
    """The rope type of a `rope_scaling` dict and its validated parameters.

    Args:
        scaling: None (plain RoPE) or a dict with `"rope_type"` (or its alias
            `"type"`; default "default") and the type's keys: a Hugging Face
            `rope_parameters` or `rope_scaling` dict as a config.json holds it.

    Returns:
        `(rope_type, parameters)`: a key of `ROPE_INIT_FUNCTIONS` and the dict
        its init function takes.

    Raises:
        ValueError: not a dict, an unknown rope type, or keys the type does
            not take, misses or finds out of range (the message names the key).
    """
    if scaling is None:
        return "default", {}
    if not isinstance(scaling, dict):
        raise ValueError(
            f"`scaling` must be None or a dict like {{'rope_type': 'linear', 'factor': 2.0}}, "
            f"got {scaling!r}."
        )
    if "rope_type" in scaling and "type" in scaling and scaling["rope_type"] != scaling["type"]:
        raise ValueError(
            f"`scaling` has rope_type={scaling['rope_type']!r} and its alias "
            f"type={scaling['type']!r}; give one of them."
        )
    rope_type = _rope_type(scaling)
    if not isinstance(rope_type, str) or rope_type not in ROPE_VALIDATION_FUNCTIONS:
        raise ValueError(
            f"Unknown rope_type {rope_type!r} in `scaling`; valid rope types are "
            f"{', '.join(ROPE_VALIDATION_FUNCTIONS)}."
        )
    return rope_type, ROPE_VALIDATION_FUNCTIONS[rope_type](scaling)



def base_and_rotary_fraction(scaling):
    """Hugging Face's `rope_theta` and `partial_rotary_factor` of a valid
    `scaling` dict, each None where absent (or, for "proportional", whose
    frequencies read `partial_rotary_factor`, the fraction is None: the whole
    head is rotated).

    Args:
        scaling: None or a dict that `parse` accepts.

    Returns:
        `(rope_theta, partial_rotary_factor)`: float or None each.
    """
    if scaling is None:
        return None, None
    rope_theta = checks.number(scaling.get("rope_theta"), "scaling['rope_theta']", above=1, allow_none=True)
    if _rope_type(scaling) in _OWN_PARTIAL_ROTARY_FACTOR:
        return rope_theta, None
    fraction = checks.number(
        scaling.get("partial_rotary_factor"), "scaling['partial_rotary_factor']", above=0, maximum=1,
        allow_none=True,
    )
    return rope_theta, fraction
