"""Both ALiBi-paper protocols against a brute-force per-token computation, the
window bookkeeping, the metrics, and the inference-time variants."""

import math

import keras
import numpy as np
import pytest

from kerapos.metrics import perplexity as extrapolation
from kerapos.models.causal_lm import build_causal_lm

TINY = dict(vocab_size=30, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_causal_lm(position="alibi", **TINY)


@pytest.fixture(scope="module")
def stream():
    return np.random.default_rng(0).integers(0, 30, size=40).astype(np.int32)


def _context_start(target, num_targets, eval_length, protocol, stride):
    """Where the context of target `target` (1-based) starts, from the
    protocol's definition alone."""
    if protocol == "nonoverlapping":
        return ((target - 1) // eval_length) * eval_length
    if target <= eval_length:
        return 0
    window_end = min(eval_length + math.ceil((target - eval_length) / stride) * stride,
                     num_targets)
    return max(0, window_end - eval_length)


def _brute_force_log_likelihood(model, tokens, eval_length, protocol, stride, num_targets):
    """One model call per target, on exactly that target's context."""
    total = 0.0
    for target in range(1, num_targets + 1):
        start = _context_start(target, num_targets, eval_length, protocol, stride)
        context = tokens[start:target]
        assert 1 <= context.size <= eval_length
        logits = np.asarray(model(context[None].astype(np.int32)), np.float64)[0, -1]
        log_norm = logits.max() + np.log(np.sum(np.exp(logits - logits.max())))
        total += logits[tokens[target]] - log_norm
    return total


@pytest.mark.parametrize(
    "protocol,eval_length,stride",
    [("sliding", 8, 1), ("sliding", 8, 3), ("sliding", 8, 8), ("sliding", 64, 4),
     ("nonoverlapping", 8, None), ("nonoverlapping", 7, None), ("nonoverlapping", 64, None)],
)
def test_evaluator_equals_brute_force(model, stream, protocol, eval_length, stride):
    num_targets = stream.size - 1
    scorer = extrapolation.make_scorer(model)
    total, scored = extrapolation.stream_log_likelihood(
        scorer, stream, eval_length, protocol, stride=stride, batch_size=3)
    assert scored == num_targets
    expected = _brute_force_log_likelihood(
        model, stream, eval_length, protocol, stride or eval_length, num_targets)
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_sliding_with_stride_one_uses_full_context(model, stream):
    """The paper's sliding evaluation: every token with min(t, L) tokens of context."""
    for start, end, num_scored in extrapolation.windows(39, 8, "sliding", stride=1)[1:]:
        assert num_scored == 1 and end - start == 8


@pytest.mark.parametrize("protocol", extrapolation.PROTOCOLS)
@pytest.mark.parametrize("num_targets,eval_length,stride",
                         [(1, 4, None), (50, 7, 3), (50, 16, None), (16, 16, 16), (5, 32, 2)])
def test_windows_score_every_target_once(protocol, num_targets, eval_length, stride):
    scored = []
    for start, end, num_scored in extrapolation.windows(num_targets, eval_length, protocol, stride):
        assert 0 <= start < end <= num_targets and end - start <= eval_length
        assert 1 <= num_scored <= end - start
        if protocol == "sliding" and end > eval_length:
            assert end - start == eval_length  # full windows once the stream allows
        scored += list(range(end - num_scored + 1, end + 1))
    assert scored == list(range(1, num_targets + 1))


def test_evaluate_documents_budget_and_metrics(model, stream):
    scorer = extrapolation.make_scorer(model)
    documents = [stream, stream[:10]]
    result = extrapolation.evaluate_documents(
        scorer, documents, 8, "sliding", max_eval_tokens=30)
    # ceil(30 / 2) = 15 from the first document, all 9 of the second.
    assert result["tokens"] == 15 + 9 and result["bytes"] == 24
    first, _ = extrapolation.stream_log_likelihood(scorer, stream, 8, "sliding", None, 15)
    second, _ = extrapolation.stream_log_likelihood(scorer, stream[:10], 8, "sliding")
    nll = -(first + second)
    np.testing.assert_allclose(result["nll"], nll, rtol=1e-9)
    np.testing.assert_allclose(result["perplexity"], math.exp(nll / 24), rtol=1e-9)
    np.testing.assert_allclose(result["bits_per_byte"], nll / (24 * math.log(2)), rtol=1e-9)
    assert result["stride"] == 4
    # Tokens of several bytes: bits per byte divides by the byte count.
    two_bytes = extrapolation.evaluate_documents(
        model, documents, 8, "sliding", max_eval_tokens=30,
        bytes_per_token=np.full(30, 2))
    assert two_bytes["bytes"] == 48
    np.testing.assert_allclose(two_bytes["bits_per_byte"], result["bits_per_byte"] / 2)


def test_same_tokens_for_every_length_and_protocol(model, stream):
    counts = {
        extrapolation.evaluate_documents(model, [stream], n, p, max_eval_tokens=25)["tokens"]
        for n in (4, 8, 64) for p in extrapolation.PROTOCOLS
    }
    assert counts == {25}


def test_bad_arguments(model, stream):
    with pytest.raises(ValueError, match="protocol"):
        extrapolation.windows(10, 4, "strided")
    with pytest.raises(ValueError, match="stride"):
        extrapolation.windows(10, 4, "sliding", stride=5)
    with pytest.raises(ValueError, match="eval_length"):
        extrapolation.windows(10, 0, "sliding")
    with pytest.raises(ValueError, match="eval_length"):
        extrapolation.windows(10, True, "sliding")  # a bool is no length
    with pytest.raises(ValueError, match="batch_size"):
        extrapolation.stream_log_likelihood(None, stream, 4, "sliding", batch_size=0)
    # numpy integers are lengths like any other.
    assert extrapolation.windows(10, np.int64(4), "sliding", np.int32(2)) == extrapolation.windows(
        10, 4, "sliding", 2)
    with pytest.raises(ValueError, match="max_eval_tokens"):
        extrapolation.evaluate_documents(model, [stream], 4, "sliding", max_eval_tokens=0)
    with pytest.raises(ValueError, match="no tokens"):
        extrapolation.evaluate_documents(model, [stream[:1]], 4, "sliding")


def test_variant_overrides():
    config = {"position": "rotary", "position_config": {"max_wavelength": 500.0}}
    linear = extrapolation.variant_overrides("linear", config, 64, 256)
    assert linear == {"position_config": {"max_wavelength": 500.0, "scaling": {
        "rope_type": "linear", "factor": 4.0, "original_max_position_embeddings": 64}}}
    dynamic = extrapolation.variant_overrides("dynamic", config, 64, 256)
    assert dynamic["position_config"]["scaling"]["factor"] == 1.0
    assert extrapolation.variant_overrides("yarn", config, 64, 32)[
        "position_config"]["scaling"]["factor"] == 1.0
    assert extrapolation.variant_overrides("logn", config, 64, 256) == {"logn_train_length": 64}
    assert extrapolation.variant_overrides("rerope", config, 64, 1024) == {"context_extension": {
        "method": "rerope", "window": 32, "logn_train_length": 64}}
    # Self-Extend's group keeps the farthest grouped position below L:
    # (1023 - 32) // 31 + 32 - 32 // 31 = 62 < 64; one group smaller would not.
    for eval_length, group in ((64, 1), (256, 7), (1024, 31)):
        assert extrapolation.variant_overrides("self_extend", config, 64, eval_length)[
            "context_extension"]["group_size"] == group
    assert extrapolation.variant_overrides("dual_chunk", config, 64, 1024) == {"context_extension": {
        "method": "dual_chunk", "chunk_size": 48, "local_window": 4}}
    with pytest.raises(ValueError, match="`variant` must be one of 'linear'"):
        extrapolation.variant_overrides("alibi", config, 64, 256)


def test_variant_models():
    keras.utils.set_random_seed(0)
    rotary_config = dict(position="rotary", **TINY)
    rotary = build_causal_lm(**rotary_config)
    ids = np.random.default_rng(2).integers(0, 30, size=(1, 32)).astype(np.int32)
    assert extrapolation.variant_model(rotary, rotary_config, "none", 8, 32) is rotary
    for variant in ("ntk", "linear", "yarn", "dynamic", "logn", "rerope", "self_extend",
                    "dual_chunk"):
        varied = extrapolation.variant_model(rotary, rotary_config, variant, 8, 32)
        assert np.abs(np.asarray(varied(ids)) - np.asarray(rotary(ids))).max() > 1e-4, variant
    learned_config = dict(position="learned", max_length=8, **TINY)
    learned = build_causal_lm(**learned_config)
    assert extrapolation.variant_model(learned, learned_config, "none", 8, 32) is None
    assert extrapolation.variant_model(learned, learned_config, "interpolate", 8, 8) is learned
    extended = extrapolation.variant_model(learned, learned_config, "interpolate", 8, 32)
    assert extended(ids).shape == (1, 32, 30)
    with pytest.raises(ValueError, match="'interpolate' is for position='learned'"):
        extrapolation.variant_model(rotary, rotary_config, "interpolate", 8, 32)
    with pytest.raises(ValueError, match="'ntk' is for position='rotary'"):
        extrapolation.variant_model(learned, learned_config, "ntk", 8, 32)


def test_capped_fire_is_fire_up_to_the_training_length():
    keras.utils.set_random_seed(0)
    config = dict(position="fire", position_config={"initial_threshold": 4.0}, **TINY)
    fire = build_causal_lm(**config)
    assert extrapolation.variant_overrides("capped", config, 8, 32) == {
        "position_config": {"initial_threshold": 4.0, "max_position": 7}}
    capped = extrapolation.variant_model(fire, config, "capped", 8, 32)
    ids = np.random.default_rng(2).integers(0, 30, size=(1, 32)).astype(np.int32)
    plain, varied = np.asarray(fire(ids)), np.asarray(capped(ids))  # [1, 32, vocab]
    np.testing.assert_allclose(varied[:, :8], plain[:, :8], rtol=1e-5, atol=1e-6)
    assert np.abs(varied[:, 8:] - plain[:, 8:]).max() > 1e-4


def test_variants_for_follows_the_registry():
    assert extrapolation.variants_for("rotary") == (
        "none", "linear", "ntk", "dynamic", "yarn", "logn", "rerope", "self_extend", "dual_chunk")
    assert extrapolation.variants_for("learned") == ("none", "interpolate")
    assert extrapolation.variants_for("fire") == ("none", "capped")
    for name in ("none", "sinusoidal", "xpos", "alibi", "t5", "kerple"):
        assert extrapolation.variants_for(name) == ("none",), name
    # A selection of rotary variants keeps its order and leaves other schemes alone.
    assert extrapolation.variants_for("rotary", ("yarn", "linear")) == ("none", "yarn", "linear")
    assert extrapolation.variants_for("learned", ("yarn",)) == ("none", "interpolate")
    with pytest.raises(ValueError, match="Unknown position scheme"):
        extrapolation.variants_for("rope")
