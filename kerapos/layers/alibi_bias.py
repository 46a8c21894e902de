"""ALiBi: attention with linear biases (Press et al., 2022)."""

import math

import keras
import numpy as np
from keras import ops

from kerapos.layers.attention_bias import AttentionBias
from kerapos.utils import checks


def _power_of_two_slopes(num_heads):
    # Geometric sequence that starts at 2^(-8/n) and uses it as its ratio.
    start = 2.0 ** (-8.0 / num_heads)
    return [start ** (head + 1) for head in range(num_heads)]


def _alibi_slopes(num_heads):
    """The per-head slopes of the paper's reference code (fairseq)."""
    if num_heads & (num_heads - 1) == 0:
        return _power_of_two_slopes(num_heads)
    lower_power = 2 ** math.floor(math.log2(num_heads))
    interleaved = _power_of_two_slopes(2 * lower_power)[0::2]
    return _power_of_two_slopes(lower_power) + interleaved[: num_heads - lower_power]


@keras.saving.register_keras_serializable(package="kerapos")
class ALiBiBias(AttentionBias):
    """Adds ALiBi's per-head linear distance penalty to attention scores.

    ALiBi adds no position information to the token embeddings. Instead each
    attention head `h` penalises a query-key pair in proportion to its
    distance: `score(i, j) - m_h * (i - j)`, with fixed head slopes `m_h` that
    form a geometric sequence starting at `2^(-8/num_heads)` (8 heads:
    1/2, 1/4, ..., 1/256). Because the penalty is a simple function of the
    distance, a model trained on short inputs runs on longer ones unchanged.

    Queries are aligned to the END of the keys: query `i` sits at absolute
    position `key_length - query_length + i`. With `query_length ==
    key_length` this is ordinary self-attention; with one query and a cache of
    keys it is incremental decoding.

    Args:
        num_heads: int. Number of attention heads (one slope per head).
        causal: bool. `True` (default) adds the paper's `-m * (i - j)`, meant
            for causal (decoder) attention: future keys (`j > i`) get a
            positive bias, so they MUST be removed by a causal mask.
            `False` adds the symmetric `-m * |i - j|`, for encoders that
            attend in both directions.
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
    alibi = kerapos.layers.alibi_bias.ALiBiBias(num_heads=8, causal=True)
    biased = alibi(scores)  # then mask the future and apply softmax
    bias = alibi.bias(query_length=10, key_length=10)  # [1, 8, 10, 10]
    ```

    Reference:
        Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear
        Biases Enables Input Length Extrapolation", ICLR 2022,
        [arXiv:2108.12409](https://arxiv.org/abs/2108.12409).
    """

    def __init__(self, num_heads, causal=True, **kwargs):
        super().__init__(**kwargs)
        num_heads = checks.integer(num_heads, "num_heads", minimum=1)
        if not isinstance(causal, (bool, np.bool_)):
            raise ValueError(f"`causal` must be True or False, got causal={causal!r}.")
        self.num_heads = num_heads
        self.causal = bool(causal)
        self.slopes = np.asarray(_alibi_slopes(num_heads), dtype="float32")  # [h]

    def bias_at(self, query_positions, key_positions):
        """The float32 bias `[1, num_heads, q, k]` of queries at
        `query_positions` `[q]` and keys at `key_positions` `[k]`."""
        distance = ops.cast(query_positions, "float32")[:, None] - ops.cast(
            key_positions, "float32"
        )[None, :]  # [q, k]
        if not self.causal:
            distance = ops.abs(distance)
        slopes = ops.convert_to_tensor(self.slopes, dtype="float32")  # [h]
        bias = -slopes[:, None, None] * distance[None, :, :]  # [h, q, k]
        return bias[None]  # [1, h, q, k]

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "causal": self.causal})
        return config
