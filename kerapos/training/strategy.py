"""The one place where a `tf.distribute` strategy is chosen and built."""

import json
import os

import tensorflow as tf

from kerapos.utils import checks

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
    checks.choice(name, "strategy", STRATEGIES)
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


def is_multi_worker(strategy):
    """True for `MultiWorkerMirroredStrategy` spanning more than one worker.

    This is the condition under which Keras 3.15 reduces step logs across
    workers (`keras/src/backend/tensorflow/trainer.py`,
    `_collective_all_reduce_multi_worker`); a one-worker `TF_CONFIG` behaves
    like `MirroredStrategy`.
    """
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.extended._in_multi_worker_mode()


def enable_multi_worker_fit(model, strategy, data_spec):
    """Lets Keras 3.15 `Model.fit`/`evaluate` run across workers.

    Under a multi-worker `MultiWorkerMirroredStrategy`, Keras 3.15's TensorFlow
    trainer fails for every model and dataset in two places (kerapos issue 3):

    1. `_maybe_symbolic_build` builds the model from the first batch reduced
       with `strategy.reduce("MEAN", (x, y), axis=None)`; `Strategy.reduce`
       takes one value, not a tuple, and the collective all-reduce path fails
       converting the tuple of `PerReplica` to a tensor. Here the model, loss,
       metrics and optimizer are built from `data_spec` (the dataset's
       `element_spec`) instead, with nothing reduced.
    2. `reduce_per_replica` reduces every step log with
       `strategy.reduce("MEAN", value, axis=0)`, which rejects the scalar
       metric results ("Invalid reduction dimension 0 for input with 0
       dimensions"). Here the train and test steps return each log with a
       leading axis of 1, so that reduction yields the mean over replicas as
       a scalar, exactly what Keras reports on one worker.

    Does nothing for other strategies. Call it after `model.compile` and before
    `fit`. Every worker must then run the same number of steps: build the same
    `tf.data` pipeline with the same seed on all of them and let
    `tf.distribute` hand each worker its slice of every batch (as
    `kerapos.data.text_pipeline.make_token_dataset` does).

    Args:
        model: a compiled `keras.Model` created in `strategy.scope()`.
        strategy: the strategy from `get_strategy`.
        data_spec: nested `tf.TensorSpec` of one `(x, y)` batch.
    """
    if not is_multi_worker(strategy):
        return

    def build_from_spec(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=data_spec)

    model._maybe_symbolic_build = build_from_spec
    model.train_step = _with_leading_axis(model.train_step)
    model.test_step = _with_leading_axis(model.test_step)


def _with_leading_axis(step):
    def step_with_leading_axis(data):
        logs = step(data)
        return tf.nest.map_structure(lambda value: tf.expand_dims(value, 0), logs)  # [1, ...]

    return step_with_leading_axis


def worker_id(strategy):
    """This worker's index in the cluster (0 without multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver.task_id if resolver is not None and resolver.task_type else 0


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "`strategy`=multi_worker needs the TF_CONFIG environment variable, e.g. "
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
