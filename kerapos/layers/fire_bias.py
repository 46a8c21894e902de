"""FIRE: functional interpolation for relative positions (Li et al., 2024)."""

import math

import keras
import numpy as np
from keras import ops

from kerapos.layers.attention_bias import AttentionBias
from kerapos.utils import checks

# Added to the normaliser psi(max(L, i)) as in the paper's code, so that a
# zero normaliser (c = 0, or L = 0 at position 0) gives 0 instead of 0 / 0.
_EPSILON = 1e-6


def _torch_linear_initializer(fan_in):
    """PyTorch's `nn.Linear` default for kernel and bias (the paper's code):
    uniform on `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`."""
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="kerapos")
class FireBias(AttentionBias):
    """Adds FIRE's learned, progressively interpolated position bias to scores.

    FIRE maps each query-key pair to a number in `[0, 1]` and a small MLP
    turns that number into one bias per head:

    `bias(i, j) = f(psi(i - j) / psi(max(L, i)))`, `psi(x) = log(|c| x + 1)`,

    with `c` (initially 0.1) and the threshold `L` (initially
    `initial_threshold`) learned, and `f` an MLP
    `1 -> hidden_dim (ReLU) -> num_heads`. Dividing by `psi(i)` interpolates:
    every query sees its keys spread over the same `[0, 1]`, however long the
    input, so longer inputs need no unseen MLP inputs. The threshold `L` keeps
    short contexts (`i < L`) from being stretched over the whole range.

    As in the paper's code, `L = |m * initial_threshold|` with a learned
    multiplier `m` (initially 1), so `L` learns at the scale of the other
    weights, and `1e-6` is added to the normaliser. The MLP's output bias
    (kept as in the paper's code) adds one constant per head to every logit,
    which the softmax ignores: it gets no gradient inside attention.

    `causal=True` (decoders) is the paper's form: the distance is `i - j`,
    clamped at 0 for future keys (`j > i`), which a causal mask MUST remove.
    `causal=False` (encoders) uses `|i - j| / psi(max(L, i, j))`: symmetric
    in `i` and `j`, and still in `[0, 1]` for every pair. The paper states
    FIRE for causal attention (Section 3); this symmetric form, normalised by
    the later of the two positions, is this library's choice for
    bidirectional attention, not a formula from the paper.

    `max_position` (an inference-time option, not in the paper) stops the
    interpolation there: a position past it is read as `max_position` in the
    normaliser, and a distance past it as `max_position`. Up to
    `max_position` the bias is the paper's; past it every query keeps the
    bias it had at `max_position` for its nearest `max_position` keys, and
    farther keys share the bias of distance `max_position`. Set to the last
    training position, it keeps local distances as sharp as in training. The
    paper's interpolation instead spreads a long query's keys over `[0, 1]`,
    so its nearest keys move towards distance 0. The extrapolation benchmark
    scores both (`fire/capped` row): on its cpu preset the capped form stays
    flat to 16x the training length where the paper's form climbs.

    The absolute query position is end-aligned: query `q` sits at
    `i = key_length - query_length + q`, so one query against a cache of keys
    is incremental decoding. The bias is computed in float32.

    Args:
        num_heads: int. Number of attention heads (the MLP's outputs).
        causal: bool. `True` (default) for decoders, `False` for encoders;
            see above.
        hidden_dim: int. Width of the MLP's hidden layer (paper: 32).
        initial_c: float > 0. Initial value of `c` (paper: 0.1).
        initial_threshold: float > 0. Initial value of `L` (paper: 512).
        max_position: int >= 1 or None. Positions and distances past it are
            read as it (see above); None (default): the paper's form at
            every position. It adds no weights, so a trained layer can be
            rebuilt with it.
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
    fire = kerapos.layers.fire_bias.FireBias(num_heads=8, causal=True)
    biased = fire(scores)  # then mask the future and apply softmax
    bias = fire.bias(query_length=10, key_length=10)  # [1, 8, 10, 10]
    ```

    Reference:
        Li et al., "Functional Interpolation for Relative Positions Improves
        Long Context Transformers", ICLR 2024,
        [arXiv:2310.04418](https://arxiv.org/abs/2310.04418): Section 3
        (the formula) and the appendix's PyTorch implementation (initial
        values, threshold multiplier, MLP, normaliser epsilon).
    """

    def __init__(
        self,
        num_heads,
        causal=True,
        hidden_dim=32,
        initial_c=0.1,
        initial_threshold=512.0,
        max_position=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = checks.integer(num_heads, "num_heads", minimum=1)
        if not isinstance(causal, (bool, np.bool_)):
            raise ValueError(f"`causal` must be True or False, got causal={causal!r}.")
        self.causal = bool(causal)
        self.hidden_dim = checks.integer(hidden_dim, "hidden_dim", minimum=1)
        self.initial_c = checks.number(initial_c, "initial_c", above=0.0)
        self.initial_threshold = checks.number(initial_threshold, "initial_threshold", above=0.0)
        self.max_position = (
            None if max_position is None
            else checks.integer(max_position, "max_position", minimum=1)
        )

    def build(self, input_shape=None):
        self.c = self.add_weight(
            name="c", shape=(), initializer=keras.initializers.Constant(self.initial_c)
        )
        self.threshold_multiplier = self.add_weight(
            name="threshold_multiplier", shape=(), initializer="ones"
        )
        self.hidden_kernel = self.add_weight(
            name="hidden_kernel",
            shape=(1, self.hidden_dim),
            initializer=_torch_linear_initializer(1),
        )
        self.hidden_bias = self.add_weight(
            name="hidden_bias", shape=(self.hidden_dim,), initializer=_torch_linear_initializer(1)
        )
        self.output_kernel = self.add_weight(
            name="output_kernel",
            shape=(self.hidden_dim, self.num_heads),
            initializer=_torch_linear_initializer(self.hidden_dim),
        )
        self.output_bias = self.add_weight(
            name="output_bias",
            shape=(self.num_heads,),
            initializer=_torch_linear_initializer(self.hidden_dim),
        )
        self.built = True

    def _psi(self, x):
        """`log(|c| x + 1)` for `x >= 0`, in float32."""
        return ops.log1p(ops.abs(ops.cast(self.c, "float32")) * x)

    def bias_at(self, query_positions, key_positions):
        """The float32 bias `[1, num_heads, q, k]` of queries at
        `query_positions` `[q]` and keys at `key_positions` `[k]`."""
        query_positions = ops.cast(query_positions, "float32")[:, None]  # [q, 1]
        key_positions = ops.cast(key_positions, "float32")[None, :]  # [1, k]
        distance = query_positions - key_positions  # [q, k]
        if self.causal:
            distance = ops.maximum(distance, 0.0)  # future keys: masked anyway
            normaliser_position = query_positions  # [q, 1]
        else:
            distance = ops.abs(distance)
            normaliser_position = ops.maximum(query_positions, key_positions)  # [q, k]
        if self.max_position is not None:
            distance = ops.minimum(distance, float(self.max_position))
            normaliser_position = ops.minimum(normaliser_position, float(self.max_position))
        threshold = ops.abs(ops.cast(self.threshold_multiplier, "float32") * self.initial_threshold)
        normaliser = self._psi(ops.maximum(normaliser_position, threshold)) + _EPSILON
        interpolated = self._psi(distance) / normaliser  # [q, k], in [0, 1]

        hidden_kernel = ops.cast(self.hidden_kernel, "float32")[0]  # [d]
        hidden = ops.relu(
            interpolated[:, :, None] * hidden_kernel + ops.cast(self.hidden_bias, "float32")
        )  # [q, k, d]
        values = ops.matmul(hidden, ops.cast(self.output_kernel, "float32")) + ops.cast(
            self.output_bias, "float32"
        )  # [q, k, h]
        return ops.transpose(values, (2, 0, 1))[None]  # [1, h, q, k]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "causal": self.causal,
                "hidden_dim": self.hidden_dim,
                "initial_c": self.initial_c,
                "initial_threshold": self.initial_threshold,
                "max_position": self.max_position,
            }
        )
        return config
