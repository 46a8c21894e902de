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
"""

import dataclasses
import math
import pathlib
import time
import warnings

import kerapos  # noqa: F401
import keras
import numpy as np
import tensorflow as tf

from kerapos.data import conll
from kerapos.data.imdb import Split
from kerapos.data.imdb import load_classification_data
from kerapos.data.text_pipeline import sanitize_text
from kerapos.eval import ner_metrics
from kerapos.export.bert import export_bert_classifier
from kerapos.export.bert import export_bert_token_classifier
from kerapos.layers.learned_position_embedding import EXTEND_METHODS
from kerapos.models import bert
from kerapos.models import bert_tasks
from kerapos.training import callbacks as kp_callbacks
from kerapos.training import runtime
from kerapos.training.flags import MIXED_PRECISION
from kerapos.training.strategy import STRATEGIES
from kerapos.training.strategy import enable_multi_worker_fit
from kerapos.training.strategy import get_strategy
from kerapos.training.strategy import is_chief
from kerapos.training.strategy import worker_id

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
class FinetuneOptions:
    """Everything a fine-tuning run depends on (the trainer's flags)."""

    task: str = "classification"
    dataset: str = "imdb"
    checkpoint: str | None = None  # None: kerapos.models.bert.default_checkpoint()
    max_length: int = 128
    extend_positions_to: int = 0
    extension_method: str = "interpolate"
    lora_rank: int = 0
    gradient_accumulation_steps: int = 1
    pooling: str = "pooled"
    dropout: float = 0.1
    validation_fraction: float = 0.1
    max_train_examples: int = 0
    max_test_examples: int = 0
    eval_full_length: bool = False
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    patience: int = 1
    strategy: str = "default"
    tpu: str | None = None
    mixed_precision: str = "none"
    jit_compile: bool = False
    seed: int = 0
    model_dir: str = "runs/finetune_bert"
    export_dir: str = "saved_models"
    model_name: str = "bert_classifier"

    def validate(self):
        """Raises ValueError naming every bad value and how to fix it."""
        problems = []

        def choose(name, valid):
            value = getattr(self, name)
            if value not in valid:
                problems.append(f"--{name}={value!r} is not one of {', '.join(map(str, valid))}")

        choose("task", TASKS)
        choose("extension_method", EXTEND_METHODS)
        choose("pooling", bert_tasks.POOLING)
        choose("mixed_precision", MIXED_PRECISION)
        choose("strategy", STRATEGIES)
        minimums = {
            "max_length": 3, "epochs": 1, "batch_size": 1, "gradient_accumulation_steps": 1,
            "lora_rank": 0, "extend_positions_to": 0, "max_train_examples": 0,
            "max_test_examples": 0, "patience": 0,
        }
        for name, minimum in minimums.items():
            if int(getattr(self, name)) < minimum:
                problems.append(f"--{name} must be >= {minimum}, got {getattr(self, name)}")
        if 0 < self.extend_positions_to < self.max_length:
            problems.append(
                f"--extend_positions_to={self.extend_positions_to} is shorter than "
                f"--max_length={self.max_length}; extend to at least the training length"
            )
        if self.gradient_accumulation_steps > 1 and self.strategy in REPLICATED_STRATEGIES:
            # Keras 3.15 applies accumulated gradients inside a cond, where
            # MirroredStrategy's cross-replica merge_call is not allowed.
            problems.append(
                f"--gradient_accumulation_steps={self.gradient_accumulation_steps} does not "
                f"work with --strategy={self.strategy} in Keras 3 (TensorFlow backend); use "
                "--strategy=default or one_device, or a larger --batch_size instead"
            )
        if self.learning_rate <= 0:
            problems.append(f"--learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            problems.append(f"--warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.weight_decay < 0:
            problems.append(f"--weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.validation_fraction < 1.0:
            problems.append(f"--validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.task == "token_classification":
            if self.dataset not in TOKEN_DATASETS and not pathlib.Path(self.dataset).is_dir():
                problems.append(
                    f"--dataset={self.dataset!r}: token_classification takes "
                    f"{' or '.join(TOKEN_DATASETS)}, or a directory holding CoNLL files "
                    f"{', '.join(CONLL_FILES.values())}"
                )
            if self.eval_full_length:
                problems.append(
                    "--eval_full_length applies to --task=classification only (token "
                    "classification is evaluated at --max_length)"
                )
        if self.checkpoint is not None and not pathlib.Path(self.checkpoint).is_dir():
            problems.append(
                f"--checkpoint={self.checkpoint!r} is not a directory; pass a Hugging Face "
                "BERT directory or a keras-hub preset (leave it unset for all-MiniLM-L6-v2)"
            )
        if problems:
            raise ValueError("Invalid options:\n  " + "\n  ".join(problems))


def run(options):
    """Fine-tunes, evaluates, exports; returns the results dict.

    Writes under `options.model_dir`: TensorBoard logs (`logs/`), the
    fault-tolerance backup (`backup/`, removed after a finished run), the
    best-epoch weights, `model.keras` (the integer model; Keras saves LoRA
    adapters merged into their kernels) and
    `results.json`; and a new version under
    `options.export_dir/options.model_name/`.

    Raises:
        ValueError: bad options, data or checkpoint (the message says which
            and how to fix it; `kerapos.data.sources.DataError` and
            `kerapos.models.bert.CheckpointError` are ValueErrors).
    """
    options.validate()
    keras.utils.set_random_seed(options.seed)
    with runtime.dtype_policy(options.mixed_precision):
        return _run(options)


def _run(options):
    model_dir = pathlib.Path(options.model_dir)
    strategy = get_strategy(options.strategy, options.tpu)
    chief = is_chief(strategy)
    # Non-chief workers write their TensorBoard/backup files in their own
    # directory so they never race the chief's.
    own_dir = model_dir if chief else model_dir / f"worker-{worker_id(strategy)}"
    log_dir = own_dir / "logs"
    classification = options.task == "classification"

    print(f"[kerapos] loading {options.dataset} ...", flush=True)
    data = _load_classification(options) if classification else _load_token_data(options)
    print(f"[kerapos] data: {data.info['source']} {data.info['counts']}", flush=True)
    checkpoint = pathlib.Path(options.checkpoint or bert.default_checkpoint())
    label_names = list(data.class_names if classification else data.label_names)

    with strategy.scope():
        print(f"[kerapos] loading checkpoint {checkpoint} ...", flush=True)
        encoder, tokenizer = bert.load_bert_checkpoint(checkpoint)
        positions_note = "not extended"
        if options.extend_positions_to:
            encoder, positions_note = bert_tasks.extend_positions(
                encoder, options.extend_positions_to, options.extension_method
            )
        capacity = bert_tasks.position_capacity(encoder)
        if capacity is not None and options.max_length > capacity:
            raise ValueError(
                f"--max_length={options.max_length} exceeds the encoder's {capacity} "
                f"positions; add --extend_positions_to={options.max_length} (or more)"
            )
        if classification:
            model = bert_tasks.build_sequence_classifier(
                encoder, len(label_names), options.pooling, options.dropout
            )
        else:
            model = bert_tasks.build_token_classifier(encoder, len(label_names), options.dropout)
        if options.lora_rank:
            bert_tasks.enable_lora(encoder, options.lora_rank)
        pipeline = _Pipeline(tokenizer, options)
        if classification:
            train_data = pipeline.texts(data.train, options.max_length, shuffle=True)
            validation_data = pipeline.texts(data.validation, options.max_length)
        else:
            label_to_id = {name: index for index, name in enumerate(label_names)}
            train_data = pipeline.words(data.train, label_to_id, shuffle=True)
            validation_data = pipeline.words(data.validation, label_to_id)
        steps_per_epoch = math.ceil(len(data.train) / options.batch_size)
        total_steps = steps_per_epoch * options.epochs
        model.compile(
            optimizer=keras.optimizers.AdamW(
                runtime.warmup_cosine_schedule(
                    options.learning_rate, total_steps, total_steps * options.warmup_fraction
                ),
                weight_decay=options.weight_decay,
                clipnorm=1.0,
                gradient_accumulation_steps=(
                    options.gradient_accumulation_steps
                    if options.gradient_accumulation_steps > 1 else None
                ),
            ),
            **_loss_and_metrics(classification),
            jit_compile=options.jit_compile,
        )
    enable_multi_worker_fit(model, strategy, train_data.element_spec)
    print(f"[kerapos] positions: {positions_note}", flush=True)
    model.summary(print_fn=lambda line, **_: print(line, flush=True))

    callbacks = kp_callbacks.training_callbacks(
        model_dir, own_dir, chief, steps_per_epoch, options.patience
    )
    started = time.time()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=options.epochs,
        callbacks=callbacks,
        shuffle=False,  # tf.data already reshuffles every epoch
        verbose=runtime.fit_verbosity(),
    )
    train_seconds = time.time() - started
    epochs_run = len(history.history.get("loss", []))

    serve_max_length = capacity or options.max_length
    if classification:
        scores = _evaluate_classifier(model, pipeline, data.test, options, capacity)
    else:
        scores = _evaluate_token_classifier(
            model, pipeline, data.test, label_names, options
        )

    export_path = keras_path = None
    if chief:
        if classification:
            export_path = export_bert_classifier(
                model, tokenizer, pathlib.Path(options.export_dir) / options.model_name,
                serve_max_length,
            )
        else:
            export_path = export_bert_token_classifier(
                model, tokenizer, label_names,
                pathlib.Path(options.export_dir) / options.model_name, serve_max_length,
            )
        print(f"[kerapos] exported {export_path}", flush=True)
        keras_path = model_dir / KERAS_MODEL_FILE
        _save_atomically(model, keras_path)

    results = {
        "task": options.task,
        "checkpoint": str(checkpoint),
        "max_length": options.max_length,
        "extend_positions_to": options.extend_positions_to or None,
        "extension_method": options.extension_method if options.extend_positions_to else None,
        "positions": positions_note,
        "position_capacity": capacity,
        "lora_rank": options.lora_rank,
        "trainable_parameters": _count(model.trainable_weights),
        "total_parameters": _count(model.weights),
        "dataset": {
            # Brown's per-file lists would swamp the file; they are in data.info.
            **{k: v for k, v in data.info.items() if k not in ("files", "categories")},
            ("class_names" if classification else "label_names"): label_names,
        },
        **scores,
        "best_validation_accuracy": float(max(history.history.get("val_accuracy", [float("nan")]))),
        "epochs_run": epochs_run,
        "train_seconds": train_seconds,
        "examples_per_second": (
            len(data.train) * epochs_run / train_seconds if train_seconds > 0 and epochs_run else None
        ),
        "num_replicas": strategy.num_replicas_in_sync,
        "device": runtime.device_description(),
        "export": str(export_path) if export_path else None,
        "serve_max_length": serve_max_length,
        "keras_model": str(keras_path) if keras_path else None,
        "flags": dataclasses.asdict(options),
    }
    if chief:
        _write_summaries(log_dir, options, scores)
        kp_callbacks.write_json_atomically(model_dir / "results.json", results)
        print(f"[kerapos] results: {model_dir / 'results.json'}", flush=True)
    return results


def _loss_and_metrics(classification):
    if classification:
        return dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # Pieces other than a word's first carry sample weight 0 (IGNORE_LABEL):
    # the loss averages over the weighted (labelled) pieces only.
    return dict(
        loss=keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight"),
        weighted_metrics=["accuracy"],
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


def _evaluate_classifier(model, pipeline, test, options, capacity):
    """`{"test_accuracy": {str(max_length): ..., "full": ...}}`."""
    lengths = {str(options.max_length): options.max_length}
    if options.eval_full_length:
        lengths["full"] = capacity  # None: no table, nothing to cut
    test_accuracy = {}
    for key, length in lengths.items():
        batches = pipeline.texts(test, length) if length else pipeline.untruncated_texts(test)
        with warnings.catch_warnings():
            # Length buckets have no fixed count; Keras learns it by running out once.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            result = model.evaluate(batches, verbose=0, return_dict=True)
        test_accuracy[key] = float(result["accuracy"])
        print(f"[kerapos] test accuracy @ {key:>5} tokens: {test_accuracy[key]:.4f}", flush=True)
    return {"test_accuracy": test_accuracy}


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
    print(f"[kerapos] test token accuracy {scores['token_accuracy']:.4f}, entity F1 "
          f"{scores['entity_f1']}", flush=True)
    return scores


def _is_bio(label_names):
    return any(name != "O" for name in label_names) and all(
        name == "O" or name[:2] in ("B-", "I-") for name in label_names
    )


def _load_classification(options):
    data = load_classification_data(
        options.dataset, validation_fraction=options.validation_fraction, seed=options.seed
    )
    data.train = _first(data.train, options.max_train_examples)
    data.validation = _first(data.validation, options.max_test_examples)
    data.test = _first(data.test, options.max_test_examples)
    _record_counts(data)
    return data


def _load_token_data(options):
    if options.dataset in TOKEN_DATASETS:
        data = TOKEN_DATASETS[options.dataset](seed=options.seed)
    else:
        data = _read_conll_directory(pathlib.Path(options.dataset))
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


def _save_atomically(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with warnings.catch_warnings():
        # Keras warns that it saves the optimizer's state; that is intended.
        warnings.filterwarnings("ignore", message=".*optimizer.*")
        model.save(tmp)
    tmp.replace(path)


def _write_summaries(log_dir, options, scores):
    with tf.summary.create_file_writer(str(log_dir / "test")).as_default():
        if "test_accuracy" in scores:
            for key, value in scores["test_accuracy"].items():
                tf.summary.scalar(f"test_accuracy_{key}", value, step=0)
            test_metrics = {f"test_accuracy_{k}": f"test accuracy @ {k}" for k in scores["test_accuracy"]}
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
