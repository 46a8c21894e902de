"""BERT task models on the real all-MiniLM-L6-v2 checkpoint.

Position extension is checked against the untouched keras-hub backbone and
against numpy; input packing against `align_labels_to_wordpieces`; LoRA by
which weights train.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT

from kerapos.checkpoints.bert import default_checkpoint
from kerapos.checkpoints.bert import load_bert_checkpoint
from kerapos.data.conll import IGNORE_LABEL
from kerapos.data.conll import Sentence
from kerapos.data.conll import align_labels_to_wordpieces
from kerapos.data.conll import read_conll
from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding
from kerapos.models import bert_tasks

CONLL_FIXTURE = f"{REPO_ROOT}/tests/fixtures/conll/conll2003_sample.txt"


@pytest.fixture(scope="module")
def minilm():
    return load_bert_checkpoint(default_checkpoint())


def _inputs(lengths, total, seed=0):
    """Random real tokens followed by padding: encoder inputs [len(lengths), total]."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1000, 30000, size=(len(lengths), total)).astype("int32")
    padding_mask = (np.arange(total)[None, :] < np.array(lengths)[:, None]).astype("int32")
    return {
        "token_ids": token_ids * padding_mask,
        "segment_ids": np.zeros_like(token_ids),
        "padding_mask": padding_mask,
    }


def _outputs(encoder, inputs):
    return {k: np.asarray(v) for k, v in encoder(inputs, training=False).items()}


@pytest.mark.parametrize("lengths, total", [([7, 40], 40), ([512], 512)])
def test_rebuilt_encoder_equals_backbone_exactly(minilm, lengths, total):
    backbone, _ = minilm
    inputs = _inputs(lengths, total)
    expected = _outputs(backbone, inputs)
    rebuilt = bert_tasks.rebuild_with_learned_positions(backbone)
    assert isinstance(rebuilt.get_layer("position_embedding"), LearnedPositionEmbedding)
    assert rebuilt.hidden_dim == 384 and rebuilt.max_sequence_length == 512
    actual = _outputs(rebuilt, inputs)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_array_equal(actual[key], expected[key])
    # Shared layers: the rebuilt graph reads the backbone's own weights.
    assert rebuilt.get_layer("transformer_layer_0") is backbone.get_layer("transformer_layer_0")


@pytest.mark.parametrize("method", ["interpolate", "copy"])
def test_extended_table_rows_and_length_1024(minilm, method):
    backbone, _ = minilm
    table = np.asarray(backbone.position_embedding.position_embeddings, np.float64)  # [512, 384]
    encoder, note = bert_tasks.extend_positions(backbone, 1024, method)
    assert note == f"extended from 512 to 1024 positions by {method}"
    assert encoder.max_sequence_length == 1024
    extended = np.asarray(encoder.get_layer("position_embedding").embeddings)
    if method == "copy":
        expected = np.concatenate([table, table])
    else:  # row p samples the old table at p * 512 / 1024 = p / 2
        sample_at = np.arange(1024) / 2
        expected = np.stack(
            [np.interp(sample_at, np.arange(512), table[:, d]) for d in range(table.shape[1])],
            axis=1,
        )
    np.testing.assert_allclose(extended, expected, rtol=0, atol=1e-6)
    outputs = _outputs(encoder, _inputs([1024, 600], 1024))
    assert outputs["sequence_output"].shape == (2, 1024, 384)
    assert np.isfinite(outputs["sequence_output"]).all()
    # The checkpoint's backbone still has its 512 rows.
    assert backbone.position_embedding.position_embeddings.shape == (512, 384)


def test_copy_extension_keeps_outputs_up_to_512(minilm):
    backbone, _ = minilm
    inputs = _inputs([300, 512], 512, seed=1)
    encoder, _ = bert_tasks.extend_positions(backbone, 1024, "copy")
    np.testing.assert_array_equal(
        _outputs(encoder, inputs)["sequence_output"], _outputs(backbone, inputs)["sequence_output"]
    )


def test_extend_positions_errors_and_encoders_without_a_table(minilm):
    backbone, _ = minilm
    with pytest.raises(ValueError, match="must be larger than the checkpoint's 512"):
        bert_tasks.extend_positions(backbone, 512)
    with pytest.raises(ValueError, match="`method` must be one of 'interpolate', 'copy'; got 'nearest'"):
        bert_tasks.extend_positions(backbone, 1024, "nearest")
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    no_table = keras.Model(token_ids, keras.layers.Embedding(10, 4)(token_ids))
    same, note = bert_tasks.extend_positions(no_table, 1024)
    assert same is no_table and note.startswith("not extended")
    assert bert_tasks.position_capacity(no_table) is None
    with pytest.raises(ValueError, match="no attention projection named .* that supports LoRA"):
        bert_tasks.enable_lora(no_table, 2)


