"""What the backend-neutral benchmark programs share (`bert_backend_finetune`,
`classifier_backend_train`): a ``prepare`` half on TensorFlow that writes a
bundle, a ``train`` half on any Keras backend that writes results.json and a
command.txt holding both halves' command lines."""

import json
import os
import pathlib
import shlex
import sys

from absl import app

COMMANDS = ("prepare", "train")


def command_line(module):
    """This process's command line, as `python -m <module> ...`."""
    return " ".join([f"python -m {module}", *map(shlex.quote, sys.argv[1:])])


def write_results(output_dir, results, prepare_command, module, backend):
    """Writes results.json atomically, then command.txt (prepare, then train)."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    partial = output_dir / "results.json.partial"
    partial.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(partial, output_dir / "results.json")
    (output_dir / "command.txt").write_text(
        f"{prepare_command}\nKERAS_BACKEND={backend} {command_line(module)}\n"
    )
    print(f"[kerapos] results: {output_dir / 'results.json'}", flush=True)


def main(argv, flag_values, prepare, train):
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
