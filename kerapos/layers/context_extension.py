"""Inference-time context extension of rotary attention: ReRoPE, Self-Extend, DCA.

Each method keeps the trained rotary (or xPos) model and changes only which
relative position a query-key pair is rotated by. A method is a partition of
the `[query, key]` grid into regions, each with its own query and key
positions; the logits of a region are those of the rotary model with these
positions. `PositionalMultiHeadAttention(context_extension=...)` computes one
full score pass per region and keeps each pass's scores inside its region
(`passes`), so the cost is that many `[batch, heads, T, S]` score matrices
(time and peak memory) instead of one.

Positions are absolute and end-aligned: query `i` of `T` against `S` keys sits
at `a = S - T + i`, key `j` at `b = j`, distance `d = a - b`. Regions with
`d < 0` (future keys) exist so the methods also work without a causal mask
(encoders); with a causal mask they are masked out but still computed.

* `rerope` (Su 2023, github bojone/rerope): `window` w. Distances
  `|d| < w` are unchanged; past it ReRoPE uses `w` (`sign(d) * w`), Leaky
  ReRoPE (`leaky_factor` k > 1) `sign(d) * (w + (|d| - w) / k)`. Optional
  `logn_train_length` L multiplies query `a` by `max(1, log(a + 1) / log(L))`
  as the reference code does. 3 passes.
* `self_extend` (Jin et al. 2024, "LLM Maybe LongLM", arXiv:2401.01325):
  `neighbor_window` w and `group_size` G. `|d| < w` unchanged; past it the
  grouped positions `floor(a / G) - floor(b / G) + sign(d) * (w - w // G)`.
  3 passes.
* `dual_chunk` (An et al. 2024, "Training-Free Long-Context Scaling",
  arXiv:2402.17463, github HKUNLP/ChunkLlama): `chunk_size` C and
  `local_window` l; chunks of `c = C - l` positions, keys at `b mod c`.
  Same chunk: queries at `a mod c` (intra); the previous chunk: queries at
  `min(a mod c + c, C)` (successive); older chunks: queries at
  `min(2c - 1, C)` (inter). Future chunks mirror this with the roles of
  queries and keys swapped. 5 passes.

Every method equals plain rotary attention for sequences up to its window:
`window` (ReRoPE), `neighbor_window` (Self-Extend), `chunk_size` (DCA).

Example:
```python
config = context_extension.validate({"method": "rerope", "window": 32})
for query_positions, key_positions, region in context_extension.passes(
        config, query_positions, key_positions):
    ...  # rotate by these positions; keep the scores where `region`
```
"""

from keras import ops

from kerapos.utils import checks

# Per method: {argument: (required, check)}; checks return the clean value.
_ARGUMENTS = {
    "rerope": {
        "window": (True, lambda v, n: checks.integer(v, n, minimum=1)),
        "leaky_factor": (False, lambda v, n: checks.number(v, n, above=1.0, allow_none=True)),
        "logn_train_length": (False, lambda v, n: checks.integer(v, n, minimum=2, allow_none=True)),
    },
    "self_extend": {
        "neighbor_window": (True, lambda v, n: checks.integer(v, n, minimum=1)),
        "group_size": (True, lambda v, n: checks.integer(v, n, minimum=1)),
    },
    "dual_chunk": {
        "chunk_size": (True, lambda v, n: checks.integer(v, n, minimum=2)),
        "local_window": (True, lambda v, n: checks.integer(v, n, minimum=0)),
    },
}
METHODS = tuple(_ARGUMENTS)


