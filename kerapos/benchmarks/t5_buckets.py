"""Which T5 relative-position buckets a model could learn at its training length.

    python -m kerapos.benchmarks.t5_buckets --model=benchmarks/extrapolation/cpu/models/t5.keras \
        --train_length=64

T5's bias (Raffel et al. 2020, section 2.1) gives every distance up to
`max_distance` a bucket and shares the last bucket with everything farther.
A model trained on windows shorter than `max_distance` never sees the
buckets of the longer distances, so their biases keep their initial values;
at longer evaluation lengths those far tokens then get no learned penalty.
This prints, for each bucket a causal model uses up to `--eval_length`, the
distances it covers, whether training could reach it, and its learned bias.
"""

import sys

import keras
import numpy as np
from absl import app
from absl import flags

import kerapos.models  # noqa: F401  (registers the model classes for loading)
from kerapos.layers.relative_position_bias import RelativePositionBias
from kerapos.layers.relative_position_bias import _relative_position_bucket
from kerapos.utils import checks


def bucket_report(layer, train_length, eval_length):
    """Per bucket used by keys 0..eval_length-1 tokens before the query.

    Args:
        layer: a built `RelativePositionBias`.
        train_length: the training window; distances below it were seen.
        eval_length: report distances up to `eval_length - 1`.

    Returns:
        list of dicts `bucket, min_distance, max_distance, trained`
        (some distance of the bucket is < `train_length`), `mean_bias` and
        `mean_abs_bias` (over heads).
    """
    train_length = checks.integer(train_length, "train_length", minimum=1)
    eval_length = checks.integer(eval_length, "eval_length", minimum=1)
    distances = np.arange(eval_length)  # keys this many tokens before the query
    buckets = np.asarray(_relative_position_bucket(
        -distances, layer.bidirectional, layer.num_buckets, layer.max_distance))
    table = np.asarray(layer.embeddings, dtype=np.float64)  # [num_buckets, num_heads]
    rows = []
    for bucket in np.unique(buckets):
        covered = distances[buckets == bucket]
        rows.append({
            "bucket": int(bucket),
            "min_distance": int(covered.min()),
            "max_distance": int(covered.max()),
            "trained": bool(covered.min() < train_length),
            "mean_bias": float(table[bucket].mean()),
            "mean_abs_bias": float(np.abs(table[bucket]).mean()),
        })
    return rows


flags.DEFINE_string("model", None, "A .keras model containing RelativePositionBias layers.")
flags.DEFINE_integer("train_length", None, "The length the model was trained at.")
flags.DEFINE_integer("eval_length", 1024, "Report distances up to this length.")


def main(argv):
    del argv
    values = flags.FLAGS
    if not values.model or not values.train_length:
        print("error: pass --model=PATH.keras and --train_length=N", file=sys.stderr)
        return 2
    try:
        model = keras.saving.load_model(values.model, compile=False)
    except (OSError, ValueError) as error:
        print(f"error: cannot load {values.model}: {error}", file=sys.stderr)
        return 2
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, RelativePositionBias)]
    if not layers:
        print(f"error: {values.model} has no RelativePositionBias (t5) layer", file=sys.stderr)
        return 2
    try:
        reports = [bucket_report(layer, values.train_length, values.eval_length) for layer in layers]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for layer, rows in zip(layers, reports):
        print(f"\n{layer.path}: num_buckets={layer.num_buckets} max_distance={layer.max_distance} "
              f"bidirectional={layer.bidirectional}\n")
        print("| bucket | distances | reached in training | mean bias | mean abs bias |")
        print("|---:|---|---|---:|---:|")
        for row in rows:
            print(f"| {row['bucket']} | {row['min_distance']}-{row['max_distance']} | "
                  f"{'yes' if row['trained'] else 'NO'} | {row['mean_bias']:.3f} | "
                  f"{row['mean_abs_bias']:.3f} |")
    return 0


if __name__ == "__main__":
    app.run(main)
