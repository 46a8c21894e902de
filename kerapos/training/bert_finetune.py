"""BERT fine-tuning end to end: checkpoint -> task model -> train -> evaluate -> export.

`run(options)` is what `trainers/finetune_bert.py` calls. Two tasks:

* ``classification``: IMDb (or a JSON file in the fixture format), a softmax
  head on the encoder's pooled output; test accuracy at the training length
  and, with `eval_full_length`, on whole reviews up to the model's length.
* ``token_classification``: CoNLL data (WNUT-16 NER, Brown POS or a
  directory of CoNLL files), labels on each word's first WordPiece; entity
  P/R/F1 per type (BIO label sets) and token accuracy.

Text is tokenized inside `tf.data` (keras-hub's tf-text WordPiece) and the
model sees integer batches only, so any `tf.distribute` strategy can train
it. The checkpoint's 512-position table can be grown (`extend_positions_to`)
and the encoder fine-tuned fully or through LoRA adapters (`lora_rank`).
The training itself is `kerapos.training.skeleton`.
"""

import dataclasses
import math
import pathlib
import warnings

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from kerapos.checkpoints import bert
from kerapos.data import conll
from kerapos.data.imdb import Split
from kerapos.data.imdb import load_classification_data
from kerapos.data.text_pipeline import sanitize_text
from kerapos.export.bert import export_bert_classifier
from kerapos.export.bert import export_bert_token_classifier
from kerapos.layers.learned_position_embedding import EXTEND_METHODS
from kerapos.metrics import ner as ner_metrics
from kerapos.models import bert_tasks
from kerapos.training import callbacks as kp_callbacks
from kerapos.training import skeleton
from kerapos.training.options import EarlyStoppingOptions
from kerapos.training.options import option
from kerapos.training.options import override
from kerapos.utils import atomic

TASKS = ("classification", "token_classification")
TOKEN_DATASETS = {"wnut16": conll.load_wnut16, "brown_pos": conll.load_brown_pos}
# Untruncated evaluation: rows up to this many pieces go in full batches, and
# each of this many doublings beyond it divides the batch by 4 (see
# `_Pipeline.untruncated_texts`).
UNTRUNCATED_BUCKET_LENGTH = 512
UNTRUNCATED_BUCKETS = 4
CONLL_FILES = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}
KERAS_MODEL_FILE = "model.keras"
# Strategies with several replicas (cross-replica gradient aggregation).
REPLICATED_STRATEGIES = ("mirrored", "multi_worker", "tpu")


