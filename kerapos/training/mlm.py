"""BERT-style masked-language-model pretraining with any position scheme.

`run(options)` is what `trainers/pretrain_mlm.py` calls: it learns a WordPiece
vocabulary from the training part of a whole-book corpus
(`kerapos.data.corpus.load_corpus`), then for every scheme in turn trains a
`BertEncoderBackbone` with the MLM objective on random windows of
`train_length` tokens (``[CLS]`` window ``[SEP]``) and reports MLM loss and
accuracy on the held-out test books at 1x, 2x and 4x that length, with the
same fixed masking seed for every scheme. A "learned" table is extended past
its training length by position interpolation
(`LearnedPositionEmbedding.extend_to(..., "interpolate")`, Chen et al. 2023,
arXiv:2306.15595) on a copy of the trained model.

Masking (Devlin et al. 2018, arXiv:1810.04805, section 3.1): in every
sequence `round(15%)` of the real tokens (never ``[PAD]``, ``[CLS]``,
``[SEP]``) are selected; of those 80% become ``[MASK]``, 10% a random
non-special token and 10% stay unchanged. Loss and accuracy count selected
tokens only. The random draws are stateless, keyed by (seed, split, batch
index), so a batch is masked the same way in every run and for every scheme.
"""

import dataclasses
import math
import time
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from kerapos import positions
from kerapos.checkpoints.bert import save_encoder_checkpoint
from kerapos.data import wordpiece
from kerapos.data.corpus import load_corpus
from kerapos.data.windows import window_dataset
from kerapos.models.bert_encoder import BertEncoderBackbone
from kerapos.models.bert_encoder import build_masked_lm
from kerapos.training import runtime
from kerapos.training import skeleton
from kerapos.training.options import EpochOptions
from kerapos.training.options import SweepOptions
from kerapos.training.options import option
from kerapos.training.options import override
from kerapos.utils import atomic

MASK_RATE = 0.15
MASK_TOKEN_RATE = 0.8
RANDOM_TOKEN_RATE = 0.1
UNSELECTABLE_IDS = (wordpiece.PAD_ID, wordpiece.CLS_ID, wordpiece.SEP_ID)
EVAL_MULTIPLES = (1, 2, 4)
LEARNED_EXTENSION = "interpolate"
# Stateless masking streams: the second key of every masking seed.
TRAIN_STREAM, VALIDATION_STREAM, TEST_STREAM = 0, 1, 2

# Sizes per preset; explicit flags override them.
# "cpu": one scheme in about 7 minutes on 2 cores. Measured on 2 cores shared
# with another job (so upper bounds): the WordPiece learner takes ~40 s on the
# 1 M-character sample (2,680 pieces; its time grows with the text: 1.7 M
# characters took 164 s for 4,058 pieces), tokenising the 10.5 M training
# characters ~20 s, training ~0.43 s/step after ~35 s of tracing (2 layers,
# width 128, 128 tokens, batch 32), evaluation at 128/256/512 tokens ~25 s.
# 800 steps: ~6 min of training, ~7.5 min in all for one scheme.
PRESETS = {
    "smoke": dict(
        train_length=16, steps=6, epochs=2, batch_size=4, learning_rate=1e-3,
        vocab_size=200, vocab_sample_chars=0, num_layers=1, hidden_dim=16,
        num_heads=2, intermediate_dim=32, dropout=0.0, eval_tokens=256,
        eval_batch_size=8,
    ),
    "cpu": dict(
        train_length=128, steps=800, epochs=4, batch_size=32, learning_rate=1e-3,
        vocab_size=8000, vocab_sample_chars=1_000_000, num_layers=2, hidden_dim=128,
        num_heads=4, intermediate_dim=512, dropout=0.1, eval_tokens=16384,
        eval_batch_size=16,
    ),
    "gpu": dict(
        train_length=512, steps=30000, epochs=10, batch_size=64, learning_rate=5e-4,
        vocab_size=16000, vocab_sample_chars=0, num_layers=4, hidden_dim=512,
        num_heads=8, intermediate_dim=2048, dropout=0.1, eval_tokens=131072,
        eval_batch_size=16,
    ),
}


