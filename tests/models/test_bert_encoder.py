"""Tests for kerapos.models.bert_encoder: every scheme, padding, order, the MLM head."""

import keras
import numpy as np
import pytest

from kerapos import positions
from kerapos.layers.alibi_bias import ALiBiBias
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.models.bert_encoder import BertEncoderBackbone
from kerapos.models.bert_encoder import build_masked_lm

VOCABULARY_SIZE = 40
SIZES = dict(num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32, dropout=0.0)
# [CLS] a b c d [SEP] [PAD] [PAD]
TOKEN_IDS = np.array([[2, 11, 12, 13, 14, 3, 0, 0], [2, 15, 16, 3, 0, 0, 0, 0]], "int32")


def make_backbone(scheme, **overrides):
    keras.utils.set_random_seed(1)
    return BertEncoderBackbone(
        VOCABULARY_SIZE, scheme, max_sequence_length=8, **{**SIZES, **overrides}
    )


def inputs(token_ids):
    token_ids = np.asarray(token_ids, "int32")
    return {
        "token_ids": token_ids,
        "segment_ids": np.zeros_like(token_ids),
        "padding_mask": (token_ids != 0).astype("int32"),
    }


def outputs(backbone, token_ids):
    result = backbone(inputs(token_ids), training=False)
    return np.asarray(result["sequence_output"]), np.asarray(result["pooled_output"])


@pytest.mark.parametrize("scheme", positions.available())
def test_shapes_and_padding_is_ignored(scheme):
    backbone = make_backbone(scheme)
    sequence, pooled = outputs(backbone, TOKEN_IDS)
    assert sequence.shape == (2, 8, 16) and pooled.shape == (2, 16)
    assert sequence.dtype == np.float32 and np.isfinite(sequence).all()
    # Other ids under padding change no real position and not the pooled output.
    repadded = TOKEN_IDS.copy()
    repadded[repadded == 0] = 17
    masked = inputs(repadded)
    masked["padding_mask"] = (TOKEN_IDS != 0).astype("int32")
    other = backbone(masked, training=False)
    real = TOKEN_IDS != 0
    np.testing.assert_allclose(np.asarray(other["sequence_output"])[real], sequence[real], atol=1e-5)
    np.testing.assert_allclose(np.asarray(other["pooled_output"]), pooled, atol=1e-5)
    # ... while a real token does change the others (the check can fail).
    changed = TOKEN_IDS.copy()
    changed[0, 2] = 18
    assert np.abs(outputs(backbone, changed)[0][0, 1] - sequence[0, 1]).max() > 1e-4
    # Padding at the end does not move the real tokens either.
    short, _ = outputs(backbone, TOKEN_IDS[:, :6])
    np.testing.assert_allclose(short[real[:, :6]], sequence[:, :6][real[:, :6]], atol=1e-5)


@pytest.mark.parametrize("scheme", positions.available())
def test_order_matters_exactly_when_there_are_positions(scheme):
    backbone = make_backbone(scheme)
    ids = TOKEN_IDS[:1]
    permutation = [0, 3, 1, 4, 2, 5, 6, 7]  # shuffle a b c d
    sequence, _ = outputs(backbone, ids)
    permuted, _ = outputs(backbone, ids[:, permutation])
    equivariant = np.allclose(permuted[0, :6], sequence[0, permutation][:6], atol=1e-5)
    assert equivariant == (scheme == "none")


def test_position_layers_and_max_sequence_length():
    learned = make_backbone("learned")
    table = learned.get_layer("position_embedding")
    assert isinstance(table, LearnedPositionEmbedding)
    assert learned.max_sequence_length == 8 and learned.hidden_dim == 16
    table.extend_to(16)
    assert learned.max_sequence_length == 16
    learned.max_sequence_length = 16  # as code written for keras-hub does
    with pytest.raises(ValueError, match=r"follows the position table \(16\)"):
        learned.max_sequence_length = 32
    assert learned.get_config()["position_config"]["max_length"] == 16
    assert outputs(learned, np.tile(TOKEN_IDS, 2))[0].shape == (2, 16, 16)
    for scheme in ("none", "sinusoidal", "rotary", "xpos", "alibi", "t5"):
        assert make_backbone(scheme).max_sequence_length is None
    alibi = make_backbone("alibi")
    for index in range(SIZES["num_layers"]):
        bias = alibi.get_layer(f"block_{index}").attention._position_layer
        assert isinstance(bias, ALiBiBias) and not bias.causal  # symmetric
    with pytest.raises(ValueError, match="needs max_sequence_length"):
        BertEncoderBackbone(VOCABULARY_SIZE, "learned", **SIZES)
    with pytest.raises(ValueError, match="Unknown position scheme 'rope'"):
        BertEncoderBackbone(VOCABULARY_SIZE, "rope", **SIZES)


def test_keras_file_round_trip(tmp_path):
    backbone = make_backbone("t5")
    backbone.save(tmp_path / "encoder.keras")
    loaded = keras.saving.load_model(tmp_path / "encoder.keras")
    assert isinstance(loaded, BertEncoderBackbone) and loaded.position == "t5"
    for original, reloaded in zip(outputs(backbone, TOKEN_IDS), outputs(loaded, TOKEN_IDS)):
        np.testing.assert_array_equal(original, reloaded)


def test_masked_lm_head_is_tied_and_reads_the_masked_positions():
    backbone = make_backbone("rotary")
    model = build_masked_lm(backbone)
    positions_read = np.array([[1, 4], [2, 1]], "int32")
    logits = np.asarray(model({**inputs(TOKEN_IDS), "mask_positions": positions_read}))
    assert logits.shape == (2, 2, VOCABULARY_SIZE) and logits.dtype == np.float32
    # Tied: the only [vocab, hidden] matrix is the token embedding.
    tables = [w for w in model.weights if tuple(w.shape) == (VOCABULARY_SIZE, 16)]
    assert len(tables) == 1 and tables[0] is backbone.token_embedding.embeddings
    # Reference: BERT's head computed by hand from sequence_output.
    sequence, _ = outputs(backbone, TOKEN_IDS)
    head = model.get_layer("mlm_head")
    gathered = np.take_along_axis(sequence, positions_read[..., None], axis=1)  # [2, 2, 16]
    hidden = np.asarray(keras.activations.gelu(gathered @ np.asarray(head._intermediate_dense.kernel)
                                              + np.asarray(head._intermediate_dense.bias)))
    mean = hidden.mean(-1, keepdims=True)
    variance = hidden.var(-1, keepdims=True)
    norm = head._intermediate_layer_norm
    hidden = (hidden - mean) / np.sqrt(variance + norm.epsilon)
    hidden = hidden * np.asarray(norm.gamma) + np.asarray(norm.beta)
    expected = hidden @ np.asarray(tables[0]).T + np.asarray(head._bias)
    np.testing.assert_allclose(logits, expected, atol=1e-4)