@dataclasses.dataclass
class FinetuneOptions(EarlyStoppingOptions):
    """Everything a fine-tuning run depends on (the trainer's flags)."""

    task: str = option(
        "classification",
        "classification (one label per text) or token_classification (one per word).",
        choices=TASKS,
    )
    dataset: str = option(
        "imdb",
        "classification: 'imdb' or a JSON file in the tests/fixtures/imdb_sample.json format. "
        "token_classification: 'wnut16', 'brown_pos', or a directory holding CoNLL files "
        "train.txt, dev.txt and test.txt.",
    )
    checkpoint: str = option(
        None,
        "BERT checkpoint directory (Hugging Face or keras-hub preset); default: "
        "all-MiniLM-L6-v2 from the kerapos cache.",
        kind="string",
    )
    max_length: int = option(
        128,
        "Training length in WordPieces, [CLS] and [SEP] included (longer inputs are cut).",
        minimum=3,
    )
    extend_positions_to: int = option(
        0,
        "Grow the checkpoint's position table to this many positions before fine-tuning "
        "(0: keep it).",
        minimum=0,
    )
    extension_method: str = option(
        "interpolate",
        "How the position table grows: interpolate the trained rows or copy them.",
        choices=EXTEND_METHODS,
    )
    lora_rank: int = option(
        0, "0: fine-tune every weight. >0: LoRA adapters of this rank on the attention query/value "
        "projections; the rest of the encoder is frozen, the head trains.", minimum=0,
    )
    gradient_accumulation_steps: int = option(
        1, "Average gradients over this many batches per update (1: none).", minimum=1
    )
    pooling: str = option(
        "pooled",
        "classification head input: the encoder's pooler output or the [CLS] token.",
        choices=bert_tasks.POOLING,
    )
    dropout: float = option(0.1, "Dropout before the task head.", minimum=0.0, below=1.0)
    validation_fraction: float = option(
        0.1, "classification: fraction of TRAIN held out for validation.", above=0.0, below=1.0
    )
    max_train_examples: int = option(
        0, "Train on the first N training examples only (0: all); the splits come in a seeded "
        "order, so the subset is deterministic.", minimum=0,
    )
    max_test_examples: int = option(
        0, "Validate and test on the first N examples of each (0: all).", minimum=0
    )
    eval_full_length: bool = option(
        False,
        "classification: also evaluate untruncated texts (up to the model's possibly "
        "extended length), reported as test_accuracy['full'].",
    )
    epochs: int = override(3)
    learning_rate: float = override(5e-5)
    warmup_fraction: float = override(0.1)
    patience: int = override(1)
    model_dir: str = override("runs/finetune_bert")
    model_name: str = override("bert_classifier")

    def related_problems(self):
        yield from super().related_problems()
        if 0 < self.extend_positions_to < self.max_length:
            yield (f"`extend_positions_to`={self.extend_positions_to} is shorter than "
                   f"`max_length`={self.max_length}; extend to at least the training length")
        if self.gradient_accumulation_steps > 1 and self.strategy in REPLICATED_STRATEGIES:
            # Keras 3.15 applies accumulated gradients inside a cond, where
            # MirroredStrategy's cross-replica merge_call is not allowed.
            yield (f"`gradient_accumulation_steps`={self.gradient_accumulation_steps} does not "
                   f"work with `strategy`={self.strategy} in Keras 3 (TensorFlow backend); use "
                   "`strategy`=default or one_device, or a larger `batch_size` instead")
        if self.task == "token_classification":
            if self.dataset not in TOKEN_DATASETS and not pathlib.Path(self.dataset).is_dir():
                yield (f"`dataset`={self.dataset!r}: token_classification takes "
                       f"{' or '.join(TOKEN_DATASETS)}, or a directory holding CoNLL files "
                       f"{', '.join(CONLL_FILES.values())}")
            if self.eval_full_length:
                yield ("`eval_full_length` applies to `task`=classification only (token "
                       "classification is evaluated at `max_length`)")
        if self.checkpoint is not None and not pathlib.Path(self.checkpoint).is_dir():
            yield (f"`checkpoint`={self.checkpoint!r} is not a directory; pass a Hugging Face "
                   "BERT directory or a keras-hub preset (leave it unset for all-MiniLM-L6-v2)")


def run(options, command=None):
    """Fine-tunes, evaluates, exports; returns the results dict.

    Writes under `options.model_dir`: TensorBoard logs (`logs/`), the
    fault-tolerance backup (`backup/`, removed after a finished run), the
    best-epoch weights, `model.keras` (the integer model; Keras saves LoRA
    adapters merged into their kernels), `results.json` and, given
    `command`, `command.txt`; and a new version under
    `options.export_dir/options.model_name/`.

    Raises:
        ValueError: bad options, data or checkpoint (the message says which
            and how to fix it; `kerapos.training.options.OptionsError`,
            `kerapos.data.sources.DataError` and
            `kerapos.checkpoints.bert.CheckpointError` are ValueErrors).
    """
    return skeleton.run(_FinetuneTask(options), command)