@dataclasses.dataclass
class MLMOptions(SweepOptions, EpochOptions):
    """Everything an MLM pretraining run depends on (the trainer's flags after
    the preset). `eval_lengths` None = 1x, 2x, 4x `train_length`;
    `vocab_sample_chars` 0 = learn the vocabulary from all training text;
    `eval_tokens` = test tokens read per test book at every length. The
    default schemes are all of `kerapos.positions`; "none" is the baseline
    without any order information (an encoder without a causal mask is a
    bag of words)."""

    PRESETS: ClassVar[dict] = PRESETS

    preset: str = option(
        None,
        "Sizes/steps/lengths: smoke (seconds), cpu (~7 min per scheme on 2 cores), gpu "
        "(train length 512).",
        kind="string", choices=sorted(PRESETS),
    )
    train_length: int = option(
        128, "Training sequence length in tokens, [CLS] and [SEP] included.", minimum=4
    )
    eval_lengths: tuple = option(
        None, "Evaluation lengths in tokens (default 1x,2x,4x `train_length`).",
        kind="integers", minimum=4, allow_empty=False,
    )
    vocab_size: int = option(
        8000, "Largest WordPiece vocabulary, special tokens included.",
        minimum=len(wordpiece.SPECIAL_TOKENS) + 1,
    )
    vocab_sample_chars: int = option(
        1_000_000,
        "Learn the vocabulary from about this many characters of the training books (an even "
        "sample of lines); 0 = all.",
        minimum=0,
    )
    eval_tokens: int = option(
        16384, "Test tokens read per test book at every evaluation length.", minimum=1
    )
    schemes: tuple = override(
        positions.available(),
        help=f"Position schemes to train in turn ({', '.join(positions.available())}).",
    )
    steps: int = override(800, help="Training steps per scheme (split into `epochs`).")
    num_layers: int = override(2, help="Encoder blocks.")
    epochs: int = override(4)
    model_dir: str = override("runs/mlm")
    model_name: str = override("mlm")

    def related_problems(self):
        yield from super().related_problems()
        if self.steps < self.epochs:
            yield f"`steps` ({self.steps}) must be at least `epochs` ({self.epochs})"

    def fill_in(self):
        super().fill_in()
        if self.eval_lengths is None:
            self.eval_lengths = tuple(m * self.train_length for m in EVAL_MULTIPLES)
        self.eval_lengths = tuple(sorted(set(self.eval_lengths)))

    @property
    def steps_per_epoch(self):
        return self.steps // self.epochs

    @property
    def trained_steps(self):
        """`steps` rounded down to whole epochs: the steps actually trained."""
        return self.steps_per_epoch * self.epochs


def num_predictions(sequence_length):
    """Masked-position slots per sequence: enough for 15% of every token."""
    return max(1, math.ceil(MASK_RATE * sequence_length))


