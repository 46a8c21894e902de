"""Passkey prompts: exact length, key present at the reported depth, the
question at the end, deterministic by seed; accuracy bookkeeping."""

import re

import numpy as np
import pytest

from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.metrics import passkey
from kerapos.models.causal_lm import build_causal_lm

TOKENIZER = ByteTokenizer()


@pytest.mark.parametrize("length", [96, 97, 150, 256, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prompt_length_key_question(length, seed):
    prompt = passkey.make_passkey_prompt(TOKENIZER, length, seed=seed)
    text = TOKENIZER.decode(prompt.token_ids)
    assert len(prompt.token_ids) == length
    assert re.fullmatch(r"\d{5}", prompt.key) and prompt.key[0] != "0"
    key_sentence = passkey.KEY_SENTENCE.format(key=prompt.key)
    assert text.count(key_sentence) == 1
    assert text.endswith(passkey.QUESTION)
    assert text.index(key_sentence) == prompt.key_start  # bytes == characters (ASCII)
    filler = text.replace(key_sentence, "")[: -len(passkey.QUESTION)]
    assert set(filler.split(". ")) <= set(passkey.FILLER.split(". ")) | {""} | {
        filler.split(". ")[0]}  # only the first sentence may be cut


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_depth_is_near_requested_at_a_sentence_start(depth):
    prompt = passkey.make_passkey_prompt(TOKENIZER, 2000, seed=0, depth=depth)
    num_filler = 2000 - passkey.minimum_length(TOKENIZER)
    longest_sentence = max(len(s) for s in passkey.FILLER.split(". ")) + 2
    assert abs(prompt.depth - depth) * num_filler <= longest_sentence / 2 + 1
    assert prompt.key_start == round(prompt.depth * num_filler)
    text = TOKENIZER.decode(prompt.token_ids)
    assert prompt.key_start == 0 or text[prompt.key_start - 2:prompt.key_start] == ". "


def test_deterministic_by_seed():
    first = passkey.make_passkey_prompt(TOKENIZER, 300, seed=5)
    again = passkey.make_passkey_prompt(TOKENIZER, 300, seed=5)
    np.testing.assert_array_equal(first.token_ids, again.token_ids)
    others = {passkey.make_passkey_prompt(TOKENIZER, 300, seed=s).key for s in range(8)}
    assert len(others) > 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 96"):
        passkey.make_passkey_prompt(TOKENIZER, 95, seed=0)
    with pytest.raises(ValueError, match="depth"):
        passkey.make_passkey_prompt(TOKENIZER, 200, seed=0, depth=1.5)
    with pytest.raises(ValueError, match="digits"):
        passkey.make_passkey_prompt(TOKENIZER, 200, seed=0, key="12a45")
    with pytest.raises(ValueError, match="`length` must be an integer"):
        passkey.make_passkey_prompt(TOKENIZER, 200.0, seed=0)
    with pytest.raises(ValueError, match="`num_trials` must be an integer >= 1"):
        passkey.passkey_accuracy(None, TOKENIZER, 200, num_trials=0)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        passkey.passkey_accuracy(None, TOKENIZER, 200, batch_size=0)
    # numpy scalars are accepted like Python ones.
    np.testing.assert_array_equal(
        passkey.make_passkey_prompt(TOKENIZER, np.int64(200), seed=0, depth=np.float32(0.5)).token_ids,
        passkey.make_passkey_prompt(TOKENIZER, 200, seed=0, depth=0.5).token_ids,
    )


def test_accuracy_counts_correct_continuations(monkeypatch):
    def answer_correctly_for_even_trials(model, prompts, num_tokens, last_logits=None):
        rows = []
        for index, prompt in enumerate(prompts):
            key = re.search(r"pass key is (\d+)", TOKENIZER.decode(prompt)).group(1)
            answer = f" {key}" if index % 2 == 0 else " 99999"
            rows.append(TOKENIZER.encode(answer)[:num_tokens])
        return np.stack(rows)

    monkeypatch.setattr(passkey, "greedy_continuations", answer_correctly_for_even_trials)
    monkeypatch.setattr(passkey, "last_logits_function", lambda model: None)
    result = passkey.passkey_accuracy(None, TOKENIZER, 128, num_trials=6, seed=0, batch_size=4)
    assert result["correct"] == 3 and result["accuracy"] == 0.5 and result["trials"] == 6
    assert len(result["depths"]) == 6 and result["answers"][1] == " 99999"


def test_accuracy_runs_on_a_real_model():
    model = build_causal_lm(256, "alibi", num_layers=1, hidden_dim=16, num_heads=2,
                            intermediate_dim=32)
    result = passkey.passkey_accuracy(model, TOKENIZER, 100, num_trials=3, seed=1)
    assert 0.0 <= result["accuracy"] <= 1.0 and len(result["answers"]) == 3
    assert all(len(answer.encode("utf-8", "surrogatepass")) >= 1 for answer in result["answers"])
