"""Raw-text classifier and language-model SavedModels against eager Keras references.

Tiny untrained models keep these fast; the trainers' tests check the same
signatures on trained models in a fresh TensorFlow process.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_warmup_replays

from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.export import export_text_classifier
from kerapos.export.language_model import export_language_model
from kerapos.export.language_model import next_token_top_k

TEXTS = ["a great movie", "", "a bad, bad film " * 4, "unknown words only"]
INVALID_UTF8 = b"bad \xff movie \xc3"


def _signature(serve):
    inputs = serve.structured_input_signature[1]
    outputs = serve.structured_outputs
    return (
        {name: (spec.shape.as_list(), spec.dtype) for name, spec in inputs.items()},
        {name: (spec.shape.as_list(), spec.dtype) for name, spec in outputs.items()},
    )


def test_text_classifier_export(tmp_path):
    keras.utils.set_random_seed(1)
    vectorizer = keras.layers.TextVectorization(max_tokens=20, output_mode="int", ragged=True)
    vectorizer.adapt(["a great movie", "a bad film", "bad movie"])
    model = keras.Sequential([
        keras.layers.Embedding(20, 4),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model(np.zeros((1, 1), np.int32))
    max_length = 5

    path = export_text_classifier(vectorizer, model, tmp_path / "clf", max_length)
    assert path == tmp_path / "clf" / "1"
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert _signature(serve) == (
        {"text": ([None], tf.string)},
        {"probabilities": ([None, 2], tf.float32), "class_id": ([None], tf.int64)},
    )
    served = serve(text=tf.constant([text.encode() for text in TEXTS] + [INVALID_UTF8]))

    # The model pools over padding too: pad every row to the batch's longest.
    decoded = TEXTS + [INVALID_UTF8.decode("utf-8", errors="replace")]
    rows = [vectorizer(tf.constant([text])).numpy()[0][:max_length].tolist() for text in decoded]
    width = max(1, max(map(len, rows)))
    padded = np.array([row + [0] * (width - len(row)) for row in rows], np.int32)
    expected = np.asarray(model(padded))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-6)
    assert served["class_id"].numpy().tolist() == np.argmax(expected, axis=1).tolist()

    empty = serve(text=tf.constant([], tf.string))
    assert empty["probabilities"].shape == (0, 2) and empty["class_id"].shape == (0,)
    assert_warmup_replays(path, output_names=("probabilities", "class_id"))
    assert export_text_classifier(vectorizer, model, tmp_path / "clf", max_length).name == "2"


@pytest.fixture(scope="module")
def tiny_language_model():
    keras.utils.set_random_seed(2)
    # A recurrent layer: the next token depends on the whole (cut) context.
    model = keras.Sequential([
        keras.layers.Embedding(256, 8),
        keras.layers.SimpleRNN(8, return_sequences=True),
        keras.layers.Dense(256),
    ])
    model(np.zeros((1, 1), np.int32))
    return model


def test_language_model_export(tiny_language_model, tmp_path):
    tokenizer, max_context, top_k = ByteTokenizer(), 6, 3
    path = export_language_model(tiny_language_model, tokenizer, tmp_path / "lm", max_context, top_k)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert _signature(serve) == (
        {"text": ([None], tf.string)},
        {
            "top_k_ids": ([None, top_k], tf.int64),
            "top_k_tokens": ([None, top_k], tf.string),
            "top_k_probabilities": ([None, top_k], tf.float32),
        },
    )
    served = serve(text=tf.constant([text.encode() for text in TEXTS]))
    ids, probabilities = next_token_top_k(tiny_language_model, tokenizer, TEXTS, max_context, top_k)
    np.testing.assert_array_equal(served["top_k_ids"].numpy(), ids)
    np.testing.assert_allclose(served["top_k_probabilities"].numpy(), probabilities, atol=1e-6)
    assert served["top_k_tokens"].numpy().tolist() == [[bytes([i]) for i in row] for row in ids]
    assert serve(text=tf.constant([], tf.string))["top_k_ids"].shape == (0, top_k)
    assert_warmup_replays(path, output_names=("top_k_ids", "top_k_tokens", "top_k_probabilities"))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"top_k": 0}, r"`top_k` must be an integer >= 1 and <= 256, got 0"),
        ({"top_k": 257}, r"`top_k` must be an integer >= 1 and <= 256, got 257"),
        ({"max_context": True}, r"`max_context` must be an integer >= 1, got True"),
    ],
)
def test_language_model_export_arguments(tiny_language_model, tmp_path, arguments, message):
    arguments = {"max_context": 4, "top_k": 5, **arguments}
    with pytest.raises(ValueError, match=message):
        export_language_model(tiny_language_model, ByteTokenizer(), tmp_path / "lm", **arguments)
    assert not (tmp_path / "lm").exists()