def mask_tokens(token_ids, vocabulary_size, seed):
    """Masks a batch for the MLM objective (see the module docstring).

    Args:
        token_ids: int `[batch, seq]`, 0-padded, with ``[CLS]``/``[SEP]``.
        vocabulary_size: int; random replacements are drawn from the
            non-special ids `[5, vocabulary_size)`.
        seed: int `[2]` stateless seed; the same seed masks the same way.

    Returns:
        `(features, labels, weights)`: features = dict of int32 `[batch, seq]`
        ``token_ids`` (masked), ``segment_ids`` (zeros), ``padding_mask``, and
        int32 ``mask_positions`` `[batch, P]` with `P = num_predictions(seq)`;
        labels = the original ids at those positions, int32 `[batch, P]`;
        weights = float32 `[batch, P]`, 1 for a selected token, 0 for an
        unused slot.
    """
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    batch_size, sequence_length = tf.unstack(tf.shape(token_ids))
    predictions = num_predictions(token_ids.shape[1])
    selectable = tf.reduce_all(
        token_ids[..., None] != tf.constant(UNSELECTABLE_IDS, tf.int32), axis=-1
    )  # [batch, seq]
    num_selectable = tf.reduce_sum(tf.cast(selectable, tf.int32), axis=1)  # [batch]
    num_selected = tf.cast(tf.round(MASK_RATE * tf.cast(num_selectable, tf.float32)), tf.int32)
    num_selected = tf.minimum(
        tf.maximum(num_selected, tf.minimum(num_selectable, 1)), predictions
    )  # at least one token of a non-empty sequence
    select_seed, action_seed, random_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3)
    )
    scores = tf.random.stateless_uniform([batch_size, sequence_length], select_seed)
    scores = tf.where(selectable, scores, -1.0)  # [batch, seq]
    _, mask_positions = tf.math.top_k(scores, k=predictions)  # [batch, P], distinct
    weights = tf.cast(
        tf.range(predictions)[None, :] < num_selected[:, None], tf.float32
    )  # [batch, P]
    labels = tf.gather(token_ids, mask_positions, batch_dims=1)  # [batch, P]
    action = tf.random.stateless_uniform([batch_size, predictions], action_seed)
    random_ids = tf.random.stateless_uniform(
        [batch_size, predictions], random_seed,
        minval=len(wordpiece.SPECIAL_TOKENS), maxval=vocabulary_size, dtype=tf.int32,
    )
    replacement = tf.where(
        action < MASK_TOKEN_RATE,
        wordpiece.MASK_ID,
        tf.where(action < MASK_TOKEN_RATE + RANDOM_TOKEN_RATE, random_ids, labels),
    )
    replacement = tf.where(weights > 0, replacement, labels)  # unused slots: unchanged
    rows = tf.broadcast_to(tf.range(batch_size)[:, None], tf.shape(mask_positions))
    indices = tf.stack([rows, mask_positions], axis=-1)  # [batch, P, 2]
    masked_ids = tf.tensor_scatter_nd_update(token_ids, indices, replacement)
    features = {
        "token_ids": masked_ids,
        "segment_ids": tf.zeros_like(token_ids),
        "padding_mask": tf.cast(token_ids != wordpiece.PAD_ID, tf.int32),
        "mask_positions": mask_positions,
    }
    return features, labels, weights


def add_special_tokens(windows):
    """int `[batch, n]` token windows -> `[batch, n + 2]` as ``[CLS] w [SEP]``."""
    windows = tf.convert_to_tensor(windows, tf.int32)
    column = tf.ones_like(windows[:, :1])  # [batch, 1]
    return tf.concat([column * wordpiece.CLS_ID, windows, column * wordpiece.SEP_ID], axis=1)


def masked_batches(batches, vocabulary_size, seed, stream):
    """Masks a dataset of token-window batches; batch `i` uses the stateless
    seed `fold_in((seed, stream), i)`, so masking depends only on its position."""
    base_seed = tf.constant([seed, stream], tf.int64)

    def mask(index, windows):
        batch_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        return mask_tokens(add_special_tokens(windows), vocabulary_size, batch_seed)

    return batches.enumerate().map(mask, num_parallel_calls=tf.data.AUTOTUNE)


def training_batches(stream, options, vocabulary_size):
    """`trained_steps` masked batches of random `train_length` windows of `stream`."""
    windows = window_dataset(
        stream, options.train_length - 2, options.batch_size, options.trained_steps, options.seed
    ).map(lambda inputs, _: inputs)  # the next-token targets are not needed
    return masked_batches(windows, vocabulary_size, options.seed, TRAIN_STREAM).prefetch(2)