def test_extend_positions_grows_a_kerapos_encoder_in_place():
    # The contract of kerapos BERT-style encoders: learned positions are a
    # LearnedPositionEmbedding named "position_embedding".
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    embedded = keras.layers.Embedding(50, 8)(token_ids)
    outputs = LearnedPositionEmbedding(16, name="position_embedding")(embedded)
    encoder = keras.Model(token_ids, outputs)
    encoder.max_sequence_length = 16
    table = np.asarray(encoder.get_layer("position_embedding").embeddings)
    same, note = bert_tasks.extend_positions(encoder, 48, "copy")
    assert same is encoder and note == "extended from 16 to 48 positions by copy"
    assert bert_tasks.position_capacity(encoder) == 48
    np.testing.assert_array_equal(
        np.asarray(encoder.get_layer("position_embedding").embeddings), np.tile(table, (3, 1))
    )
    assert encoder(np.ones((1, 48), "int32")).shape == (1, 48, 8)


def test_pack_words_matches_align_labels_to_wordpieces(minilm):
    _, tokenizer = minilm
    sentences = read_conll(CONLL_FIXTURE) + [
        Sentence(["\x07", "Zürich", "naïve-ish", "1996-08-22"], ["O", "B-LOC", "O", "O"]),
    ]
    label_names = sorted({tag for sentence in sentences for tag in sentence.tags})
    label_to_id = {name: index for index, name in enumerate(label_names)}
    words = tf.ragged.constant([s.tokens for s in sentences])
    word_labels = tf.ragged.constant([[label_to_id[t] for t in s.tags] for s in sentences])
    unknown_id = tokenizer.token_to_id("[UNK]")

    @tf.function
    def pack(words, word_labels, max_length):
        return bert_tasks.pack_words(
            tokenizer(words), max_length, tokenizer.cls_token_id, tokenizer.sep_token_id,
            unknown_id, word_labels,
        )

    for max_length in (6, 64):  # 6 cuts most sentences short
        inputs, first_piece, token_labels = pack(words, word_labels, max_length)
        inputs = {key: value.numpy() for key, value in inputs.items()}
        token_labels = token_labels.numpy()
        for row, sentence in enumerate(sentences):
            token_ids, label_ids, word_ids = align_labels_to_wordpieces(
                sentence.tokens, sentence.tags, tokenizer, label_to_id, max_length
            )
            length = int(inputs["padding_mask"][row].sum())
            np.testing.assert_array_equal(inputs["token_ids"][row, :length], token_ids[:length])
            assert (token_ids[length:] == 0).all() and (inputs["token_ids"][row, length:] == 0).all()
            np.testing.assert_array_equal(token_labels[row, :length], label_ids[:length])
            assert (token_labels[row, length:] == IGNORE_LABEL).all()
            expected_first = [
                int(np.flatnonzero(word_ids == w)[0]) if (word_ids == w).any() else -1
                for w in range(len(sentence))
            ]
            assert first_piece[row].numpy().tolist() == expected_first
    assert inputs["segment_ids"].max() == 0


def test_pack_texts_truncates_and_handles_an_empty_batch(minilm):
    _, tokenizer = minilm
    texts = ["A short one.", "", "a considerably longer text that will certainly be cut " * 3]
    packed = tf.function(lambda t: bert_tasks.pack_texts(tokenizer(t), 8, 101, 102))
    inputs = packed(tf.constant(texts))
    for row, text in enumerate(texts):
        pieces = [int(p) for p in tokenizer([text])[0]]  # the tokenizer's Python path
        expected = [101, *pieces[:6], 102]
        assert inputs["token_ids"][row, : len(expected)].numpy().tolist() == expected
        assert inputs["padding_mask"][row].numpy().sum() == len(expected)
    assert inputs["token_ids"].shape == (3, 8)
    empty = packed(tf.constant([], tf.string))
    assert empty["token_ids"].shape == (0, 2) and empty["padding_mask"].shape == (0, 2)


def test_lora_trains_only_adapters_and_head():
    # A backbone of its own: LoRA changes the layers the other tests share.
    backbone, _ = load_bert_checkpoint(default_checkpoint())
    encoder = bert_tasks.rebuild_with_learned_positions(backbone)
    model = bert_tasks.build_sequence_classifier(encoder, num_classes=3, pooling="first")
    rank = 2
    assert bert_tasks.enable_lora(encoder, rank) == 12  # query + value in 6 layers
    names = sorted(weight.path.split("/")[-1] for weight in model.trainable_weights)
    assert names == sorted(["lora_kernel_a", "lora_kernel_b"] * 12 + ["kernel", "bias"])
    # Keras factorises a [384, 12 heads, 32] kernel's last axis: A [384, 12, r],
    # B [r, 32]; 12 projections of those, and the head's 384 x 3 + 3.
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 12 * (384 * 12 * rank + rank * 32) + 384 * 3 + 3

    query = encoder.get_layer("transformer_layer_0")._self_attention_layer._query_dense
    frozen = [query.kernel, backbone.token_embedding.embeddings,
              encoder.get_layer("position_embedding").embeddings]
    before_frozen = [np.asarray(w).copy() for w in frozen]
    before_b = np.asarray(query.lora_kernel_b).copy()
    head = model.get_layer("classifier_head")
    before_head = np.asarray(head.kernel).copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    inputs = _inputs([12, 9], 12, seed=3)
    model.train_on_batch(inputs, np.array([0, 2]))
    assert not np.array_equal(np.asarray(query.lora_kernel_b), before_b)
    assert not np.array_equal(np.asarray(head.kernel), before_head)
    for weight, before in zip(frozen, before_frozen):
        np.testing.assert_array_equal(np.asarray(weight), before)
