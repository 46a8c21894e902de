"""TF Serving's model config, batching parameters and the client, checked
with the `tensorflow-serving-api` protos and the exports' own signatures
(no TF Serving binary exists here, and no server stands in for it)."""

import json
import socket

import pytest
import tensorflow as tf
from google.protobuf import text_format
from helpers import run_python
from tensorflow_serving.config import model_server_config_pb2

from kerapos.export import writer
from kerapos.serving import client as serving_client
from kerapos.serving import config as serving_config


def _lengths(text):  # text: [batch] tf.string
    return {"length": tf.strings.length(text)}  # [batch]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """saved_models/ with imdb versions 1-3 and lm version 1 (a stray file too)."""
    base = tmp_path_factory.mktemp("saved_models")
    endpoints = {writer.SERVING_DEFAULT: writer.Endpoint(_lengths)}
    for name, count in (("imdb", 3), ("lm", 1)):
        for _ in range(count):
            writer.write_saved_model(base / name, endpoints, warmup_requests=False)
    (base / "README.md").write_text("not a model")
    return base


def _parsed(text):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_latest_policy_config_parses_back(exports):
    config = _parsed(serving_config.to_text(serving_config.model_config(exports, num_versions=2)))
    entries = {e.name: e for e in config.model_config_list.config}
    assert list(entries) == ["imdb", "lm"]
    assert entries["imdb"].base_path == str((exports / "imdb").resolve())
    assert entries["imdb"].model_platform == "tensorflow"
    assert entries["imdb"].model_version_policy.WhichOneof("policy_choice") == "latest"
    assert entries["imdb"].model_version_policy.latest.num_versions == 2


def test_specific_versions_with_stable_and_canary_labels(exports):
    config = serving_config.model_config(
        exports, policy="specific", versions={"imdb": [2, 3]},
        labels={"imdb": {"stable": 2, "canary": 3}}, base_path_prefix="/models")
    imdb, lm = _parsed(serving_config.to_text(config)).model_config_list.config
    assert list(imdb.model_version_policy.specific.versions) == [2, 3]
    assert dict(imdb.version_labels) == {"stable": 2, "canary": 3}
    assert imdb.base_path == "/models/imdb"
    assert list(lm.model_version_policy.specific.versions) == [1]  # every version present


@pytest.mark.parametrize("arguments, message", [
    (dict(policy="newest"), "policy must be one of latest, specific"),
    (dict(num_versions=0), "num_versions must be an integer >= 1"),
    (dict(policy="specific", versions={"imdb": [4]}), r"model 'imdb' has no version \[4\]"),
    (dict(labels={"bert": {"stable": 1}}), "model 'bert' has no export"),
    (dict(labels={"imdb": {"stable": 1}}), "label 'stable' of model 'imdb' points at version 1, "
                                           r"which the latest policy does not load \(\[3\]\)"),
])
def test_bad_configs_are_refused(exports, arguments, message):
    with pytest.raises(ValueError, match=message):
        serving_config.model_config(exports, **arguments)


def test_empty_or_missing_base_path(tmp_path):
    with pytest.raises(ValueError, match="no exports under"):
        serving_config.model_config(tmp_path)
    with pytest.raises(ValueError, match="is not a directory"):
        serving_config.model_config(tmp_path / "nope")


def test_batching_parameters_parse_back_with_the_documented_defaults():
    text = serving_config.to_text(serving_config.batching_parameters(allowed_batch_sizes=[1, 8]))
    parsed = text_format.Parse(text, serving_config.BATCHING_PARAMETERS())
    defaults = {name: value for name, value, _ in serving_config.BATCHING}
    assert parsed.max_batch_size.value == defaults["max_batch_size"] == 32
    assert parsed.batch_timeout_micros.value == 2000
    assert parsed.num_batch_threads.value == defaults["num_batch_threads"]
    assert list(parsed.allowed_batch_sizes) == [1, 8]
    # TF Serving's field names (session_bundle_config.proto), as the file spells them.
    assert {line.split()[0] for line in text.splitlines() if line and line[0] not in " }"} == {
        "max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
        "allowed_batch_sizes:"}
    with pytest.raises(ValueError, match="unknown batching parameters"):
        serving_config.batching_parameters(max_batch=4)


def test_config_command_writes_both_files(exports, tmp_path):
    result = run_python([
        "-m", "kerapos.serving", "config", str(exports), "--policy=specific",
        "--versions=imdb:1,imdb:3", "--labels=imdb:stable=1,imdb:canary=3",
        f"--output={tmp_path / 'models.config'}", f"--batching_output={tmp_path / 'batching.config'}",
    ])
    assert "wrote" in result.stdout and "Traceback" not in result.stderr
    imdb = _parsed((tmp_path / "models.config").read_text()).model_config_list.config[0]
    assert dict(imdb.version_labels) == {"stable": 1, "canary": 3}
    text_format.Parse((tmp_path / "batching.config").read_text(),
                      serving_config.BATCHING_PARAMETERS())


def test_requests_match_the_exports_signature(exports):
    version_dir = exports / "imdb" / "3"
    request = serving_client.grpc_predict_request("imdb", ["a film", "\u00e9t\u00e9"], label="canary")
    serving_client.check_request(request, version_dir)
    assert request.model_spec.version_label == "canary"
    assert [t.decode() for t in tf.make_ndarray(request.inputs["text"])] == ["a film", "\u00e9t\u00e9"]
    wrong = serving_client.grpc_predict_request("imdb", ["a"], input_name="texts")
    with pytest.raises(ValueError, match=r"takes inputs \['text'\], the request has \['texts'\]"):
        serving_client.check_request(wrong, version_dir)
    other = serving_client.grpc_predict_request("imdb", ["a"], signature="classify")
    with pytest.raises(ValueError, match="no signature 'classify'"):
        serving_client.check_request(other, version_dir)
    path, body = serving_client.rest_predict_request("imdb", "a film", version=2)
    assert path == "/v1/models/imdb/versions/2:predict"
    assert body == {"signature_name": "serving_default", "instances": ["a film"]}
    status = serving_client.grpc_status_request("imdb", version=3)
    metadata = serving_client.grpc_metadata_request("imdb")
    assert status.model_spec.version.value == 3 and list(metadata.metadata_field) == ["signature_def"]
    with pytest.raises(ValueError, match="a version or a label, not both"):
        serving_client.rest_predict_request("imdb", "x", version=1, label="stable")


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_server_is_one_clear_error():
    port = _closed_port()
    client = serving_client.Client("127.0.0.1", rest_port=port, grpc_port=port, timeout=5)
    with pytest.raises(serving_client.ServingError, match="cannot reach TF Serving's REST API"):
        client.predict("imdb", ["a film"])
    with pytest.raises(serving_client.ServingError, match="gRPC Predict to TF Serving .* failed: "
                                                          "UNAVAILABLE"):
        client.predict("imdb", ["a film"], grpc=True)
    result = run_python(["-m", "kerapos.serving", "predict", "--model=imdb", "--text=a film",
                         f"--rest_port={port}"], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach TF Serving")
    usage = run_python(["-m", "kerapos.serving", "predict"], check=False)
    assert usage.returncode == 2 and "error: predict needs --model=NAME." in usage.stderr


def test_answers_print_as_json():
    import numpy as np

    text = serving_client.to_json({"top_k_tokens": np.array([[b"a", b"\xc3\xa9"]]),
                                   "p": np.array([0.5], np.float32)})
    assert json.loads(text) == {"top_k_tokens": [["a", "\u00e9"]], "p": [0.5]}