def evaluation_windows(documents, sequence_length, tokens_per_document):
    """Consecutive, non-overlapping windows of `sequence_length - 2` tokens from
    the first `tokens_per_document` tokens of every document: int32
    `[num_windows, sequence_length - 2]` (the remainder is dropped)."""
    width = sequence_length - 2
    windows = [
        tokens[: (min(tokens.size, tokens_per_document) // width) * width].reshape(-1, width)
        for tokens in documents
    ]
    return np.concatenate(windows, axis=0).astype(np.int32)


def evaluation_batches(documents, sequence_length, options, vocabulary_size, stream):
    """Masked batches of `evaluation_windows`, or None when no document holds
    one whole window (the same masking for every scheme)."""
    windows = evaluation_windows(documents, sequence_length, options.eval_tokens)
    if not len(windows):
        return None
    batches = tf.data.Dataset.from_tensor_slices(windows).batch(options.eval_batch_size)
    return masked_batches(batches, vocabulary_size, options.seed, stream).cache()


def evaluate_masked_lm(model, batches):
    """MLM loss and accuracy over the selected tokens of `batches`.

    Returns:
        dict: ``loss`` (mean cross-entropy in nats per selected token),
        ``accuracy`` and ``predictions`` (the number of selected tokens).
    """

    @tf.function(reduce_retracing=True)
    def score(features, labels, weights):
        logits = model(features, training=False)  # [batch, P, vocab]
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32) == labels, tf.float32)
        return (
            tf.reduce_sum(tf.cast(losses, tf.float64) * tf.cast(weights, tf.float64)),
            tf.reduce_sum(tf.cast(correct * weights, tf.float64)),
            tf.reduce_sum(tf.cast(weights, tf.float64)),
        )

    total_loss = total_correct = count = 0.0
    for features, labels, weights in batches:
        batch_loss, batch_correct, batch_count = score(features, labels, weights)
        total_loss += float(batch_loss)
        total_correct += float(batch_correct)
        count += float(batch_count)
    return {
        "loss": total_loss / count,
        "accuracy": total_correct / count,
        "predictions": int(count),
    }


def build_backbone(options, scheme, vocabulary_size):
    """The `BertEncoderBackbone` of `scheme` a run trains (a bounded scheme's
    table holds `train_length` positions)."""
    return BertEncoderBackbone(
        vocabulary_size,
        scheme,
        max_sequence_length=(
            options.train_length if positions.scheme(scheme).bounded else None
        ),
        num_layers=options.num_layers,
        hidden_dim=options.hidden_dim,
        num_heads=options.num_heads,
        intermediate_dim=options.intermediate_dim,
        dropout=options.dropout,
    )


def model_for_length(model, backbone, length, strategy):
    """The trained MLM, or for a learned table shorter than `length` a copy
    whose table is interpolated to `length` (the trained model is untouched)."""

    def fresh_copy(_):
        return build_masked_lm(BertEncoderBackbone.from_config(backbone.get_config()))

    return skeleton.model_for_length(
        model, backbone.position, length, LEARNED_EXTENSION, strategy, copy=fresh_copy
    )


def vocabulary_sample(documents, max_chars):
    """Every k-th line of the documents, k chosen so the sample holds about
    `max_chars` characters (all lines for `max_chars` 0): an even sample of
    every book, since the WordPiece learner's time grows with the text."""
    lines = wordpiece.text_lines(document.text for document in documents)
    total = sum(len(line) for line in lines)
    step = 1 if not max_chars or total <= max_chars else math.ceil(total / max_chars)
    return lines[::step]


def run(options, command=None):
    """Learns the vocabulary, trains and evaluates every scheme, writes results.

    Writes under `options.output_dir`: ``vocab.txt``, ``logs/<scheme>/``
    (TensorBoard: ``train``, ``validation``, ``eval``), ``checkpoints/<scheme>/``
    (`kerapos.checkpoints.bert.save_encoder_checkpoint`, loadable by
    `load_bert_checkpoint`), ``results.json`` (rewritten after every scheme),
    ``results.md`` and, given `command`, ``command.txt``.

    Returns:
        The results dict written to ``results.json``.
    """
    return skeleton.run(_MLMTask(options), command)


