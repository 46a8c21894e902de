"""TF Serving warmup requests for the raw-text exports.

TF Serving replays `<version>/assets.extra/tf_serving_warmup_requests` when it
loads a version, before the version serves, so the first real request does
not pay for graph initialisation. The file is a TFRecord of
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` records, each
holding a `PredictRequest` (TF Serving's `saved_model_warmup` reads
`predict_log.request`). Every kerapos export carries requests for its
`serving_default` text signature at batch sizes 1 and 8, made of a few
representative texts (plain, empty, non-ASCII, longer than any model's
training length), and `kerapos.export.writer` replays them against the
written SavedModel before the version appears: an export whose warmup fails
is refused.

Example:
```python
requests = warmup.text_requests()            # batch sizes 1 and 8
warmup.write_requests(path, requests)        # TFRecord of PredictionLogs
warmup.replay(tf.saved_model.load(version_dir), warmup.read_requests(path))
```
"""

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving's fixed name in assets.extra/
BATCH_SIZES = (1, 8)
WARMUP_TEXTS = (
    "A wonderful, moving film.",
    "",
    "Z\u00fcrich caf\u00e9 \U0001F600 na\u00efve",
    "It was the best of times, it was the worst of times. " * 40,  # past any training length
)


def text_requests(signature_name="serving_default", input_name="text", texts=WARMUP_TEXTS,
                  batch_sizes=BATCH_SIZES):
    """One `PredictRequest` per batch size, its `input_name` a `tf.string`
    `[batch]` of `texts` repeated in order."""
    requests = []
    for batch_size in batch_sizes:
        batch = [texts[i % len(texts)] for i in range(batch_size)]
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = signature_name
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
        requests.append(request)
    return requests


def write_requests(path, requests):
    """Writes `requests` as a TFRecord of `PredictionLog`s at `path`."""
    with tf.io.TFRecordWriter(str(path)) as records:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            records.write(log.SerializeToString())


def read_requests(path):
    """The `PredictRequest`s of a warmup file, in order."""
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        for record in tf.data.TFRecordDataset(str(path))
    ]


def error_reason(error):
    """The one line of an exception that says what went wrong: for a graph
    error, its own message, the last unindented line (before it come "Graph
    execution error", the node and the Python stack)."""
    text = error.message if isinstance(error, tf.errors.OpError) else str(error)
    lines = [line for line in text.splitlines() if line.strip()
             and not line.startswith((" ", "\t", "Graph execution error", "Detected at"))]
    return lines[-1].strip() if lines else type(error).__name__


def replay(loaded, requests):
    """Runs every request through `loaded`'s signature, as TF Serving's warmup
    does; returns one dict of numpy outputs per request.

    Raises:
        ValueError: a request names a missing signature, fails, or returns
            outputs whose batch size is not the request's.
    """
    outputs = []
    for index, request in enumerate(requests):
        name = request.model_spec.signature_name or "serving_default"
        if name not in loaded.signatures:
            raise ValueError(f"warmup request {index} calls signature {name!r}, which the "
                             f"export does not have ({', '.join(sorted(loaded.signatures))}).")
        inputs = {key: tf.constant(tf.make_ndarray(value)) for key, value in request.inputs.items()}
        batch_size = {int(value.shape[0]) for value in inputs.values()}
        try:
            result = loaded.signatures[name](**inputs)
        except (tf.errors.OpError, TypeError, ValueError) as error:
            raise ValueError(f"warmup request {index} (batch {sorted(batch_size)}) failed on "
                             f"signature {name!r}: {error_reason(error)}") from error
        result = {key: np.asarray(value) for key, value in result.items()}
        wrong = sorted(key for key, value in result.items() if value.shape[:1] != tuple(batch_size))
        if wrong:
            raise ValueError(f"warmup request {index} (batch {sorted(batch_size)}) got outputs "
                             f"{wrong} of another batch size from signature {name!r}.")
        outputs.append(result)
    return outputs
