"""Small pieces every training run shares: the learning-rate schedule, the
dtype policy, the device description written beside results, and the
progress-bar choice."""

import contextlib
import functools
import os
import sys

import keras


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
