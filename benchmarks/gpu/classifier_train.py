"""The IMDb classifier run on any Keras backend: its GPU figures.

The counterpart of `bert_finetune.py` (beside this script) for
`trainers/train_classifier.py` (the GPU machines this project borrows have JAX
and no TensorFlow); benchmark tooling, outside the installable package.
``prepare`` (TensorFlow, CPU) loads the data with the trainer's data API and
validation carve and turns every review into the ids of the trainer's
`TextVectorization` (vocabulary from the training split only);
``train`` (any Keras backend, no TensorFlow) builds the trainer's model with
`kerapos.models.build_classifier_from_options`, trains it with the trainer's
optimizer, schedule and early stopping, and writes test accuracy at each
``eval_max_lengths`` and untruncated to ``results.json`` + ``command.txt``.

    python benchmarks/gpu/classifier_train.py prepare --bundle_dir=/tmp/imdb_ids
    KERAS_BACKEND=jax python benchmarks/gpu/classifier_train.py train \\
        --bundle_dir=/tmp/imdb_ids --output_dir=benchmarks/classification/transformer_t5_512_gpu \\
        '--options={"model": "transformer", "position": "t5", "max_length": 512, "epochs": 3}'

(The records of benchmarks/classification/*_gpu/ were made when this script
was the module `kerapos.eval.classifier_backend_train`; their command.txt
says so.)

``--options`` takes the trainer's flags by name (`ClassifierOptions`); the ones
not given keep the trainer's defaults, recorded by ``prepare``. Batches are
padded to the evaluated length (the trainer pads each batch to its longest
review; padding is masked). Tables that end (``position=learned``) are not
grown here, so such schemes are refused.
"""

import dataclasses
import json
import pathlib
import types

import backend_run  # first: puts the checkout's root on sys.path and sets the Keras backend (see there)
import keras
import numpy as np
from absl import flags

from kerapos import positions
from kerapos.training import runtime
from kerapos.utils import atomic

SCRIPT = backend_run.script_path(__file__)  # "benchmarks/gpu/classifier_train.py"
SPLITS = ("train", "validation", "test")

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (in `__main__` only, so importing this
    module beside another absl program defines nothing)."""
    flags.DEFINE_string("bundle_dir", None, "Bundle written by `prepare`, read by `train`.")
    flags.DEFINE_string("dataset", "imdb", "prepare: 'imdb' or a JSON file (as the trainer's --dataset).")
    flags.DEFINE_integer(
        "vocab_size", 20000, "prepare: the vectorizer's vocabulary size (trainer's --vocab_size)."
    )
    flags.DEFINE_string(
        "options", "{}", "train: JSON object of trainer flags, e.g. {\"model\": \"transformer\"}."
    )
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
    manifest = {
        "dataset": {**data.info, "class_names": list(data.class_names)},
        "vocabulary_size": int(vectorizer.vocabulary_size()),
        "trainer_options": {
            **dataclasses.asdict(options), "eval_max_lengths": list(options.eval_max_lengths)
        },
        "command": backend_run.command_line(SCRIPT),
    }
    with atomic.staged(bundle_dir, directory=True) as partial:
        partial.mkdir()
        np.savez_compressed(partial / "ids.npz", **arrays)
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
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
        raise ValueError(
            f"--options names no trainer flag {unknown}; valid: {sorted(manifest['trainer_options'])}"
        )
    options = types.SimpleNamespace(**{**manifest["trainer_options"], **overrides})
    if positions.scheme(options.position).bounded:
        raise ValueError(
            f"position={options.position} needs its table grown for long inputs; "
            "use trainers/train_classifier.py"
        )
    keras.utils.set_random_seed(options.seed)
    arrays = np.load(bundle_dir / "ids.npz")

    def split(name, max_length):
        ids = pad(arrays[f"{name}_ids"], arrays[f"{name}_row_lengths"], max_length)
        return ids, arrays[f"{name}_labels"].astype(np.int32)

    train_x, train_y = split("train", options.max_length)
    with runtime.dtype_policy(options.mixed_precision):
        model = build_classifier_from_options(
            options, manifest["vocabulary_size"], len(manifest["dataset"]["class_names"])
        )
        backend_run.compile_classifier(
            model, len(train_y), batch_size=options.batch_size, epochs=options.epochs,
            learning_rate=options.learning_rate, warmup_fraction=options.warmup_fraction,
            weight_decay=0.01, alpha=0.05,
        )
    fit_record = backend_run.fit(
        model, (train_x, train_y), split("validation", options.max_length),
        batch_size=options.batch_size, epochs=options.epochs, patience=options.patience,
    )
    lengths = [*sorted({int(n) for n in options.eval_max_lengths}), None]
    test_accuracy = backend_run.accuracy_at_lengths(
        model, lambda length: split("test", length),
        {"full" if length is None else str(length): length for length in lengths},
        options.batch_size,
    )

    results = {
        "model": options.model,
        "position": options.position,
        "position_config": options.position_config,
        "max_length": options.max_length,
        "dataset": manifest["dataset"],
        "test_accuracy": test_accuracy,
        **fit_record,
        "flags": vars(options),
    }
    backend_run.write_results(output_dir, results, manifest["command"], SCRIPT)
    return results


if __name__ == "__main__":
    backend_run.run(define_flags, prepare, train)
