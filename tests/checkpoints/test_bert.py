"""Tests for kerapos.checkpoints.bert: keras-hub presets, Hugging Face layouts
checked before loading, kerapos encoder directories written atomically."""

import json
import shutil
import struct

import keras
import keras_hub
import numpy as np
import pytest

from kerapos.checkpoints import bert
from kerapos.checkpoints.bert import CheckpointError
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.models.bert import mean_pooled_embeddings
from kerapos.models.bert_encoder import BertEncoderBackbone

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "."]


def _tiny_backbone():
    return keras_hub.models.BertBackbone(
        vocabulary_size=len(TINY_VOCAB),
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=16,
    )


def _save_tiny_preset(directory):
    backbone = _tiny_backbone()
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=TINY_VOCAB, lowercase=True)
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return backbone


def test_keras_hub_preset_round_trip(tmp_path):
    original = _save_tiny_preset(tmp_path)
    backbone, tokenizer = bert.load_bert_checkpoint(tmp_path)
    for saved, loaded in zip(original.weights, backbone.weights):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(loaded))
    assert np.asarray(tokenizer(["The cats sat."])).tolist() == [[5, 6, 8, 7, 9]]
    manual = np.asarray(
        original(
            {
                "token_ids": np.array([[2, 5, 6, 3, 0]]),
                "segment_ids": np.zeros((1, 5), "int32"),
                "padding_mask": np.array([[1, 1, 1, 1, 0]], bool),
            }
        )["sequence_output"]
    )[0, :4].mean(axis=0)
    pooled = mean_pooled_embeddings(backbone, tokenizer, ["the cat"], max_length=5)
    np.testing.assert_allclose(pooled[0], manual, atol=1e-5)


def test_preset_with_wrong_vocabulary_is_rejected(tmp_path):
    _save_tiny_preset(tmp_path)
    vocab_file = tmp_path / "assets" / "tokenizer" / "vocabulary.txt"
    vocab_file.write_text("\n".join(TINY_VOCAB[:-2]) + "\n", "utf-8")
    with pytest.raises(CheckpointError, match=r"has 8 lines but .*vocabulary_size=10"):
        bert.load_bert_checkpoint(tmp_path)


def test_preset_of_another_model_is_rejected(tmp_path):
    _save_tiny_preset(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text("utf-8"))
    config["class_name"] = "GPT2Backbone"
    config["registered_name"] = "keras_hub>GPT2Backbone"
    (tmp_path / "config.json").write_text(json.dumps(config), "utf-8")
    with pytest.raises(CheckpointError, match="'GPT2Backbone'.*not a BertBackbone"):
        bert.load_bert_checkpoint(tmp_path)


def _write_fake_hf_checkpoint(directory, vocab_lines=10, vocab_size=10, embedding_shape=(10, 8),
                              **config_overrides):
    """Config, vocab and a safetensors file holding only the token embedding."""
    config = {
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "max_position_embeddings": 16,
        "hidden_act": "gelu",
        **config_overrides,
    }
    (directory / "config.json").write_text(json.dumps(config), "utf-8")
    (directory / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(vocab_lines)), "utf-8")
    num_bytes = 4 * embedding_shape[0] * embedding_shape[1]
    header = json.dumps(
        {
            "bert.embeddings.word_embeddings.weight": {
                "dtype": "F32",
                "shape": list(embedding_shape),
                "data_offsets": [0, num_bytes],
            }
        }
    ).encode()
    (directory / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + bytes(num_bytes)
    )


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        bert.load_bert_checkpoint(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        bert.load_bert_checkpoint(tmp_path / "file")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="lacks config.json"):
        bert.load_bert_checkpoint(tmp_path)
    _write_fake_hf_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="lacks model.safetensors, vocab.txt"):
        bert.load_bert_checkpoint(tmp_path)


def test_config_that_is_not_bert(tmp_path):
    _write_fake_hf_checkpoint(tmp_path, model_type="gpt2")
    with pytest.raises(CheckpointError, match="model_type 'gpt2', not 'bert'"):
        bert.load_bert_checkpoint(tmp_path)


