"""RoPE scaling types: one function and one validator per `rope_type`.

The shape follows Hugging Face transformers' `modeling_rope_utils.py`: a
`rope_scaling` dict names its `rope_type` (or, as an older alias, `type`);
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

The types (`s` = `factor`, `L` = `original_max_position_embeddings`,
`d` = rotary_dim; keys in brackets are optional):

* `default`: plain RoPE, `base^(-2i/d)`. Keys: [`factor`, `L`], accepted
  (rope_scaling dicts written for every type carry them) and unused.
* `linear`: position interpolation, every frequency / `s`. Keys: `factor`, [`L`].
* `ntk`: NTK-aware base change `base * s^(d/(d-2))`, static (not a Hugging
  Face type). Keys: `factor`, [`L`].
* `dynamic`: NTK with `max(1, s * l / L - (s - 1))` for length `l` (Hugging
  Face's dynamic NTK). Keys: `factor`, `L`.
* `yarn`: YaRN's ramp between interpolated and original frequencies and the
  attention factor `0.1 ln(s) + 1`. Keys: `factor`, `L`, [`beta_fast`,
  `beta_slow`, `attention_factor`].

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
    (reddit r/LocalLLaMA); Peng et al. 2023, YaRN (arXiv:2309.00071).
"""

import math

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
    low = math.floor(_yarn_correction_dim(parameters["beta_fast"], rotary_dim, base, original_length))
    high = math.ceil(_yarn_correction_dim(parameters["beta_slow"], rotary_dim, base, original_length))
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


# rope_type -> init function. The order is the one error messages list.
ROPE_INIT_FUNCTIONS = {
    "default": _compute_default_parameters,
    "linear": _compute_linear_parameters,
    "ntk": _compute_ntk_parameters,
    "dynamic": _compute_dynamic_parameters,
    "yarn": _compute_yarn_parameters,
}

# -- validators: scaling dict -> the parameters its init function reads -------------------------------

# Keys every `rope_scaling` dict may hold: the type's name (and its alias).
_TYPE_KEYS = ("rope_type", "type")

_KEY_DESCRIPTIONS = {
    "factor": "a numeric 'factor' (>= 1, the context extension ratio)",
    "original_max_position_embeddings": (
        "'original_max_position_embeddings' (the context length the model was trained on)"
    ),
}


def _rope_type(scaling):
    return scaling.get("rope_type", scaling.get("type", "default"))


def _check_keys(scaling, required=(), optional=()):
    """Refuses keys the dict's rope type does not know, and required keys it misses."""
    allowed = _TYPE_KEYS + tuple(required) + tuple(optional)
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


def _validate_yarn(scaling):
    _check_keys(
        scaling,
        required=("factor", "original_max_position_embeddings"),
        optional=("beta_fast", "beta_slow", "attention_factor"),
    )
    factor = _factor(scaling)
    optional = {
        key: checks.number(scaling.get(key), f"scaling[{key!r}]", above=0, allow_none=True)
        for key in ("beta_fast", "beta_slow", "attention_factor")
    }
    return {
        "factor": factor,
        "original_max_position_embeddings": _original_length(scaling),
        "beta_fast": 32.0 if optional["beta_fast"] is None else optional["beta_fast"],
        "beta_slow": 1.0 if optional["beta_slow"] is None else optional["beta_slow"],
        "attention_factor": (
            0.1 * math.log(factor) + 1.0
            if optional["attention_factor"] is None
            else optional["attention_factor"]
        ),
    }


# rope_type -> validator. Same keys as ROPE_INIT_FUNCTIONS.
ROPE_VALIDATION_FUNCTIONS = {
    "default": _validate_default,
    "linear": _validate_factor,
    "ntk": _validate_factor,
    "dynamic": _validate_dynamic,
    "yarn": _validate_yarn,
}


def parse(scaling):
    """The rope type of a `rope_scaling` dict and its validated parameters.

    Args:
        scaling: None (plain RoPE) or a dict with `"rope_type"` (or its alias
            `"type"`; default "default") and the type's keys.

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
