"""Small pieces every training run shares: the learning-rate schedule, the
dtype policy, the device description written beside results, and the
progress-bar choice."""

import contextlib
import functools
import os
import sys

import keras
import numpy as np


def warmup_cosine_schedule(peak_learning_rate, total_steps, warmup_steps, alpha=0.0):
    """Linear warm-up from 0 to `peak_learning_rate` over `warmup_steps`, then
    cosine decay to `alpha * peak_learning_rate` at `total_steps`."""
    total_steps = max(1, int(total_steps))
    warmup_steps = min(int(warmup_steps), total_steps - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_learning_rate,
        decay_steps=total_steps - warmup_steps,
        warmup_target=peak_learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
        alpha=alpha,
    )


def device_description():
    """'CPU (N cores)' or 'K GPU(s): <names>' for results files."""
    if keras.backend.backend() == "jax":  # the JAX GPU harness in benchmarks/gpu/
        import jax

        devices = jax.devices()
        if devices[0].platform != "cpu":
            return f"{len(devices)} GPU(s): {devices[0].device_kind} (JAX)"
        return f"CPU ({os.cpu_count()} cores, JAX)"
    import tensorflow as tf  # here, so the schedule imports on any Keras backend

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"{len(gpus)} GPU(s): " + ", ".join(
            tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
        )
    return f"CPU ({os.cpu_count()} cores)"


def matmul_gflops(size=1024, repeats=10):
    """The machine's measured float32 matmul speed in GFLOP/s (TensorFlow, the
    median of `repeats` `[size, size] @ [size, size]` products after a warm-up),
    printed beside absolute times so that runs on other machines compare."""
    import statistics
    import time

    import tensorflow as tf

    a = tf.random.stateless_normal((size, size), seed=(0, 1))
    b = tf.random.stateless_normal((size, size), seed=(0, 2))
    tf.matmul(a, b).numpy()  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        tf.matmul(a, b).numpy()
        seconds.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(seconds) / 1e9


@functools.cache
def machine():
    """`{"device": device_description(), "matmul_gflops": ...}`, measured once per
    process: what every speed record carries, so that figures from different
    machines compare (`python -m kerapos.benchmarks.machine` prints it)."""
    return {"device": device_description(), "matmul_gflops": round(matmul_gflops(), 1)}


def transformer_training_flops_per_token(model, num_layers, hidden_dim, sequence_length,
                                         lookup_only=()):
    """Training FLOPs per token of a Transformer `model`: 3 x the forward pass
    (backward = 2 x forward), the forward pass being 2 FLOP per weight that
    multiplies the token (every `kernel`, and an `embeddings` table used as the
    output projection) plus 2 x 2 x `sequence_length` x `hidden_dim` per layer
    for the attention scores and their weighted sum: the 6N + 12LHQT of PaLM's
    appendix B (Chowdhery et al. 2022; Kaplan et al. 2020, table 1).

    `lookup_only`: path prefixes of tables that are only gathered from
    (position tables, an untied input embedding), which cost no FLOP.
    Position-bias MLPs and elementwise work are left out, so the share of
    peak it gives is, if anything, low.
    """
    multiplying = sum(
        int(np.prod(weight.shape)) for weight in model.weights
        if weight.path.endswith(("kernel", "embeddings"))
        and not weight.path.startswith(tuple(lookup_only))
    )
    return 6 * multiplying + 12 * num_layers * sequence_length * hidden_dim


def training_speed(tokens, seconds, flops_per_token):
    """`{"tokens_per_s", "flops_per_token", "achieved_gflops", "share_of_peak"}`
    of `tokens` trained in `seconds`; the share is of this machine's measured
    float32 matmul speed (`machine()`)."""
    tokens_per_second = tokens / seconds if seconds > 0 else float("nan")
    achieved = tokens_per_second * flops_per_token / 1e9
    return {
        "tokens_per_s": round(tokens_per_second, 1),
        "flops_per_token": int(flops_per_token),
        "achieved_gflops": achieved,
        "share_of_peak": achieved / machine()["matmul_gflops"],
    }


def training_speed_markdown(timings, schemes, measured_on):
    """Lines of a "Training throughput" Markdown table: one row per scheme of
    `schemes` in `timings` (results.json `timings`, from `training_speed`),
    under a line naming `measured_on` (results.json `machine`) and its peak."""
    trained = [scheme for scheme in schemes if scheme in timings]
    if not trained:
        return []
    measured_on = measured_on or {}
    lines = ["## Training throughput", "",
             f"{measured_on.get('device', 'unknown machine')}, float32 matmul "
             f"{measured_on.get('matmul_gflops', float('nan')):.0f} GFLOP/s; tokens/s over "
             "the whole fit (tracing included); GFLOP/s from 6N + 12LHQT FLOP per token "
             "(`runtime.transformer_training_flops_per_token`), as a share of that peak.",
             "",
             "| scheme | tokens/s | GFLOP/s | share of peak | train s | eval s |",
             "|---|---:|---:|---:|---:|---:|"]
    for scheme in trained:
        timing = timings[scheme]
        lines.append(f"| {scheme} | {timing['train_tokens_per_s']:.0f} | "
                     f"{timing.get('train_achieved_gflops', float('nan')):.1f} | "
                     f"{timing.get('train_share_of_peak', float('nan')):.1%} | "
                     f"{timing['train_s']:.0f} | {timing['eval_s']:.0f} |")
    return lines + [""]


def fit_verbosity():
    """Keras `verbose`: the progress bar on a terminal, one line per epoch in
    logs and CI (a progress bar there is thousands of carriage returns)."""
    return 1 if sys.stdout.isatty() else 2


@contextlib.contextmanager
def dtype_policy(name):
    """Runs the block under Keras dtype policy `name` ("none" = leave it),
    restoring the previous global policy afterwards (also on errors)."""
    previous = keras.mixed_precision.global_policy()
    if name != "none":
        keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