class _MLMTask(skeleton.SchemeSweep):
    schedule_alpha = 0.05
    # The pooler is there for fine-tuning; the MLM loss never reaches it.
    expected_warnings = (r"Gradients do not exist for variables \['pooled_dense",)

    def prepare(self, context):
        options, output_dir = self.options, context.output_dir
        started = time.time()
        corpus = load_corpus(options.corpus, seed=options.seed)
        sample = vocabulary_sample(corpus.train, options.vocab_sample_chars)
        self.vocabulary = vocabulary = wordpiece.learn_vocabulary(sample, options.vocab_size)
        wordpiece.save_vocabulary(vocabulary, output_dir / "vocab.txt")
        vocabulary_done = time.time()
        logging.info(f"[kerapos] vocabulary: {len(vocabulary)} pieces (of {options.vocab_size} "
                     f"wanted) from {sum(map(len, sample)):,} characters")

        tokenizer = wordpiece.make_tokenizer(vocabulary)
        self.train_stream = np.concatenate(
            wordpiece.tokenize_documents(tokenizer, [d.text for d in corpus.train])
        )
        validation_tokens = wordpiece.tokenize_documents(tokenizer, [d.text for d in corpus.validation])
        test_tokens = wordpiece.tokenize_documents(tokenizer, [d.text for d in corpus.test])
        tokenized = time.time()
        logging.info(f"[kerapos] tokens: train {self.train_stream.size:,}, validation "
                     f"{sum(t.size for t in validation_tokens):,}, test "
                     f"{sum(t.size for t in test_tokens):,}; schemes {', '.join(options.schemes)}; "
                     f"eval lengths {list(options.eval_lengths)}")

        size = len(vocabulary)
        self.validation_batches = evaluation_batches(
            validation_tokens, options.train_length, options, size, VALIDATION_STREAM
        )
        self.test_batches = {
            length: evaluation_batches(test_tokens, length, options, size, TEST_STREAM)
            for length in options.eval_lengths
        }
        self.started = started
        self.results = {
            "flags": dataclasses.asdict(options),
            "preset": options.preset,
            "device": runtime.device_description(),
            "machine": dict(runtime.machine()),
            "num_replicas": context.strategy.num_replicas_in_sync,
            "corpus": {
                **corpus.info,
                "tokens": {
                    "train": int(self.train_stream.size),
                    "validation": {d.name: int(t.size)
                                   for d, t in zip(corpus.validation, validation_tokens)},
                    "test": {d.name: int(t.size) for d, t in zip(corpus.test, test_tokens)},
                },
            },
            "vocabulary": {
                "size": size,
                "requested": options.vocab_size,
                "sample_characters": sum(map(len, sample)),
                "lowercase": True,
                "file": str(output_dir / "vocab.txt"),
            },
            "masking": {
                "rate": MASK_RATE, "mask_token": MASK_TOKEN_RATE,
                "random_token": RANDOM_TOKEN_RATE, "seed": options.seed,
            },
            "timings": {
                "vocabulary_s": round(vocabulary_done - started, 2),
                "tokenize_s": round(tokenized - vocabulary_done, 2),
            },
            "schemes": {},
        }

    def build_model(self, context, scheme):
        logging.info(f"== {scheme}: training {self.options.trained_steps} steps")
        self.backbone = build_backbone(self.options, scheme, len(self.vocabulary))
        return build_masked_lm(self.backbone)

    def build_inputs(self, context, scheme):
        options = self.options
        return skeleton.Inputs(
            train=training_batches(self.train_stream, options, len(self.vocabulary)),
            validation=self.validation_batches,
            steps_per_epoch=options.steps_per_epoch,
            epochs=options.epochs,
            stream=True,
        )

    def compile_arguments(self):
        return dict(
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            ),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    def evaluation_lengths(self, scheme):
        return [(str(length), length) for length in self.options.eval_lengths]

    def evaluate(self, context, trained):
        self.writer = tf.summary.create_file_writer(str(context.log_dir(trained.name) / "eval"))
        scores = super().evaluate(context, trained)
        self.writer.flush()
        return scores

    def evaluate_length(self, context, trained, key, length):
        scheme, batches = trained.name, self.test_batches[length]
        if batches is None:
            logging.info(f"  [{scheme}] L={length}: no test book holds a whole window; skipped")
            return None
        model = model_for_length(trained.model, self.backbone, length, trained.strategy)
        scores = evaluate_masked_lm(model, batches)
        with self.writer.as_default():
            tf.summary.scalar("mlm_accuracy", scores["accuracy"], step=length)
            tf.summary.scalar("mlm_loss", scores["loss"], step=length)
        logging.info(f"  [{scheme}] L={length:<6d} MLM accuracy {scores['accuracy']:.4f}  "
                     f"loss {scores['loss']:.4f}  ({scores['predictions']} masked tokens)")
        return scores

    def export(self, context, trained):
        options = self.options
        checkpoint = context.output_dir / "checkpoints" / trained.name
        save_encoder_checkpoint(
            checkpoint, self.backbone, self.vocabulary,
            metadata={"train_length": options.train_length, "steps": options.trained_steps,
                      "corpus": options.corpus},
        )
        return {"checkpoint": str(checkpoint)}

    def record(self, context, trained, scores, exports):
        options, scheme, history = self.options, trained.name, trained.history
        extended = [key for key in scores if int(key) > options.train_length]
        self.results["schemes"][scheme] = {
            "mlm_accuracy": {key: score["accuracy"] for key, score in scores.items()},
            "mlm_loss": {key: score["loss"] for key, score in scores.items()},
            "masked_tokens": {key: score["predictions"] for key, score in scores.items()},
            "learned_extension": (
                {"method": LEARNED_EXTENSION, "lengths": extended}
                if positions.scheme(scheme).bounded else None
            ),
            "final_train_loss": float(history["loss"][-1]),
            "final_train_accuracy": float(history["accuracy"][-1]),
            "validation_accuracy": (
                float(history["val_accuracy"][-1]) if "val_accuracy" in history else None
            ),
            "parameters": int(self.backbone.count_params()),
            "checkpoint": exports.get("checkpoint"),
        }
        train_seconds = trained.finished - trained.started
        speed = runtime.training_speed(
            options.trained_steps * options.batch_size * options.train_length,
            trained.fit_seconds,
            # The encoder's FLOP (the embeddings are only gathered from, the pooler
            # is off the MLM path); the head at the masked positions is left out.
            runtime.transformer_training_flops_per_token(
                self.backbone, options.num_layers, options.hidden_dim, options.train_length,
                lookup_only=("token_embedding", "segment_embedding", "position_embedding",
                             "pooled_dense")),
        )
        self.results["timings"][scheme] = {
            "train_s": round(train_seconds, 2),
            "eval_s": round(time.time() - trained.finished, 2),
            "seconds_per_step": round(train_seconds / options.trained_steps, 4),
            "train_tokens_per_s": speed.pop("tokens_per_s"),
            **{f"train_{key}": value for key, value in speed.items()},
        }

    def finish(self, context):
        self.results["timings"]["total_s"] = round(time.time() - self.started, 2)
        atomic.write_text(context.output_dir / "results.md",
                          results_markdown(self.results, self.options))


