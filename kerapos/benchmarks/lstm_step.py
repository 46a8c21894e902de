r"""Where the main job's LSTM training time goes, and the levers measured against it.

    python -m kerapos.benchmarks.lstm_step --output_dir=benchmarks/lstm_step

The main job's classifier (`build_lstm_classifier`: 10,000-word embedding of
128, sinusoidal positions, LSTM of 128, word dropout and dropout 0.3; AdamW
with clipnorm 1, as the trainer compiles it) takes one training step on a
batch of 32 reviews at `--lengths` tokens (the main job's bucketed batches
average about 250 tokens at a 512-token cut). Candidates, timed in
interleaved rounds in one process:

* `keras`: today's path (`keras.layers.LSTM`, XLA off);
* `keras_xla`: the same model compiled with `jit_compile=True`;
* `keras_bf16`: the same under `mixed_bfloat16`;
* `projected_input`: the same model with the input projection of every
  step taken out of the recurrence (`ProjectedInputLSTM`: one
  `[batch * seq, E] x [E, 4U]` matmul before the loop, which then adds only
  `h U`), the lever the speed issue proposed;
* `double_batch`: the same step on twice the batch (64), timed per
  `batch` reviews (half its step time), so that it compares
  with the others review for review;
* `half_embedding`: the same model with an embedding (and positions) half
  as wide (64), a quarter fewer LSTM FLOP;
* `lstm_only`: Keras' LSTM layer alone, forward and backward: what the
  recurrence costs without the embedding, head and optimizer.

(TensorFlow's fused `BlockLSTMV2` kernel was tried as well: its forward pass
equals Keras' LSTM, but in TF 2.21 its registered gradient disagrees with
finite differences and it was 1.6x slower than Keras' loop, so it is not a
candidate.)

Each step's work is 3 x 2 x 4 gates x (E + U) x U FLOP per token (the
LSTM's matmuls, forward and backward; E = U = 128, E = 64 for
`half_embedding`); its speed is reported as a share of the machine's
measured float32 matmul peak. Writes results.json and
results.md; `--smoke` shrinks everything for the test suite.
"""

import json
import pathlib

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from keras import ops
from keras.src.backend import rnn as backend_rnn  # Keras RNNs' masked loop; not in keras.ops

from kerapos.benchmarks import rounds as rounds_lib
from kerapos.models.lstm_classifier import build_lstm_classifier
from kerapos.training import runtime
from kerapos.utils import atomic

FLAGS = flags.FLAGS
CANDIDATES = ("keras", "keras_xla", "keras_bf16", "projected_input", "double_batch",
              "half_embedding", "lstm_only")


def define_flags():
    flags.DEFINE_string("output_dir", "benchmarks/lstm_step", "Where results.json/results.md go.")
    flags.DEFINE_list("lengths", ["256", "512"], "Tokens per review of the timed batches.")
    flags.DEFINE_integer("rounds", 15, "Interleaved rounds, each one step per candidate.",
                         lower_bound=1)
    flags.DEFINE_bool("smoke", False, "Tiny sizes (the test suite's smoke run).")


def lstm_flops_per_token(embedding_dim, units):
    """Training FLOP per token of one LSTM layer's matmuls (3 x forward)."""
    return 3 * 2 * 4 * (embedding_dim + units) * units


class ProjectedInputLSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` (without its own dropout) that computes `X W + b` for
    all steps in one matmul before the loop; the loop adds `h_{t-1} U`. The same
    function with the same weights (tests/benchmarks/test_lstm_step.py)."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell = self.cell
        projected = ops.add(ops.matmul(sequences, cell.kernel), cell.bias)  # [batch, seq, 4U]

        def step(projected_step, states):  # [batch, 4U]
            h_previous, c_previous = states  # each [batch, U]
            z = ops.add(projected_step, ops.matmul(h_previous, cell.recurrent_kernel))
            z_input, z_forget, z_cell, z_output = ops.split(z, 4, axis=-1)
            c = (cell.recurrent_activation(z_forget) * c_previous
                 + cell.recurrent_activation(z_input) * cell.activation(z_cell))
            h = cell.recurrent_activation(z_output) * cell.activation(c)
            return h, [h, c]

        return backend_rnn(step, projected, list(initial_state), mask=mask,
                           input_length=sequences.shape[1],
                           return_all_outputs=self.return_sequences)


def _with_projected_input_lstm(layer):
    config = layer.get_config()
    if layer.name == "lstm":
        return ProjectedInputLSTM.from_config(config)
    return type(layer).from_config(config)


def sizes(smoke=False):
    """`(batch, {"vocab", "width"})` of the timed steps: the main job's, or tiny ones."""
    return (4, {"vocab": 50, "width": 8}) if smoke else (32, {"vocab": 10_000, "width": 128})


def model_step(batch, length, sizes, jit_compile=False, policy="none", projected_input=False,
               embedding_dim=None):
    """A callable taking one training step of the main job's classifier as the
    trainer compiles it, on a fixed random `[batch, length]` batch."""
    with runtime.dtype_policy(policy):
        keras.utils.set_random_seed(0)
        model = build_lstm_classifier(sizes["vocab"], 2,
                                      embedding_dim=embedding_dim or sizes["width"],
                                      lstm_units=sizes["width"], dropout=0.3, word_dropout=0.3)
        if projected_input:
            model = keras.models.clone_model(model, clone_function=_with_projected_input_lstm)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3, clipnorm=1.0),
                      loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, sizes["vocab"], size=(batch, length)).astype("int32")
    labels = rng.integers(0, 2, size=(batch,))
    return lambda: model.train_on_batch(token_ids, labels)


def _recurrence_step(batch, length, width):
    """Keras' LSTM alone, forward and backward, on random inputs."""
    inputs = tf.random.stateless_normal((batch, length, width), seed=(0, 1))
    lstm = keras.layers.LSTM(width)
    lstm(inputs)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(lstm(inputs))  # of the last hidden state [batch, width]
        return tape.gradient(loss, lstm.trainable_weights)

    return lambda: [gradient.numpy() for gradient in step()]


def measure(lengths, rounds, smoke=False):
    """Rows `{length, candidate, median_ms, ratio_to_keras (median, q25, q75),
    share_of_peak}`; ratios are taken within each round."""
    batch, model_sizes = sizes(smoke)
    width = model_sizes["width"]
    peak = runtime.machine()["matmul_gflops"]
    rows = []
    for length in lengths:
        steps = {
            "keras": model_step(batch, length, model_sizes),
            "keras_xla": model_step(batch, length, model_sizes, jit_compile=True),
            "keras_bf16": model_step(batch, length, model_sizes, policy="mixed_bfloat16"),
            "projected_input": model_step(batch, length, model_sizes, projected_input=True),
            "double_batch": model_step(2 * batch, length, model_sizes),
            "half_embedding": model_step(batch, length, model_sizes, embedding_dim=width // 2),
            "lstm_only": _recurrence_step(batch, length, width),
        }
        times = rounds_lib.time_rounds(steps, rounds)
        times["double_batch"] = [seconds / 2 for seconds in times["double_batch"]]  # per batch
        for name in CANDIDATES:
            embedding_dim = width // 2 if name == "half_embedding" else width
            flops = batch * length * lstm_flops_per_token(embedding_dim, width)
            timed = rounds_lib.against(times[name], times["keras"])
            gflops = flops / (timed["median_ms"] / 1000) / 1e9
            rows.append({
                "length": length, "batch": batch, "embedding_dim": embedding_dim,
                "candidate": name,
                "median_ms": timed["median_ms"], "ratio_to_keras": timed["ratio"],
                "ratio_q25": timed["ratio_q25"], "ratio_q75": timed["ratio_q75"],
                "lstm_gflops": gflops, "share_of_peak": gflops / peak,
            })
    return rows


def markdown(rows, rounds, machine):
    lines = [
        f"LSTM classifier training step, batch {rows[0]['batch']}; median of {rounds} "
        f"interleaved rounds; ratio = candidate / `keras` within a round, median (IQR). "
        f"Machine: {machine['device']}, float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s; "
        "share of peak = the LSTM's matmul FLOP (3 x 2 x 4 x (E + U) x U per token) / time "
        "/ peak. `double_batch` is timed per batch of the others (half its step); "
        "`lstm_only` times the LSTM layer alone.",
        "",
        "| tokens | candidate | ms | ratio to keras (IQR) | LSTM GFLOP/s | share of peak |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['length']} | {row['candidate']} | {row['median_ms']:.1f} | "
            f"{row['ratio_to_keras']:.2f} ({row['ratio_q25']:.2f}-{row['ratio_q75']:.2f}) | "
            f"{row['lstm_gflops']:.1f} | {row['share_of_peak']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    machine = dict(runtime.machine())
    print(f"{machine['device']}: float32 matmul {machine['matmul_gflops']:.0f} GFLOP/s", flush=True)
    lengths = [int(n) for n in FLAGS.lengths]
    rows = measure(lengths, FLAGS.rounds, smoke=FLAGS.smoke)
    output_dir = pathlib.Path(FLAGS.output_dir)
    payload = {"machine": machine, "rounds": FLAGS.rounds, "tensorflow": tf.__version__,
               "keras": keras.__version__, "rows": rows}
    atomic.write_text(output_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    text = markdown(rows, FLAGS.rounds, machine)
    atomic.write_text(output_dir / "results.md", text)
    print(text)


if __name__ == "__main__":
    define_flags()
    app.run(main)
