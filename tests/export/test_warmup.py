"""TF Serving warmup requests: the PredictionLog file read back with the
serving protos, replayed in a fresh process, and exports whose warmup fails
refused with nothing left behind."""

import pytest
import tensorflow as tf
from helpers import assert_warmup_replays
from tensorflow_serving.apis import prediction_log_pb2

from kerapos.export import warmup
from kerapos.export import writer

PROJECT = (tf.TensorSpec([None, 2], tf.float32, name="values"),)


def _lengths(text):  # text: [batch] tf.string
    return {"length": tf.strings.length(text, unit="UTF8_CHAR")}  # [batch]


def test_requests_round_trip_as_prediction_logs(tmp_path):
    requests = warmup.text_requests()
    assert [list(tf.make_ndarray(r.inputs["text"]).shape) for r in requests] == [[1], [8]]
    batch = [t.decode("utf-8") for t in tf.make_ndarray(requests[1].inputs["text"])]
    assert batch == [warmup.WARMUP_TEXTS[i % 4] for i in range(8)] and "" in batch
    path = tmp_path / "warmup"
    warmup.write_requests(path, requests)
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(path))]
    assert [log.WhichOneof("log_type") for log in records] == ["predict_log"] * 2
    assert [log.predict_log.request for log in records] == requests
    assert warmup.read_requests(path) == requests


def test_export_writes_requests_for_text_signatures_only(tmp_path):
    version = writer.write_saved_model(tmp_path / "model", {
        writer.SERVING_DEFAULT: writer.Endpoint(_lengths),
        "sum": writer.Endpoint(lambda values: {"sum": tf.reduce_sum(values, -1)}, PROJECT),
    })
    requests = warmup.read_requests(version / "assets.extra" / warmup.WARMUP_FILE)
    assert [r.model_spec.signature_name for r in requests] == ["serving_default"] * 2
    assert_warmup_replays(version, output_names=("length",))


def test_no_requests_when_turned_off(tmp_path):
    version = writer.write_saved_model(
        tmp_path / "model", {writer.SERVING_DEFAULT: writer.Endpoint(_lengths)},
        warmup_requests=False)
    assert not (version / "assets.extra").exists()


def _refuses_empty_text(text):
    tf.debugging.assert_positive(tf.strings.length(text), message="empty text")
    return _lengths(text)


def _one_row(text):
    return {"length": tf.strings.length(text[:1])}  # [1] whatever the batch


@pytest.mark.parametrize("serve, message", [
    (_refuses_empty_text, r"warmup request 1 \(batch \[8\]\) failed on signature "
                          r"'serving_default': .*empty text"),
    (_one_row, r"warmup request 1 \(batch \[8\]\) got outputs \['length'\] of another batch"),
])
def test_export_whose_warmup_fails_is_refused(tmp_path, serve, message):
    base = tmp_path / "model"
    with pytest.raises(ValueError, match=r"The export to .* was refused, nothing was written: "
                                         r"its TF Serving " + message):
        writer.write_saved_model(base, {writer.SERVING_DEFAULT: writer.Endpoint(serve)})
    assert list(base.iterdir()) == []  # no version, no staging directory
