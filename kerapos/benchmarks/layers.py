"""Forward+backward speed of kerapos layers against keras-hub and plain attention.

    python -m kerapos.benchmarks.layers --output_dir=benchmarks/layers

For every kerapos layer with a keras-hub counterpart, and for
`PositionalMultiHeadAttention` under each scheme against
`keras.layers.MultiHeadAttention` (rotary also with each inference-time
context-extension method, its windows those the extrapolation benchmark uses
for a model trained at a quarter of `--seq`), one step = forward, sum, gradients w.r.t.
inputs and weights, inside one `tf.function` (XLA off and on). Candidates are
timed in interleaved rounds in the same process: each round runs one step
of every candidate of a group in turn, so machine load affects all alike.
Reported: the median step time over `--rounds` rounds and the ratio to the
group's baseline, taken within each round, as its median and interquartile
range (a difference is real when the range excludes 1), beside the
machine's measured matmul GFLOP/s. Writes results.json and results.md.
"""

import json
import pathlib
import platform

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from kerapos import positions
from kerapos.benchmarks import rounds as rounds_lib
from kerapos.layers.alibi_bias import ALiBiBias
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.layers.positional_attention import PositionalMultiHeadAttention
from kerapos.layers.positional_encoding import PositionalEncoding
from kerapos.layers.rotary_embedding import RotaryEmbedding
from kerapos.metrics.perplexity import CONTEXT_EXTENSION_VARIANTS
from kerapos.metrics.perplexity import context_extension_defaults
from kerapos.training import runtime
from kerapos.utils import atomic

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags, defined only when this module runs as the
    main program (importing it, e.g. in tests, defines none)."""
    flags.DEFINE_string("output_dir", "benchmarks/layers", "Where results.json/results.md go.")
    flags.DEFINE_integer("batch", 8, "Batch size.")
    flags.DEFINE_integer("seq", 1024, "Sequence length.")
    flags.DEFINE_integer("heads", 8, "Attention heads.")
    flags.DEFINE_integer("head_dim", 64, "Size per head.")
    flags.DEFINE_integer("rounds", 9, "Interleaved rounds, each one timed step per candidate.",
                         lower_bound=1)


def _step_fn(forward, inputs, layers, jit_compile):
    variables = [v for layer in layers for v in layer.trainable_variables]

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.cast(forward(*inputs), tf.float32))
        gradients = tape.gradient(loss, [*inputs, *variables])
        # Dense results (a gather's gradient is IndexedSlices) for timing.
        return [tf.convert_to_tensor(g) for g in gradients]

    return step


def _candidates(batch, seq, heads, head_dim):
    """Groups of (name, forward, inputs, layers); the first of a group is its baseline."""
    hidden = heads * head_dim
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, seq, hidden)), tf.float32)
    qk = tf.constant(rng.normal(size=(batch, seq, heads, head_dim)), tf.float32)
    scores = tf.constant(rng.normal(size=(batch, heads, seq, seq)), tf.float32)

    def layer_pair(ours, theirs, call_ours, call_theirs, inputs):
        return [("keras-hub " + type(theirs).__name__, call_theirs, inputs, [theirs]),
                ("kerapos " + type(ours).__name__, call_ours, inputs, [ours])]

    sine_ours, sine_hub = PositionalEncoding(), keras_hub.layers.SinePositionEncoding()
    learned_ours = LearnedPositionEmbedding(max_length=seq)
    learned_hub = keras_hub.layers.PositionEmbedding(sequence_length=seq)
    rope_ours, rope_hub = RotaryEmbedding(), keras_hub.layers.RotaryEmbedding()
    alibi_ours = ALiBiBias(num_heads=heads)
    alibi_hub = keras_hub.layers.AlibiBias()
    groups = {
        "sinusoidal": layer_pair(sine_ours, sine_hub, sine_ours, lambda t: t + sine_hub(t), [x]),
        "learned": layer_pair(learned_ours, learned_hub, learned_ours,
                              lambda t: t + learned_hub(t), [x]),
        "rotary": layer_pair(rope_ours, rope_hub, rope_ours, rope_hub, [qk]),
        "alibi": layer_pair(alibi_ours, alibi_hub, alibi_ours, alibi_hub, [scores]),
    }
    plain = keras.layers.MultiHeadAttention(heads, head_dim)
    attention = [("keras MultiHeadAttention", lambda t: plain(t, t), [x], [plain])]
    variants = [(position, None) for position in ("none", *positions.available("attention"))]
    variants += [("rotary", variant) for variant in CONTEXT_EXTENSION_VARIANTS]
    for position, variant in variants:
        extension = variant and context_extension_defaults(variant, max(2, seq // 4), seq)
        layer = PositionalMultiHeadAttention(heads, head_dim, position=position,
                                             context_extension=extension)
        label = position if variant is None else f"{position}/{variant}"
        attention.append(
            (f"kerapos attention ({label})", lambda t, layer=layer: layer(t, t), [x], [layer])
        )
    groups["attention"] = attention
    return groups


def measure(batch, seq, heads, head_dim, rounds, report=logging.info):
    """Times every candidate (see the module docstring); `report` gets one
    line per candidate as it is measured. Returns the result rows."""
    rows = []
    for group, candidates in _candidates(batch, seq, heads, head_dim).items():
        for jit_compile in (False, True):
            steps = {}
            for name, forward, inputs, layers in candidates:
                forward(*inputs)  # build weights before tracing
                step = _step_fn(forward, inputs, layers, jit_compile)
                steps[name] = lambda step=step: tf.nest.map_structure(lambda t: t.numpy(), step())
            times = rounds_lib.time_rounds(steps, rounds)
            baseline = candidates[0][0]
            for name in steps:
                timed = rounds_lib.against(times[name], times[baseline])
                row = {
                    "group": group, "candidate": name, "xla": jit_compile,
                    "median_ms": timed["median_ms"], "ratio_to_baseline": timed["ratio"],
                    "ratio_q25": timed["ratio_q25"], "ratio_q75": timed["ratio_q75"],
                    "rounds": rounds, "baseline": baseline,
                }
                rows.append(row)
                report(f"{group:>10} xla={jit_compile!s:5} {name:38} {row['median_ms']:9.2f} ms "
                       f"x{row['ratio_to_baseline']:.3f} ({row['ratio_q25']:.3f}-"
                       f"{row['ratio_q75']:.3f})")
    return rows


def _markdown(rows, shape, machine):
    lines = [
        f"Forward+backward step, batch {shape['batch']}, seq {shape['seq']}, "
        f"{shape['heads']} heads x {shape['head_dim']}; median of {shape['rounds']} "
        f"interleaved rounds; ratio = candidate / first row of its group within a round, "
        f"median (interquartile range: a difference is real when it excludes 1). Machine: "
        f"{machine['device']}, float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s. "
        f"`rotary/<method>`: `context_extension` with the extrapolation benchmark's "
        f"defaults for a model trained at {max(2, shape['seq'] // 4)} tokens.",
        "",
        "| group | candidate | XLA off (ms) | ratio (IQR) | XLA on (ms) | ratio (IQR) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    by_key = {(r["group"], r["candidate"], r["xla"]): r for r in rows}
    seen = []
    for r in rows:
        if (r["group"], r["candidate"]) not in seen:
            seen.append((r["group"], r["candidate"]))
    for group, candidate in seen:
        off, on = by_key[(group, candidate, False)], by_key[(group, candidate, True)]
        lines.append(f"| {group} | {candidate} | {off['median_ms']:.1f} | {_ratio(off)} | "
                     f"{on['median_ms']:.1f} | {_ratio(on)} |")
    return "\n".join(lines) + "\n"


def _ratio(row):
    if row["candidate"] == row["baseline"]:
        return "1"
    return f"{row['ratio_to_baseline']:.3f} ({row['ratio_q25']:.2f}-{row['ratio_q75']:.2f})"


def main(argv):
    del argv
    shape = dict(batch=FLAGS.batch, seq=FLAGS.seq, heads=FLAGS.heads,
                 head_dim=FLAGS.head_dim, rounds=FLAGS.rounds)
    machine = dict(runtime.machine())
    print(f"{machine['device']}: float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s", flush=True)
    rows = measure(**shape, report=lambda line: print(line, flush=True))
    output_dir = pathlib.Path(FLAGS.output_dir)
    payload = {
        "shape": shape,
        **machine,
        "platform": platform.platform(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "rows": rows,
    }
    # Keys in the order written above (atomic.write_json would sort them).
    atomic.write_text(output_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    atomic.write_text(output_dir / "results.md", _markdown(rows, shape, machine))
    print(f"wrote {output_dir / 'results.json'} and {output_dir / 'results.md'}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
