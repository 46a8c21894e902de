"""absl flags shared by every kerapos trainer, defined once here.

Each trainer calls `define_common_flags(...)` with its own defaults, defines
only its task's flags, and reads them back with `common_flag_values()`.
`--flagfile=PATH` (absl) works for all of them.
"""

import json

from absl import flags
from absl import logging

from kerapos.training.strategy import STRATEGIES

MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")


def define_common_flags(model_name, model_dir, epochs, batch_size, learning_rate):
    """Strategy, precision, schedule, seed and output-location flags."""
    flags.DEFINE_enum("strategy", "default", STRATEGIES,
                      "tf.distribute strategy: default (one device), one_device, mirrored "
                      "(all local GPUs), multi_worker (needs TF_CONFIG) or tpu (with --tpu).")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
    flags.DEFINE_enum("mixed_precision", "none", MIXED_PRECISION,
                      "Keras dtype policy: mixed_float16 for GPUs, mixed_bfloat16 for TPUs/recent CPUs.")
    flags.DEFINE_bool("jit_compile", False, "Compile the train/eval steps with XLA.")
    flags.DEFINE_integer("seed", 0, "Seed for weights, shuffling and the validation split.")
    flags.DEFINE_integer("epochs", epochs, "Maximum epochs (early stopping may end sooner).")
    flags.DEFINE_integer("batch_size", batch_size,
                         "GLOBAL batch size, split across the strategy's replicas.")
    flags.DEFINE_float("learning_rate", learning_rate,
                       "Peak learning rate (linear warm-up, then cosine decay).")
    flags.DEFINE_string("model_dir", model_dir,
                        "Run directory: TensorBoard logs, backups (resume), checkpoints, results.json.")
    flags.DEFINE_string("export_dir", "saved_models", "Parent of TF Serving model base paths.")
    flags.DEFINE_string("model_name", model_name,
                        "Exports go to <export_dir>/<model_name>/<version>/.")


COMMON_FLAGS = ("strategy", "tpu", "mixed_precision", "jit_compile", "seed", "epochs",
                "batch_size", "learning_rate", "model_dir", "export_dir", "model_name")


def flag_values(names):
    """{name: value} for the given flag names (after absl has parsed argv)."""
    return {name: flags.FLAGS[name].value for name in names}


def parse_json_flag(name):
    """The JSON object given to `--name` (empty dict if unset), or a clear error."""
    raw = flags.FLAGS[name].value
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"--{name} must be a JSON object, e.g. '{{\"causal\": false}}'; "
                         f"could not parse {raw!r}: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--{name} must be a JSON object, got {raw!r}.")
    return value


def integer_list(name):
    """The integers given to list flag `--name`, or a clear error."""
    values = flags.FLAGS[name].value
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name} takes integers, got {values}") from None


def lower_log_verbosity():
    """absl logging at WARNING unless `--verbosity` was given: TensorFlow logs
    SavedModel-writing details through absl at INFO, which would interleave
    with training output (`--verbosity=0` brings them back). Call it first in
    a trainer's `main` (absl resets the level while parsing flags)."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def preset_values(preset, names):
    """{name: value} for flags a preset may set: the flag's value where it was
    given on the command line, else the preset's."""
    values = flags.FLAGS
    return {name: values[name].value if values[name].present else preset[name] for name in names}
