"""Passkey retrieval (Mohtashami and Jaggi 2023, "Landmark Attention",
arXiv:2305.16300, appendix), in a compact format that fits short windows.

A sample is filler sentences with one key sentence `The key is 52734. ` hidden
at a random depth, then the question `The key is` and the answer ` 52734`:

    The sky is blue. The key is 52734. The sun is yellow. Here we go. The key is 52734

The whole sample has `length + 1` tokens, like a training window: the model
reads the first `length` (everything up to the last answer digit) and must
predict the answer's tokens at the last `len(answer)` positions. The format
needs 34 byte tokens (the key sentence, question and answer), so at a training
length of 64 about half of every sample is filler.

Accuracy is exact-match retrieval: every answer token is the model's argmax
given the tokens before it. That is exactly "greedy decoding after the
question produces the key" (greedy decoding emits the key iff each of its
tokens is the argmax after the previous ones), computed in one forward pass
instead of one per answer token.

The same samples mixed into training windows (`training_samples`) teach a
model the task at its training length, so accuracy past it measures whether
its positions still let it find the key.

The filler is the end of an endless repetition of `FILLER`, cut at the front
so that the sample has exactly the requested number of tokens; the key
sentence is inserted at the sentence boundary of the filler nearest to the
requested depth (0 = right at the start, 1 = right before the question).
Samples are deterministic given the seed.

Example:
```python
sample = make_passkey_sample(ByteTokenizer(), length=64, seed=0)
sample.key, sample.depth, len(sample.token_ids)  # ('85636', 0.52, 65)
passkey_accuracy(model, ByteTokenizer(), length=256, num_trials=100, seed=0)
```
"""

import dataclasses
import re

import numpy as np
import tensorflow as tf

from kerapos.utils import checks

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. "
    "There and back again. "
)
KEY_SENTENCE = "The key is {key}. "
QUESTION = "The key is"
ANSWER = " {key}"
NUM_DIGITS = 5
# Seeds training samples apart from the evaluation trials of the same seed.
_TRAINING_STREAM = 1


@dataclasses.dataclass
class PasskeySample:
    """One passkey sample: prompt and answer.

    Attributes:
        token_ids: int32 `[length + 1]`: filler with the key sentence, the
            question, the answer (the model reads all but the last token).
        key: the digits, a str.
        depth: where the key sentence starts, as a fraction of the filler
            (the filler tokens before it / all filler tokens).
        key_start: token index where the key sentence starts.
        answer_length: tokens of the answer, the last ones of `token_ids`.
    """

    token_ids: np.ndarray
    key: str
    depth: float
    key_start: int
    answer_length: int


def minimum_length(tokenizer, num_digits=NUM_DIGITS):
    """The shortest `length` a sample can have (no filler at all)."""
    key = "0" * num_digits
    return sum(
        len(tokenizer.encode(part.format(key=key))) for part in (KEY_SENTENCE, QUESTION, ANSWER)
    ) - 1


def answer_length(tokenizer, num_digits=NUM_DIGITS):
    """Tokens of the answer (a space and the key), the last of every sample."""
    return len(tokenizer.encode(ANSWER.format(key="0" * num_digits)))


def _filler(tokenizer, num_filler):
    """The last `num_filler` tokens of `FILLER` repeated, and the token
    offsets where its (possibly cut) sentences start."""
    sentence_ids = [tokenizer.encode(s) for s in re.findall(r"[^.]*\. ", FILLER)]
    sentences, total = [], 0
    while total < num_filler:  # whole sentences, newest last
        sentences.insert(0, sentence_ids[(-1 - len(sentences)) % len(sentence_ids)])
        total += len(sentences[0])
    cut = total - num_filler
    boundaries = np.cumsum([0] + [len(s) for s in sentences]) - cut
    filler = np.concatenate(sentences + [np.zeros(0, np.int32)]).astype(np.int32)[cut:]
    return filler, np.union1d([0], boundaries[boundaries >= 0])


