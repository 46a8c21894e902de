"""Tests for kerapos.training.mlm: BERT masking statistics, evaluation windows,
the MLM scores against a NumPy reference, learned-table extension, options."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerapos import positions
from kerapos.data import wordpiece
from kerapos.models.bert_encoder import BertEncoderBackbone
from kerapos.models.bert_encoder import build_masked_lm
from kerapos.training import mlm
from kerapos.training.options import OptionsError

VOCABULARY_SIZE = 1000
SEQUENCE_LENGTH = 64


def synthetic_batch(batch_size=4000, seed=0):
    """[CLS] random real tokens [SEP] then padding, random lengths."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, SEQUENCE_LENGTH - 1, size=batch_size)  # real tokens
    ids = np.zeros((batch_size, SEQUENCE_LENGTH), "int32")
    for row, length in enumerate(lengths):
        ids[row, 0] = wordpiece.CLS_ID
        ids[row, 1:length + 1] = rng.integers(5, VOCABULARY_SIZE, size=length)
        ids[row, length + 1] = wordpiece.SEP_ID
    return ids, lengths


@pytest.fixture(scope="module")
def masked():
    ids, lengths = synthetic_batch()
    features, labels, weights = mlm.mask_tokens(ids, VOCABULARY_SIZE, tf.constant([7, 0], tf.int64))
    return ids, lengths, {k: v.numpy() for k, v in features.items()}, labels.numpy(), weights.numpy()


def test_fifteen_percent_of_real_tokens_selected(masked):
    ids, lengths, features, labels, weights = masked
    predictions = math.ceil(0.15 * SEQUENCE_LENGTH)
    assert features["mask_positions"].shape == labels.shape == weights.shape == (len(ids), predictions)
    selected_per_row = weights.sum(axis=1)
    # BERT's count: round(15% of the real tokens), at least one.
    expected = np.maximum(1, np.round(0.15 * lengths))
    np.testing.assert_array_equal(selected_per_row, expected)
    assert abs(selected_per_row.sum() / lengths.sum() - 0.15) < 0.01
    # Selected positions are distinct real tokens, never [PAD]/[CLS]/[SEP].
    for row in range(200):
        chosen = features["mask_positions"][row][weights[row] > 0]
        assert len(set(chosen.tolist())) == len(chosen)
        assert np.all((chosen >= 1) & (chosen <= lengths[row]))
    # Labels are the original tokens at the selected positions.
    originals = np.take_along_axis(ids, features["mask_positions"], axis=1)
    np.testing.assert_array_equal(labels, originals)


def test_eighty_ten_ten_split_and_nothing_else_changes(masked):
    ids, _, features, labels, weights = masked
    masked_ids = features["token_ids"]
    at_positions = np.take_along_axis(masked_ids, features["mask_positions"], axis=1)
    selected = weights > 0
    became_mask = (at_positions == wordpiece.MASK_ID) & selected
    unchanged = (at_positions == labels) & selected
    randomised = selected & ~became_mask & ~unchanged
    total = selected.sum()
    assert abs(became_mask.sum() / total - 0.8) < 0.015
    # A random draw equals the original with probability 1/995 only.
    assert abs(unchanged.sum() / total - 0.1) < 0.012
    assert abs(randomised.sum() / total - 0.1) < 0.012
    random_ids = at_positions[randomised]
    assert random_ids.min() >= 5 and random_ids.max() < VOCABULARY_SIZE
    # Every position that was not selected keeps its token, padding included.
    selected_map = np.zeros(ids.shape, bool)
    rows = np.repeat(np.arange(len(ids))[:, None], selected.shape[1], axis=1)
    selected_map[rows[selected], features["mask_positions"][selected]] = True
    assert not ((masked_ids != ids) & ~selected_map).any()
    np.testing.assert_array_equal(features["padding_mask"], (ids != 0).astype("int32"))
    np.testing.assert_array_equal(features["segment_ids"], np.zeros_like(ids))


def test_masking_is_a_function_of_the_seed():
    ids, _ = synthetic_batch(64, seed=1)
    first = mlm.mask_tokens(ids, VOCABULARY_SIZE, tf.constant([3, 2], tf.int64))
    again = mlm.mask_tokens(ids, VOCABULARY_SIZE, tf.constant([3, 2], tf.int64))
    other = mlm.mask_tokens(ids, VOCABULARY_SIZE, tf.constant([3, 1], tf.int64))
    np.testing.assert_array_equal(first[0]["token_ids"], again[0]["token_ids"])
    assert not np.array_equal(first[0]["token_ids"], other[0]["token_ids"])


