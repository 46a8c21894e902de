"""A client of TF Serving for kerapos' raw-text exports: REST and gRPC.

REST (default port 8501) sends JSON to `/v1/models/<name>[/versions/<v> |
/labels/<label>]:predict` and reads `/v1/models/<name>` (status) and
`.../metadata`; gRPC (default port 8500) sends the `tensorflow-serving-api`
protos through `PredictionService` (Predict, GetModelMetadata) and
`ModelService` (GetModelStatus). Requests are built by the `*_request`
functions, which need no server, and `check_request` checks one against an
export's own signature (input names, dtypes, shapes) as TF Serving does.

Example:
```python
client = Client("localhost")
client.predict("imdb", ["A wonderful film."])          # REST: {"predictions": [...]}
client.predict("imdb", ["A wonderful film."], grpc=True)   # {output: numpy array}
client.status("imdb"), client.metadata("imdb")
```
"""

import json
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2

SERVING_DEFAULT = "serving_default"


class ServingError(RuntimeError):
    """TF Serving could not be reached or refused a request (one-line message)."""


def _version_path(version=None, label=None):
    if version is not None and label is not None:
        raise ValueError("pass a version or a label, not both.")
    if version is not None:
        return f"/versions/{int(version)}"
    return f"/labels/{label}" if label is not None else ""


def _texts(texts):
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    texts = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else t for t in texts]
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be strings.")
    return texts


def rest_predict_request(model, texts, version=None, label=None, signature=SERVING_DEFAULT):
    """`(path, JSON body)` of a REST predict call (TF Serving's row format)."""
    path = f"/v1/models/{model}{_version_path(version, label)}:predict"
    return path, {"signature_name": signature, "instances": _texts(texts)}


def grpc_predict_request(model, texts, version=None, label=None, signature=SERVING_DEFAULT,
                         input_name="text"):
    """A `PredictRequest` with `texts` as a `tf.string [batch]` input."""
    request = predict_pb2.PredictRequest()
    _model_spec(request.model_spec, model, version, label, signature)
    request.inputs[input_name].CopyFrom(
        tf.make_tensor_proto([t.encode("utf-8") for t in _texts(texts)], dtype=tf.string))
    return request


def grpc_status_request(model, version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    _model_spec(request.model_spec, model, version, None, None)
    return request


def grpc_metadata_request(model, version=None, label=None):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    _model_spec(request.model_spec, model, version, label, None)
    return request


def _model_spec(spec, model, version, label, signature):
    _version_path(version, label)  # checks
    spec.name = model
    if signature:
        spec.signature_name = signature
    if version is not None:
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = label


def check_request(request, version_dir):
    """Checks a `PredictRequest` against the export in `version_dir`: the
    signature exists, the inputs are its inputs, with its dtypes and
    compatible shapes.

    Raises:
        ValueError: naming what does not match.
    """
    loaded = tf.saved_model.load(str(version_dir))
    name = request.model_spec.signature_name or SERVING_DEFAULT
    if name not in loaded.signatures:
        raise ValueError(f"the export has no signature {name!r} "
                         f"({', '.join(sorted(loaded.signatures))}).")
    specs = loaded.signatures[name].structured_input_signature[1]
    if set(request.inputs) != set(specs):
        raise ValueError(f"signature {name!r} takes inputs {sorted(specs)}, the request has "
                         f"{sorted(request.inputs)}.")
    for key, spec in specs.items():
        tensor = request.inputs[key]
        dtype = tf.dtypes.as_dtype(tensor.dtype)
        shape = tf.TensorShape([d.size for d in tensor.tensor_shape.dim])
        if dtype != spec.dtype or not spec.shape.is_compatible_with(shape):
            raise ValueError(f"input {key!r} is {dtype.name} {shape.as_list()}; signature "
                             f"{name!r} takes {spec.dtype.name} {spec.shape.as_list()}.")


class Client:
    """TF Serving at `host`: REST on `rest_port`, gRPC on `grpc_port`."""

    def __init__(self, host="localhost", rest_port=8501, grpc_port=8500, timeout=30.0):
        self.host, self.rest_port, self.grpc_port = host, int(rest_port), int(grpc_port)
        self.timeout = float(timeout)

    @property
    def rest_url(self):
        return f"http://{self.host}:{self.rest_port}"

    def _rest(self, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.rest_url + path, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace").strip()
            raise ServingError(f"TF Serving answered {error.code} for {path}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServingError(f"cannot reach TF Serving's REST API at {self.rest_url} ({reason}); "
                               "is the server running (README: Serving), and are --host and "
                               "--rest_port right?") from None

    def _grpc(self, stub_name, method, request):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stubs = {"prediction": prediction_service_pb2_grpc.PredictionServiceStub,
                 "model": model_service_pb2_grpc.ModelServiceStub}
        address = f"{self.host}:{self.grpc_port}"
        with grpc.insecure_channel(address) as channel:
            try:
                return getattr(stubs[stub_name](channel), method)(request, timeout=self.timeout)
            except grpc.RpcError as error:
                raise ServingError(f"gRPC {method} to TF Serving at {address} failed: "
                                   f"{error.code().name} {error.details()}") from None

    def predict(self, model, texts, version=None, label=None, signature=SERVING_DEFAULT,
                grpc=False):
        """REST: the JSON answer (`{"predictions": [...]}`); gRPC: `{output
        name: numpy array}`."""
        if grpc:
            request = grpc_predict_request(model, texts, version, label, signature)
            response = self._grpc("prediction", "Predict", request)
            return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}
        path, body = rest_predict_request(model, texts, version, label, signature)
        return self._rest(path, body)

    def status(self, model, version=None, grpc=False):
        """The versions TF Serving has and their state (REST JSON, or the
        `GetModelStatusResponse` as a dict)."""
        if grpc:
            from google.protobuf import json_format

            response = self._grpc("model", "GetModelStatus", grpc_status_request(model, version))
            return json_format.MessageToDict(response)
        return self._rest(f"/v1/models/{model}{_version_path(version)}")

    def metadata(self, model, version=None, label=None, grpc=False):
        """The model's signatures (REST JSON, or gRPC's metadata as a dict)."""
        if grpc:
            from google.protobuf import json_format

            response = self._grpc("prediction", "GetModelMetadata",
                                  grpc_metadata_request(model, version, label))
            return json_format.MessageToDict(response)
        return self._rest(f"/v1/models/{model}{_version_path(version, label)}/metadata")


def to_json(value):
    """JSON text of an answer (numpy arrays as lists, bytes as UTF-8)."""

    def default(item):
        if isinstance(item, np.ndarray):
            return item.tolist()
        if isinstance(item, bytes):
            return item.decode("utf-8", errors="replace")
        raise TypeError(type(item).__name__)

    return json.dumps(value, default=default, ensure_ascii=False)
