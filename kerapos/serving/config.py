"""TF Serving's model config and batching parameters for a base path of exports.

`model_config(base_dir)` is a `tensorflow_serving.config.ModelServerConfig`
with one `model_config_list` entry per model under `base_dir` (a directory
holding integer version directories with a `saved_model.pb`, as kerapos'
exports write them): its name, base path, version policy (`latest` N, or
`specific` versions) and version labels (`stable`, `canary`, ...). TF Serving
reads it as a text proto with `--model_config_file`:

    tensorflow_model_server --model_config_file=models.config \
        --enable_batching --batching_parameters_file=batching.config

Canary roll-out: serve two versions (`specific` 1 and 2), label the old one
`stable` and the new one `canary`, send a share of traffic to
`/v1/models/<name>/labels/canary`, then move `stable` to the new version
(TF Serving re-reads the file with `--model_config_file_poll_wait_seconds`).

`batching_parameters()` is the `BatchingParameters` text proto of
`--batching_parameters_file` with the defaults documented on `BATCHING`.
The `tensorflow-serving-api` package does not ship that message, so
`BATCHING_PARAMETERS` ports its definition (tensorflow_serving/servables/
tensorflow/session_bundle_config.proto, the fields kerapos writes) so the
file is written, and parsed back, through a real proto message.

Example:
```python
config = model_config("saved_models", policy="specific", versions={"imdb": [1, 2]},
                      labels={"imdb": {"stable": 1, "canary": 2}})
text_format.MessageToString(config)   # what `--model_config_file` reads
```
"""

import os
import pathlib

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

POLICIES = ("latest", "specific")

# --batching_parameters_file defaults: (field, value, why).
BATCHING = (
    ("max_batch_size", 32, "requests merged into one run of the graph at most"),
    ("batch_timeout_micros", 2000, "wait at most 2 ms for a batch to fill"),
    ("max_enqueued_batches", 100, "queue bound; past it requests fail fast"),
    ("num_batch_threads", os.cpu_count() or 1, "batches run in parallel (the cores)"),
    ("pad_variable_length_inputs", False, "kerapos' only input is a [batch] string"),
)


def _batching_parameters_class():
    """The `tensorflow.serving.BatchingParameters` message (its wrapper-typed
    fields as in session_bundle_config.proto)."""
    wrapper = {"max_batch_size": "Int64Value", "batch_timeout_micros": "Int64Value",
               "max_enqueued_batches": "Int64Value", "num_batch_threads": "Int64Value",
               "thread_pool_name": "StringValue"}
    numbers = {"max_batch_size": 1, "batch_timeout_micros": 2, "max_enqueued_batches": 3,
               "num_batch_threads": 4, "thread_pool_name": 5, "allowed_batch_sizes": 6,
               "pad_variable_length_inputs": 7}
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
        wrappers_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
    file = descriptor_pb2.FileDescriptorProto(
        name="kerapos/session_bundle_config.proto", package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
    message = file.message_type.add(name="BatchingParameters")
    field_type = descriptor_pb2.FieldDescriptorProto
    for name, number in numbers.items():
        field = message.field.add(name=name, number=number)
        if name in wrapper:
            field.type, field.type_name = field_type.TYPE_MESSAGE, f".google.protobuf.{wrapper[name]}"
            field.label = field_type.LABEL_OPTIONAL
        elif name == "allowed_batch_sizes":
            field.type, field.label = field_type.TYPE_INT64, field_type.LABEL_REPEATED
        else:
            field.type, field.label = field_type.TYPE_BOOL, field_type.LABEL_OPTIONAL
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BATCHING_PARAMETERS = _batching_parameters_class()


def batching_parameters(**overrides):
    """A `BatchingParameters` message: `BATCHING`'s defaults, then `overrides`
    (same field names; `allowed_batch_sizes` a list of ints)."""
    values = {name: value for name, value, _ in BATCHING}
    unknown = sorted(set(overrides) - set(values) - {"allowed_batch_sizes"})
    if unknown:
        raise ValueError(f"unknown batching parameters {unknown}; known: "
                         f"{', '.join([*values, 'allowed_batch_sizes'])}.")
    values.update(overrides)
    parameters = BATCHING_PARAMETERS()
    for name, value in values.items():
        if name == "allowed_batch_sizes":
            parameters.allowed_batch_sizes.extend(int(v) for v in value)
        elif name == "pad_variable_length_inputs":
            parameters.pad_variable_length_inputs = bool(value)
        else:
            getattr(parameters, name).value = int(value)
    return parameters


def model_versions(base_dir):
    """`{model name: sorted versions}` of the exports under `base_dir`."""
    base_dir = pathlib.Path(base_dir)
    if not base_dir.is_dir():
        raise ValueError(f"{base_dir} is not a directory; pass the base path the exports are "
                         "written under (e.g. saved_models/).")
    models = {}
    for model_dir in sorted(p for p in base_dir.iterdir() if p.is_dir()):
        versions = sorted(int(v.name) for v in model_dir.iterdir()
                          if v.name.isdigit() and (v / "saved_model.pb").is_file())
        if versions:
            models[model_dir.name] = versions
    if not models:
        raise ValueError(f"no exports under {base_dir}: expected <name>/<version>/saved_model.pb "
                         "(run a trainer first, or pass the right directory).")
    return models


def model_config(base_dir, policy="latest", num_versions=1, versions=None, labels=None,
                 base_path_prefix=None):
    """The `ModelServerConfig` for every model under `base_dir`.

    Args:
        base_dir: the exports' base path (`saved_models/`).
        policy: "latest" (the newest `num_versions` versions) or "specific"
            (`versions[name]`, default: every version present).
        num_versions: int >= 1, for "latest".
        versions: optional `{name: [versions]}` for "specific".
        labels: optional `{name: {label: version}}` (TF Serving serves a
            label only for a version the policy loads).
        base_path_prefix: optional path the base directory has inside the
            server (e.g. "/models" in Docker); default its absolute path here.

    Raises:
        ValueError: an unknown policy, a model, version or label that does
            not exist or is not loaded by the policy.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}.")
    if not isinstance(num_versions, int) or num_versions < 1:
        raise ValueError(f"num_versions must be an integer >= 1, got {num_versions!r}.")
    present = model_versions(base_dir)
    versions, labels = dict(versions or {}), dict(labels or {})
    for name in sorted(set(versions) | set(labels)):
        if name not in present:
            raise ValueError(f"model {name!r} has no export under {base_dir} (models: "
                             f"{', '.join(present)}).")
    config = model_server_config_pb2.ModelServerConfig()
    root = pathlib.Path(base_path_prefix) if base_path_prefix else pathlib.Path(base_dir).resolve()
    for name, available in present.items():
        entry = config.model_config_list.config.add(
            name=name, base_path=str(root / name), model_platform="tensorflow")
        if policy == "latest":
            entry.model_version_policy.latest.num_versions = num_versions
            loaded = available[-num_versions:]
        else:
            loaded = sorted(versions.get(name, available))
            missing = sorted(set(loaded) - set(available))
            if missing:
                raise ValueError(f"model {name!r} has no version {missing} (present: {available}).")
            entry.model_version_policy.specific.versions.extend(loaded)
        for label, version in sorted(labels.get(name, {}).items()):
            if version not in loaded:
                raise ValueError(f"label {label!r} of model {name!r} points at version {version}, "
                                 f"which the {policy} policy does not load ({loaded}).")
            entry.version_labels[label] = version
    return config


def to_text(message):
    """The text proto TF Serving's flags read."""
    return text_format.MessageToString(message)