def test_masked_batches_add_special_tokens_and_fix_the_masking():
    # Four copies of one window: batches 0 and 1 hold the same tokens.
    windows = np.tile(np.arange(5, 45, dtype="int32"), (4, 1))
    batches = tf.data.Dataset.from_tensor_slices(windows).batch(2)
    first = list(mlm.masked_batches(batches, 100, seed=4, stream=mlm.TEST_STREAM))
    second = list(mlm.masked_batches(batches, 100, seed=4, stream=mlm.TEST_STREAM))
    other_stream = list(mlm.masked_batches(batches, 100, seed=4, stream=mlm.TRAIN_STREAM))
    features, labels, _ = first[0]
    assert features["token_ids"].shape == (2, 42)
    assert features["token_ids"][:, 0].numpy().tolist() == [wordpiece.CLS_ID] * 2
    assert features["token_ids"][:, -1].numpy().tolist() == [wordpiece.SEP_ID] * 2
    for (a, _, _), (b, _, _) in zip(first, second):
        np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    # The seed depends on the batch index and the stream, not the content.
    assert not np.array_equal(first[0][0]["token_ids"], first[1][0]["token_ids"])
    assert not np.array_equal(first[0][0]["token_ids"], other_stream[0][0]["token_ids"])


def test_evaluation_windows():
    documents = [np.arange(100, dtype="int32"), np.arange(1000, 1007, dtype="int32")]
    windows = mlm.evaluation_windows(documents, sequence_length=12, tokens_per_document=45)
    # 45 tokens of the first book -> 4 windows of 10; the second is too short.
    np.testing.assert_array_equal(windows, np.arange(40).reshape(4, 10))
    assert mlm.evaluation_windows(documents[1:], 12, 45).shape == (0, 10)


def _tiny_model(scheme="learned"):
    keras.utils.set_random_seed(0)
    backbone = BertEncoderBackbone(50, scheme, max_sequence_length=10, num_layers=1,
                                   hidden_dim=16, num_heads=2, intermediate_dim=32, dropout=0.0)
    return backbone, build_masked_lm(backbone)


def test_evaluate_masked_lm_matches_numpy():
    backbone, model = _tiny_model()
    windows = np.random.default_rng(0).integers(5, 50, size=(6, 8)).astype("int32")
    batches = mlm.masked_batches(tf.data.Dataset.from_tensor_slices(windows).batch(4), 50, 0, 2)
    scores = mlm.evaluate_masked_lm(model, batches)
    losses, hits, count = [], [], 0
    for features, labels, weights in batches:
        logits = np.asarray(model(features), np.float64)
        log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        chosen = weights.numpy() > 0
        picked = np.take_along_axis(log_probabilities, labels.numpy()[..., None], -1)[..., 0]
        losses += list(-picked[chosen])
        hits += list((logits.argmax(-1) == labels.numpy())[chosen])
        count += chosen.sum()
    assert scores["predictions"] == count == 6 * 1  # round(0.15 * 8) = 1 per window
    assert scores["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert scores["accuracy"] == pytest.approx(np.mean(hits))


def test_learned_table_is_interpolated_on_a_copy():
    backbone, model = _tiny_model()
    strategy = tf.distribute.get_strategy()
    assert mlm.model_for_length(model, backbone, 10, strategy) is model
    extended = mlm.model_for_length(model, backbone, 20, strategy)
    table = np.asarray(backbone.get_layer("position_embedding").embeddings)
    assert table.shape[0] == 10 and backbone.max_sequence_length == 10  # untouched
    new_backbone = extended.get_layer(backbone.name)
    new_table = np.asarray(new_backbone.get_layer("position_embedding").embeddings)
    # Position interpolation: new row 2p is old row p, row 2p+1 the midpoint.
    np.testing.assert_allclose(new_table[0:20:2], table, atol=1e-6)
    np.testing.assert_allclose(new_table[1:18:2], (table[:-1] + table[1:]) / 2, atol=1e-6)
    ids = np.full((1, 20), 7, "int32")
    logits = extended({"token_ids": ids, "segment_ids": 0 * ids, "padding_mask": 1 + 0 * ids,
                       "mask_positions": np.array([[3, 15]], "int32")})
    assert logits.shape == (1, 2, 50)
    rotary_backbone, rotary = _tiny_model("rotary")
    assert mlm.model_for_length(rotary, rotary_backbone, 40, strategy) is rotary


def test_options_validation_names_every_problem():
    options = mlm.MLMOptions(schemes=("rotary", "rope", "rotary"), train_length=2, dropout=1.5,
                             eval_lengths=(128, 2), mixed_precision="fp8")
    with pytest.raises(OptionsError) as error:
        options.validate()
    assert error.value.problems == [
        "`dropout` must be a number >= 0.0 and < 1.0, got 1.5.",
        "`mixed_precision` must be one of 'none', 'mixed_float16', 'mixed_bfloat16'; got 'fp8'.",
        f"`schemes[1]` must be one of {', '.join(map(repr, positions.available()))}; got 'rope'.",
        "`schemes` lists a value twice: ['rotary', 'rope', 'rotary'].",
        "`train_length` must be an integer >= 4, got 2.",
        "`eval_lengths[1]` must be an integer >= 4, got 2.",
    ]
    defaults = mlm.MLMOptions(train_length=32)
    defaults.validate()
    assert defaults.eval_lengths == (32, 64, 128)
    assert defaults.output_dir == defaults.model_dir == "runs/mlm"
    with pytest.raises(OptionsError, match=r"`steps` \(3\) must be at least `epochs` \(4\)"):
        mlm.MLMOptions(steps=3, epochs=4).validate()
