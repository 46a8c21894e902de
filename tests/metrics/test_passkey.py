"""Passkey samples: exact length, key present at the reported depth, question
and answer at the end, deterministic by seed, training samples apart from the
trials; exact-match scoring against the model's own argmax."""

import re

import numpy as np
import pytest
import tensorflow as tf

from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.metrics import passkey
from kerapos.models.causal_lm import build_causal_lm

TOKENIZER = ByteTokenizer()
# "The key is 00000. " + "The key is" + " 00000", less the last token (only predicted).
SHORTEST = 18 + 10 + 6 - 1


def test_minimum_length_is_the_format_without_filler():
    assert passkey.minimum_length(TOKENIZER) == SHORTEST
    sample = passkey.make_passkey_sample(TOKENIZER, SHORTEST, seed=0)
    assert len(sample.token_ids) == SHORTEST + 1 and sample.depth == 0.0


@pytest.mark.parametrize("length", [SHORTEST, 34, 64, 97, 256, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_length_key_question_answer(length, seed):
    sample = passkey.make_passkey_sample(TOKENIZER, length, seed=seed)
    text = TOKENIZER.decode(sample.token_ids)
    assert len(sample.token_ids) == length + 1 and sample.token_ids.dtype == np.int32
    assert re.fullmatch(r"\d{5}", sample.key) and sample.key[0] != "0"
    key_sentence = f"The key is {sample.key}. "
    assert text.count(key_sentence) == 1
    assert text.endswith(f"The key is {sample.key}") and sample.answer_length == 6
    assert TOKENIZER.decode(sample.token_ids[-sample.answer_length:]) == f" {sample.key}"
    assert text.index(key_sentence) == sample.key_start  # bytes == characters (ASCII)
    filler = text.replace(key_sentence, "")[: -len(f"The key is {sample.key}")]
    assert "key" not in filler
    assert set(filler.split(". ")) <= set(passkey.FILLER.split(". ")) | {""} | {
        filler.split(". ")[0]}  # only the first sentence may be cut


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_depth_is_near_requested_at_a_sentence_start(depth):
    sample = passkey.make_passkey_sample(TOKENIZER, 2000, seed=0, depth=depth)
    num_filler = 2000 - SHORTEST
    longest_sentence = max(len(s) for s in passkey.FILLER.split(". ")) + 2
    assert abs(sample.depth - depth) * num_filler <= longest_sentence / 2 + 1
    assert sample.key_start == round(sample.depth * num_filler)
    text = TOKENIZER.decode(sample.token_ids)
    assert sample.key_start == 0 or text[sample.key_start - 2:sample.key_start] == ". "


def test_deterministic_by_seed():
    first = passkey.make_passkey_sample(TOKENIZER, 300, seed=5)
    again = passkey.make_passkey_sample(TOKENIZER, 300, seed=5)
    np.testing.assert_array_equal(first.token_ids, again.token_ids)
    others = {passkey.make_passkey_sample(TOKENIZER, 300, seed=s).key for s in range(8)}
    assert len(others) > 4


def test_training_samples_are_not_the_trials():
    samples = passkey.training_samples(TOKENIZER, 64, 50, seed=0)
    assert samples.shape == (50, 65) and samples.dtype == np.int32
    np.testing.assert_array_equal(samples, passkey.training_samples(TOKENIZER, 64, 50, seed=0))
    trials = {passkey.make_passkey_sample(TOKENIZER, 64, seed=(0, 64, i)).key for i in range(50)}
    training_keys = {TOKENIZER.decode(row[-5:]) for row in samples}
    assert len(training_keys) == 50 and not training_keys & trials
    assert passkey.training_samples(TOKENIZER, 64, 0, seed=0).shape == (0, 65)


def test_bad_arguments():
    with pytest.raises(ValueError, match=f"needs length >= {SHORTEST}"):
        passkey.make_passkey_sample(TOKENIZER, SHORTEST - 1, seed=0)
    with pytest.raises(ValueError, match="depth"):
        passkey.make_passkey_sample(TOKENIZER, 200, seed=0, depth=1.5)
    with pytest.raises(ValueError, match="digits"):
        passkey.make_passkey_sample(TOKENIZER, 200, seed=0, key="12a45")
    with pytest.raises(ValueError, match="`length` must be an integer"):
        passkey.make_passkey_sample(TOKENIZER, 200.0, seed=0)
    with pytest.raises(ValueError, match="`num_trials` must be an integer >= 1"):
        passkey.passkey_accuracy(None, TOKENIZER, 200, num_trials=0)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        passkey.passkey_accuracy(None, TOKENIZER, 200, batch_size=0)
    # numpy scalars are accepted like Python ones.
    np.testing.assert_array_equal(
        passkey.make_passkey_sample(TOKENIZER, np.int64(200), seed=0, depth=np.float32(0.5)).token_ids,
        passkey.make_passkey_sample(TOKENIZER, 200, seed=0, depth=0.5).token_ids,
    )


def test_accuracy_counts_exact_answers():
    """A predictor that answers the key of even rows and one wrong digit in odd ones."""

    def half_right(token_ids, answer_length):
        rows = []
        for index, row in enumerate(token_ids.numpy()):
            key = re.search(r"key is (\d+)\. ", TOKENIZER.decode(row)).group(1)
            answer = f" {key}" if index % 2 == 0 else f" {key[:-1]}{(int(key[-1]) + 1) % 10}"
            rows.append(TOKENIZER.encode(answer)[: int(answer_length)])
        return tf.constant(np.stack(rows))

    result = passkey.passkey_accuracy(None, TOKENIZER, 128, num_trials=6, seed=0, batch_size=2,
                                      predictor=half_right)
    assert result["correct"] == 3 and result["accuracy"] == 0.5 and result["trials"] == 6
    assert len(result["depths"]) == 6 and result["answers"][0] == f" {result['keys'][0]}"
    assert result["answers"][1] != f" {result['keys'][1]}"


def test_predictor_is_the_models_argmax_at_the_answer():
    model = build_causal_lm(256, "alibi", num_layers=1, hidden_dim=16, num_heads=2,
                            intermediate_dim=32)
    samples = [passkey.make_passkey_sample(TOKENIZER, 100, seed=s) for s in range(3)]
    inputs = np.stack([s.token_ids[:-1] for s in samples])  # [3, 100]
    expected = np.argmax(np.asarray(model(inputs)), axis=-1)[:, -6:]
    predicted = passkey.answer_predictor(model)(tf.constant(inputs), tf.constant(6)).numpy()
    np.testing.assert_array_equal(predicted, expected)
    result = passkey.passkey_accuracy(model, TOKENIZER, 100, num_trials=3, seed=1)
    assert 0.0 <= result["accuracy"] <= 1.0 and len(result["answers"]) == 3
