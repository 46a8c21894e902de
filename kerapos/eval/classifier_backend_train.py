"""The IMDb classifier run on any Keras backend: its GPU figures.

The counterpart of `kerapos.eval.bert_backend_finetune` for
`trainers/train_classifier.py` (the GPU machines this project borrows have JAX
and no TensorFlow). ``prepare`` (TensorFlow, CPU) loads the data with the
trainer's data API and validation carve and turns every review into the ids of
the trainer's `TextVectorization` (vocabulary from the training split only);
``train`` (any Keras backend, no TensorFlow) builds the trainer's model with
`kerapos.models.build_classifier_from_options`, trains it with the trainer's
optimizer, schedule and early stopping, and writes test accuracy at each
``eval_max_lengths`` and untruncated to ``results.json`` + ``command.txt``.

    python -m kerapos.eval.classifier_backend_train prepare --bundle_dir=/tmp/imdb_ids
    KERAS_BACKEND=jax python -m kerapos.eval.classifier_backend_train train \\
        --bundle_dir=/tmp/imdb_ids --output_dir=benchmarks/classification/transformer_t5_512_gpu \\
        '--options={"model": "transformer", "position": "t5", "max_length": 512, "epochs": 3}'

``--options`` takes the trainer's flags by name (`ClassifierOptions`); the ones
not given keep the trainer's defaults, recorded by ``prepare``. Batches are
padded to the evaluated length (the trainer pads each batch to its longest
review; padding is masked). Learned tables are not grown here, so
``position=learned`` is refused.
"""

import dataclasses
import json
import pathlib
import shutil
import time
import types

from absl import app
from absl import flags

import kerapos  # noqa: F401  (Keras backend; TensorFlow only when it is the backend)
import keras
import numpy as np

from kerapos.eval import backend_run
from kerapos.training import runtime

