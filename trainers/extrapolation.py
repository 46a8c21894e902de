"""Train short, test long: one byte-level LM per position scheme, perplexity
at 1x..16x the training length (ALiBi paper, arXiv:2108.12409, Table 2).

    python trainers/extrapolation.py --preset=cpu --output_dir=runs/extrapolation
    python trainers/extrapolation.py --preset=smoke --schemes=rotary,alibi
    python trainers/extrapolation.py --preset=cpu_large --output_dir=benchmarks/extrapolation/cpu_large
    python trainers/extrapolation.py --preset=gpu --mixed_precision=mixed_bfloat16

--preset sets sizes, steps and lengths (smoke: seconds; cpu: all schemes,
variants and passkey cells in 33 minutes on 2 cores, benchmarks/extrapolation/cpu;
cpu_large: training speed at d_model 512, 4 layers, 512 tokens, as a share of the
CPU's matmul peak; gpu: train length 512, eval to 16x);
any flag given explicitly overrides the preset. Writes <output_dir>/results.json, results.md,
extrapolation.png, logs/ (TensorBoard) and models/<scheme>.keras (for
trainers/generate.py), and exports SavedModels to
<export_dir>/<model_name>_<scheme>/<version>/. The flags are the options of
`kerapos.benchmarks.extrapolation.BenchmarkOptions`; see kerapos/benchmarks/.
"""

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos.benchmarks.extrapolation import PRESETS
from kerapos.benchmarks.extrapolation import BenchmarkOptions
from kerapos.benchmarks.extrapolation import run_benchmark
from kerapos.training import flags as kp_flags
from kerapos.training.options import specs

DEFAULT_PRESET = "cpu"
# Preset options whose flags show a value (the others show None): the default
# preset's batch size and learning rate, and the switches only cpu_large turns off.
kp_flags.define_flags(
    BenchmarkOptions, flags.FLAGS, preset=DEFAULT_PRESET,
    **{name: PRESETS[DEFAULT_PRESET][name] for name in ("batch_size", "learning_rate")},
    **{name: specs(BenchmarkOptions)[name].default for name in ("export", "passkey")},
)


def report(results, options):
    return [f"Done in {results['timings']['total_s']:.0f}s. Tables: {options.output_dir}/results.md  "
            f"plot: {options.output_dir}/extrapolation.png",
            kp_flags.where_line(options)]


if __name__ == "__main__":
    app.run(kp_flags.trainer_main(BenchmarkOptions, run_benchmark, report, flags.FLAGS,
                                  "trainers/extrapolation.py"))
