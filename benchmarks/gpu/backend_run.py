"""What the two GPU benchmark scripts beside this file share (`bert_finetune.py`,
`classifier_train.py`): a ``prepare`` half on TensorFlow that writes a bundle,
a ``train`` half on any Keras backend that writes results.json and a
command.txt holding both halves' command lines.

The scripts run as ``python benchmarks/gpu/<script>.py prepare|train ...``
from a checkout. Python then puts this folder on `sys.path`, not the
checkout's root, so importing this module adds the root too: the scripts
import the checkout's kerapos also where it is not installed (the GPU
machines).
"""

import json
import pathlib
import shlex
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

from absl import app  # noqa: E402  (after the sys.path set-up above)
from absl import flags  # noqa: E402

# kerapos sets the Keras backend and quiets TensorFlow before keras imports it.
# isort: off
import kerapos  # noqa: E402, F401
import keras  # noqa: E402

# isort: on
from kerapos.training import runtime  # noqa: E402
from kerapos.utils import atomic  # noqa: E402

COMMANDS = ("prepare", "train")


def script_path(file):
    """The path of script `file` from the checkout's root, e.g.
    "benchmarks/gpu/bert_finetune.py" (what command.txt shows)."""
    return pathlib.Path(file).resolve().relative_to(REPO_ROOT).as_posix()


def command_line(script):
    """This process's command line, as `python <script> ...`."""
    return " ".join([f"python {script}", *map(shlex.quote, sys.argv[1:])])


def compile_classifier(
    model, num_examples, *, batch_size, epochs, learning_rate, warmup_fraction, weight_decay, alpha=0.0
):
    """Compiles `model` as the trainers do: AdamW with linear warm-up over
    `warmup_fraction` of the steps then cosine decay to `alpha * learning_rate`,
    clipnorm 1.0, sparse categorical cross-entropy and accuracy."""
    total_steps = -(-num_examples // batch_size) * epochs
    model.compile(
        optimizer=keras.optimizers.AdamW(
            runtime.warmup_cosine_schedule(
                learning_rate, total_steps, total_steps * warmup_fraction, alpha=alpha
            ),
            weight_decay=weight_decay,
            clipnorm=1.0,
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def fit(model, train, validation, *, batch_size, epochs, patience):
    """Fits on the arrays `train = (x, y)`, shuffled, with early stopping on
    `validation`'s accuracy (best weights restored).

    Returns:
        the run's results.json entries: `best_validation_accuracy`,
        `epochs_run`, `train_seconds`, `examples_per_second`,
        `keras_backend` and `device`.
    """
    started = time.time()
    history = model.fit(
        *train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=validation,
        shuffle=True,
        callbacks=[keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=patience, restore_best_weights=True
        )],
        verbose=runtime.fit_verbosity(),
    )
    train_seconds = time.time() - started
    epochs_run = len(history.history["loss"])
    return {
        "best_validation_accuracy": float(max(history.history["val_accuracy"])),
        "epochs_run": epochs_run,
        "train_seconds": train_seconds,
        "examples_per_second": len(train[1]) * epochs_run / train_seconds,
        "keras_backend": keras.backend.backend(),
        "device": runtime.device_description(),
    }


def accuracy_at_lengths(model, test_split, lengths, batch_size):
    """`{key: accuracy}` on `test_split(length)` (arrays `(x, y)`) for each
    `key, length` of `lengths` (a dict), each printed as it is measured."""
    accuracies = {}
    for key, length in lengths.items():
        test_x, test_y = test_split(length)
        result = model.evaluate(test_x, test_y, batch_size=batch_size, verbose=0, return_dict=True)
        accuracies[key] = float(result["accuracy"])
        print(f"[kerapos] test accuracy @ {key:>5} tokens: {accuracies[key]:.4f}", flush=True)
    return accuracies


def write_results(output_dir, results, prepare_command, script):
    """Writes results.json, then command.txt (prepare, then train on this
    Keras backend), each atomically."""
    output_dir = pathlib.Path(output_dir)
    atomic.write_json(output_dir / "results.json", results)
    atomic.write_text(
        output_dir / "command.txt",
        f"{prepare_command}\nKERAS_BACKEND={keras.backend.backend()} {command_line(script)}\n",
    )
    print(f"[kerapos] results: {output_dir / 'results.json'}", flush=True)


def run(define_flags, prepare, train):
    """A script's `__main__`: defines its flags, then runs `prepare(bundle_dir)`
    or `train(bundle_dir, output_dir)` as the command line asks."""
    define_flags()
    app.run(lambda argv: _main(argv, flags.FLAGS, prepare, train))


def _main(argv, flag_values, prepare, train):
    """`prepare` or `train` as argv asks; bad input exits with a message."""
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"give one command: {' | '.join(COMMANDS)}")
    if not flag_values.bundle_dir:
        raise app.UsageError("--bundle_dir is required")
    if argv[1] == "prepare":
        prepare(flag_values.bundle_dir)
        return
    if not flag_values.output_dir:
        raise app.UsageError("--output_dir is required for train")
    if not (pathlib.Path(flag_values.bundle_dir) / "manifest.json").is_file():
        sys.exit(
            f"error: {flag_values.bundle_dir} holds no bundle; "
            f"run `prepare --bundle_dir={flag_values.bundle_dir}` first"
        )
    try:
        train(flag_values.bundle_dir, flag_values.output_dir)
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as error:
        sys.exit(f"error: {error}")
