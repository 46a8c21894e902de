"""Runs the classification benchmark configurations and tabulates them.

    python -m kerapos.benchmarks.classification --runs=all
    python -m kerapos.benchmarks.classification --runs=lstm_sinusoidal_512,transformer_rotary_128

Each run is the real trainer (`trainers/train_classifier.py`) on the full IMDb
test set; its `results.json` and the exact command (`command.txt`) are kept in
`benchmarks/classification/<run-name>/`, and `benchmarks/classification/results.md`
is regenerated from every results.json present (nothing is typed by hand).
"""

import json
import pathlib
import re
import shlex
import shutil
import statistics
import subprocess
import sys

from absl import app
from absl import flags
from absl import logging

from kerapos import positions
from kerapos.training import flags as kp_flags
from kerapos.utils import atomic

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAIN_SHORT = ["--max_length=128", "--eval_max_lengths=128,256,512"]
TRANSFORMER = ["--model=transformer", "--epochs=3", "--learning_rate=5e-4", "--batch_size=64"]
RUNS = {
    # The main job (`make run`), at two more seeds (weights, shuffling and the validation carve).
    "lstm_sinusoidal_512": ["--flagfile=trainers/configs/main.flags"],
    **{f"lstm_sinusoidal_512_seed{seed}": ["--flagfile=trainers/configs/main.flags", f"--seed={seed}"]
       for seed in (1, 2)},
    # The main job as it was before word dropout: batch 64, 20,000 words.
    "lstm_sinusoidal_512_no_word_dropout": ["--flagfile=trainers/configs/main.flags", "--batch_size=64",
                                            "--vocab_size=20000", "--word_dropout=0"],
    # The main job trained on the first 1024 tokens, so long reviews keep their endings (batch,
    # vocabulary and word dropout spelled out: this ran before main.flags took them).
    "lstm_sinusoidal_1024_word_dropout": ["--flagfile=trainers/configs/main.flags", "--batch_size=32",
                                          "--vocab_size=10000", "--word_dropout=0.3",
                                          "--max_length=1024"],
    # Train short (128 tokens), test long: every scheme.
    **{f"lstm_{p}_128": ["--model=lstm", f"--position={p}", "--epochs=3", *TRAIN_SHORT]
       for p in ("none", *positions.available("input"))},
    **{f"transformer_{p}_128": [*TRANSFORMER, f"--position={p}", *TRAIN_SHORT]
       for p in positions.available()},
    "transformer_rotary_128_logn": [*TRANSFORMER, "--position=rotary", "--logn_scaling", *TRAIN_SHORT],
    # Longer training length for the best accuracy.
    "transformer_rotary_512": [*TRANSFORMER, "--position=rotary", "--max_length=512",
                               "--eval_max_lengths=128,256,512"],
    # ... with the main job's word dropout and vocabulary.
    "transformer_rotary_512_word_dropout": [*TRANSFORMER, "--position=rotary", "--max_length=512",
                                            "--eval_max_lengths=128,256,512", "--word_dropout=0.3",
                                            "--vocab_size=10000"],
}

flags.DEFINE_list("runs", ["all"], f"Run names, or 'all': {', '.join(RUNS)}.")
flags.DEFINE_string("output_dir", "benchmarks/classification", "Where run folders go.")
flags.DEFINE_bool("table_only", False, "Only regenerate results.md from existing runs.")
FLAGS = flags.FLAGS


def run_one(name, output_dir):
    """Runs the trainer for run `name`; keeps its results.json and command.txt
    (the trainer writes both) in `output_dir/name/`."""
    run_dir = pathlib.Path("runs", "benchmarks", name)  # relative to ROOT, the command's cwd
    shutil.rmtree(ROOT / run_dir, ignore_errors=True)
    args = [*RUNS[name], f"--model_dir={run_dir}", f"--model_name=bench_{name}"]
    logging.info(f"=== {name}: python trainers/train_classifier.py "
                 + " ".join(shlex.quote(a) for a in args))
    subprocess.run([sys.executable, "trainers/train_classifier.py", *args], cwd=ROOT, check=True)
    destination = output_dir / name
    for file_name in ("results.json", "command.txt"):
        atomic.write_bytes(destination / file_name, (ROOT / run_dir / file_name).read_bytes())


LENGTHS = ("128", "256", "512", "full")


def _percent(accuracy, length):
    return f"{100 * accuracy[length]:.2f}" if length in accuracy else "-"


def _seed_rows(results_by_run):
    """One row per run that has `<run>_seed<N>` siblings: the mean over all its seeds."""
    rows = []
    for name, results in results_by_run.items():
        seeds = {results["flags"]["seed"]: results}
        seeds.update({r["flags"]["seed"]: r for other, r in results_by_run.items()
                      if re.fullmatch(rf"{re.escape(name)}_seed\d+", other)})
        if len(seeds) < 2:
            continue
        accuracies = [r["test_accuracy"] for r in seeds.values()]
        full = [100 * a["full"] for a in accuracies]
        rows.append(
            f"| {name} | {', '.join(str(s) for s in sorted(seeds))} | "
            + " | ".join(f"{100 * statistics.mean(a[k] for a in accuracies):.2f}"
                         if all(k in a for a in accuracies) else "-" for k in LENGTHS)
            + f" | {min(full):.2f}-{max(full):.2f} |"
        )
    return rows


def write_table(output_dir):
    results_by_run = {
        results_file.parent.name: json.loads(results_file.read_text())
        for results_file in sorted(output_dir.glob("*/results.json"))
    }
    rows = [
        f"| {name} | {results['model']} | {results['position']}"
        f"{' + log-n' if results['flags'].get('logn_scaling') else ''} | {results['max_length']} | "
        + " | ".join(_percent(results["test_accuracy"], k) for k in LENGTHS)
        + f" | {results['examples_per_second']:.0f} | {results['train_seconds'] / 60:.1f} | "
        f"{results['device']} |"
        for name, results in results_by_run.items()
    ]
    lines = [
        "Test accuracy (%) on the 25,000-review IMDb test set, by evaluation length "
        "(tokens kept per review; full = untruncated). Generated by "
        "`python -m kerapos.benchmarks.classification --table_only` from the "
        "results.json files beside it; each run folder holds its command.txt.",
        "",
        "| run | model | position | train length | @128 | @256 | @512 | full | train ex/s | train min "
        "| device |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
    ]
    seed_rows = _seed_rows(results_by_run)
    if seed_rows:
        lines += [
            "",
            "Mean test accuracy (%) over the seeds of runs repeated with `--seed` (`<run>_seed<N>`), "
            "and the range on full reviews:",
            "",
            "| run | seeds | @128 | @256 | @512 | full | full, min-max |",
            "|---|---|---:|---:|---:|---:|---:|",
            *seed_rows,
        ]
    table = "\n".join(lines)
    atomic.write_text(output_dir / "results.md", table + "\n")
    return table


def main(argv):
    del argv
    kp_flags.show_progress(FLAGS)
    output_dir = ROOT / FLAGS.output_dir
    names = list(RUNS) if FLAGS.runs == ["all"] else FLAGS.runs
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise app.UsageError(f"Unknown runs {unknown}; choose from {', '.join(RUNS)}.")
    if not FLAGS.table_only:
        for name in names:
            run_one(name, output_dir)
    print(write_table(output_dir))


if __name__ == "__main__":
    app.run(main)
