"""Trains a text classifier whose position encoding is chosen by flag.

    python trainers/train_classifier.py --model=transformer --position=rotary \
        --max_length=128 --eval_max_lengths=128,256,512 --model_dir=runs/rotary

Logs to TensorBoard under --model_dir, resumes after a kill (rerun the same
command), writes results.json and exports a raw-text SavedModel to
<export_dir>/<model_name>/<version>/ for TF Serving. See README.md.
"""

import sys

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos import positions
from kerapos.data.sources import DataError
from kerapos.models import CLASSIFIERS
from kerapos.training import flags as kp_flags
from kerapos.training.classification import ClassifierOptions
from kerapos.training.classification import EXTENSION_METHODS
from kerapos.training.classification import POOLING
from kerapos.training.classification import run

kp_flags.define_common_flags(
    model_name="imdb_classifier", model_dir="runs/classifier",
    epochs=4, batch_size=64, learning_rate=1e-3,
)
flags.DEFINE_enum("model", "lstm", sorted(CLASSIFIERS), "Classifier architecture.")
flags.DEFINE_enum("position", "sinusoidal", positions.available(),
                  "Position scheme from kerapos.positions (lstm: none|sinusoidal|learned).")
flags.DEFINE_string("position_config", "",
                    "JSON object of position-layer options, e.g. "
                    "'{\"scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, "
                    "\"original_max_position_embeddings\": 128}}'.")
flags.DEFINE_string("dataset", "imdb",
                    "'imdb' (offline mirror, else tensorflow_datasets) or a JSON file in the "
                    "tests/fixtures/imdb_sample.json format.")
flags.DEFINE_float("validation_fraction", 0.1, "Fraction of TRAIN held out for validation.")
flags.DEFINE_integer("max_length", 256, "Training length in tokens (longer reviews are truncated).")
flags.DEFINE_list("eval_max_lengths", ["128", "256", "512"],
                  "Test-time truncation lengths; the untruncated ('full') test set is always added.")
flags.DEFINE_integer("serve_max_length", None, "Tokens kept by the export (default --max_length).")
flags.DEFINE_integer("vocab_size", 20000, "Vocabulary size learned from the training split.")
flags.DEFINE_float("warmup_fraction", 0.05, "Fraction of steps spent warming the learning rate up.")
flags.DEFINE_integer("patience", 2, "Early-stopping patience in epochs (on validation accuracy).")
flags.DEFINE_enum("learned_extension", "interpolate", EXTENSION_METHODS,
                  "How a learned table is extended to evaluate past --max_length.")
flags.DEFINE_integer("num_layers", 2, "Transformer blocks.")
flags.DEFINE_integer("hidden_dim", 128, "Transformer width.")
flags.DEFINE_integer("num_heads", 4, "Attention heads.")
flags.DEFINE_integer("intermediate_dim", 256, "Feed-forward width.")
flags.DEFINE_float("dropout", 0.1, "Dropout rate (transformer: inside every block; lstm: on the "
                   "embeddings and before the output layer).")
flags.DEFINE_float("word_dropout", 0.0, "Probability of dropping a whole token (embedding and "
                   "position) while training, so no single word decides (both models).")
flags.DEFINE_enum("pooling", "mean", POOLING, "Transformer pooling: masked mean or first token.")
flags.DEFINE_bool("logn_scaling", False,
                  "Scale attention logits by log(n)/log(max_length) for inputs longer than training.")

TASK_FLAGS = ("model", "position", "dataset", "validation_fraction", "max_length",
              "serve_max_length", "vocab_size", "warmup_fraction", "patience",
              "learned_extension", "num_layers", "hidden_dim", "num_heads",
              "intermediate_dim", "dropout", "word_dropout", "pooling", "logn_scaling")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    kp_flags.lower_log_verbosity()
    try:
        options = ClassifierOptions(
            **kp_flags.flag_values(kp_flags.COMMON_FLAGS + TASK_FLAGS),
            position_config=kp_flags.parse_json_flag("position_config"),
            eval_max_lengths=tuple(kp_flags.integer_list("eval_max_lengths")),
        )
        results = run(options)
    except (ValueError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    accuracy = ", ".join(f"{k}: {v:.4f}" for k, v in results["test_accuracy"].items())
    print(f"\nTest accuracy by evaluation length: {accuracy}")
    if results["export"] is None:  # a non-chief worker of a multi-worker run
        print("Not the chief worker: results.json and the export are written by worker 0.")
        return 0
    print(f"SavedModel for TF Serving: {results['export']}")
    print(f"Results: {flags.FLAGS.model_dir}/results.json   TensorBoard: "
          f"tensorboard --logdir {flags.FLAGS.model_dir}/logs")
    return 0



if __name__ == "__main__":
    app.run(main)
