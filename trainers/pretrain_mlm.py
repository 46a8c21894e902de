"""Pretrains BERT-style encoders with the masked-language-model objective, one
per position scheme, and compares their MLM accuracy at 1x, 2x and 4x the
training length on held-out books.

    python trainers/pretrain_mlm.py --preset=cpu --schemes=rotary --model_dir=runs/mlm
    python trainers/pretrain_mlm.py --preset=smoke --schemes=learned,alibi
    python trainers/pretrain_mlm.py --preset=gpu --mixed_precision=mixed_bfloat16

--preset sets sizes, steps and lengths (smoke: seconds; cpu: one scheme in
about 7 minutes on 2 cores; gpu: train length 512, BERT-small-like sizes); any
flag given explicitly overrides the preset. Writes under --output_dir
(default --model_dir): vocab.txt, results.json, results.md, logs/ (TensorBoard)
and checkpoints/<scheme>/, which kerapos.models.bert.load_bert_checkpoint
loads for fine-tuning. See kerapos/training/mlm.py.
"""

import sys

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos import positions
from kerapos.data.sources import DataError
from kerapos.training import flags as kp_flags
from kerapos.training import runtime
from kerapos.training.mlm import PRESETS
from kerapos.training.mlm import MLMOptions
from kerapos.training.mlm import run

kp_flags.define_common_flags(
    model_name="mlm", model_dir="runs/mlm",
    epochs=PRESETS["cpu"]["epochs"], batch_size=PRESETS["cpu"]["batch_size"],
    learning_rate=PRESETS["cpu"]["learning_rate"],
)
flags.DEFINE_enum("preset", "cpu", sorted(PRESETS),
                  "Sizes/steps/lengths: smoke (seconds), cpu (~7 min per scheme on 2 "
                  "cores), gpu (train length 512).")
flags.DEFINE_list("schemes", list(MLMOptions.schemes),
                  f"Position schemes to train in turn ({', '.join(positions.available())}).")
flags.DEFINE_string("corpus", "gutenberg",
                    "'gutenberg' (offline), a directory of .txt files, or comma-separated "
                    ".txt files (split by whole document).")
flags.DEFINE_string("output_dir", None, "Where results go (default --model_dir).")
flags.DEFINE_integer("train_length", None, "Training sequence length in tokens, [CLS] and "
                     "[SEP] included.")
flags.DEFINE_list("eval_lengths", None,
                  "Evaluation lengths in tokens (default 1x,2x,4x --train_length).")
flags.DEFINE_integer("steps", None, "Training steps per scheme (split into --epochs).")
flags.DEFINE_integer("vocab_size", None, "Largest WordPiece vocabulary, special tokens included.")
flags.DEFINE_integer("vocab_sample_chars", None,
                     "Learn the vocabulary from about this many characters of the training "
                     "books (an even sample of lines); 0 = all.")
flags.DEFINE_integer("num_layers", None, "Encoder blocks.")
flags.DEFINE_integer("hidden_dim", None, "Model width.")
flags.DEFINE_integer("num_heads", None, "Attention heads.")
flags.DEFINE_integer("intermediate_dim", None, "Feed-forward width.")
flags.DEFINE_float("dropout", None, "Dropout.")
flags.DEFINE_float("warmup_fraction", 0.05, "Fraction of steps warming the learning rate up.")
flags.DEFINE_integer("eval_tokens", None,
                     "Test tokens read per test book at every evaluation length.")
flags.DEFINE_integer("eval_batch_size", None, "Sequences per evaluation batch.")

# Flags a preset may set; an explicit flag wins.
PRESET_FLAGS = ("train_length", "steps", "epochs", "batch_size", "learning_rate",
                "vocab_size", "vocab_sample_chars", "num_layers", "hidden_dim", "num_heads",
                "intermediate_dim", "dropout", "eval_tokens", "eval_batch_size")


def options_from_flags():
    """`MLMOptions` from the parsed flags and the chosen preset."""
    values = flags.FLAGS
    sizes = kp_flags.preset_values(PRESETS[values.preset], PRESET_FLAGS)
    if not values.corpus.strip():
        raise ValueError("--corpus is empty; pass 'gutenberg', a directory of .txt files "
                         "or comma-separated .txt files.")
    return MLMOptions(
        output_dir=values.output_dir or values.model_dir,
        schemes=tuple(s.strip() for s in values.schemes),
        corpus=values.corpus,
        eval_lengths=None if values.eval_lengths is None else tuple(kp_flags.integer_list("eval_lengths")),
        warmup_fraction=values.warmup_fraction,
        seed=values.seed,
        strategy=values.strategy,
        tpu=values.tpu,
        mixed_precision=values.mixed_precision,
        jit_compile=values.jit_compile,
        preset=values.preset,
        **sizes,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    kp_flags.lower_log_verbosity()
    try:
        options = options_from_flags()
        results = run(options)
    except (ValueError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output_dir = options.output_dir
    runtime.write_command_file(output_dir, "trainers/pretrain_mlm.py")
    print("\nMLM accuracy by evaluation length:")
    for scheme, record in results["schemes"].items():
        cells = ", ".join(f"{n}: {a:.4f}" for n, a in record["mlm_accuracy"].items())
        print(f"  {scheme:<10s} {cells}")
    print(f"Done in {results['timings']['total_s']:.0f}s. Table: {output_dir}/results.md  "
          f"results: {output_dir}/results.json  checkpoints: {output_dir}/checkpoints/  "
          f"TensorBoard: tensorboard --logdir {output_dir}/logs")
    return 0



if __name__ == "__main__":
    app.run(main)
