"""KERPLE: kernelized relative position biases (Chi et al., 2022)."""

import keras
from keras import ops

from kerapos.layers.attention_bias import AttentionBias
from kerapos.utils import checks

KERNELS = ("log", "power")

# The reference code's bounds: every parameter >= 0.01, the power <= 2.
_MIN_PARAMETER = 0.01
_MAX_POWER = 2.0

# The reference code's initial values (`get_parameter(scale, "uniform")`):
# uniform on [0, 2) for the log kernel's r1 and the power kernel's r2,
# uniform on [0, 1) for the others.
_INITIAL_RANGES = {"log": (2.0, 1.0), "power": (1.0, 2.0)}


class _Clip(keras.constraints.Constraint):
    """Clips a weight into `[minimum, maximum]` after each optimizer step."""

    def __init__(self, minimum, maximum=None):
        self.minimum = minimum
        self.maximum = maximum

    def __call__(self, w):
        w = ops.maximum(w, ops.cast(self.minimum, w.dtype))
        if self.maximum is not None:
            w = ops.minimum(w, ops.cast(self.maximum, w.dtype))
        return w

    def get_config(self):
        return {"minimum": self.minimum, "maximum": self.maximum}


@keras.saving.register_keras_serializable(package="kerapos")
class KerpleBias(AttentionBias):
    """Adds KERPLE's learned, kernelized distance penalty to attention scores.

    KERPLE turns a conditionally positive definite kernel of the distance
    `|i - j|` into an additive attention bias. Each head `h` learns two
    positive numbers `r1`, `r2`:

    * `kernel="log"`: `bias(i, j) = -r1 * log(1 + r2 * |i - j|)`;
    * `kernel="power"`: `bias(i, j) = -r1 * |i - j| ** r2`, `0 < r2 <= 2`
      (with `r2 = 1` and fixed `r1` it is ALiBi).

    The penalty is defined at every distance, so a model trained on short
    inputs runs on longer ones unchanged.

    The parameters are kept in the reference code's range (`r1, r2 >= 0.01`,
    power `r2 <= 2`) twice over. A constraint clips each weight back into the
    range after every optimizer step: this is the reference's in-place clamp
    (a projected gradient step), and it leaves the stored value where its
    gradient is alive. The forward pass clips too, so a value that starts out
    of range (the reference's uniform initialisation can draw values below
    0.01, and weights can be set by hand) is used in range, as the reference
    clamps before use. Clipping only in the forward pass would freeze a weight
    that stepped out of range: its gradient is zero there.

    The bias depends on `|i - j|` only, so it serves encoders (bidirectional
    attention) and decoders alike; there is no `causal` argument. (The
    reference code, a decoder, computes it for `i >= j` only; a causal mask
    removes the other pairs.) Queries are aligned to the END of the keys:
    query `i` sits at absolute position `key_length - query_length + i`, so
    one query against a cache of keys is incremental decoding.

    Args:
        num_heads: int. Number of attention heads (one `r1`, `r2` each).
        kernel: str. `"log"` (default; the better of the two in most of the
            paper's experiments) or `"power"`.
        r1_initializer: initializer of the `[num_heads]` multipliers `r1`.
            None (default): the reference code's, uniform on `[0, 2)` for the
            log kernel and on `[0, 1)` for the power kernel.
        r2_initializer: initializer of the `[num_heads]` inner parameters
            `r2`. None (default): the reference code's, uniform on `[0, 1)`
            for the log kernel and on `[0, 2)` for the power kernel.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `dtype` etc.

    Call arguments:
        attention_scores: the attention logits, shape
            `[batch, num_heads, query_length, key_length]`.

    Returns:
        `attention_scores` plus the bias, same shape and dtype. The bias itself
        is computed in float32, then cast.

    Example:
    ```python
    scores = np.random.rand(2, 8, 10, 10).astype("float32")  # [b, h, q, k]
    kerple = kerapos.layers.kerple_bias.KerpleBias(num_heads=8, kernel="log")
    biased = kerple(scores)
    bias = kerple.bias(query_length=10, key_length=10)  # [1, 8, 10, 10]
    ```

    Reference:
        Chi, Fan, Ramadge and Rudnicky, "KERPLE: Kernelized Relative
        Positional Embedding for Length Extrapolation", NeurIPS 2022,
        [arXiv:2205.09921](https://arxiv.org/abs/2205.09921); reference code
        `ParallelKerpleLog` / `ParallelKerplePower` in
        github.com/chijames/KERPLE, `megatron/mpu/layers.py`.
    """

    def __init__(
        self, num_heads, kernel="log", r1_initializer=None, r2_initializer=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_heads = checks.integer(num_heads, "num_heads", minimum=1)
        self.kernel = checks.choice(kernel, "kernel", KERNELS)
        r1_range, r2_range = _INITIAL_RANGES[self.kernel]
        self.r1_initializer = keras.initializers.get(
            r1_initializer or keras.initializers.RandomUniform(0.0, r1_range)
        )
        self.r2_initializer = keras.initializers.get(
            r2_initializer or keras.initializers.RandomUniform(0.0, r2_range)
        )

    def build(self, input_shape=None):
        self.r1 = self.add_weight(
            name="r1",
            shape=(self.num_heads,),
            initializer=self.r1_initializer,
            constraint=_Clip(_MIN_PARAMETER),
        )
        self.r2 = self.add_weight(
            name="r2",
            shape=(self.num_heads,),
            initializer=self.r2_initializer,
            constraint=_Clip(_MIN_PARAMETER, _MAX_POWER if self.kernel == "power" else None),
        )
        self.built = True

    def bias_at(self, query_positions, key_positions):
        """The float32 bias `[1, num_heads, q, k]` of queries at
        `query_positions` `[q]` and keys at `key_positions` `[k]`."""
        distance = ops.abs(
            ops.cast(query_positions, "float32")[:, None]
            - ops.cast(key_positions, "float32")[None, :]
        )[None]  # [1, q, k]
        r1 = ops.maximum(ops.cast(self.r1, "float32"), _MIN_PARAMETER)[:, None, None]  # [h, 1, 1]
        r2 = ops.maximum(ops.cast(self.r2, "float32"), _MIN_PARAMETER)[:, None, None]  # [h, 1, 1]
        if self.kernel == "log":
            bias = -r1 * ops.log1p(r2 * distance)  # [h, q, k]
        else:
            r2 = ops.minimum(r2, _MAX_POWER)
            # |i - j| ** r2 as exp(r2 * log|i - j|), 0 at distance 0; the log
            # reads max(distance, 1) so neither branch's gradient is NaN there.
            powered = ops.exp(r2 * ops.log(ops.maximum(distance, 1.0)))  # [h, q, k]
            bias = -r1 * ops.where(distance > 0, powered, 0.0)  # [h, q, k]
        return bias[None]  # [1, h, q, k]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "kernel": self.kernel,
                "r1_initializer": keras.initializers.serialize(self.r1_initializer),
                "r2_initializer": keras.initializers.serialize(self.r2_initializer),
            }
        )
        return config
