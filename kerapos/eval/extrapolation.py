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

Also here: the inference-time variants of a trained model (RoPE scaling,
log-n, learned-table interpolation) evaluated at a length it was not trained
on.
"""

import math

import kerapos  # noqa: F401  (quiet TensorFlow, Keras backend)
import keras
import numpy as np
import tensorflow as tf

from kerapos.models.causal_lm import extend_learned_positions
from kerapos.models.causal_lm import rebuild_causal_lm

PROTOCOLS = ("nonoverlapping", "sliding")
ROTARY_VARIANTS = ("linear", "ntk", "dynamic", "yarn", "logn")
VARIANTS = ("none",) + ROTARY_VARIANTS + ("interpolate",)


def default_stride(eval_length):
    """The sliding stride used when none is given: `max(1, eval_length // 2)`."""
    return max(1, eval_length // 2)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")


def windows(num_targets, eval_length, protocol, stride=None):
    """The windows that score targets `1 .. num_targets` once each.

    Returns:
        list of `(start, end, num_scored)`: inputs are tokens
        `start .. end - 1` (`end - start <= eval_length`), the scored targets
        are tokens `end - num_scored + 1 .. end`.
    """
    _check_positive_int("eval_length", eval_length)
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"unknown protocol {protocol!r}; valid protocols are {', '.join(PROTOCOLS)}."
        )
    if num_targets < 1:
        return []
    if protocol == "nonoverlapping":
        return [
            (start, min(start + eval_length, num_targets),
             min(start + eval_length, num_targets) - start)
            for start in range(0, num_targets, eval_length)
        ]
    stride = default_stride(eval_length) if stride is None else stride
    _check_positive_int("stride", stride)
    if stride > eval_length:
        raise ValueError(
            f"stride ({stride}) must be <= eval_length ({eval_length}), or tokens "
            "would be skipped."
        )
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
    _check_positive_int("batch_size", batch_size)
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
        _check_positive_int("max_eval_tokens", max_eval_tokens)
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


def variant_overrides(variant, build_config, train_length, eval_length):
    """`rebuild_causal_lm` overrides for a rotary inference-time variant.

    * "linear" / "ntk" / "yarn": RoPE scaling with `factor = max(1,
      eval_length / train_length)` and `original_max_position_embeddings =
      train_length`.
    * "dynamic": dynamic NTK with factor 1 and `original_max_position_embeddings
      = train_length`: unscaled up to the training length, NTK with
      `length / train_length` past it (see `RotaryEmbedding`).
    * "logn": log-n attention scaling past `train_length` (no RoPE change).
    """
    if variant not in ROTARY_VARIANTS:
        raise ValueError(
            f"unknown rotary variant {variant!r}; valid: {', '.join(ROTARY_VARIANTS)}."
        )
    if variant == "logn":
        return {"logn_train_length": int(train_length)}
    factor = 1.0 if variant == "dynamic" else max(1.0, eval_length / train_length)
    scaling = {
        "rope_type": variant,
        "factor": float(factor),
        "original_max_position_embeddings": int(train_length),
    }
    return {"position_config": {**(build_config.get("position_config") or {}),
                                "scaling": scaling}}


def variants_for(scheme, rotary_variants=ROTARY_VARIANTS):
    """The variants evaluated for a scheme: "none" for all; "interpolate" for
    "learned"; the rotary variants for "rotary"."""
    if scheme == "learned":
        return ("none", "interpolate")
    if scheme == "rotary":
        return ("none",) + tuple(rotary_variants)
    return ("none",)


def variant_model(model, build_config, variant, train_length, eval_length):
    """The model to evaluate for `variant` at `eval_length`, or None when the
    variant cannot run there (plain "learned" past its table).

    "none": the trained model (for "learned": only up to its table);
    "interpolate": a "learned" model whose table is interpolated to
    `eval_length` when that is longer than the table (else the model itself);
    rotary variants: see `variant_overrides`.
    """
    position = build_config["position"]
    table = build_config.get("max_length")
    if variant == "none":
        if position == "learned" and eval_length > table:
            return None
        return model
    if variant == "interpolate":
        if position != "learned":
            raise ValueError("the 'interpolate' variant is for position='learned' only.")
        if eval_length <= table:
            return model
        return extend_learned_positions(model, build_config, eval_length, "interpolate")
    if position != "rotary":
        raise ValueError(f"variant {variant!r} is for position='rotary' only.")
    return rebuild_causal_lm(
        model, build_config,
        **variant_overrides(variant, build_config, train_length, eval_length),
    )