def results_markdown(results, options):
    """results.md: MLM accuracy and loss tables (rows = schemes, columns =
    evaluation lengths)."""
    lengths = [str(n) for n in options.eval_lengths]
    lines = [
        "# MLM pretraining: accuracy at and past the training length",
        "",
        f"Corpus `{options.corpus}`, WordPiece vocabulary of {results['vocabulary']['size']} "
        f"pieces; BERT-style encoders trained on {options.train_length}-token sequences "
        f"({options.trained_steps} steps of {options.batch_size}), evaluated on the test books "
        f"(at most {options.eval_tokens} tokens per book at every length) with masking "
        f"seed {options.seed}. `learned` past {options.train_length} tokens: its table "
        f"interpolated (`extend_to(..., \"{LEARNED_EXTENSION}\")`). `-`: not evaluated. "
        f"Device: {results['device']}.",
        "",
    ]
    for metric, title, fmt in (("mlm_accuracy", "MLM accuracy", "{:.4f}"),
                               ("mlm_loss", "MLM loss (nats per masked token)", "{:.3f}")):
        lines += [f"## {title}", "",
                  "| scheme | " + " | ".join(f"L={n}" for n in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for scheme, record in results["schemes"].items():
            cells = [fmt.format(record[metric][n]) if n in record[metric] else "-"
                     for n in lengths]
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += runtime.training_speed_markdown(results.get("timings", {}), list(results["schemes"]),
                                             results.get("machine"))
    return "\n".join(lines)
