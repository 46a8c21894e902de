"""Perplexity at an evaluation length, with the two protocols of the ALiBi paper.

Press et al. 2022 ("Train Short, Test Long", arXiv:2108.12409, section 2 and
appendix B) evaluate a language model on a token stream at length `L` in two
ways:

* ``"nonoverlapping"``: the stream is cut into consecutive chunks of `L`
  tokens; each token is predicted from the tokens before it IN ITS CHUNK, so
  the first tokens of every chunk see little context (the "early token
  curse").
* ``"sliding"``: windows of `L` tokens advance by `stride`; each window scores
  only its last `stride` predictions (the first window scores all of its own),
  so every token after the first window sees at least `L - stride` tokens of
  context. `stride=1` is the paper's exact sliding evaluation (each token with
  `L - 1` tokens of context, `L` times slower than nonoverlapping); the
  default here is `L // 2` (at least `L / 2` tokens of context, twice the cost
  of nonoverlapping).

Both protocols score exactly the same tokens, each exactly once: targets
`1 .. T` of a stream `t_0 .. t_T` (token `t_0` is only ever context). A window
`(start, end, num_scored)` feeds the inputs `t_start .. t_{end-1}` and scores
the predictions of its last `num_scored` targets `t_{end-num_scored+1} ..
t_end`.

`evaluate_documents` evaluates several documents (each its own stream, so no
context crosses a document boundary) under a total token budget
`max_eval_tokens`, split equally between documents and taken from their
beginnings: the same tokens for every model, length and protocol.

Also here: the inference-time variants of a trained model evaluated at a
length it was not trained on, as its scheme's registry entry lists them
(`positions.scheme(name).variants`): RoPE scaling, log-n and the context
extension methods for rotary, the table grown by interpolation for learned,
the interpolation stopped at the training length for FIRE.

Example:
```python
from kerapos.metrics import perplexity
result = perplexity.evaluate_documents(model, documents, 256, "sliding")
result["perplexity"], result["bits_per_byte"]
for variant in perplexity.variants_for("rotary"):   # "none", "linear", ...
    evaluated = perplexity.variant_model(model, build_config, variant, 64, 256)
```
"""

import math

import keras
import numpy as np
import tensorflow as tf

from kerapos import positions
from kerapos.models.causal_lm import extend_learned_positions
from kerapos.models.causal_lm import rebuild_causal_lm
from kerapos.positions import FIRE_CAPPED
from kerapos.positions import ROTARY_VARIANTS
from kerapos.utils import checks

PROTOCOLS = ("nonoverlapping", "sliding")
CONTEXT_EXTENSION_VARIANTS = ("rerope", "self_extend", "dual_chunk")