MODULE = "kerapos.eval.classifier_backend_train"
SPLITS = ("train", "validation", "test")

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (in `__main__` only, so importing this
    module beside another absl program defines nothing)."""
    flags.DEFINE_string("bundle_dir", None, "Bundle written by `prepare`, read by `train`.")
    flags.DEFINE_string("dataset", "imdb", "prepare: 'imdb' or a JSON file (as the trainer's --dataset).")
    flags.DEFINE_integer("vocab_size", 20000, "prepare: the vectorizer's vocabulary size (trainer's --vocab_size).")
    flags.DEFINE_string("options", "{}", "train: JSON object of trainer flags, e.g. {\"model\": \"transformer\"}.")
    flags.DEFINE_string("output_dir", None, "train: where results.json and command.txt go.")


def prepare(bundle_dir):
    """Writes ``ids.npz`` (ids per review, labels) and ``manifest.json``."""
    from kerapos.data import text_pipeline
    from kerapos.data.imdb import load_classification_data
    from kerapos.training.classification import ClassifierOptions

    options = ClassifierOptions(dataset=FLAGS.dataset, vocab_size=FLAGS.vocab_size)
    data = load_classification_data(
        options.dataset, validation_fraction=options.validation_fraction, seed=options.seed
    )
    vectorizer = text_pipeline.build_vectorizer(data.train.texts, options.vocab_size)
    id_dtype = np.int16 if vectorizer.vocabulary_size() <= np.iinfo(np.int16).max else np.int32
    arrays = {}
    for split_name in SPLITS:
        split = getattr(data, split_name)
        ids = text_pipeline.tokenize(vectorizer, split.texts)  # ragged [reviews, None]
        arrays[f"{split_name}_ids"] = ids.flat_values.numpy().astype(id_dtype)
        arrays[f"{split_name}_row_lengths"] = ids.row_lengths().numpy().astype(np.int32)
        arrays[f"{split_name}_labels"] = np.asarray(split.labels, np.int8)
    bundle_dir = pathlib.Path(bundle_dir)
    partial = bundle_dir.with_name(bundle_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    np.savez_compressed(partial / "ids.npz", **arrays)
    manifest = {
        "dataset": {**data.info, "class_names": list(data.class_names)},
        "vocabulary_size": int(vectorizer.vocabulary_size()),
        "trainer_options": {
            **dataclasses.asdict(options), "eval_max_lengths": list(options.eval_max_lengths)
        },
        "command": backend_run.command_line(MODULE),
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(bundle_dir, ignore_errors=True)
    partial.rename(bundle_dir)
    print(f"[kerapos] bundle: {bundle_dir}", flush=True)
    return manifest


def pad(ids, row_lengths, max_length=None):
    """First `max_length` ids of each review (None: all), padded with 0: int32 `[reviews, width]`."""
    kept = row_lengths if max_length is None else np.minimum(row_lengths, max_length)
    width = max(1, int(kept.max()) if len(kept) else 1)
    padded = np.zeros((len(row_lengths), width), np.int32)  # [reviews, width]
    starts = np.concatenate([[0], np.cumsum(row_lengths)[:-1]]).astype(np.int64)
    for row, (start, length) in enumerate(zip(starts, kept)):
        padded[row, :length] = ids[start : start + length]
    return padded


def train(bundle_dir, output_dir):
    """Trains and evaluates (see the module docstring); returns the results."""
    from kerapos.models import build_classifier_from_options

    bundle_dir = pathlib.Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    overrides = json.loads(FLAGS.options)
    unknown = sorted(set(overrides) - set(manifest["trainer_options"]))
    if unknown:
        raise ValueError(f"--options names no trainer flag {unknown}; valid: {sorted(manifest['trainer_options'])}")
    options = types.SimpleNamespace(**{**manifest["trainer_options"], **overrides})
    if options.position == "learned":
        raise ValueError("position=learned needs its table grown for long inputs; use trainers/train_classifier.py")
    keras.utils.set_random_seed(options.seed)
    arrays = np.load(bundle_dir / "ids.npz")

    def split(name, max_length):
        ids = pad(arrays[f"{name}_ids"], arrays[f"{name}_row_lengths"], max_length)
        return ids, arrays[f"{name}_labels"].astype(np.int32)

    train_x, train_y = split("train", options.max_length)
    steps_per_epoch = -(-len(train_y) // options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    with runtime.dtype_policy(options.mixed_precision):
        model = build_classifier_from_options(
            options, manifest["vocabulary_size"], len(manifest["dataset"]["class_names"])
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(
                runtime.warmup_cosine_schedule(
                    options.learning_rate, total_steps, total_steps * options.warmup_fraction, alpha=0.05
                ),
                weight_decay=0.01,
                clipnorm=1.0,
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    started = time.time()
    history = model.fit(
        train_x, train_y,
        batch_size=options.batch_size,
        epochs=options.epochs,
        validation_data=split("validation", options.max_length),
        shuffle=True,
        callbacks=[keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=options.patience, restore_best_weights=True
        )],
        verbose=runtime.fit_verbosity(),
    )
    train_seconds = time.time() - started
    epochs_run = len(history.history["loss"])

    test_accuracy = {}
    for length in [*sorted({int(n) for n in options.eval_max_lengths}), None]:
        key = "full" if length is None else str(length)
        test_x, test_y = split("test", length)
        result = model.evaluate(test_x, test_y, batch_size=options.batch_size, verbose=0, return_dict=True)
        test_accuracy[key] = float(result["accuracy"])
        print(f"[kerapos] test accuracy @ {key:>5} tokens: {test_accuracy[key]:.4f}", flush=True)

    results = {
        "model": options.model,
        "position": options.position,
        "position_config": options.position_config,
        "max_length": options.max_length,
        "dataset": manifest["dataset"],
        "test_accuracy": test_accuracy,
        "best_validation_accuracy": float(max(history.history["val_accuracy"])),
        "epochs_run": epochs_run,
        "train_seconds": train_seconds,
        "examples_per_second": len(train_y) * epochs_run / train_seconds,
        "keras_backend": keras.backend.backend(),
        "device": runtime.device_description(),
        "flags": vars(options),
    }
    backend_run.write_results(
        output_dir, results, manifest["command"], MODULE, keras.backend.backend()
    )
    return results


def main(argv):
    backend_run.main(argv, FLAGS, prepare, train)


if __name__ == "__main__":
    define_flags()
    app.run(main)