def test_unsupported_bert_variant(tmp_path):
    _write_fake_hf_checkpoint(tmp_path, position_embedding_type="relative_key")
    with pytest.raises(CheckpointError, match="position_embedding_type='relative_key'"):
        bert.load_bert_checkpoint(tmp_path)


def test_config_missing_sizes(tmp_path):
    _write_fake_hf_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text("utf-8"))
    del config["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(config), "utf-8")
    with pytest.raises(CheckpointError, match="lacks hidden_size"):
        bert.load_bert_checkpoint(tmp_path)


def test_vocabulary_with_wrong_line_count(tmp_path):
    _write_fake_hf_checkpoint(tmp_path, vocab_lines=9)
    with pytest.raises(CheckpointError, match=r"vocab.txt has 9 lines but config.json says vocab_size=10"):
        bert.load_bert_checkpoint(tmp_path)


def test_embedding_table_disagreeing_with_config(tmp_path):
    _write_fake_hf_checkpoint(tmp_path, embedding_shape=(12, 8))
    with pytest.raises(CheckpointError, match=r"shape \[12, 8\] .* \[10, 8\]"):
        bert.load_bert_checkpoint(tmp_path)


def test_corrupt_safetensors(tmp_path):
    _write_fake_hf_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        bert.load_bert_checkpoint(tmp_path)


def test_weights_that_fail_to_convert_are_wrapped(tmp_path):
    # Validation passes (sizes agree) but the file lacks every other tensor.
    _write_fake_hf_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="loading the BERT checkpoint in .* failed"):
        bert.load_bert_checkpoint(tmp_path)


# --- kerapos encoder checkpoints (save_encoder_checkpoint) ---

ENCODER_VOCAB = TINY_VOCAB + ["dog", "mat"]


def _tiny_encoder(position="learned"):
    keras.utils.set_random_seed(0)
    return BertEncoderBackbone(
        len(ENCODER_VOCAB), position, max_sequence_length=16, num_layers=1,
        hidden_dim=8, num_heads=2, intermediate_dim=16, dropout=0.0,
    )


def _encoder_inputs():
    token_ids = np.array([[2, 5, 6, 7, 3, 0], [2, 10, 3, 0, 0, 0]], "int32")
    return {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids),
            "padding_mask": (token_ids != 0).astype("int32")}


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_encoder_checkpoint_round_trip(tmp_path, position):
    encoder = _tiny_encoder(position)
    directory = bert.save_encoder_checkpoint(
        tmp_path / "ckpt", encoder, ENCODER_VOCAB, metadata={"train_length": 16}
    )
    assert sorted(p.name for p in directory.iterdir()) == [
        "encoder.keras", "kerapos_encoder.json", "vocab.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left
    marker = json.loads((directory / "kerapos_encoder.json").read_text("utf-8"))
    assert marker["format"] == "kerapos-bert-encoder" and marker["position"] == position
    assert marker["metadata"] == {"train_length": 16} and marker["lowercase"] is True

    backbone, tokenizer = bert.load_bert_checkpoint(directory)
    assert isinstance(tokenizer, keras_hub.models.BertTokenizer)
    assert np.asarray(tokenizer(["The dog sat."])).tolist() == [[5, 10, 7, 9]]
    assert backbone.hidden_dim == 8
    expected_outputs = encoder(_encoder_inputs())
    loaded_outputs = backbone(_encoder_inputs())
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_array_equal(np.asarray(expected_outputs[key]), np.asarray(loaded_outputs[key]))
    # Sentence embeddings work on it too, up to the table, if there is one.
    pooled = mean_pooled_embeddings(backbone, tokenizer, ["the cat", "dog"], max_length=16)
    assert pooled.shape == (2, 8) and np.isfinite(pooled).all()
    if position == "learned":
        assert backbone.max_sequence_length == 16
        assert isinstance(backbone.get_layer("position_embedding"), LearnedPositionEmbedding)
        with pytest.raises(ValueError, match=r"`max_length` must be an integer >= 2 and <= 16, got 40"):
            mean_pooled_embeddings(backbone, tokenizer, ["the cat"], max_length=40)
    else:
        assert backbone.max_sequence_length is None
        longer = mean_pooled_embeddings(backbone, tokenizer, ["the cat", "dog"], max_length=40)
        np.testing.assert_allclose(longer, pooled, atol=1e-5)  # padding changes nothing


def test_encoder_checkpoint_is_replaced_atomically(tmp_path):
    first, second = _tiny_encoder("alibi"), _tiny_encoder("t5")
    bert.save_encoder_checkpoint(tmp_path / "ckpt", first, ENCODER_VOCAB)
    bert.save_encoder_checkpoint(tmp_path / "ckpt", second, ENCODER_VOCAB)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert bert.load_bert_checkpoint(tmp_path / "ckpt")[0].position == "t5"
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="exists and is not a kerapos encoder checkpoint"):
        bert.save_encoder_checkpoint(tmp_path / "other", first, ENCODER_VOCAB)
    with pytest.raises(ValueError, match="has 10 pieces but the backbone has vocabulary_size=12"):
        bert.save_encoder_checkpoint(tmp_path / "new", first, TINY_VOCAB)


