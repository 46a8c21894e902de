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
and checkpoints/<scheme>/, which kerapos.checkpoints.bert.load_bert_checkpoint
loads for fine-tuning. The flags are the options of
`kerapos.training.mlm.MLMOptions`; see kerapos/training/mlm.py.
"""

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos.training import flags as kp_flags
from kerapos.training.mlm import PRESETS
from kerapos.training.mlm import MLMOptions
from kerapos.training.mlm import run

DEFAULT_PRESET = "cpu"
# Preset options whose flags show the default preset's value (the others show None).
kp_flags.define_flags(
    MLMOptions, flags.FLAGS, preset=DEFAULT_PRESET,
    **{name: PRESETS[DEFAULT_PRESET][name] for name in ("epochs", "batch_size", "learning_rate")},
)


def report(results, options):
    rows = [
        f"  {scheme:<10s} " + ", ".join(f"{n}: {a:.4f}" for n, a in record["mlm_accuracy"].items())
        for scheme, record in results["schemes"].items()
    ]
    return ["MLM accuracy by evaluation length:", *rows,
            f"Done in {results['timings']['total_s']:.0f}s. Table: {options.output_dir}/results.md  "
            f"checkpoints: {options.output_dir}/checkpoints/",
            kp_flags.where_line(options)]


if __name__ == "__main__":
    app.run(kp_flags.trainer_main(MLMOptions, run, report, flags.FLAGS,
                                  "trainers/pretrain_mlm.py"))
