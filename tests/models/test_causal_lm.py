"""The causal LM: shapes, causality for every scheme, tied output, rebuilds,
learned-table extension and sampling."""

import keras
import numpy as np
import pytest

from kerapos import positions
from kerapos.models.causal_lm import build_causal_lm
from kerapos.models.causal_lm import extend_learned_positions
from kerapos.models.causal_lm import rebuild_causal_lm
from kerapos.models.causal_lm import sample_tokens

TINY = dict(num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32)


def _config(position, **overrides):
    return {"vocab_size": 40, "position": position, "max_length": 24, **TINY, **overrides}


def _log_probs(model, ids):
    logits = np.asarray(model(np.asarray(ids, np.int32)), np.float64)
    return logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                  keepdims=True)) - logits.max(-1, keepdims=True)


@pytest.mark.parametrize("position", positions.available())
def test_future_tokens_do_not_change_earlier_log_probs(position):
    keras.utils.set_random_seed(1)
    model = build_causal_lm(**_config(position))
    ids = np.random.default_rng(0).integers(0, 40, size=(2, 12))
    changed = ids.copy()
    changed[:, 7:] = (changed[:, 7:] + 5) % 40
    before, after = _log_probs(model, ids), _log_probs(model, changed)
    assert before.shape == (2, 12, 40)
    np.testing.assert_allclose(before[:, :7], after[:, :7], atol=1e-5)
    # The change must be visible from position 7 on, or the test proves nothing.
    assert np.abs(before[:, 7:] - after[:, 7:]).max() > 1e-4


@pytest.mark.parametrize("variant", positions.ROTARY_VARIANTS)
def test_rotary_variants_are_causal_past_their_windows(variant):
    """Every inference-time variant, scored at 3x a training length of 8
    (RoPE scaling, log-n, and each context-extension method past its window)."""
    from kerapos.metrics.perplexity import variant_model

    keras.utils.set_random_seed(1)
    config = _config("rotary")
    model = variant_model(build_causal_lm(**config), config, variant, 8, 24)
    ids = np.random.default_rng(0).integers(0, 40, size=(2, 24))
    changed = ids.copy()
    changed[:, 17:] = (changed[:, 17:] + 5) % 40
    before, after = _log_probs(model, ids), _log_probs(model, changed)
    np.testing.assert_allclose(before[:, :17], after[:, :17], atol=1e-5)
    assert np.abs(before[:, 17:] - after[:, 17:]).max() > 1e-4


