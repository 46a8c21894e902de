r"""How much padding the main job's length buckets leave, and what finer ones would.

    python -m kerapos.benchmarks.padding --output_dir=benchmarks/padding

An LSTM pays for every padded time step, so the padded tokens per real token
of the training batches is the share of its work spent on padding. This
tokenizes the training split as the classification trainer does (vocabulary
from the training reviews, reviews cut to `--max_length`), batches it with
`make_token_dataset` (shuffled at `--seed`, as in training) under each set of
bucket boundaries, and counts the tokens of the batches it yields: nothing is
simulated. Writes results.json and results.md.
"""

import json
import pathlib

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from kerapos.data import text_pipeline
from kerapos.data.imdb import load_classification_data
from kerapos.utils import atomic

FLAGS = flags.FLAGS


def _every(step, last):
    return tuple(range(step, last + 1, step))


# name -> boundaries; the trainer's, then finer steps up to the main job's 512.
CANDIDATES = {
    "trainer": text_pipeline.BUCKET_BOUNDARIES,
    "every_32": _every(32, 512),
    "every_16": _every(16, 512),
    "every_8": _every(8, 512),
    "none": (),
}


def define_flags():
    flags.DEFINE_string("output_dir", "benchmarks/padding", "Where results.json/results.md go.")
    flags.DEFINE_string("dataset", "imdb", "'imdb' or a JSON file in the fixture format.")
    flags.DEFINE_integer("vocab_size", 10000, "Vocabulary learned from the training split.",
                         lower_bound=3)
    flags.DEFINE_integer("max_length", 512, "Training length in tokens.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 32, "Training batch size (the main job's).",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Shuffle seed (the trainer's --seed).")


def padding(token_ids, labels, batch_size, max_length, bucket_boundaries, seed=0):
    """Counts the tokens of one shuffled epoch of `make_token_dataset` batches.

    Returns a dict: `batches`, `real_tokens` (the rows' lengths after the cut),
    `padded_tokens` (batch x width summed over batches) and their ratio
    `padded_per_real` (1.0 = no padding).
    """
    dataset = text_pipeline.make_token_dataset(
        token_ids, labels, batch_size, max_length=max_length, shuffle=True, seed=seed,
        bucket_boundaries=bucket_boundaries,
    )
    real = int(tf.reduce_sum(tf.minimum(token_ids.row_lengths(), max_length)))
    batches = padded = 0
    for ids, _ in dataset:  # ids: [batch, width]
        batches += 1
        padded += int(np.prod(ids.shape))
    return {"batches": batches, "real_tokens": real, "padded_tokens": padded,
            "padded_per_real": padded / max(real, 1)}


def _shown(bounds):
    """'16, 32, ..., 512, 768' for a long evenly spaced start, else every boundary."""
    if not bounds:
        return "(one bucket)"
    even = 1  # bounds[:even + 1] are evenly spaced
    while even + 1 < len(bounds) and (
            bounds[even + 1] - bounds[even] == bounds[1] - bounds[0]):
        even += 1
    if even < 4:
        return ", ".join(map(str, bounds))
    return ", ".join(map(str, [bounds[0], bounds[1], "...", *bounds[even:]]))


def markdown(rows, settings):
    lines = [
        f"Padding of one training epoch: {settings['dataset']} training split, "
        f"{settings['examples']} reviews cut to {settings['max_length']} tokens, batch "
        f"{settings['batch_size']}, shuffled at seed {settings['seed']}. Padded / real = "
        "batch x width summed over batches / tokens of the rows.",
        "",
        "| buckets | boundaries | batches | padded / real |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['buckets']} | {_shown(row['boundaries'])} | {row['batches']} | "
                     f"{row['padded_per_real']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    data = load_classification_data(FLAGS.dataset, seed=FLAGS.seed)
    vectorizer = text_pipeline.build_vectorizer(data.train.texts, FLAGS.vocab_size)
    token_ids = text_pipeline.tokenize(vectorizer, data.train.texts)
    rows = [
        {"buckets": name, "boundaries": list(bounds),
         **padding(token_ids, data.train.labels, FLAGS.batch_size, FLAGS.max_length, bounds,
                   FLAGS.seed)}
        for name, bounds in CANDIDATES.items()
    ]
    settings = {"dataset": FLAGS.dataset, "examples": len(data.train.labels),
                "max_length": FLAGS.max_length, "batch_size": FLAGS.batch_size,
                "vocab_size": FLAGS.vocab_size, "seed": FLAGS.seed}
    output_dir = pathlib.Path(FLAGS.output_dir)
    atomic.write_text(output_dir / "results.json",
                      json.dumps({**settings, "rows": rows}, indent=2) + "\n")
    text = markdown(rows, settings)
    atomic.write_text(output_dir / "results.md", text)
    print(text)


if __name__ == "__main__":
    define_flags()
    app.run(main)