def test_failed_encoder_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    bert.save_encoder_checkpoint(tmp_path / "ckpt", _tiny_encoder("alibi"), ENCODER_VOCAB)

    def broken_vocabulary_writer(vocabulary, path):
        path.write_text("[PAD]\n", "utf-8")  # half written, then the disk fills
        raise OSError("disk full")

    monkeypatch.setattr(bert.wordpiece, "save_vocabulary", broken_vocabulary_writer)
    with pytest.raises(OSError, match="disk full"):
        bert.save_encoder_checkpoint(tmp_path / "ckpt", _tiny_encoder("t5"), ENCODER_VOCAB)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left
    backbone, tokenizer = bert.load_bert_checkpoint(tmp_path / "ckpt")
    assert backbone.position == "alibi" and tokenizer.vocabulary_size() == len(ENCODER_VOCAB)


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
    return bert.save_encoder_checkpoint(
        tmp_path_factory.mktemp("encoder") / "ckpt", _tiny_encoder(), ENCODER_VOCAB
    )


def _broken_copy(source, tmp_path):
    target = tmp_path / "broken"
    shutil.copytree(source, target)
    return target


def _edit_marker(directory, **changes):
    path = directory / "kerapos_encoder.json"
    marker = json.loads(path.read_text("utf-8"))
    for key, value in changes.items():
        if value is None:
            del marker[key]
        else:
            marker[key] = value
    path.write_text(json.dumps(marker), "utf-8")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "encoder.keras").unlink(),
         r"lacks encoder.keras \(needed for a kerapos encoder\)"),
        (lambda d: (d / "vocab.txt").unlink(), "lacks vocab.txt"),
        (lambda d: (d / "kerapos_encoder.json").write_text("{not json", "utf-8"),
         "cannot read .*kerapos_encoder.json as JSON"),
        (lambda d: _edit_marker(d, format="something-else"),
         "has format 'something-else', not 'kerapos-bert-encoder'"),
        (lambda d: _edit_marker(d, format_version=9), "format_version 9"),
        (lambda d: _edit_marker(d, hidden_dim=None), "lacks hidden_dim"),
        (lambda d: _edit_marker(d, hidden_dim="8"), "hidden_dim='8', of the wrong type"),
        (lambda d: _edit_marker(d, position="rope"), "position 'rope', which this kerapos does not know"),
        (lambda d: (d / "vocab.txt").write_text("\n".join(ENCODER_VOCAB[:-1]) + "\n", "utf-8"),
         "vocab.txt has 11 lines but kerapos_encoder.json says vocabulary_size=12"),
        (lambda d: (d / "vocab.txt").write_text(
            "\n".join(["[UNK]", "[PAD]"] + ENCODER_VOCAB[2:]) + "\n", "utf-8"),
         r"must start with \[PAD\]"),
        (lambda d: (d / "encoder.keras").write_bytes(b"not a zip"), "loading .*encoder.keras failed"),
        (lambda d: _edit_marker(d, num_layers=3), "has num_layers=1 but kerapos_encoder.json says 3"),
    ],
)
def test_bad_encoder_checkpoints(encoder_checkpoint, tmp_path, damage, message):
    directory = _broken_copy(encoder_checkpoint, tmp_path)
    damage(directory)
    with pytest.raises(CheckpointError, match=message):
        bert.load_bert_checkpoint(directory)
