"""Every classifier trains a few steps with every scheme it accepts."""

import keras
import numpy as np
import pytest

from kerapos import positions
from kerapos.layers.masked_pooling import MaskedPooling
from kerapos.layers.transformer_block import TransformerBlock
from kerapos.models import build_classifier
from kerapos.models.lstm_classifier import build_truncation_model

INPUT_SCHEMES = [n for n in positions.available() if positions.where(n) != "attention"]
TINY_TRANSFORMER = dict(num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32)


def _batch(length=12, batch=8, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, length)).astype("int32")
    ids[:, length - 3:] = 0  # padding
    return ids, rng.integers(0, 2, size=(batch,))


def _train_steps(model, steps=3):
    ids, labels = _batch()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    before = model.evaluate(ids, labels, verbose=0)
    for _ in range(steps):
        model.train_on_batch(ids, labels)
    after = model.evaluate(ids, labels, verbose=0)
    assert np.isfinite(after) and after < before, (before, after)


@pytest.mark.parametrize("position", INPUT_SCHEMES)
def test_lstm_trains_with_each_input_scheme(position):
    model = build_classifier("lstm", vocab_size=50, num_classes=2, position=position,
                             max_length=16, embedding_dim=16, lstm_units=16, hidden_units=8)
    _train_steps(model)


@pytest.mark.parametrize("position", positions.available())
def test_transformer_trains_with_every_scheme(position):
    model = build_classifier("transformer", vocab_size=50, num_classes=2, position=position,
                             max_length=16, dropout=0.0, **TINY_TRANSFORMER)
    _train_steps(model)


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_word_dropout_drops_whole_tokens_only_while_training(model):
    rate = 0.4
    sizes = TINY_TRANSFORMER if model == "transformer" else dict(embedding_dim=16)
    classifier = build_classifier(model, vocab_size=50, num_classes=2, position="sinusoidal",
                                  max_length=64, word_dropout=rate, **sizes)
    kept = classifier.get_layer(positions.INPUT_LAYER_NAME).output
    dropped = classifier.get_layer("word_dropout").output
    probe = keras.Model(classifier.input, [kept, dropped])
    ids = np.random.default_rng(1).integers(1, 50, size=(32, 64)).astype("int32")

    before, after = (keras.ops.convert_to_numpy(t) for t in probe(ids, training=True))
    # [batch, seq]: each token is either zeroed in every feature or kept whole
    # (rescaled by 1 / (1 - rate), as Dropout does).
    zeroed = np.all(after == 0.0, axis=-1)
    np.testing.assert_allclose(after[~zeroed], before[~zeroed] / (1 - rate), rtol=1e-5)
    assert abs(zeroed.mean() - rate) < 0.03, zeroed.mean()  # 2,048 tokens
    before, after = (keras.ops.convert_to_numpy(t) for t in probe(ids, training=False))
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("position", ["none", "sinusoidal"])
def test_truncation_model_equals_the_classifier_on_each_truncation(position):
    classifier = build_classifier("lstm", vocab_size=50, num_classes=3, position=position,
                                  embedding_dim=16, lstm_units=16, hidden_units=8, dropout=0.3,
                                  word_dropout=0.3)
    rng = np.random.default_rng(2)
    ids = rng.integers(1, 50, size=(6, 40)).astype("int32")
    for row, length in enumerate([40, 31, 12, 7, 1, 0]):  # right-padded, one empty row
        ids[row, length:] = 0
    lengths = [5, 12, 30, None]
    one_pass = keras.ops.convert_to_numpy(build_truncation_model(classifier, lengths)(ids))
    assert one_pass.shape == (6, len(lengths), 3)
    for column, length in enumerate(lengths):
        truncated = ids if length is None else ids[:, :length]
        np.testing.assert_allclose(one_pass[:, column], classifier.predict(truncated, verbose=0),
                                   atol=1e-6, err_msg=str(length))


def test_lstm_rejects_attention_schemes():
    with pytest.raises(ValueError, match="use model='transformer'"):
        build_classifier("lstm", vocab_size=50, num_classes=2, position="alibi")


def test_unknown_model_and_scheme():
    with pytest.raises(ValueError, match="lstm"):
        build_classifier("gru", vocab_size=50, num_classes=2)
    with pytest.raises(ValueError, match="sinusoidal"):
        build_classifier("transformer", vocab_size=50, num_classes=2, position="sinusodial")


def test_padding_does_not_change_predictions():
    # Padding is masked everywhere (attention, pooling, LSTM steps): a review
    # gets the same probabilities whatever length its batch is padded to.
    ids, _ = _batch(length=9)
    padded = np.pad(ids, [(0, 0), (0, 7)])
    for position in ("rotary", "alibi", "t5", "sinusoidal"):
        model = build_classifier("transformer", vocab_size=50, num_classes=2, position=position,
                                 max_length=32, dropout=0.0, **TINY_TRANSFORMER)
        np.testing.assert_allclose(model(ids), model(padded), atol=1e-5)
    lstm = build_classifier("lstm", vocab_size=50, num_classes=2, position="sinusoidal",
                            embedding_dim=8, lstm_units=8, hidden_units=4)
    np.testing.assert_allclose(lstm(ids), lstm(padded), atol=1e-5)


def test_encoder_alibi_is_symmetric_and_decoder_block_is_causal():
    model = build_classifier("transformer", vocab_size=50, num_classes=2, position="alibi",
                             dropout=0.0, **TINY_TRANSFORMER)
    block = model.get_layer("block_0")
    assert block.position_config["causal"] is False
    decoder = TransformerBlock(num_heads=2, hidden_dim=16, intermediate_dim=32,
                               position="rotary", causal=True)
    x = np.random.default_rng(0).normal(size=(1, 6, 16)).astype("float32")
    changed = x.copy()
    changed[:, 4:] += 1.0
    np.testing.assert_allclose(decoder(x)[:, :4], decoder(changed)[:, :4], atol=1e-5)


def test_masked_mean_pooling_against_numpy():
    x = np.arange(24, dtype="float32").reshape(2, 4, 3)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    pooled = np.asarray(MaskedPooling("mean")(x, mask=mask))
    np.testing.assert_allclose(pooled[0], x[0, :2].mean(0))
    np.testing.assert_allclose(pooled[1], 0.0)  # all padding: zeros, not NaN
    np.testing.assert_allclose(MaskedPooling("first")(x, mask=mask), x[:, 0])


def test_classifier_keras_round_trip(tmp_path):
    model = build_classifier("transformer", vocab_size=50, num_classes=2, position="xpos",
                             dropout=0.0, **TINY_TRANSFORMER)
    ids, _ = _batch()
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path)(ids), model(ids), atol=1e-6)
