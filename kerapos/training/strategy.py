"""The one place where a `tf.distribute` strategy is chosen and built."""

import json
import os

import kerapos  # noqa: F401
import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(name="default", tpu=None):
    """Builds a `tf.distribute.Strategy` by name.

    Args:
        name: one of `STRATEGIES`:
            "default": TensorFlow's default (no distribution; one device).
            "one_device": `OneDeviceStrategy` on the first GPU, else the CPU.
            "mirrored": `MirroredStrategy` over all local GPUs (the CPU when
                there are none, or the logical CPU devices if several exist).
            "multi_worker": `MultiWorkerMirroredStrategy`; each worker runs the
                same command with its own `TF_CONFIG` (cluster + task).
            "tpu": `TPUStrategy` on the TPU named by `tpu`.
        tpu: TPU name or `grpc://` address for "tpu" ("" or "local" for a TPU VM).

    Returns:
        The strategy. Everything that creates variables must be built inside
        its `scope()`; batch sizes passed to `tf.data` are global and split
        across `strategy.num_replicas_in_sync` replicas.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if devices:
            return tf.distribute.MirroredStrategy(devices)
        # CPU-only (e.g. logical CPU devices): collective all-reduce buys
        # nothing on one host's memory, so reduce through one device.
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if name == "multi_worker":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu="local" if tpu in (None, "") else tpu
    )
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True where results, summaries and exports are written (one worker only)."""
    return strategy.extended.should_checkpoint


def worker_id(strategy):
    """This worker's index in the cluster (0 without multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver.task_id if resolver is not None and resolver.task_type else 0


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\' on the first worker.'
        )
    try:
        config = json.loads(raw)
        config["cluster"]["worker"]
        config["task"]["type"], config["task"]["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not valid multi-worker JSON ({error!r}): it needs "
            '"cluster": {"worker": [...]} and "task": {"type": ..., "index": ...}.'
        ) from None
