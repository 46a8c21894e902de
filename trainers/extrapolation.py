"""Train short, test long: one byte-level LM per position scheme, perplexity
at 1x..16x the training length (ALiBi paper, arXiv:2108.12409, Table 2).

    python trainers/extrapolation.py --preset=cpu --output_dir=runs/extrapolation
    python trainers/extrapolation.py --preset=smoke --schemes=rotary,alibi
    python trainers/extrapolation.py --preset=gpu --mixed_precision=mixed_bfloat16

--preset sets sizes, steps and lengths (smoke: seconds; cpu: all schemes in
about 30 minutes on 2 cores (estimated); gpu: train length 512, eval to 16x);
any flag given explicitly overrides the preset. Writes <output_dir>/results.json, results.md,
extrapolation.png, logs/ (TensorBoard) and models/<scheme>.keras (for
trainers/generate.py), and exports SavedModels to
<export_dir>/<model_name>_<scheme>/<version>/. See kerapos/eval/.
"""

import sys

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos import positions
from kerapos.data.sources import DataError
from kerapos.eval.extrapolation import ROTARY_VARIANTS
from kerapos.eval.extrapolation_benchmark import PRESETS
from kerapos.eval.extrapolation_benchmark import BenchmarkOptions
from kerapos.eval.extrapolation_benchmark import run_benchmark
from kerapos.training import flags as kp_flags
from kerapos.training import runtime

kp_flags.define_common_flags(
    model_name="lm", model_dir="runs/extrapolation",
    epochs=1, batch_size=32, learning_rate=2e-3,
)
flags.DEFINE_enum("preset", "cpu", sorted(PRESETS),
                  "Sizes/steps/lengths: smoke (seconds), cpu (~30 min on 2 cores), gpu.")
flags.DEFINE_list("schemes", list(positions.available()),
                  "Position schemes to compare (kerapos.positions names).")
flags.DEFINE_string("position_configs", "",
                    "JSON object: scheme -> options of its position layer, e.g. "
                    "'{\"t5\": {\"max_distance\": 16}}'.")
flags.DEFINE_integer("train_length", None, "Training window in tokens (bytes).")
flags.DEFINE_list("eval_lengths", None,
                  "Evaluation lengths in tokens (default 1x,2x,4x,8x,16x --train_length).")
flags.DEFINE_string("corpus", "gutenberg",
                    "'gutenberg' (offline), 'pg19', a directory of .txt files, or "
                    "comma-separated .txt files (split by whole document).")
flags.DEFINE_string("output_dir", None, "Where results go (default --model_dir).")
flags.DEFINE_integer("stride", 0, "Sliding-window stride in tokens; 0 = eval length // 2, "
                     "1 = the ALiBi paper's exact (slow) sliding evaluation.")
flags.DEFINE_bool("passkey", True, "Also run passkey retrieval at 1x..8x --train_length.")
flags.DEFINE_integer("passkey_trials", None, "Passkey prompts per length.")
flags.DEFINE_integer("steps", None, "Training steps per scheme.")
flags.DEFINE_integer("num_layers", None, "Decoder blocks.")
flags.DEFINE_integer("hidden_dim", None, "Model width.")
flags.DEFINE_integer("num_heads", None, "Attention heads.")
flags.DEFINE_integer("intermediate_dim", None, "Feed-forward width.")
flags.DEFINE_float("dropout", None, "Dropout.")
flags.DEFINE_float("warmup_fraction", 0.05, "Fraction of steps warming the learning rate up.")
flags.DEFINE_integer("max_eval_tokens", None,
                     "Scored test tokens per (scheme, length, protocol), the same for all.")
flags.DEFINE_integer("eval_batch_size", None, "Windows per evaluation batch.")
flags.DEFINE_list("rotary_variants", list(ROTARY_VARIANTS),
                  "Inference-time variants of the rotary model to evaluate.")
flags.DEFINE_bool("export", True, "Export SavedModels (next-token top-k from raw text).")
flags.DEFINE_string("export_scheme", None, "Export only this scheme (default: all).")
flags.DEFINE_integer("export_top_k", 5, "k of the exported next-token top-k.")
flags.DEFINE_bool("deterministic", True,
                  "TensorFlow op determinism: same --seed, same numbers (also on GPUs).")

# Flags a preset may set; an explicit flag wins.
PRESET_FLAGS = ("train_length", "steps", "batch_size", "learning_rate", "num_layers",
                "hidden_dim", "num_heads", "intermediate_dim", "dropout",
                "max_eval_tokens", "eval_batch_size", "passkey_trials")


def options_from_flags():
    """`BenchmarkOptions` from the parsed flags and the chosen preset."""
    values = flags.FLAGS
    sizes = kp_flags.preset_values(PRESETS[values.preset], PRESET_FLAGS)
    return BenchmarkOptions(
        output_dir=values.output_dir or values.model_dir,
        schemes=tuple(s.strip() for s in values.schemes),
        position_configs=kp_flags.parse_json_flag("position_configs"),
        corpus=values.corpus,
        eval_lengths=None if values.eval_lengths is None else tuple(kp_flags.integer_list("eval_lengths")),
        stride=values.stride,
        warmup_fraction=values.warmup_fraction,
        rotary_variants=tuple(values.rotary_variants),
        passkey=values.passkey,
        seed=values.seed,
        export=values.export,
        export_scheme=values.export_scheme,
        export_dir=values.export_dir,
        model_name=values.model_name,
        export_top_k=values.export_top_k,
        strategy=values.strategy,
        tpu=values.tpu,
        mixed_precision=values.mixed_precision,
        jit_compile=values.jit_compile,
        preset=values.preset,
        deterministic=values.deterministic,
        **sizes,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    kp_flags.lower_log_verbosity()
    try:
        options = options_from_flags()
        if not flags.FLAGS.corpus.strip():
            raise ValueError("--corpus is empty; pass 'gutenberg', a directory of .txt "
                             "files or comma-separated .txt files.")
        results = run_benchmark(options)
    except (ValueError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output_dir = options.output_dir
    runtime.write_command_file(output_dir, "trainers/extrapolation.py")
    print(f"\nDone in {results['timings']['total_s']:.0f}s. Tables: {output_dir}/results.md  "
          f"plot: {output_dir}/extrapolation.png  results: {output_dir}/results.json  "
          f"TensorBoard: tensorboard --logdir {output_dir}/logs")
    return 0



if __name__ == "__main__":
    app.run(main)