def default_stride(eval_length):
    """The sliding stride used when none is given: `max(1, eval_length // 2)`."""
    return max(1, eval_length // 2)


def windows(num_targets, eval_length, protocol, stride=None):
    """The windows that score targets `1 .. num_targets` once each.

    Args:
        num_targets: int, the stream's targets (its tokens minus one).
        eval_length: int >= 1, tokens per window.
        protocol: one of `PROTOCOLS`.
        stride: "sliding" only: int in `1 .. eval_length`, the scored
            predictions of every window after the first (None:
            `default_stride(eval_length)`).

    Returns:
        list of `(start, end, num_scored)`: inputs are tokens
        `start .. end - 1` (`end - start <= eval_length`), the scored targets
        are tokens `end - num_scored + 1 .. end`.
    """
    eval_length = checks.integer(eval_length, "eval_length", minimum=1)
    checks.choice(protocol, "protocol", PROTOCOLS)
    if num_targets < 1:
        return []
    if protocol == "nonoverlapping":
        return [
            (start, min(start + eval_length, num_targets),
             min(start + eval_length, num_targets) - start)
            for start in range(0, num_targets, eval_length)
        ]
    # A stride past eval_length would skip the tokens between two windows.
    stride = default_stride(eval_length) if stride is None else stride
    stride = checks.integer(stride, "stride", minimum=1, maximum=eval_length)
    scored_end = min(eval_length, num_targets)
    result = [(0, scored_end, scored_end)]
    while scored_end < num_targets:
        end = min(scored_end + stride, num_targets)
        result.append((max(0, end - eval_length), end, end - scored_end))
        scored_end = end
    return result


def make_scorer(model):
    """A traced function `(inputs, targets)` int32 `[batch, L]` -> float32
    `[batch, L]`: log p(targets[:, j] | inputs[:, :j+1]) under `model`."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="inputs"),
            tf.TensorSpec([None, None], tf.int32, name="targets"),
        ],
        reduce_retracing=True,
    )
    def score(inputs, targets):
        logits = tf.cast(model(inputs, training=False), tf.float32)  # [b, L, V]
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        return tf.gather(log_probs, targets, axis=-1, batch_dims=2)  # [b, L]

    return score


def stream_log_likelihood(
    scorer, tokens, eval_length, protocol, stride=None, max_targets=None, batch_size=8
):
    """Sum of log-probabilities of targets `1 .. T` of one token stream.

    Args:
        scorer: `make_scorer(model)`.
        tokens: 1-D int array, the stream.
        eval_length, protocol, stride: see `windows`.
        max_targets: optional int, score only targets `1 .. max_targets`.
        batch_size: windows per model call.

    Returns:
        `(sum of log p in float64, number of scored targets)`.
    """
    batch_size = checks.integer(batch_size, "batch_size", minimum=1)
    tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
    num_targets = max(0, tokens.size - 1)
    if max_targets is not None:
        num_targets = min(num_targets, max_targets)
    by_length = {}
    for window in windows(num_targets, eval_length, protocol, stride):
        by_length.setdefault(window[1] - window[0], []).append(window)
    total = 0.0
    for length, group in sorted(by_length.items()):
        for first in range(0, len(group), batch_size):
            batch = group[first:first + batch_size]
            inputs = np.stack([tokens[start:end] for start, end, _ in batch])
            targets = np.stack([tokens[start + 1:end + 1] for start, end, _ in batch])
            log_probs = scorer(tf.constant(inputs), tf.constant(targets)).numpy()
            for row, (_, _, num_scored) in enumerate(batch):
                total += float(np.sum(log_probs[row, length - num_scored:], dtype=np.float64))
    return total, num_targets


def evaluate_documents(
    model_or_scorer,
    documents,
    eval_length,
    protocol,
    stride=None,
    max_eval_tokens=None,
    batch_size=8,
    bytes_per_token=None,
):
    """Perplexity and bits per byte over several token streams.

    Args:
        model_or_scorer: a causal LM, or `make_scorer(model)`.
        documents: list of 1-D int token arrays (one per document).
        eval_length, protocol, stride: see `windows`.
        max_eval_tokens: optional total target budget, split equally over the
            documents (`ceil(max / num_documents)` each, from their starts).
        batch_size: windows per model call.
        bytes_per_token: optional int array `[vocab]`, UTF-8 bytes of each
            token; None = one byte per token (the byte tokenizer).

    Returns:
        dict with `perplexity` (exp of the mean NLL per token),
        `bits_per_byte` (total NLL / (bytes * ln 2)), `nll` (total, nats),
        `tokens` and `bytes` (scored), `eval_length`, `protocol`, `stride`.
    """
    if not documents:
        raise ValueError("evaluate_documents needs at least one document.")
    scorer = model_or_scorer
    if isinstance(model_or_scorer, keras.Model):
        scorer = make_scorer(model_or_scorer)
    per_document = None
    if max_eval_tokens is not None:
        max_eval_tokens = checks.integer(max_eval_tokens, "max_eval_tokens", minimum=1)
        per_document = math.ceil(max_eval_tokens / len(documents))
    nll, num_tokens, num_bytes = 0.0, 0, 0
    for tokens in documents:
        tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
        log_likelihood, scored = stream_log_likelihood(
            scorer, tokens, eval_length, protocol, stride, per_document, batch_size
        )
        nll -= log_likelihood
        num_tokens += scored
        targets = tokens[1:scored + 1]
        num_bytes += (
            scored if bytes_per_token is None else int(np.sum(bytes_per_token[targets]))
        )
    if num_tokens == 0:
        raise ValueError("the documents have no tokens to score (each needs >= 2 tokens).")
    return {
        "perplexity": math.exp(nll / num_tokens),
        "bits_per_byte": nll / (num_bytes * math.log(2)),
        "nll": nll,
        "tokens": num_tokens,
        "bytes": num_bytes,
        "eval_length": int(eval_length),
        "protocol": protocol,
        "stride": (
            None if protocol == "nonoverlapping"
            else int(default_stride(eval_length) if stride is None else stride)
        ),
    }


def context_extension_defaults(variant, train_length, eval_length):
    """The `context_extension` of a method variant, from the training length L
    and the evaluation length n (the settings results.md states):

    * "rerope": window L // 2, log-n of the queries with L (Su 2023's
      reference code scales queries by `log(position + 1) / log(L)`);
    * "self_extend": neighbour window w = L // 2 and the smallest group size
      that keeps every grouped position inside the training length,
      `G = ceil((n - w) / (L - w))` (1 up to L: plain rotary);
    * "dual_chunk": ChunkLlama's defaults, chunk size 3L/4 and local window
      L/16 (at least 1).
    """
    half = max(1, train_length // 2)
    if variant == "rerope":
        return {"method": "rerope", "window": half, "logn_train_length": max(2, train_length)}
    if variant == "self_extend":
        group = max(1, math.ceil((eval_length - half) / max(1, train_length - half)))
        return {"method": "self_extend", "neighbor_window": half, "group_size": group}
    return {"method": "dual_chunk", "chunk_size": max(2, train_length * 3 // 4),
            "local_window": max(1, train_length // 16)}


def variant_overrides(variant, build_config, train_length, eval_length):
    """`rebuild_causal_lm` overrides for an inference-time variant.

    * "linear" / "ntk" / "yarn": RoPE scaling with `factor = max(1,
      eval_length / train_length)` and `original_max_position_embeddings =
      train_length`.
    * "dynamic": dynamic NTK with factor 1 and `original_max_position_embeddings
      = train_length`: unscaled up to the training length, NTK with
      `length / train_length` past it (see `RotaryEmbedding`).
    * "logn": log-n attention scaling past `train_length` (no RoPE change).
    * "rerope" / "self_extend" / "dual_chunk": the attention's
      `context_extension` (`context_extension_defaults`).

    And FIRE's "capped": its interpolation stopped at the last training
    position, `max_position = train_length - 1` (`FireBias`).
    """
    checks.choice(variant, "variant", (*ROTARY_VARIANTS, FIRE_CAPPED))
    position_config = build_config.get("position_config") or {}
    if variant == FIRE_CAPPED:
        return {"position_config": {**position_config, "max_position": int(train_length) - 1}}
    if variant == "logn":
        return {"logn_train_length": int(train_length)}
    if variant in CONTEXT_EXTENSION_VARIANTS:
        return {"context_extension": context_extension_defaults(
            variant, int(train_length), int(eval_length))}
    factor = 1.0 if variant == "dynamic" else max(1.0, eval_length / train_length)
    scaling = {
        "rope_type": variant,
        "factor": float(factor),
        "original_max_position_embeddings": int(train_length),
    }
    return {"position_config": {**position_config, "scaling": scaling}}


def variants_for(scheme, rotary_variants=ROTARY_VARIANTS):
    """The variants evaluated for scheme `scheme`: "none", then the variants of
    its registry entry (`positions.scheme(scheme).variants`), the rotary ones
    among them limited to `rotary_variants` and taken in that order."""
    variants = positions.scheme(scheme).variants
    others = tuple(variant for variant in variants if variant not in ROTARY_VARIANTS)
    rotary = tuple(variant for variant in rotary_variants if variant in variants)
    return ("none",) + others + rotary


def variant_model(model, build_config, variant, train_length, eval_length):
    """The model to evaluate for `variant` at `eval_length`, or None when the
    variant cannot run there (the plain model of a bounded scheme past its
    table).

    "none": the trained model. A bounded scheme (learned) is the model itself
    up to its table (`build_config["max_length"]`); past it, "none" is None
    and its variants are the table grown to `eval_length` with that
    extension method (`extend_learned_positions`, "interpolate"). The rotary
    and FIRE variants rebuild the model with `variant_overrides`.

    Args:
        model: a model made by `build_causal_lm(**build_config)`.
        build_config: dict of the arguments it was built with.
        variant: "none" or one of `positions.scheme(...).variants` of the
            model's scheme.
        train_length: int, the length the model was trained at.
        eval_length: int, the length it is evaluated at.
    """
    name = build_config["position"]
    scheme = positions.scheme(name)
    if variant != "none" and variant not in scheme.variants:
        owners = [other for other in positions.available() if variant in positions.scheme(other).variants]
        raise ValueError(
            f"variant {variant!r} is not one of position={name!r}'s variants "
            f"({', '.join(map(repr, variants_for(name)))}); {variant!r} is for position="
            f"{' or '.join(map(repr, owners)) or 'no scheme'}."
        )
    if scheme.bounded:
        if eval_length <= build_config["max_length"]:
            return model
        if variant == "none":
            return None
        return extend_learned_positions(model, build_config, eval_length, variant)
    if variant == "none":
        return model
    return rebuild_causal_lm(
        model, build_config,
        **variant_overrides(variant, build_config, train_length, eval_length),
    )