class _FinetuneTask(skeleton.Task):
    fault_tolerant = True
    tensorboard_points = 20
    log_summary = True
    expected_warnings = (skeleton.RAN_OUT_OF_DATA,)  # untruncated length buckets

    @property
    def classification(self):
        return self.options.task == "classification"

    @property
    def gradient_accumulation_steps(self):
        steps = self.options.gradient_accumulation_steps
        return steps if steps > 1 else None

    def prepare(self, context):
        options = self.options
        logging.info(f"[kerapos] loading {options.dataset} ...")
        self.data = _load_classification(options) if self.classification else _load_token_data(options)
        logging.info(f"[kerapos] data: {self.data.info['source']} {self.data.info['counts']}")
        self.checkpoint = pathlib.Path(options.checkpoint or bert.default_checkpoint())
        self.label_names = list(
            self.data.class_names if self.classification else self.data.label_names
        )

    def build_model(self, context, name):
        options = self.options
        logging.info(f"[kerapos] loading checkpoint {self.checkpoint} ...")
        encoder, self.tokenizer = bert.load_bert_checkpoint(self.checkpoint)
        self.positions_note = "not extended"
        if options.extend_positions_to:
            encoder, self.positions_note = bert_tasks.extend_positions(
                encoder, options.extend_positions_to, options.extension_method
            )
        self.capacity = bert_tasks.position_capacity(encoder)
        if self.capacity is not None and options.max_length > self.capacity:
            raise ValueError(
                f"`max_length`={options.max_length} exceeds the encoder's {self.capacity} "
                f"positions; add `extend_positions_to`={options.max_length} (or more)"
            )
        if self.classification:
            model = bert_tasks.build_sequence_classifier(
                encoder, len(self.label_names), options.pooling, options.dropout
            )
        else:
            model = bert_tasks.build_token_classifier(
                encoder, len(self.label_names), options.dropout
            )
        if options.lora_rank:
            bert_tasks.enable_lora(encoder, options.lora_rank)
        logging.info(f"[kerapos] positions: {self.positions_note}")
        return model

    def build_inputs(self, context, name):
        options, data = self.options, self.data
        self.pipeline = pipeline = _Pipeline(self.tokenizer, options)
        if self.classification:
            train = pipeline.texts(data.train, options.max_length, shuffle=True)
            validation = pipeline.texts(data.validation, options.max_length)
        else:
            label_to_id = {name: index for index, name in enumerate(self.label_names)}
            train = pipeline.words(data.train, label_to_id, shuffle=True)
            validation = pipeline.words(data.validation, label_to_id)
        return skeleton.Inputs(
            train=train,
            validation=validation,
            steps_per_epoch=math.ceil(len(data.train) / options.batch_size),
            epochs=options.epochs,
            examples=len(data.train),
        )

    def compile_arguments(self):
        if self.classification:
            return dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        # Pieces other than a word's first carry sample weight 0 (IGNORE_LABEL):
        # the loss averages over the weighted (labelled) pieces only.
        return dict(
            loss=keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight"),
            weighted_metrics=["accuracy"],
        )

    def evaluation_lengths(self, name):
        lengths = [(str(self.options.max_length), self.options.max_length)]
        if self.options.eval_full_length:
            lengths.append(("full", self.capacity))  # None: no table, nothing to cut
        return lengths

    def evaluate_length(self, context, trained, key, length):
        test = self.data.test
        batches = (
            self.pipeline.texts(test, length) if length else self.pipeline.untruncated_texts(test)
        )
        accuracy = float(trained.model.evaluate(batches, verbose=0, return_dict=True)["accuracy"])
        logging.info(f"[kerapos] test accuracy @ {key:>5} tokens: {accuracy:.4f}")
        return accuracy

    def evaluate(self, context, trained):
        if self.classification:
            return {"test_accuracy": super().evaluate(context, trained)}
        return _evaluate_token_classifier(
            trained.model, self.pipeline, self.data.test, self.label_names, self.options
        )

    @property
    def serve_max_length(self):
        return self.capacity or self.options.max_length

    def export(self, context, trained):
        options = self.options
        base_path = pathlib.Path(options.export_dir) / options.model_name
        if self.classification:
            export_path = export_bert_classifier(
                trained.model, self.tokenizer, base_path, self.serve_max_length
            )
        else:
            export_path = export_bert_token_classifier(
                trained.model, self.tokenizer, self.label_names, base_path, self.serve_max_length
            )
        logging.info(f"[kerapos] exported {export_path}")
        keras_path = context.output_dir / KERAS_MODEL_FILE
        with warnings.catch_warnings(), atomic.staged(keras_path) as tmp:
            # Keras warns that it saves the optimizer's state; that is intended.
            warnings.filterwarnings("ignore", message=".*optimizer.*")
            trained.model.save(str(tmp))
        return {"export": str(export_path), "keras_model": str(keras_path)}

    def record(self, context, trained, scores, exports):
        options, data, model = self.options, self.data, trained.model
        self.scores = scores
        self.results = {
            "task": options.task,
            "checkpoint": str(self.checkpoint),
            "max_length": options.max_length,
            "extend_positions_to": options.extend_positions_to or None,
            "extension_method": options.extension_method if options.extend_positions_to else None,
            "positions": self.positions_note,
            "position_capacity": self.capacity,
            "lora_rank": options.lora_rank,
            "trainable_parameters": _count(model.trainable_weights),
            "total_parameters": _count(model.weights),
            "dataset": {
                # Brown's per-file lists would swamp the file; they are in data.info.
                **{k: v for k, v in data.info.items() if k not in ("files", "categories")},
                ("class_names" if self.classification else "label_names"): self.label_names,
            },
            **scores,
            **skeleton.fit_results(context, trained),
            "export": exports.get("export"),
            "serve_max_length": self.serve_max_length,
            "keras_model": exports.get("keras_model"),
            "flags": dataclasses.asdict(options),
        }

    def finish(self, context):
        options, scores, log_dir = self.options, self.scores, context.log_dir()
        with tf.summary.create_file_writer(str(log_dir / "test")).as_default():
            if "test_accuracy" in scores:
                for key, value in scores["test_accuracy"].items():
                    tf.summary.scalar(f"test_accuracy_{key}", value, step=0)
                test_metrics = {
                    f"test_accuracy_{k}": f"test accuracy @ {k}" for k in scores["test_accuracy"]
                }
            else:
                tf.summary.scalar("test_token_accuracy", scores["token_accuracy"], step=0)
                test_metrics = {"test_token_accuracy": "test token accuracy"}
                if scores["entity_f1"] is not None:
                    tf.summary.scalar("test_entity_f1", scores["entity_f1"], step=0)
                    test_metrics["test_entity_f1"] = "test entity F1"
        kp_callbacks.write_hparams(
            log_dir,
            {
                "task": options.task,
                "max_length": options.max_length,
                "extend_positions_to": options.extend_positions_to,
                "extension_method": options.extension_method,
                "lora_rank": options.lora_rank,
                "learning_rate": options.learning_rate,
                "batch_size": options.batch_size,
                "gradient_accumulation_steps": options.gradient_accumulation_steps,
                "mixed_precision": options.mixed_precision,
            },
            {"epoch_accuracy": "accuracy", **test_metrics},
        )


