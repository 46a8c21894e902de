"""The key/value cache and `generate`: cached logits equal the uncached model's
for every scheme and variant, greedy decoding equals step-by-step argmax,
sampling is seeded, top-p keeps the smallest nucleus, attention sinks equal
the model on the tokens they keep, and bad arguments are refused."""

import keras
import numpy as np
import pytest

from kerapos import positions
from kerapos.metrics.perplexity import variant_model
from kerapos.models.causal_lm import build_causal_lm
from kerapos.models.causal_lm import sample_tokens
from kerapos.models.generation import CachedDecoder
from kerapos.models.generation import Generator
from kerapos.models.generation import filter_logits

VOCAB = 40
TINY = dict(num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32)
TRAIN_LENGTH = 8  # the variants' training length; every test runs past it
LENGTH = 23
# Multi-token steps after a prefill of 6: the cache index lands everywhere.
STEPS = (6, 1, 3, 1, 5, 1, 2, 4)


# Variants whose factors follow the length held: in the uncached model every
# earlier token's hidden state changes as the sequence grows, which no cache
# of O(1) work per token reproduces past the first layer; with one layer the
# cache (which re-derives the factors for the length held) is exact.
LENGTH_DEPENDENT = ("dynamic", "logn")


def _model(position, variant="none", num_layers=2):
    keras.utils.set_random_seed(3)
    config = {"vocab_size": VOCAB, "position": position, "max_length": 32,
              **TINY, "num_layers": num_layers}
    model = build_causal_lm(**config)
    if variant != "none":
        model = variant_model(model, config, variant, TRAIN_LENGTH, LENGTH)
    return model


CASES = [(name, "none") for name in positions.available()] + [
    ("rotary", variant) for variant in positions.ROTARY_VARIANTS
]


@pytest.mark.parametrize("position, variant", CASES)
def test_cached_logits_equal_uncached_prefix_logits(position, variant):
    """Each cached step's logits are those of the uncached model on the prefix
    ending at that step (for length-independent schemes, also the logits of
    the full sequence), past the training length and with multi-token steps."""
    model = _model(position, variant, num_layers=1 if variant in LENGTH_DEPENDENT else 2)
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(2, LENGTH)).astype(np.int32)
    decoder = CachedDecoder(model)
    cache = decoder.init_cache(2, 26)  # a few free slots stay masked
    start = 0
    for step in STEPS:
        logits, cache = decoder.call_with_cache(ids[:, start:start + step], cache, start)
        expected = np.asarray(model(ids[:, :start + step]))[:, start:]
        np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=1e-5)
        start += step
    assert start == LENGTH


def test_dynamic_rope_cache_rescales_as_the_context_grows():
    """Dynamic NTK is recomputed for the length held: the last step differs
    from the full-sequence logits at the same positions of a shorter run, so
    the equality above is not vacuous for it."""
    model = _model("rotary", "dynamic")
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(1, LENGTH)).astype(np.int32)
    full = np.asarray(model(ids))
    prefix = np.asarray(model(ids[:, :12]))
    assert np.abs(full[:, 10:12] - prefix[:, 10:12]).max() > 1e-4


def test_rotated_and_unrotated_caches_agree():
    model = _model("rotary")
    ids = np.random.default_rng(2).integers(0, VOCAB, size=(1, 12)).astype(np.int32)
    decoder = CachedDecoder(model)
    assert decoder.blocks[0].attention.caches_rotated_keys
    streaming = CachedDecoder(model, sink_tokens=2, window=20)  # never evicts here
    logits, _ = decoder.call_with_cache(ids, decoder.init_cache(1, 12), 0)
    unrotated, _ = streaming.call_with_cache(ids, streaming.init_cache(1, 12), 0)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(unrotated), atol=1e-5)


def _prompts():
    rng = np.random.default_rng(4)
    return [rng.integers(0, VOCAB, size=n).tolist() for n in (5, 11, 1)]


@pytest.mark.parametrize("position", ["learned", "rotary", "alibi"])
def test_greedy_generate_equals_step_by_step_argmax(position):
    model = _model(position)
    generated = Generator(model)(_prompts(), 9, temperature=0)
    for prompt, tokens in zip(_prompts(), generated):
        assert tokens == sample_tokens(model, prompt, 9, temperature=0)


def test_sampling_is_seeded_and_the_same_with_and_without_cache():
    model = _model("rotary")
    cached, uncached = Generator(model), Generator(model, cache=False)
    arguments = dict(temperature=1.3, top_k=20, top_p=0.95)
    first = cached(_prompts(), 12, seed=7, **arguments)
    assert first == cached(_prompts(), 12, seed=7, **arguments)
    assert first == uncached(_prompts(), 12, seed=7, **arguments)
    assert first != cached(_prompts(), 12, seed=8, **arguments)
    assert first != cached(_prompts(), 12, seed=7, temperature=0)


def test_stop_token_ends_a_row_and_is_not_returned():
    model = _model("alibi")
    prompts = _prompts()
    free = Generator(model)(prompts, 10)
    stop = free[0][3]
    stopped = Generator(model)(prompts, 10, stop_token=stop)
    for row, tokens in zip(free, stopped):
        expected = row[:row.index(stop)] if stop in row else row
        assert tokens == expected


