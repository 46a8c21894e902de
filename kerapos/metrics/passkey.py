"""Passkey retrieval (Mohtashami and Jaggi 2023, "Landmark Attention",
arXiv:2305.16300, appendix).

A prompt of repeated filler sentences hides one sentence with a random
5-digit pass key at a random depth and ends with the question; the model must
continue it with the key. Accuracy = fraction of prompts whose greedy
continuation starts with the key (leading whitespace ignored).

The filler is the end of an endless repetition of `FILLER`, cut at the front
so that the prompt has exactly the requested number of tokens; the key
sentence is inserted at the sentence boundary of the filler nearest to the
requested depth (0 = right at the start, 1 = right before the question).
Prompts are deterministic given the seed.

Example:
```python
prompt = make_passkey_prompt(ByteTokenizer(), length=512, seed=0)
prompt.key, prompt.depth, len(prompt.token_ids)  # ('52734', 0.62, 512)
passkey_accuracy(model, ByteTokenizer(), length=512, num_trials=10, seed=0)
```
"""

import dataclasses
import re

import numpy as np
import tensorflow as tf

from kerapos.models.causal_lm import last_logits_function
from kerapos.utils import checks

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. "
    "There and back again. "
)
KEY_SENTENCE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"
NUM_DIGITS = 5


@dataclasses.dataclass
class PasskeyPrompt:
    """One passkey prompt.

    Attributes:
        token_ids: int32 array, the whole prompt (exactly the requested length).
        key: the digits, a str.
        depth: where the key sentence starts, as a fraction of the filler
            (the filler tokens before it / all filler tokens).
        key_start: token index where the key sentence starts.
    """

    token_ids: np.ndarray
    key: str
    depth: float
    key_start: int


def minimum_length(tokenizer, num_digits=NUM_DIGITS):
    """Tokens of a prompt with no filler at all."""
    key = "0" * num_digits
    return len(tokenizer.encode(KEY_SENTENCE.format(key=key))) + len(
        tokenizer.encode(QUESTION)
    )


def make_passkey_prompt(tokenizer, length, seed, depth=None, key=None, num_digits=NUM_DIGITS):
    """Builds a prompt of exactly `length` tokens.

    Args:
        tokenizer: has `encode(str) -> int array`.
        length: int, prompt length in tokens (>= `minimum_length`).
        seed: int or sequence of ints; draws the key and depth.
        depth: optional float in [0, 1]; drawn uniformly when None.
        key: optional digit string; `num_digits` random digits when None
            (first digit non-zero).
    """
    length = checks.integer(length, "length", minimum=1)
    rng = np.random.default_rng(seed)
    if key is None:
        key = str(int(rng.integers(10 ** (num_digits - 1), 10**num_digits)))
    if not (isinstance(key, str) and key.isdigit()):
        raise ValueError(f"key must be a string of digits, got {key!r}.")
    if depth is None:
        depth = float(rng.uniform())
    depth = checks.number(depth, "depth", minimum=0.0, maximum=1.0)
    key_ids = tokenizer.encode(KEY_SENTENCE.format(key=key))
    question_ids = tokenizer.encode(QUESTION)
    num_filler = length - len(key_ids) - len(question_ids)
    if num_filler < 0:
        raise ValueError(
            f"a passkey prompt needs at least {len(key_ids) + len(question_ids)} "
            f"tokens (key sentence + question); got length={length}."
        )
    sentence_ids = [tokenizer.encode(s) for s in re.findall(r"[^.]*\. ", FILLER)]
    # Whole filler sentences, newest last, until there are enough tokens.
    sentences = []
    total = 0
    while total < num_filler:
        next_sentence = sentence_ids[(-1 - len(sentences)) % len(sentence_ids)]
        sentences.insert(0, next_sentence)
        total += len(next_sentence)
    # Sentence starts, counted in tokens from the start of the cut filler.
    cut = total - num_filler
    boundaries = np.cumsum([0] + [len(s) for s in sentences]) - cut
    boundaries = np.union1d([0], boundaries[boundaries >= 0])
    insert_at = int(boundaries[np.argmin(np.abs(boundaries - depth * num_filler))])
    filler = np.concatenate(sentences + [np.zeros(0, np.int32)]).astype(np.int32)[cut:]
    token_ids = np.concatenate(
        [filler[:insert_at], key_ids, filler[insert_at:], question_ids]
    ).astype(np.int32)
    return PasskeyPrompt(
        token_ids=token_ids,
        key=key,
        depth=insert_at / num_filler if num_filler else 0.0,
        key_start=insert_at,
    )


def greedy_continuations(model, prompts, num_tokens, last_logits=None):
    """Greedy decoding of `num_tokens` ids after each of `prompts` (int32
    `[batch, length]`, equal lengths); returns int `[batch, num_tokens]`."""
    last_logits = last_logits or last_logits_function(model)
    tokens = np.asarray(prompts, dtype=np.int32)
    generated = []
    for _ in range(num_tokens):
        next_ids = np.argmax(last_logits(tf.constant(tokens)).numpy(), axis=-1)
        generated.append(next_ids.astype(np.int32))
        tokens = np.concatenate([tokens, next_ids[:, None].astype(np.int32)], axis=1)
    return np.stack(generated, axis=1)


def passkey_accuracy(model, tokenizer, length, num_trials=10, seed=0, batch_size=8):
    """Fraction of `num_trials` prompts of `length` tokens answered correctly.

    Trial `i` uses the prompt of seed `(seed, length, i)`. The model reads the
    whole prompt plus what it has generated (up to `length + digits` tokens).

    Returns:
        dict with `length`, `accuracy`, `correct`, `trials`, `depths` (list),
        `answers` (the decoded continuations) and `keys`.
    """
    num_trials = checks.integer(num_trials, "num_trials", minimum=1)
    batch_size = checks.integer(batch_size, "batch_size", minimum=1)
    prompts = [
        make_passkey_prompt(tokenizer, length, seed=(seed, length, trial))
        for trial in range(num_trials)
    ]
    last_logits = last_logits_function(model)
    answers = []
    for first in range(0, num_trials, batch_size):
        batch = prompts[first:first + batch_size]
        num_tokens = max(len(tokenizer.encode(" " + p.key)) for p in batch)
        generated = greedy_continuations(
            model, np.stack([p.token_ids for p in batch]), num_tokens, last_logits
        )
        answers += [tokenizer.decode(row) for row in generated]
    correct = [
        answer.strip()[:len(p.key)] == p.key for p, answer in zip(prompts, answers)
    ]
    return {
        "length": int(length),
        "accuracy": float(np.mean(correct)),
        "correct": int(np.sum(correct)),
        "trials": int(num_trials),
        "depths": [round(p.depth, 4) for p in prompts],
        "keys": [p.key for p in prompts],
        "answers": answers,
    }
