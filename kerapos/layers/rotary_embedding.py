"""Rotary position embedding (RoPE) with context-extension scaling and xPos."""

import math
import numbers

import kerapos  # noqa: F401  (quiet TensorFlow, Keras backend)
import keras
from keras import ops

ROPE_TYPES = ("default", "linear", "ntk", "dynamic", "yarn")
_COMMON_SCALING_KEYS = ("rope_type", "type", "factor", "original_max_position_embeddings")
_YARN_SCALING_KEYS = ("beta_fast", "beta_slow", "attention_factor")


def _yarn_correction_dim(num_rotations, dim, base, original_max_positions):
    """Pair index whose wavelength fits `num_rotations` times in the context.

    Hugging Face's `find_correction_dim` (YaRN, Peng et al. 2023, eq. 17).
    """
    return (
        dim
        * math.log(original_max_positions / (num_rotations * 2.0 * math.pi))
        / (2.0 * math.log(base))
    )


@keras.saving.register_keras_serializable(package="kerapos")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE) with PI / NTK / YaRN scaling and xPos.

    RoPE (RoFormer, Su et al. 2021, arXiv:2104.09864) rotates each pair of
    query/key features by an angle `position * frequency_i`, so the dot product
    of a rotated query at position `m` and a rotated key at position `n`
    depends only on `m - n`. Pair `i` uses the frequency
    `max_wavelength^(-2i / rotary_dim)`, `i = 0 .. rotary_dim/2 - 1` (highest
    frequency first).

    Pair layout: "half-split", as in GPT-NeoX, Hugging Face and keras-hub:
    pair `i` is `(x[i], x[i + rotary_dim/2])`, not `(x[2i], x[2i+1])`. Weights
    trained with the interleaved layout must have their features permuted.

    Partial rotary: only the first `rotary_dim` features of each head are
    rotated; the rest pass through unchanged.

    Scaling (`scaling`, a Hugging Face `rope_scaling` dict; `"type"` is
    accepted as an alias of `"rope_type"`; `s` = `"factor"` (>= 1), `L` =
    `"original_max_position_embeddings"`):
      * `"default"` (or `scaling=None`): plain RoPE.
      * `"linear"`: position interpolation (Chen et al. 2023,
        arXiv:2306.15595): every frequency divided by `s`.
      * `"ntk"`: NTK-aware base change `base * s^(d / (d - 2))`, `d` =
        rotary_dim: the highest frequency stays 1, the lowest is divided by
        exactly `s`. (With `d == 2` there is only the frequency 1.)
      * `"dynamic"`: NTK with a factor that follows the actual length
        `l` (`start_index + sequence_length`, or `max(positions) + 1`):
        `s_eff = max(1, s * l / L - (s - 1))`, Hugging Face's dynamic NTK
        formula. With `s = 1` that is `max(1, l / L)`: unscaled up to `L`,
        then NTK with `l / L`. Requires `L`.
      * `"yarn"`: YaRN (Peng et al. 2023, arXiv:2309.00071), as Hugging Face's
        `_compute_yarn_parameters`: frequencies ramp from interpolated
        (`/ s`) to unscaled between the pairs that complete `beta_slow` (1)
        and `beta_fast` (32) rotations over `L`, and cos and sin are multiplied
        by the attention factor `0.1 ln(s) + 1` (key `"attention_factor"`
        overrides), so `q . k` is scaled by its square. Requires `L`.

    xPos (Sun et al. 2023, arXiv:2212.10554), with `xpos=True`: pair `i` of a
    query at position `n` is also multiplied by `zeta_i^(n / xpos_scale_base)`,
    of a key by `zeta_i^(-n / xpos_scale_base)`, with
    `zeta_i = (2i / rotary_dim + xpos_gamma) / (1 + xpos_gamma)`, so the
    rotated `q . k` decays as `zeta_i^((m - n) / xpos_scale_base)`. Positions
    are absolute (so cached keys stay valid in incremental decoding), which
    means keys far from position 0 grow large: under float16 (max 65504), keep
    positions below about `8.8 * xpos_scale_base` with the default gamma.

    Angles, cos/sin and the rotation are computed in float32 whatever the
    compute dtype; the result is cast to the compute dtype. The layer has no
    weights, and passes Keras masks through unchanged.

    Args:
        max_wavelength: float > 1. The RoPE base (`rope_theta`).
        scaling: dict or None. A Hugging Face `rope_scaling` dict, see above.
        rotary_dim: None, int or float. Number of leading features of each
            head that are rotated: None = all of `head_dim`; an even int
            `<= head_dim`; a float in `(0, 1]` = that fraction of `head_dim`,
            rounded down to an even number.
        xpos: bool. Apply the xPos decay on top of the rotation.
        xpos_gamma: float > 0. xPos' `gamma` (0.4 in the paper).
        xpos_scale_base: float > 0. xPos' scale base (512 in the paper).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `dtype` etc.

    Call arguments:
        inputs: queries or keys, `[batch, sequence_length, num_heads,
            head_dim]`.
        start_index: int or scalar int tensor. Position of the first token
            (the cache length in incremental decoding). Ignored when
            `positions` is given.
        positions: optional int tensor, `[sequence_length]` or
            `[batch, sequence_length]`: explicit positions of the tokens.
        is_key: bool. Whether `inputs` are keys (only matters with xPos).

    Returns:
        A tensor of the shape of `inputs`, in the compute dtype.

    Example:
    ```python
    queries = np.random.rand(2, 16, 4, 64).astype("float32")  # [b, s, h, d]
    keys = np.random.rand(2, 16, 4, 64).astype("float32")
    rope = RotaryEmbedding(
        scaling={"rope_type": "yarn", "factor": 4.0,
                 "original_max_position_embeddings": 2048}
    )
    queries = rope(queries)
    keys = rope(keys, is_key=True)
    rope.frequencies()  # float32 [32], highest first
    ```
    """

    def __init__(
        self,
        max_wavelength=10000.0,
        scaling=None,
        rotary_dim=None,
        xpos=False,
        xpos_gamma=0.4,
        xpos_scale_base=512.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(max_wavelength, numbers.Real) or not max_wavelength > 1:
            raise ValueError(
                f"`max_wavelength` must be a number > 1 (the RoPE base, e.g. "
                f"10000), got {max_wavelength!r}."
            )
        _check_rotary_dim_argument(rotary_dim)
        if xpos and not (isinstance(xpos_gamma, numbers.Real) and xpos_gamma > 0):
            raise ValueError(f"`xpos_gamma` must be a number > 0, got {xpos_gamma!r}.")
        if xpos and not (
            isinstance(xpos_scale_base, numbers.Real) and xpos_scale_base > 0
        ):
            raise ValueError(
                f"`xpos_scale_base` must be a number > 0, got {xpos_scale_base!r}."
            )
        self._parse_scaling(scaling)
        self.max_wavelength = max_wavelength
        self.scaling = None if scaling is None else dict(scaling)
        self.rotary_dim = rotary_dim
        self.xpos = bool(xpos)
        self.xpos_gamma = xpos_gamma
        self.xpos_scale_base = xpos_scale_base
        self.rotated_dim = rotary_dim if _is_integer(rotary_dim) else None
        self.supports_masking = True

    def _parse_scaling(self, scaling):
        """Sets the rope type and its parameters from a `rope_scaling` dict."""
        self.rope_type = "default"
        self.factor = 1.0
        self.original_max_positions = None
        self.beta_fast = 32.0
        self.beta_slow = 1.0
        self.attention_factor = 1.0
        if scaling is None:
            return
        if not isinstance(scaling, dict):
            raise ValueError(
                f"`scaling` must be None or a dict like {{'rope_type': 'linear', "
                f"'factor': 2.0}}, got {scaling!r}."
            )
        if "rope_type" in scaling and "type" in scaling:
            if scaling["rope_type"] != scaling["type"]:
                raise ValueError(
                    f"`scaling` has rope_type={scaling['rope_type']!r} and its "
                    f"alias type={scaling['type']!r}; give one of them."
                )
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(
                f"Unknown rope_type {rope_type!r} in `scaling`; valid rope types "
                f"are {', '.join(ROPE_TYPES)}."
            )
        allowed_keys = _COMMON_SCALING_KEYS + (
            _YARN_SCALING_KEYS if rope_type == "yarn" else ()
        )
        unknown_keys = [key for key in scaling if key not in allowed_keys]
        if unknown_keys:
            raise ValueError(
                f"Unknown keys {unknown_keys} in `scaling` for rope_type "
                f"{rope_type!r}; allowed keys are {', '.join(allowed_keys)}."
            )
        self.rope_type = rope_type
        if rope_type == "default":
            return

        factor = scaling.get("factor")
        if not isinstance(factor, numbers.Real) or isinstance(factor, bool):
            raise ValueError(
                f"`scaling` with rope_type {rope_type!r} needs a numeric 'factor' "
                f"(>= 1, the context extension ratio), got {factor!r}."
            )
        if not factor >= 1:
            raise ValueError(
                f"`scaling['factor']` must be >= 1 (it extends the context), "
                f"got {factor}."
            )
        self.factor = float(factor)

        original_max_positions = scaling.get("original_max_position_embeddings")
        if original_max_positions is not None and not (
            _is_integer(original_max_positions) and original_max_positions > 0
        ):
            raise ValueError(
                f"`scaling['original_max_position_embeddings']` must be a "
                f"positive int, got {original_max_positions!r}."
            )
        if original_max_positions is None and rope_type in ("dynamic", "yarn"):
            raise ValueError(
                f"`scaling` with rope_type {rope_type!r} needs "
                f"'original_max_position_embeddings' (the context length the "
                f"model was trained on)."
            )
        self.original_max_positions = original_max_positions

        if rope_type == "yarn":
            for key in _YARN_SCALING_KEYS:
                value = scaling.get(key)
                if value is not None and not (
                    isinstance(value, numbers.Real) and value > 0
                ):
                    raise ValueError(
                        f"`scaling[{key!r}]` must be a number > 0, got {value!r}."
                    )
            self.beta_fast = float(scaling.get("beta_fast", 32.0))
            self.beta_slow = float(scaling.get("beta_slow", 1.0))
            self.attention_factor = float(
                scaling.get("attention_factor", 0.1 * math.log(self.factor) + 1.0)
            )

    def build(self, inputs_shape):
        _check_rank(inputs_shape)
        head_dim = inputs_shape[-1]
        if head_dim is None:
            raise ValueError(
                "RotaryEmbedding needs a known head_dim (last axis of "
                "[batch, sequence_length, num_heads, head_dim])."
            )
        if self.rotary_dim is None:
            rotated_dim = head_dim
        elif _is_integer(self.rotary_dim):
            rotated_dim = self.rotary_dim
            if rotated_dim > head_dim:
                raise ValueError(
                    f"`rotary_dim`={rotated_dim} is larger than head_dim="
                    f"{head_dim}; use rotary_dim <= head_dim."
                )
        else:
            # Small epsilon so that e.g. 0.28 * 100 gives 28, not 27.999...
            rotated_dim = int(head_dim * self.rotary_dim + 1e-9) // 2 * 2
            if rotated_dim == 0:
                raise ValueError(
                    f"`rotary_dim`={self.rotary_dim} of head_dim={head_dim} rotates "
                    f"no feature pair; use a larger fraction."
                )
        if rotated_dim % 2:
            raise ValueError(
                f"RotaryEmbedding rotates pairs of features, so the rotated size "
                f"must be even, got {rotated_dim} (head_dim={head_dim}). Use an "
                f"even head_dim or set `rotary_dim` to an even number."
            )
        self.rotated_dim = rotated_dim
        self.built = True

    def frequencies(self, sequence_length=None):
        """The angular frequency of each rotated pair, as used by `call`.

        Args:
            sequence_length: int or scalar tensor. Only used by "dynamic"
                scaling (None = the original context, i.e. unscaled).

        Returns:
            float32 tensor `[rotary_dim // 2]`, highest frequency first.
        """
        if self.rotated_dim is None:
            raise ValueError(
                "The rotated size depends on head_dim: call or build the layer "
                "before asking for its frequencies (or give an int `rotary_dim`)."
            )
        rotated_dim = self.rotated_dim
        exponents = ops.arange(0, rotated_dim, 2, dtype="float32") / rotated_dim
        base = float(self.max_wavelength)
        ntk_exponent = rotated_dim / (rotated_dim - 2) if rotated_dim > 2 else 0.0
        if self.rope_type == "ntk":
            base = base * self.factor**ntk_exponent
        elif self.rope_type == "dynamic" and sequence_length is not None:
            length = ops.cast(sequence_length, "float32")
            effective_factor = ops.maximum(
                1.0,
                self.factor * length / self.original_max_positions
                - (self.factor - 1.0),
            )
            base = base * ops.power(effective_factor, ntk_exponent)
        inverse_frequencies = ops.power(
            ops.cast(base, "float32"), -exponents
        )  # [rotated_dim // 2]
        if self.rope_type == "linear":
            return inverse_frequencies / self.factor
        if self.rope_type == "yarn":
            return self._yarn_frequencies(inverse_frequencies)
        return inverse_frequencies

    def _yarn_frequencies(self, inverse_frequencies):
        rotated_dim = self.rotated_dim
        base = float(self.max_wavelength)
        low = math.floor(
            _yarn_correction_dim(
                self.beta_fast, rotated_dim, base, self.original_max_positions
            )
        )
        high = math.ceil(
            _yarn_correction_dim(
                self.beta_slow, rotated_dim, base, self.original_max_positions
            )
        )
        low, high = max(low, 0), min(high, rotated_dim - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp, as Hugging Face does
        pair_index = ops.arange(rotated_dim // 2, dtype="float32")
        # 0 = keep the original frequency (extrapolate), 1 = interpolate (/ s).
        interpolation_weight = ops.clip((pair_index - low) / (high - low), 0.0, 1.0)
        interpolated = inverse_frequencies / self.factor
        return (
            interpolated * interpolation_weight
            + inverse_frequencies * (1.0 - interpolation_weight)
        )

    def call(self, inputs, start_index=0, positions=None, is_key=False):
        _check_rank(inputs.shape)
        if _is_integer(start_index) and start_index < 0:
            raise ValueError(f"`start_index` must be >= 0, got {start_index}.")
        sequence_length = ops.shape(inputs)[1]
        if positions is None:
            positions = ops.arange(sequence_length, dtype="float32") + ops.cast(
                start_index, "float32"
            )
            positions = positions[None, :]  # [1, seq]
            context_length = ops.cast(start_index, "float32") + ops.cast(
                sequence_length, "float32"
            )
        else:
            if len(positions.shape) not in (1, 2):
                raise ValueError(
                    f"`positions` must be [sequence_length] or [batch, "
                    f"sequence_length], got shape {positions.shape}."
                )
            positions = ops.cast(positions, "float32")
            if len(positions.shape) == 1:
                positions = positions[None, :]  # [1, seq]
            context_length = ops.max(positions) + 1.0
        positions = positions[:, :, None, None]  # [batch or 1, seq, 1, 1]

        frequencies = self.frequencies(context_length)  # [half]
        angles = positions * frequencies  # [batch or 1, seq, 1, half]
        cos = ops.cos(angles) * self.attention_factor
        sin = ops.sin(angles) * self.attention_factor
        if self.xpos:
            half = self.rotated_dim // 2
            pair_index = ops.arange(half, dtype="float32")
            zeta = (2.0 * pair_index / self.rotated_dim + self.xpos_gamma) / (
                1.0 + self.xpos_gamma
            )  # [half]
            direction = -1.0 if is_key else 1.0
            decay = ops.exp(
                direction * positions / self.xpos_scale_base * ops.log(zeta)
            )  # [batch or 1, seq, 1, half]
            cos = cos * decay
            sin = sin * decay

        features = ops.cast(inputs, "float32")  # [batch, seq, heads, head_dim]
        half = self.rotated_dim // 2
        first, second, passthrough = ops.split(
            features, [half, self.rotated_dim], axis=-1
        )
        rotated_first = first * cos - second * sin  # [batch, seq, heads, half]
        rotated_second = second * cos + first * sin
        outputs = ops.concatenate([rotated_first, rotated_second, passthrough], axis=-1)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_wavelength": self.max_wavelength,
                "scaling": None if self.scaling is None else dict(self.scaling),
                "rotary_dim": self.rotary_dim,
                "xpos": self.xpos,
                "xpos_gamma": self.xpos_gamma,
                "xpos_scale_base": self.xpos_scale_base,
            }
        )
        return config


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_rank(shape):
    if len(shape) != 4:
        raise ValueError(
            f"RotaryEmbedding expects inputs of rank 4, [batch, sequence_length, "
            f"num_heads, head_dim], got shape {tuple(shape)}. Reshape a "
            f"[batch, sequence_length, features] tensor to split the heads first."
        )


def _check_rotary_dim_argument(rotary_dim):
    if rotary_dim is None:
        return
    if _is_integer(rotary_dim):
        if rotary_dim <= 0 or rotary_dim % 2:
            raise ValueError(
                f"An int `rotary_dim` must be a positive even number (features "
                f"are rotated in pairs), got {rotary_dim}."
            )
        return
    if isinstance(rotary_dim, numbers.Real) and not isinstance(rotary_dim, bool):
        if not 0 < rotary_dim <= 1:
            raise ValueError(
                f"A float `rotary_dim` is a fraction of head_dim and must be in "
                f"(0, 1], got {rotary_dim}."
            )
        return
    raise ValueError(
        f"`rotary_dim` must be None, an even int or a fraction in (0, 1], got "
        f"{rotary_dim!r}."
    )
