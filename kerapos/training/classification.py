"""Text classification end to end: data -> tokenizer -> model -> train -> evaluate -> export.

`run(options)` is what `trainers/train_classifier.py` calls; it is importable
so the same pipeline runs from notebooks and tests.
"""

import contextlib
import dataclasses
import pathlib
import time
import warnings

import kerapos  # noqa: F401
import keras
import tensorflow as tf

from kerapos import positions
from kerapos.data import text_pipeline
from kerapos.data.imdb import load_classification_data
from kerapos.export import export_text_classifier
from kerapos.models import CLASSIFIERS
from kerapos.models import build_classifier_from_options
from kerapos.training import callbacks as kp_callbacks
from kerapos.training import images
from kerapos.training import runtime
from kerapos.training.strategy import enable_multi_worker_fit
from kerapos.training.strategy import get_strategy
from kerapos.training.strategy import is_chief
from kerapos.training.strategy import is_multi_worker
from kerapos.training.strategy import worker_id

MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
EXTENSION_METHODS = ("interpolate", "copy")
POOLING = ("mean", "first")


@dataclasses.dataclass
class ClassifierOptions:
    """Everything a classification run depends on (the trainer's flags)."""

    model: str = "lstm"
    position: str = "sinusoidal"
    position_config: dict = dataclasses.field(default_factory=dict)
    dataset: str = "imdb"
    validation_fraction: float = 0.1
    max_length: int = 256
    eval_max_lengths: tuple = (128, 256, 512)
    serve_max_length: int | None = None
    vocab_size: int = 20000
    epochs: int = 4
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.05
    patience: int = 2
    strategy: str = "default"
    tpu: str | None = None
    mixed_precision: str = "none"
    jit_compile: bool = False
    seed: int = 0
    model_dir: str = "runs/classifier"
    export_dir: str = "saved_models"
    model_name: str = "imdb_classifier"
    learned_extension: str = "interpolate"
    # Transformer sizes (ignored by the LSTM).
    num_layers: int = 2
    hidden_dim: int = 128
    num_heads: int = 4
    intermediate_dim: int = 256
    dropout: float = 0.1
    word_dropout: float = 0.0
    pooling: str = "mean"
    logn_scaling: bool = False

    def validate(self):
        """Raises ValueError naming every bad value and the valid choices."""
        problems = []

        def choose(name, valid):
            value = getattr(self, name)
            if value not in valid:
                problems.append(f"--{name}={value!r} is not one of {', '.join(map(str, valid))}")

        choose("model", sorted(CLASSIFIERS))
        choose("position", positions.available())
        choose("mixed_precision", MIXED_PRECISION)
        choose("learned_extension", EXTENSION_METHODS)
        choose("pooling", POOLING)
        for name in ("max_length", "vocab_size", "epochs", "batch_size", "num_layers",
                     "hidden_dim", "num_heads", "intermediate_dim"):
            if int(getattr(self, name)) < 1:
                problems.append(f"--{name} must be >= 1, got {getattr(self, name)}")
        if any(int(length) < 1 for length in self.eval_max_lengths):
            problems.append(f"--eval_max_lengths must all be >= 1, got {list(self.eval_max_lengths)}")
        if self.serve_max_length is not None and self.serve_max_length < 1:
            problems.append(f"--serve_max_length must be >= 1, got {self.serve_max_length}")
        if not 0.0 < self.validation_fraction < 1.0:
            problems.append(f"--validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.learning_rate <= 0:
            problems.append(f"--learning_rate must be > 0, got {self.learning_rate}")
        for name in ("dropout", "word_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if (
            self.model == "lstm"
            and self.position in positions.available()
            and positions.where(self.position) == "attention"
        ):
            problems.append(
                f"--position={self.position} acts inside attention; the lstm model takes "
                "none, sinusoidal or learned (use --model=transformer)"
            )
        if problems:
            raise ValueError("Invalid options:\n  " + "\n  ".join(problems))


def run(options):
    """Trains, evaluates at every length, exports; returns the results dict.

    Writes under `options.model_dir`: TensorBoard logs (`logs/`), the
    fault-tolerance backup (`backup/`, removed after a finished run), the
    best-epoch weights, `classifier.keras` and `results.json`; and a new
    version under `options.export_dir/options.model_name/`.
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

    print(f"[kerapos] loading {options.dataset} ...", flush=True)
    data = load_classification_data(
        options.dataset, validation_fraction=options.validation_fraction, seed=options.seed
    )
    print(f"[kerapos] data: {data.info['source']} {data.info['counts']}", flush=True)
    vectorizer = text_pipeline.build_vectorizer(data.train.texts, options.vocab_size)
    train_ids = text_pipeline.tokenize(vectorizer, data.train.texts)
    validation_ids = text_pipeline.tokenize(vectorizer, data.validation.texts)
    test_ids = text_pipeline.tokenize(vectorizer, data.test.texts)
    longest_test = int(tf.reduce_max(test_ids.row_lengths())) if len(data.test.labels) else 1

    def dataset(ids, labels, length, shuffle=False):
        return text_pipeline.make_token_dataset(
            ids, labels, options.batch_size, max_length=length, shuffle=shuffle, seed=options.seed
        )

    train_data = dataset(train_ids, data.train.labels, options.max_length, shuffle=True)
    validation_data = dataset(validation_ids, data.validation.labels, options.max_length)
    steps_per_epoch = int(train_data.cardinality()) if train_data.cardinality() > 0 else None
    if steps_per_epoch is None:
        steps_per_epoch = sum(1 for _ in train_data)
    num_classes = len(data.class_names)

    with strategy.scope():
        model = build_classifier_from_options(options, vectorizer.vocabulary_size(), num_classes)
        model.compile(
            optimizer=keras.optimizers.AdamW(
                runtime.warmup_cosine_schedule(
                    options.learning_rate, steps_per_epoch * options.epochs,
                    steps_per_epoch * options.epochs * options.warmup_fraction, alpha=0.05,
                ),
                weight_decay=0.01,
                clipnorm=1.0,
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=options.jit_compile,
        )
    enable_multi_worker_fit(model, strategy, train_data.element_spec)
    model.summary(print_fn=lambda line, **_: print(line, flush=True))

    callbacks = kp_callbacks.training_callbacks(
        model_dir, own_dir, chief, steps_per_epoch, options.patience
    )
    started = time.time()
    with _bucketed_batches():
        history = _fit(model, train_data, validation_data, options, callbacks)
    train_seconds = time.time() - started

    epochs_run = len(history.history.get("loss", []))
    examples_per_second = (
        len(data.train.labels) * epochs_run / train_seconds if train_seconds > 0 and epochs_run else None
    )

    evaluation_strategy = strategy
    if is_multi_worker(strategy):
        # Exporting and evaluating need no other worker: each does them on a
        # copy outside the strategy, so no worker waits on the chief's export.
        model = _local_copy(model)
        evaluation_strategy = tf.distribute.get_strategy()
    serve_max_length = options.serve_max_length or options.max_length
    export_path = None
    if chief:
        export_path = export_text_classifier(
            vectorizer, model, pathlib.Path(options.export_dir) / options.model_name, serve_max_length
        )
        _save_keras_text_model(vectorizer, model, serve_max_length, model_dir / "classifier.keras")
        print(f"[kerapos] exported {export_path}", flush=True)

    test_accuracy = {}
    eval_lengths = sorted({int(n) for n in options.eval_max_lengths})
    for length in [*eval_lengths, None]:
        key = "full" if length is None else str(length)
        needed = longest_test if length is None else length
        evaluated = _model_for_length(model, options, evaluation_strategy, needed)
        with _bucketed_batches():
            result = evaluated.evaluate(
                dataset(test_ids, data.test.labels, length), verbose=0, return_dict=True
            )
        test_accuracy[key] = float(result["accuracy"])
        print(f"[kerapos] test accuracy @ {key:>5} tokens: {test_accuracy[key]:.4f}", flush=True)

    results = {
        "model": options.model,
        "position": options.position,
        "position_config": options.position_config,
        "max_length": options.max_length,
        "dataset": {**data.info, "class_names": list(data.class_names)},
        "test_accuracy": test_accuracy,
        "best_validation_accuracy": float(max(history.history.get("val_accuracy", [float("nan")]))),
        "epochs_run": epochs_run,
        "train_seconds": train_seconds,
        "examples_per_second": examples_per_second,
        "num_replicas": strategy.num_replicas_in_sync,
        "device": runtime.device_description(),
        "export": str(export_path) if export_path else None,
        "serve_max_length": serve_max_length,
        "learned_extension": options.learned_extension if options.position == "learned" else None,
        "longest_test_tokens": longest_test,
        "flags": dataclasses.asdict(options),
    }
    if chief:
        _write_summaries(log_dir, model, options, test_accuracy)
        kp_callbacks.write_json_atomically(model_dir / "results.json", results)
        print(f"[kerapos] results: {model_dir / 'results.json'}", flush=True)
    return results


@contextlib.contextmanager
def _bucketed_batches():
    """Bucketed batches have no fixed count, so Keras learns an epoch's length
    by running out of data once: expected here, so its warning is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


def _fit(model, train_data, validation_data, options, callbacks):
    return model.fit(
        train_data,
        validation_data=validation_data,
        epochs=options.epochs,
        callbacks=callbacks,
        shuffle=False,  # tf.data already reshuffles every epoch
        verbose=runtime.fit_verbosity(),
    )


def _local_copy(model):
    """The trained model rebuilt outside any strategy, with the same weights."""
    local = keras.models.clone_model(model)
    local.set_weights(model.get_weights())
    local.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return local


def _model_for_length(model, options, strategy, length):
    """The trained model, or for a learned table shorter than `length` a copy
    whose table is extended to `length` (the trained model stays untouched)."""
    if options.position != "learned":
        return model
    table = model.get_layer("position_encoding")
    if length <= table.max_length:
        return model
    with strategy.scope():
        extended = keras.models.clone_model(model)
        extended.set_weights(model.get_weights())
        extended.get_layer("position_encoding").extend_to(length, method=options.learned_extension)
        extended.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return extended


def _save_keras_text_model(vectorizer, model, max_length, path):
    """`classifier.keras`: raw strings in, probabilities out (padded to max_length)."""
    fixed_vectorizer = keras.layers.TextVectorization(
        vocabulary=vectorizer.get_vocabulary(),
        output_sequence_length=max_length,
        name="vectorizer",
    )
    text = keras.Input(shape=(), dtype="string", name="text")
    text_model = keras.Model(text, model(fixed_vectorizer(text)), name="text_classifier")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    text_model.save(tmp)
    tmp.replace(path)


def _write_summaries(log_dir, model, options, test_accuracy):
    with tf.summary.create_file_writer(str(log_dir / "test")).as_default():
        for key, value in test_accuracy.items():
            tf.summary.scalar(f"test_accuracy_{key}", value, step=0)
    kp_callbacks.write_hparams(
        log_dir,
        {
            "model": options.model,
            "position": options.position,
            "max_length": options.max_length,
            "vocab_size": options.vocab_size,
            "learning_rate": options.learning_rate,
            "batch_size": options.batch_size,
            "mixed_precision": options.mixed_precision,
            "logn_scaling": options.logn_scaling,
        },
        {"epoch_accuracy": "accuracy", **{f"test_accuracy_{k}": f"test accuracy @ {k}" for k in test_accuracy}},
    )
    matrix = images.position_similarity(model, options.position, min(options.max_length, 256))
    if matrix is not None:
        kp_callbacks.write_matrix_image(
            log_dir, "position_similarity", matrix,
            description=f"{options.position}: similarity of positions 0..{len(matrix) - 1}",
        )
