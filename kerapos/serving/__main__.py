"""TF Serving from the command line.

    python -m kerapos.serving config saved_models/ [--policy=latest --num_versions=1]
        [--labels=imdb:stable=1,imdb:canary=2 --policy=specific --versions=imdb:1,imdb:2]
        [--base_path_prefix=/models] [--output=models.config --batching_output=batching.config]
    python -m kerapos.serving predict --model=imdb --text="A wonderful film." [--grpc]
    python -m kerapos.serving status --model=imdb [--grpc]
    python -m kerapos.serving metadata --model=imdb [--grpc]
    python -m kerapos.serving check saved_models/imdb/1

`config` writes the `model_config_list` text proto for every model under the
base path (and the batching parameters); the others call a running server
(REST on --rest_port by default, gRPC on --grpc_port with --grpc) and print
its answer as JSON; `check` loads one export here, replays its warmup requests
and hostile inputs (`kerapos.serving.check`) and prints what came back and the
peak memory. Errors are one line on stderr, exit status 2.
"""

import pathlib
import sys

from absl import app
from absl import flags

import kerapos  # noqa: F401  (quiet TensorFlow start-up)
from kerapos.serving import check as serving_check
from kerapos.serving import client as serving_client
from kerapos.serving import config as serving_config
from kerapos.utils import atomic

COMMANDS = ("config", "predict", "status", "metadata", "check")
WITH_PATH = ("config", "check")  # commands taking one directory

flags.DEFINE_enum("policy", "latest", serving_config.POLICIES, "config: version policy.")
flags.DEFINE_integer("num_versions", 1, "config: versions served by the latest policy.")
flags.DEFINE_list("versions", [], "config: MODEL:VERSION,... served by the specific policy "
                  "(default: every version present).")
flags.DEFINE_list("labels", [], "config: MODEL:LABEL=VERSION,... (e.g. imdb:stable=1,imdb:canary=2).")
flags.DEFINE_string("base_path_prefix", None, "config: the base path inside the server "
                    "(e.g. /models in Docker); default: its absolute path here.")
flags.DEFINE_string("output", None, "config: write the model config here (default: print it).")
flags.DEFINE_string("batching_output", None, "config: also write the batching parameters here.")
flags.DEFINE_string("model", None, "predict/status/metadata: the model name.")
flags.DEFINE_multi_string("text", [], "predict: a text to send (repeat for a batch).")
flags.DEFINE_integer("version", None, "predict/status/metadata: a version (default: newest).")
flags.DEFINE_string("label", None, "predict/metadata: a version label instead of a version.")
flags.DEFINE_string("signature", serving_client.SERVING_DEFAULT, "predict: the signature.")
flags.DEFINE_bool("grpc", False, "Use gRPC (PredictionService / ModelService) instead of REST.")
flags.DEFINE_string("host", "localhost", "TF Serving's host.")
flags.DEFINE_integer("rest_port", 8501, "TF Serving's REST port.")
flags.DEFINE_integer("grpc_port", 8500, "TF Serving's gRPC port.")
FLAGS = flags.FLAGS


def _pairs(items, flag):
    """MODEL:VALUE items -> {model: [value, ...]}."""
    grouped = {}
    for item in items:
        model, separator, value = item.partition(":")
        if not separator or not model or not value:
            raise ValueError(f"--{flag} takes MODEL:VALUE items, got {item!r}.")
        grouped.setdefault(model, []).append(value)
    return grouped


def _config(base_dir):
    versions = {m: [int(v) for v in vs] for m, vs in _pairs(FLAGS.versions, "versions").items()}
    labels = {}
    for model, items in _pairs(FLAGS.labels, "labels").items():
        for item in items:
            label, separator, version = item.partition("=")
            if not separator or not version.isdigit():
                raise ValueError(f"--labels takes MODEL:LABEL=VERSION items, got {model}:{item}.")
            labels.setdefault(model, {})[label] = int(version)
    config = serving_config.model_config(
        base_dir, FLAGS.policy, FLAGS.num_versions, versions or None, labels or None,
        FLAGS.base_path_prefix)
    text = serving_config.to_text(config)
    if FLAGS.output:
        atomic.write_text(FLAGS.output, text)
        print(f"wrote {FLAGS.output} ({len(config.model_config_list.config)} models)")
    else:
        print(text, end="")
    if FLAGS.batching_output:
        atomic.write_text(FLAGS.batching_output,
                          serving_config.to_text(serving_config.batching_parameters()))
        print(f"wrote {FLAGS.batching_output}")


def _call(command):
    if not FLAGS.model:
        raise ValueError(f"{command} needs --model=NAME.")
    client = serving_client.Client(FLAGS.host, FLAGS.rest_port, FLAGS.grpc_port)
    if command == "predict":
        if not FLAGS.text:
            raise ValueError("predict needs at least one --text.")
        answer = client.predict(FLAGS.model, FLAGS.text, FLAGS.version, FLAGS.label,
                                FLAGS.signature, grpc=FLAGS.grpc)
    elif command == "status":
        answer = client.status(FLAGS.model, FLAGS.version, grpc=FLAGS.grpc)
    else:
        answer = client.metadata(FLAGS.model, FLAGS.version, FLAGS.label, grpc=FLAGS.grpc)
    print(serving_client.to_json(answer))


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS or len(argv) != (3 if argv[1] in WITH_PATH else 2):
        print(f"usage: python -m kerapos.serving {{{'|'.join(COMMANDS)}}} ...; config takes the "
              "base path (config saved_models/), check one version (check saved_models/imdb/1), "
              "the others --model (see --help).", file=sys.stderr)
        return 2
    try:
        if argv[1] == "config":
            _config(argv[2])
        elif argv[1] == "check":
            if not (pathlib.Path(argv[2]) / "saved_model.pb").is_file():
                raise ValueError(f"{argv[2]} holds no saved_model.pb; pass a version directory "
                                 "(saved_models/<name>/<version>).")
            print(serving_client.to_json(serving_check.check_export(argv[2])))
        else:
            _call(argv[1])
    except (ValueError, serving_client.ServingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