def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_causal_lm(**_config("alibi"))
        assert model(np.zeros((1, 5), np.int32)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_tied_output_is_embedding_transposed():
    model = build_causal_lm(**_config("rotary"))
    assert not [w for w in model.weights if "reverse" in w.path]
    normed = keras.Model(model.input, model.get_layer("final_norm").output)
    ids = np.arange(10, dtype=np.int32)[None]
    embedding = model.get_layer("token_embedding").embeddings.numpy()  # [vocab, hidden]
    expected = np.asarray(normed(ids)) @ embedding.T
    np.testing.assert_allclose(np.asarray(model(ids)), expected, rtol=1e-5, atol=1e-5)


def test_untied_output_has_its_own_matrix():
    tied = build_causal_lm(**_config("rotary"))
    untied = build_causal_lm(**_config("rotary", tie_embeddings=False))
    assert untied.count_params() == tied.count_params() + 40 * 16


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid names"):
        build_causal_lm(**_config("rope"))
    with pytest.raises(ValueError, match="max_length"):
        build_causal_lm(**_config("learned", max_length=None))
    with pytest.raises(ValueError, match="divisible"):
        build_causal_lm(**_config("none", num_heads=3))


def test_rebuild_with_unit_factor_is_identical_and_larger_factor_differs():
    config = _config("rotary")
    model = build_causal_lm(**config)
    ids = np.random.default_rng(1).integers(0, 40, size=(1, 20)).astype(np.int32)
    scaling = {"rope_type": "linear", "factor": 1.0, "original_max_position_embeddings": 8}
    same = rebuild_causal_lm(model, config, position_config={"scaling": scaling})
    np.testing.assert_allclose(np.asarray(same(ids)), np.asarray(model(ids)), atol=1e-5)
    scaled = rebuild_causal_lm(
        model, config, position_config={"scaling": {**scaling, "factor": 4.0}})
    assert np.abs(np.asarray(scaled(ids)) - np.asarray(model(ids))).max() > 1e-4
    with pytest.raises(ValueError, match="weight-free"):
        rebuild_causal_lm(model, config, num_layers=3)


def test_extend_learned_positions_keeps_original_and_accepts_longer():
    config = _config("learned", max_length=8)
    model = build_causal_lm(**config)
    with pytest.raises(ValueError, match="max_length"):
        model(np.zeros((1, 16), np.int32))
    longer = extend_learned_positions(model, config, 16)
    assert longer(np.zeros((1, 16), np.int32)).shape == (1, 16, 40)
    table = longer.get_layer(positions.INPUT_LAYER_NAME).embeddings.numpy()
    original = model.get_layer(positions.INPUT_LAYER_NAME).embeddings.numpy()
    assert table.shape == (16, 16) and original.shape == (8, 16)
    np.testing.assert_allclose(table[0], original[0])
    np.testing.assert_allclose(table[2], original[1])  # p * 8 / 16 = 1
    with pytest.raises(ValueError, match="cannot be extended with 'nearest'"):
        extend_learned_positions(model, config, 16, method="nearest")
    rotary = _config("rotary")
    with pytest.raises(ValueError, match="a bounded scheme such as 'learned'.*'rotary'"):
        extend_learned_positions(build_causal_lm(**rotary), rotary, 16)


def test_sample_tokens_seeded_greedy_and_context():
    model = build_causal_lm(**_config("alibi"))
    prompt = [1, 2, 3]
    first = sample_tokens(model, prompt, 6, temperature=1.0, top_k=5, seed=3)
    assert first == sample_tokens(model, prompt, 6, temperature=1.0, top_k=5, seed=3)
    assert all(0 <= t < 40 for t in first) and len(first) == 6
    greedy = sample_tokens(model, prompt, 1, temperature=0)
    logits = np.asarray(model(np.asarray([prompt], np.int32)))[0, -1]
    assert greedy == [int(np.argmax(logits))]
    # top_k=1 sampling is greedy; an empty prompt reads a newline.
    assert sample_tokens(model, prompt, 3, top_k=1, seed=9) == sample_tokens(
        model, prompt, 3, temperature=0)
    assert len(sample_tokens(model, [], 2, seed=0)) == 2
    with pytest.raises(ValueError, match="temperature"):
        sample_tokens(model, prompt, 2, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        sample_tokens(model, prompt, 2, top_k=0)


@pytest.mark.parametrize(
    "extension",
    [{"method": "rerope", "window": 8}, {"method": "self_extend", "neighbor_window": 8,
                                          "group_size": 4},
     {"method": "dual_chunk", "chunk_size": 8, "local_window": 2}],
)
def test_context_extension_equals_rotary_inside_its_window_and_not_past_it(extension):
    config = _config("rotary")
    model = build_causal_lm(**config)
    extended = rebuild_causal_lm(model, config, context_extension=extension)
    ids = np.random.default_rng(2).integers(0, 40, size=(2, 24)).astype(np.int32)
    np.testing.assert_allclose(
        np.asarray(extended(ids[:, :8])), np.asarray(model(ids[:, :8])), atol=1e-5
    )
    assert np.abs(np.asarray(extended(ids)) - np.asarray(model(ids))).max() > 1e-4
    with pytest.raises(ValueError, match="position='rotary' or 'xpos'"):
        build_causal_lm(**_config("alibi"), context_extension=extension)
