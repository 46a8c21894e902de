r"""TensorFlow's thread settings against the main job's LSTM training step.

    python -m kerapos.benchmarks.threads --output_dir=benchmarks/threads

TensorFlow fixes its intra-op (threads inside one op) and inter-op (ops run
side by side) pools when it starts, so each setting is timed in a fresh
process: every round starts one process per setting in turn, each timing
`--steps` training steps of the main job's classifier (the `keras` candidate
of `kerapos.benchmarks.lstm_step`: batch 32, `--length` tokens) after two
untimed ones, and reports their median. A setting's ratio to TensorFlow's
default is taken within each round (median and interquartile range over
`--rounds`), so machine load falls on all alike. Writes results.json and
results.md; `--smoke` shrinks everything for the test suite.
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import tensorflow as tf
from absl import app
from absl import flags

from kerapos.benchmarks import lstm_step
from kerapos.benchmarks import rounds as rounds_lib
from kerapos.training import runtime
from kerapos.utils import atomic

FLAGS = flags.FLAGS
DEFAULT = "default"


def settings(cores):
    """`{name: (intra, inter)}`: TensorFlow's default (0, 0), then one thread or
    one per core for each pool."""
    counts = sorted({1, cores})
    return {DEFAULT: (0, 0), **{f"intra{intra}_inter{inter}": (intra, inter)
                                for intra in counts for inter in counts}}


def define_flags():
    flags.DEFINE_string("output_dir", "benchmarks/threads", "Where results.json/results.md go.")
    flags.DEFINE_integer("length", 256, "Tokens per review of the timed batches (the main job's "
                         "bucketed batches average about 250).", lower_bound=1)
    flags.DEFINE_integer("steps", 10, "Timed steps per process.", lower_bound=1)
    flags.DEFINE_integer("rounds", 5, "Interleaved rounds, each one process per setting.",
                         lower_bound=1)
    flags.DEFINE_bool("smoke", False, "Tiny sizes (the test suite's smoke run).")
    flags.DEFINE_string("worker", None, "Internal: 'INTRA,INTER' to time one setting and print "
                        "its median step in seconds as JSON.")


def worker(intra, inter, length, steps, smoke):
    """`{seconds, intra, inter}`: the median seconds of `steps` training steps under
    these pool sizes (0 = default), and the sizes TensorFlow reports it ran with.
    Must run before TensorFlow executes anything in this process."""
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    batch, model_sizes = lstm_step.sizes(smoke)
    step = lstm_step.model_step(batch, length, model_sizes)
    for _ in range(2):  # trace and warm up
        step()
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return {"seconds": statistics.median(seconds),
            "intra": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter": tf.config.threading.get_inter_op_parallelism_threads()}


def _time_in_process(intra, inter, length, steps, smoke):
    command = [sys.executable, "-m", "kerapos.benchmarks.threads", f"--worker={intra},{inter}",
               f"--length={length}", f"--steps={steps}", f"--smoke={smoke}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"the timing process for intra={intra}, inter={inter} failed:\n"
                           f"{done.stderr[-2000:]}")
    timed = json.loads(done.stdout.strip().splitlines()[-1])
    if (timed["intra"], timed["inter"]) != (intra, inter):
        raise RuntimeError(f"TensorFlow ran with intra={timed['intra']}, inter={timed['inter']}, "
                           f"not the requested {intra}, {inter}.")
    return timed["seconds"]


def measure(length, steps, rounds, smoke=False, cores=None):
    """Rows `{setting, intra, inter, median_ms, ratio_to_default, ratio_q25, ratio_q75}`."""
    candidates = settings(cores or os.cpu_count() or 1)
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, (intra, inter) in candidates.items():
            times[name].append(_time_in_process(intra, inter, length, steps, smoke))
    rows = []
    for name, (intra, inter) in candidates.items():
        timed = rounds_lib.against(times[name], times[DEFAULT])
        rows.append({"setting": name, "intra": intra, "inter": inter,
                     "median_ms": timed["median_ms"], "ratio_to_default": timed["ratio"],
                     "ratio_q25": timed["ratio_q25"], "ratio_q75": timed["ratio_q75"]})
    return rows


def markdown(rows, settings_used, machine):
    lines = [
        f"LSTM classifier training step (batch {settings_used['batch']}, "
        f"{settings_used['length']} tokens) under TensorFlow's thread settings, each in a fresh "
        f"process; median of {settings_used['steps']} steps per process, "
        f"{settings_used['rounds']} interleaved rounds; ratio = setting / default within a "
        f"round, median (IQR); above 1 is slower. Machine: {machine['device']}, float32 matmul "
        f"{machine['matmul_gflops']:.0f} GFLOP/s. 0 = TensorFlow's default pool size.",
        "",
        "| setting | intra-op | inter-op | step ms | ratio to default (IQR) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['setting']} | {row['intra']} | {row['inter']} | "
                     f"{row['median_ms']:.1f} | {row['ratio_to_default']:.2f} "
                     f"({row['ratio_q25']:.2f}-{row['ratio_q75']:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if FLAGS.worker:
        intra, inter = (int(count) for count in FLAGS.worker.split(","))
        print(json.dumps(worker(intra, inter, FLAGS.length, FLAGS.steps, FLAGS.smoke)))
        return
    machine = dict(runtime.machine())
    rows = measure(FLAGS.length, FLAGS.steps, FLAGS.rounds, smoke=FLAGS.smoke)
    used = {"batch": lstm_step.sizes(FLAGS.smoke)[0], "length": FLAGS.length, "steps": FLAGS.steps,
            "rounds": FLAGS.rounds}
    output_dir = pathlib.Path(FLAGS.output_dir)
    atomic.write_text(output_dir / "results.json",
                      json.dumps({"machine": machine, **used, "rows": rows}, indent=2) + "\n")
    text = markdown(rows, used, machine)
    atomic.write_text(output_dir / "results.md", text)
    print(text)


if __name__ == "__main__":
    define_flags()
    app.run(main)