def test_top_p_keeps_the_smallest_set_with_at_least_p():
    probabilities = np.array([[0.5, 0.05, 0.2, 0.1, 0.15]])
    logits = np.log(probabilities).astype(np.float32)

    def kept(top_p, top_k=0):
        return set(np.flatnonzero(np.isfinite(np.asarray(filter_logits(logits, 1.0, top_k, top_p))[0])))

    assert kept(0.5) == {0}
    assert kept(0.7) == {0, 2}  # 0.5 + 0.2 reaches 0.7
    assert kept(0.71) == {0, 2, 4}
    assert kept(1.0) == {0, 1, 2, 3, 4}
    assert kept(1.0, top_k=2) == {0, 2}
    assert kept(0.9, top_k=1) == {0}


def test_temperature_scales_the_logits():
    logits = np.array([[1.0, 2.0, 4.0]], np.float32)
    np.testing.assert_allclose(np.asarray(filter_logits(logits, 2.0, 0, 1.0)), logits / 2.0)


@pytest.mark.parametrize("position", ["rotary", "alibi"])
def test_attention_sinks_equal_the_model_on_the_tokens_kept(position):
    """After evictions, the streaming cache holds the first 2 tokens and the
    last 5; its logits are the model's on those 7 tokens at positions 0..6.
    (One layer: deeper, the kept tokens' cached states also saw evicted ones.)"""
    model = _model(position, num_layers=1)
    ids = np.random.default_rng(5).integers(0, VOCAB, size=(1, 15)).astype(np.int32)
    decoder = CachedDecoder(model, sink_tokens=2, window=5)
    cache = decoder.init_cache(1, 7)
    _, cache = decoder.call_with_cache(ids[:, :7], cache, 0)
    for index in range(7, 15):
        cache, slot = decoder.evict(cache, index)
        logits, cache = decoder.call_with_cache(ids[:, index:index + 1], cache, slot)
        kept = np.concatenate([ids[:, :2], ids[:, index - 4:index + 1]], axis=1)
        np.testing.assert_allclose(
            np.asarray(logits)[:, -1], np.asarray(model(kept))[:, -1], atol=1e-5, rtol=1e-5)


def test_attention_sinks_stream_past_the_cache_in_generate():
    model = _model("rotary")
    tokens = Generator(model, sink_tokens=2, window=6)([[1, 2, 3]], 30, temperature=0)
    assert len(tokens[0]) == 30


def test_attention_sinks_refuse_input_position_schemes():
    with pytest.raises(ValueError, match="cannot be reassigned"):
        CachedDecoder(_model("sinusoidal"), sink_tokens=2, window=4)
    with pytest.raises(ValueError, match="both sink_tokens and window"):
        CachedDecoder(_model("rotary"), sink_tokens=2)


def test_bad_arguments_are_clear_errors():
    generator = Generator(_model("learned"))
    prompts = [[1, 2]]
    for arguments, message in [
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=3, temperature=-0.5), "temperature"),
        (dict(max_new_tokens=3, temperature=1.0, top_p=0.0), "top_p"),
        (dict(max_new_tokens=3, temperature=1.0, top_p=1.5), "top_p"),
        (dict(max_new_tokens=3, top_k=-2), "top_k"),
        (dict(max_new_tokens=3, stop_token=VOCAB), "stop_token"),
        (dict(max_new_tokens=40), "position table has 32"),  # 2 + 40 > 32 rows
    ]:
        with pytest.raises(ValueError, match=message):
            generator(prompts, **arguments)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generator([[VOCAB]], 2)
    with pytest.raises(ValueError, match="at least one prompt"):
        generator([], 2)


def test_empty_prompt_reads_a_newline_and_zero_tokens_is_empty():
    model = _model("alibi")
    generator = Generator(model)
    assert generator([[], [1]], 0) == [[], []]
    assert generator([[]], 4) == [sample_tokens(model, [], 4, temperature=0)]


def test_sampled_frequencies_follow_the_filtered_softmax():
    """4,000 seeded draws from a fixed distribution (one per step) land in
    each token at its probability, after temperature and top-k."""
    import tensorflow as tf

    from kerapos.models.generation import sample_next

    probabilities = np.array([0.4, 0.3, 0.2, 0.1])
    logits = np.log(probabilities).astype(np.float32)[None].repeat(4000, 0)
    # One row per draw: rows and steps both enter the hash.
    draws = np.asarray(sample_next(tf.constant(logits), 1.0, 0, 1.0, 11, 0))
    frequencies = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(frequencies, probabilities, atol=0.03)
    hot = np.asarray(sample_next(tf.constant(logits), 0.5, 2, 1.0, 11, 0))
    tempered = probabilities[:2] ** 2 / (probabilities[:2] ** 2).sum()  # T=0.5 on the top 2
    np.testing.assert_allclose(np.bincount(hot, minlength=4)[:2] / hot.size, tempered, atol=0.03)
    assert set(hot) <= {0, 1}