def validate(config):
    """A checked copy of a `context_extension` dict (or None for None).

    Raises:
        ValueError: not a dict, unknown method, an unknown or missing key
            (named), or a bad value.
    """
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValueError(f"`context_extension` must be a dict or None, got {config!r}.")
    method = checks.choice(config.get("method"), "context_extension['method']", METHODS)
    arguments = _ARGUMENTS[method]
    unknown = sorted(set(config) - set(arguments) - {"method"})
    if unknown:
        raise ValueError(
            f"context_extension method {method!r} does not take {unknown}; it takes: "
            f"{', '.join(arguments)}."
        )
    clean = {"method": method}
    for key, (required, check) in arguments.items():
        if key not in config:
            if required:
                raise ValueError(
                    f"context_extension method {method!r} needs {key!r}; got keys "
                    f"{sorted(config)}."
                )
            clean[key] = None
            continue
        clean[key] = check(config[key], f"context_extension[{key!r}]")
    if method == "dual_chunk" and clean["local_window"] >= clean["chunk_size"]:
        raise ValueError(
            f"context_extension 'local_window' ({clean['local_window']}) must be smaller "
            f"than 'chunk_size' ({clean['chunk_size']})."
        )
    return clean


def query_scale(config, query_positions):
    """Per-query logit multiplier `[T]` (ReRoPE's log-n), or None."""
    if config["method"] != "rerope" or config["logn_train_length"] is None:
        return None
    ratio = ops.log(query_positions + 1.0) / ops.log(float(config["logn_train_length"]))
    return ops.maximum(ratio, 1.0)  # [T]


def passes(config, query_positions, key_positions):
    """The score passes of `config`'s method.

    Args:
        config: a `validate`d dict.
        query_positions: float32 `[T]`, absolute query positions `a`.
        key_positions: float32 `[S]`, absolute key positions `b`.

    Returns:
        list of `(query_positions [T], key_positions [S], region [T, S] bool)`;
        the first pass's region is everything the later ones leave (None),
        later regions are disjoint.
    """
    return _PASSES[config["method"]](config, query_positions, key_positions)


def _distance(query_positions, key_positions):
    return query_positions[:, None] - key_positions[None, :]  # [T, S]


def _rerope(config, a, b):
    w = float(config["window"])
    k = config["leaky_factor"]
    d = _distance(a, b)
    if k is None:  # every far pair at distance +-w
        far_query, far_key = ops.full_like(a, w), ops.zeros_like(b)
        near_query, near_key = ops.zeros_like(a), ops.full_like(b, w)
    else:  # (a - b) / k +- w (1 - 1 / k)
        shift = w * (1.0 - 1.0 / k)
        far_query, far_key = a / k + shift, b / k
        near_query, near_key = a / k, b / k + shift
    return [
        (a, b, None),
        (far_query, far_key, ops.greater_equal(d, w)),  # keys w or more behind
        (near_query, near_key, ops.less_equal(d, -w)),  # keys w or more ahead
    ]


def _self_extend(config, a, b):
    w, group = config["neighbor_window"], float(config["group_size"])
    shift = float(w - w // config["group_size"])
    d = _distance(a, b)
    grouped_a, grouped_b = ops.floor(a / group), ops.floor(b / group)
    return [
        (a, b, None),
        (grouped_a + shift, grouped_b, ops.greater_equal(d, float(w))),
        (grouped_a, grouped_b + shift, ops.less_equal(d, -float(w))),
    ]


def _dual_chunk(config, a, b):
    size = float(config["chunk_size"])
    length = size - config["local_window"]  # positions per chunk
    chunk_a, chunk_b = ops.floor(a / length), ops.floor(b / length)
    inside_a, inside_b = a - chunk_a * length, b - chunk_b * length  # a mod c, b mod c
    successive_a = ops.minimum(inside_a + length, size)
    successive_b = ops.minimum(inside_b + length, size)
    inter = min(2.0 * length - 1.0, size)
    chunk_gap = chunk_a[:, None] - chunk_b[None, :]  # [T, S]
    return [
        (inside_a, inside_b, None),  # intra-chunk (and what no other pass takes)
        (successive_a, inside_b, ops.equal(chunk_gap, 1.0)),
        (ops.full_like(a, inter), inside_b, ops.greater(chunk_gap, 1.0)),
        (inside_a, successive_b, ops.equal(chunk_gap, -1.0)),
        (inside_a, ops.full_like(b, inter), ops.less(chunk_gap, -1.0)),
    ]


_PASSES = {"rerope": _rerope, "self_extend": _self_extend, "dual_chunk": _dual_chunk}