class _Pipeline:
    """`tf.data` pipelines: raw text / words in, integer encoder batches out."""

    def __init__(self, tokenizer, options):
        self.tokenizer = tokenizer
        self.options = options
        self.unknown_id = tokenizer.token_to_id(getattr(tokenizer, "oov_token", "[UNK]"))

    def _maybe_shuffle(self, dataset, size, shuffle):
        if shuffle:
            dataset = dataset.shuffle(size, seed=self.options.seed, reshuffle_each_iteration=True)
        return dataset

    def texts(self, split, max_length, shuffle=False):
        """`({"token_ids", "segment_ids", "padding_mask"}, label)` batches of a `Split`.

        `max_length` None keeps every piece of every text.
        """
        tokenizer = self.tokenizer

        def pack(texts, labels):
            pieces = tokenizer(sanitize_text(texts))  # ragged [batch, None]
            inputs = bert_tasks.pack_texts(
                pieces, max_length, tokenizer.cls_token_id, tokenizer.sep_token_id
            )
            return inputs, labels

        dataset = tf.data.Dataset.from_tensor_slices(
            (tf.constant(split.texts.tolist(), tf.string), tf.constant(split.labels, tf.int64))
        )
        dataset = self._maybe_shuffle(dataset, len(split), shuffle).batch(self.options.batch_size)
        return dataset.map(pack, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def untruncated_texts(self, split):
        """Like `texts(split, None)`, in batches sized by length: attention
        memory grows with batch x length^2, so a batch of reviews longer than
        512 pieces is 4x smaller per doubling of length, so a batch holds no
        more than `batch_size` rows of 512 pieces do (or is a single review)."""
        tokenizer, batch_size = self.tokenizer, self.options.batch_size
        boundaries = [UNTRUNCATED_BUCKET_LENGTH * 2**k for k in range(UNTRUNCATED_BUCKETS)]
        batch_sizes = [max(1, batch_size // 4**k) for k in range(UNTRUNCATED_BUCKETS + 1)]

        def tokenize(text, label):
            pieces = tokenizer(sanitize_text(text))  # [pieces]
            return pieces, tf.shape(pieces)[0], label

        def pack(pieces, lengths, labels):
            pieces = tf.RaggedTensor.from_tensor(pieces, lengths=lengths)  # ragged [batch, None]
            inputs = bert_tasks.pack_texts(
                pieces, None, tokenizer.cls_token_id, tokenizer.sep_token_id
            )
            return inputs, labels

        dataset = tf.data.Dataset.from_tensor_slices(
            (tf.constant(split.texts.tolist(), tf.string), tf.constant(split.labels, tf.int64))
        )
        dataset = dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.bucket_by_sequence_length(
            lambda pieces, length, label: length, boundaries, batch_sizes
        )
        return dataset.map(pack, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def words(self, sentences, label_to_id, shuffle=False):
        """`(inputs, token_labels, sample_weight)` batches of CoNLL sentences.

        Labels sit on each word's first WordPiece; every other position has
        label 0 and weight 0 (`IGNORE_LABEL` in `pack_words`).
        """
        tokenizer, max_length = self.tokenizer, self.options.max_length

        def pack(words, word_label_ids):
            inputs, _, token_labels = bert_tasks.pack_words(
                tokenizer(words), max_length, tokenizer.cls_token_id,
                tokenizer.sep_token_id, self.unknown_id, word_label_ids,
            )
            labelled = tf.not_equal(token_labels, conll.IGNORE_LABEL)  # [batch, seq]
            return inputs, tf.maximum(token_labels, 0), tf.cast(labelled, tf.float32)

        words = _ragged([sentence.tokens for sentence in sentences], tf.string)
        label_ids = _ragged(
            [[label_to_id[tag] for tag in sentence.tags] for sentence in sentences], tf.int32
        )
        dataset = tf.data.Dataset.from_tensor_slices((words, label_ids))
        dataset = self._maybe_shuffle(dataset, len(sentences), shuffle)
        dataset = dataset.ragged_batch(self.options.batch_size)
        return dataset.map(pack, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def word_batches(self, sentences):
        """Ragged string `[batch, words]` batches of the sentences' words, in order."""
        words = _ragged([sentence.tokens for sentence in sentences], tf.string)
        return tf.data.Dataset.from_tensor_slices(words).ragged_batch(self.options.batch_size)


def _ragged(rows, dtype):
    """A ragged `[len(rows), None]` tensor from lists (fast for many rows)."""
    flat = [value for row in rows for value in row]
    return tf.RaggedTensor.from_row_lengths(
        tf.constant(flat, dtype=dtype, shape=[len(flat)]), [len(row) for row in rows]
    )


def _evaluate_token_classifier(model, pipeline, test, label_names, options):
    """Entity P/R/F1 (BIO label sets), token accuracy, truncated-word count.

    Words cut by truncation at `max_length` count as predicted "O" (or, for
    label sets without "O", as wrong).
    """
    tokenizer = pipeline.tokenizer

    @tf.function
    def predict(words):
        return bert_tasks.predict_word_label_ids(model, tokenizer, words, options.max_length)

    fallback = "O" if "O" in label_names else ""
    predicted, truncated = [], 0
    for words in pipeline.word_batches(test):
        for row in predict(words).to_list():
            truncated += sum(label_id == bert_tasks.NO_LABEL for label_id in row)
            predicted.append(
                [label_names[i] if i != bert_tasks.NO_LABEL else fallback for i in row]
            )
    true_tags = [sentence.tags for sentence in test]
    scores = {
        "token_accuracy": ner_metrics.token_accuracy(true_tags, predicted),
        "test_words_truncated": truncated,
        "entity_f1": None,
        "entity_scores": None,
    }
    if _is_bio(label_names):
        entity_scores = ner_metrics.entity_scores(true_tags, predicted)
        scores["entity_f1"] = entity_scores["overall"]["f1"]
        scores["entity_scores"] = entity_scores
    else:
        scores["entity_scores_note"] = "labels are not BIO tags: no entities to score"
    logging.info(f"[kerapos] test token accuracy {scores['token_accuracy']:.4f}, entity F1 "
                 f"{scores['entity_f1']}")
    return scores


def _is_bio(label_names):
    return any(name != "O" for name in label_names) and all(
        name == "O" or name[:2] in ("B-", "I-") for name in label_names
    )


def _load_classification(options):
    data = load_classification_data(
        options.dataset, validation_fraction=options.validation_fraction, seed=options.seed
    )
    return _limit_splits(data, options)


def _load_token_data(options):
    if options.dataset in TOKEN_DATASETS:
        data = TOKEN_DATASETS[options.dataset](seed=options.seed)
    else:
        data = _read_conll_directory(pathlib.Path(options.dataset))
    return _limit_splits(data, options)


def _limit_splits(data, options):
    """Keeps the first `max_train_examples` training and `max_test_examples`
    validation and test examples (0: all), and records the counts."""
    data.train = _first(data.train, options.max_train_examples)
    data.validation = _first(data.validation, options.max_test_examples)
    data.test = _first(data.test, options.max_test_examples)
    _record_counts(data)
    return data


def _read_conll_directory(directory):
    splits = {}
    for split, file_name in CONLL_FILES.items():
        splits[split] = conll.read_conll(directory / file_name)
        if not splits[split]:
            raise conll.ConllError(
                f"{directory / file_name} holds no sentences; each of "
                f"{', '.join(CONLL_FILES.values())} needs at least one"
            )
    tags = {tag for sentences in splits.values() for sentence in sentences for tag in sentence.tags}
    # "O" first (id 0) when present, then the other tags sorted.
    label_names = tuple(sorted(tags, key=lambda tag: (tag != "O", tag)))
    return conll.TokenClassificationData(
        **splits,
        label_names=label_names,
        info={
            "name": directory.name,
            "source": f"dir:{directory}",
            "path": str(directory),
            "split": "as given: " + ", ".join(f"{s} = {f}" for s, f in CONLL_FILES.items()),
            "counts": {split: len(sentences) for split, sentences in splits.items()},
        },
    )


def _first(examples, limit):
    """The first `limit` examples (all for 0): splits are already in a seeded order."""
    if not limit or len(examples) <= limit:
        return examples
    if isinstance(examples, Split):
        return Split(examples.texts[:limit], examples.labels[:limit])
    return examples[:limit]


def _record_counts(data):
    counts = {split: len(getattr(data, split)) for split in ("train", "validation", "test")}
    if counts != data.info["counts"]:
        data.info["counts_before_limits"] = data.info["counts"]
    data.info["counts"] = counts
    if not all(counts.values()):
        raise ValueError(
            f"a data split is empty ({counts}); every split needs at least one example"
        )


def _count(weights):
    return int(sum(np.prod(weight.shape) for weight in weights))
