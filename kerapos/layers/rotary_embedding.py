"""Rotary position embedding (RoPE) with context-extension scaling and xPos."""

import numbers

import keras
import numpy as np
from keras import ops

from kerapos.layers import rope_types
from kerapos.utils import checks


@keras.saving.register_keras_serializable(package="kerapos")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE) with every Hugging Face rope type, NTK and xPos.

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

    Scaling (`scaling`, a Hugging Face `rope_parameters` / `rope_scaling`
    dict; `"type"` is accepted as an alias of `"rope_type"`; `s` =
    `"factor"` (>= 1), `L` = `"original_max_position_embeddings"`). Each rope
    type is one function in `kerapos.layers.rope_types` (its keys are listed
    there), numerically Hugging Face's (transformers 5.23) except `"ntk"`:
      * `"default"` (or `scaling=None`): plain RoPE.
      * `"linear"`: position interpolation (Chen et al. 2023,
        arXiv:2306.15595): every frequency divided by `s`.
      * `"ntk"` (kerapos' own, not a Hugging Face type): static NTK-aware
        base change `base * s^(d / (d - 2))`, `d` = rotary_dim: the highest
        frequency stays 1, the lowest is divided by exactly `s`. (With
        `d == 2` there is only the frequency 1.)
      * `"dynamic"`: NTK with a factor that follows the actual length
        `l` (`start_index + sequence_length`, or `max(positions) + 1`):
        `s_eff = max(1, s * l / L - (s - 1))`, Hugging Face's dynamic NTK
        formula. With `s = 1` that is `max(1, l / L)`: unscaled up to `L`,
        then NTK with `l / L`. Requires `L`.
      * `"yarn"`: YaRN (Peng et al. 2023, arXiv:2309.00071): frequencies ramp
        from interpolated (`/ s`) to unscaled between the pairs that complete
        `beta_slow` (1) and `beta_fast` (32) rotations over `L`, and cos and
        sin are multiplied by the attention factor `0.1 ln(s) + 1` (or the
        `mscale` / `mscale_all_dim` ratio; `"attention_factor"` overrides), so
        `q . k` is scaled by its square. Requires `L`.
      * `"longrope"`: LongRoPE (Phi-3): per-pair `short_factor` up to length
        `L`, `long_factor` past it. `"llama3"`: Llama 3.1's smooth band.
        `"proportional"`: p-RoPE (Gemma 4).

    A dict from a config.json can be given whole,
    `scaling=config["rope_scaling"]` (or `config["rope_parameters"]`): its
    `"rope_theta"` is the base (`max_wavelength`) and its
    `"partial_rotary_factor"` the rotated fraction (`rotary_dim`), each
    refused if the argument is also given with another value. Hugging Face
    keeps `original_max_position_embeddings` outside `rope_scaling` in some
    configs (and reads `max_position_embeddings` for "dynamic"): add it to
    the dict when a type needs it.

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
        max_wavelength: None or float > 1. The RoPE base (`rope_theta`);
            None = `scaling["rope_theta"]` if given, else 10000.
        scaling: dict or None. A Hugging Face `rope_parameters` /
            `rope_scaling` dict, see above.
        rotary_dim: None, int or float. Number of leading features of each
            head that are rotated: None = `scaling["partial_rotary_factor"]`
            if given, else all of `head_dim`; an even int
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
        sequence_length: optional int or scalar int tensor: the context
            length the length-dependent rope types ("dynamic", "longrope")
            scale for. Default: `start_index` plus the inputs' length, or
            `max(positions) + 1`. A key/value cache passes the number of
            tokens it holds, since its buffer is longer.

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
    rope.attention_factor()  # 0.1 ln(4) + 1
    # A Llama 3.1 config.json's dict, whole:
    llama = RotaryEmbedding(scaling={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192})
    ```
    """

    def __init__(
        self,
        max_wavelength=None,
        scaling=None,
        rotary_dim=None,
        xpos=False,
        xpos_gamma=0.4,
        xpos_scale_base=512.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rope_type, self._rope_parameters = rope_types.parse(scaling)
        rope_theta, rotary_fraction = rope_types.base_and_rotary_fraction(scaling)
        max_wavelength = _agreeing(
            checks.number(max_wavelength, "max_wavelength", above=1, allow_none=True),
            "max_wavelength", rope_theta, "rope_theta",
        )
        max_wavelength = 10000.0 if max_wavelength is None else max_wavelength
        rotary_dim = _agreeing(
            _rotary_dim_argument(rotary_dim), "rotary_dim", rotary_fraction, "partial_rotary_factor"
        )
        if xpos:
            xpos_gamma = checks.number(xpos_gamma, "xpos_gamma", above=0)
            xpos_scale_base = checks.number(xpos_scale_base, "xpos_scale_base", above=0)
        self.max_wavelength = max_wavelength
        # As given (with "type" if so), numpy scalars (also in longrope's
        # factor lists) as Python ones for JSON.
        self.scaling = None if scaling is None else {
            key: _python_values(value) for key, value in scaling.items()
        }
        self.rotary_dim = rotary_dim
        self.xpos = bool(xpos)
        self.xpos_gamma = xpos_gamma
        self.xpos_scale_base = xpos_scale_base
        self.rotated_dim = rotary_dim if checks.is_integer(rotary_dim) else None
        self.supports_masking = True

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
        elif checks.is_integer(self.rotary_dim):
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

    def rope_parameters(self, sequence_length=None):
        """The frequencies and attention factor of the rope type, as used by `call`.

        Args:
            sequence_length: int or scalar tensor, the context length they are
                for (only length-dependent types such as "dynamic" read it;
                None = the original context).

        Returns:
            `(inverse_frequencies, attention_factor)`: float32 `[rotary_dim // 2]`,
            highest frequency first, and the factor multiplying cos and sin.
        """
        if self.rotated_dim is None:
            raise ValueError(
                "The rotated size depends on head_dim: call or build the layer "
                "before asking for its frequencies (or give an int `rotary_dim`)."
            )
        compute = rope_types.ROPE_INIT_FUNCTIONS[self.rope_type]
        return compute(self._rope_parameters, self.rotated_dim, self.max_wavelength, sequence_length)

    def frequencies(self, sequence_length=None):
        """The angular frequency of each rotated pair (`rope_parameters()[0]`).

        Args:
            sequence_length: int or scalar tensor. Only used by the
                length-dependent types, "dynamic" and "longrope" (None = the
                original context).

        Returns:
            float32 tensor `[rotary_dim // 2]`, highest frequency first.
        """
        return self.rope_parameters(sequence_length)[0]

    def attention_factor(self, sequence_length=None):
        """The factor multiplying cos and sin (`rope_parameters()[1]`): YaRN's
        `0.1 ln(s) + 1` (or its mscale ratio), LongRoPE's
        `sqrt(1 + ln(s) / ln(L))`, 1 for the other types.

        Args:
            sequence_length: int or scalar tensor, the context length it is
                for (None = the original context; no type reads it today).

        Returns:
            A float or scalar float32 tensor.
        """
        return self.rope_parameters(sequence_length)[1]

    @property
    def length_dependent(self):
        """Whether the rotation of a position changes with the context length
        (`rope_types.LENGTH_DEPENDENT_TYPES`)."""
        return self.rope_type in rope_types.LENGTH_DEPENDENT_TYPES

    def call(self, inputs, start_index=0, positions=None, is_key=False, sequence_length=None):
        _check_rank(inputs.shape)
        if checks.is_integer(start_index) and start_index < 0:
            raise ValueError(f"`start_index` must be >= 0, got {start_index}.")
        inputs_length = ops.shape(inputs)[1]
        if positions is None:
            positions = ops.arange(inputs_length, dtype="float32") + ops.cast(
                start_index, "float32"
            )
            positions = positions[None, :]  # [1, seq]
            context_length = ops.cast(start_index, "float32") + ops.cast(
                inputs_length, "float32"
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
        if sequence_length is not None:
            context_length = ops.cast(sequence_length, "float32")
        positions = positions[:, :, None, None]  # [batch or 1, seq, 1, 1]

        frequencies, attention_factor = self.rope_parameters(context_length)  # [half], scalar
        angles = positions * frequencies  # [batch or 1, seq, 1, half]
        cos = ops.cos(angles) * attention_factor
        sin = ops.sin(angles) * attention_factor
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


def _check_rank(shape):
    if len(shape) != 4:
        raise ValueError(
            f"RotaryEmbedding expects inputs of rank 4, [batch, sequence_length, "
            f"num_heads, head_dim], got shape {tuple(shape)}. Reshape a "
            f"[batch, sequence_length, features] tensor to split the heads first."
        )


def _python_values(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_python_values(item) for item in value]
    return value.item() if isinstance(value, np.generic) else value


def _agreeing(argument, argument_name, from_scaling, key):
    """The argument, or the `scaling` dict's value for it; both only if equal."""
    if argument is None:
        return from_scaling
    if from_scaling is not None and argument != from_scaling:
        raise ValueError(
            f"`{argument_name}`={argument!r} and `scaling[{key!r}]`={from_scaling!r} disagree; "
            f"give one of them."
        )
    return argument


def _rotary_dim_argument(rotary_dim):
    """`rotary_dim` as None, a positive even int or a float fraction in (0, 1]."""
    if rotary_dim is None:
        return None
    if checks.is_integer(rotary_dim):
        if rotary_dim > 0 and rotary_dim % 2 == 0:
            return int(rotary_dim)
    elif isinstance(rotary_dim, numbers.Real) and not isinstance(rotary_dim, bool):
        if 0 < rotary_dim <= 1:
            return float(rotary_dim)
    raise ValueError(
        f"`rotary_dim` must be None, a positive even int (features are rotated in pairs) or a "
        f"float fraction of head_dim in (0, 1], got {rotary_dim!r}."
    )