def make_passkey_sample(tokenizer, length, seed, depth=None, key=None, num_digits=NUM_DIGITS):
    """Builds a sample of `length + 1` tokens (the model reads `length`).

    Args:
        tokenizer: has `encode(str) -> int array`.
        length: int, tokens the model reads (>= `minimum_length`).
        seed: int or sequence of ints; draws the key and depth.
        depth: optional float in [0, 1]; drawn uniformly when None.
        key: optional digit string; `num_digits` random digits when None
            (first digit non-zero).
        num_digits: digits of a drawn key.
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
    key_ids, question_ids, answer_ids = (
        tokenizer.encode(part.format(key=key)) for part in (KEY_SENTENCE, QUESTION, ANSWER)
    )
    fixed = len(key_ids) + len(question_ids) + len(answer_ids)
    num_filler = length + 1 - fixed
    if num_filler < 0:
        raise ValueError(
            f"a passkey sample needs length >= {fixed - 1} (key sentence, question and "
            f"answer: {fixed} tokens, the last one only predicted); got length={length}."
        )
    filler, boundaries = _filler(tokenizer, num_filler)
    insert_at = int(boundaries[np.argmin(np.abs(boundaries - depth * num_filler))])
    token_ids = np.concatenate(
        [filler[:insert_at], key_ids, filler[insert_at:], question_ids, answer_ids]
    ).astype(np.int32)  # [length + 1]
    return PasskeySample(
        token_ids=token_ids,
        key=key,
        depth=insert_at / num_filler if num_filler else 0.0,
        key_start=insert_at,
        answer_length=len(answer_ids),
    )


def training_samples(tokenizer, length, count, seed):
    """`count` samples of `length + 1` tokens for training windows, int32
    `[count, length + 1]` (sample `i` from seed `(seed, 1, length, i)`, apart
    from the evaluation trials of `passkey_accuracy`)."""
    count = checks.integer(count, "count", minimum=0)
    rows = [
        make_passkey_sample(tokenizer, length, seed=(seed, _TRAINING_STREAM, length, i)).token_ids
        for i in range(count)
    ]
    return np.stack(rows) if rows else np.zeros((0, length + 1), np.int32)


def answer_predictor(model):
    """A traced function: int32 ids `[batch, length]` and an int32 scalar
    `k` -> int32 `[batch, k]`, the model's argmax at the last `k` positions
    (any batch and length, traced once)."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="token_ids"),
            tf.TensorSpec([], tf.int32, name="answer_length"),
        ],
        reduce_retracing=True,
    )
    def predict(token_ids, answer_length):
        logits = model(token_ids, training=False)[:, -answer_length:, :]  # [b, k, vocab]
        return tf.argmax(logits, axis=-1, output_type=tf.int32)  # [b, k]

    return predict


def passkey_accuracy(model, tokenizer, length, num_trials=100, seed=0, batch_size=8,
                     predictor=None):
    """Fraction of `num_trials` samples the model answers exactly.

    Trial `i` uses the sample of seed `(seed, length, i)`; the model reads its
    `length` tokens once, and a trial is correct when its argmax at every
    answer position is the answer's token (see the module docstring).

    Args:
        model: a causal LM, int32 `[batch, length]` -> logits (unused when
            `predictor` is given).
        tokenizer: has `encode` and `decode`.
        length: int, tokens the model reads per trial.
        num_trials: int, samples scored.
        seed: int, seeds the trials.
        batch_size: int, samples per forward pass.
        predictor: optional `answer_predictor(model)` to reuse its trace.

    Returns:
        dict with `length`, `accuracy`, `correct`, `trials`, `depths` (list),
        `keys` and `answers` (the decoded predictions).
    """
    num_trials = checks.integer(num_trials, "num_trials", minimum=1)
    batch_size = checks.integer(batch_size, "batch_size", minimum=1)
    samples = [
        make_passkey_sample(tokenizer, length, seed=(seed, length, trial))
        for trial in range(num_trials)
    ]
    answer_length = samples[0].answer_length  # every key has NUM_DIGITS digits
    predictor = predictor or answer_predictor(model)
    predictions = []
    for first in range(0, num_trials, batch_size):
        batch = np.stack([s.token_ids[:-1] for s in samples[first:first + batch_size]])
        predictions.append(predictor(tf.constant(batch), tf.constant(answer_length)).numpy())
    predictions = np.concatenate(predictions)  # [trials, answer_length]
    answers = np.stack([s.token_ids[-answer_length:] for s in samples])
    correct = np.all(predictions == answers, axis=1)
    return {
        "length": int(length),
        "accuracy": float(np.mean(correct)),
        "correct": int(np.sum(correct)),
        "trials": int(num_trials),
        "depths": [round(s.depth, 4) for s in samples],
        "keys": [s.key for s in samples],
        "answers": [tokenizer.decode(row) for row in predictions],
    }
