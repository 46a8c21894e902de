r"""Trains a text classifier whose position encoding is chosen by flag.

    python trainers/train_classifier.py --model=transformer --position=rotary \
        --max_length=128 --eval_max_lengths=128,256,512 --model_dir=runs/rotary

Logs to TensorBoard under --model_dir, resumes after a kill (rerun the same
command), writes results.json and exports a raw-text SavedModel to
<export_dir>/<model_name>/<version>/ for TF Serving. The flags are the
options of `kerapos.training.classification.ClassifierOptions`. See README.md.
"""

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos.training import flags as kp_flags
from kerapos.training.classification import ClassifierOptions
from kerapos.training.classification import run

kp_flags.define_flags(ClassifierOptions, flags.FLAGS)


def report(results, options):
    accuracy = ", ".join(f"{k}: {v:.4f}" for k, v in results["test_accuracy"].items())
    machine, speed = results["machine"], results["examples_per_second"]
    lines = [
        f"Test accuracy by evaluation length: {accuracy}",
        f"Time: training {results['train_seconds']:.0f} s"
        + (f" ({speed:.0f} examples/s)" if speed else "")
        + f", evaluation {results['evaluate_seconds']:.0f} s on {machine['device']}, "
        f"float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s",
    ]
    if results["export"] is None:  # a non-chief worker of a multi-worker run
        return lines + ["Not the chief worker: results.json and the export are written by worker 0."]
    return lines + [f"SavedModel for TF Serving: {results['export']}", kp_flags.where_line(options)]


if __name__ == "__main__":
    app.run(kp_flags.trainer_main(ClassifierOptions, run, report, flags.FLAGS,
                                  "trainers/train_classifier.py"))
