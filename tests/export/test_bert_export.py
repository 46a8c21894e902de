"""Raw-text BERT SavedModels against Python references.

The references here (word split with `unicodedata`, WordPiece through the
tokenizer's pure-Python path, `align_labels_to_wordpieces`) share no code with
the exported graph; tests/trainers/test_finetune_bert.py reuses them.
"""

import unicodedata

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_warmup_replays

from kerapos.checkpoints.bert import default_checkpoint
from kerapos.checkpoints.bert import load_bert_checkpoint
from kerapos.data.conll import align_labels_to_wordpieces
from kerapos.data.text_pipeline import sanitize_text
from kerapos.export import bert as bert_export
from kerapos.models import bert_tasks

RE2_WHITESPACE = "\t\n\f\r "  # RE2's \s
INVALID_UTF8 = b"\xff\xfe invalid utf-8 \xc3"
TEXTS = [
    "Peter Blackburn met EU officials in Zürich, then Brussels (1996-08-22)!",
    "",
    "   \t  ",
    "great movie, " * 1600,  # 20,800 characters
    "\U0001F600\U0001F3AC loved it \u2764\ufe0f",
    "no-break\u00a0space stays inside a word; tab\tsplits",
]


def reference_words(text):
    """`[(word, start_byte, end_byte)]` by BERT's pre-split rules, from `unicodedata`.

    Whitespace (RE2's \\s) and control/format characters separate words;
    each punctuation character (ASCII non-alphanumeric or Unicode P*) is a word.
    """
    words, current, start, offset = [], "", 0, 0
    for char in text:
        size = len(char.encode("utf-8"))
        category = unicodedata.category(char)
        separator = char in RE2_WHITESPACE or category in ("Cc", "Cf")
        punctuation = (char.isascii() and not char.isalnum() and char.isprintable()
                       and char != " ") or category.startswith("P")
        if separator or punctuation:
            if current:
                words.append((current, start, offset))
            current = ""
            if punctuation:
                words.append((char, offset, offset + size))
        else:
            if not current:
                start = offset
            current += char
        offset += size
    if current:
        words.append((current, start, offset))
    return words


def _encoder_inputs(token_ids, sep_id):
    length = int(np.flatnonzero(token_ids == sep_id)[0]) + 1
    padding_mask = (np.arange(len(token_ids)) < length).astype("int32")
    return {
        "token_ids": token_ids[None, :],
        "segment_ids": np.zeros((1, len(token_ids)), "int32"),
        "padding_mask": padding_mask[None, :],
    }


def reference_word_label_ids(model, tokenizer, text, max_length):
    """Label id per word of `text` (-1 where truncation cut the word)."""
    words = [word for word, _, _ in reference_words(text)]
    token_ids, _, word_ids = align_labels_to_wordpieces(
        words, ["O"] * len(words), tokenizer, {"O": 0}, max_length
    )
    probabilities = np.asarray(model(_encoder_inputs(token_ids, tokenizer.sep_token_id)))[0]
    return [
        int(probabilities[np.flatnonzero(word_ids == w)[0]].argmax()) if (word_ids == w).any() else -1
        for w in range(len(words))
    ]


def reference_probabilities(model, tokenizer, text, max_length):
    """Class probabilities of `text`: [CLS] first max_length - 2 pieces [SEP]."""
    pieces = [int(piece) for piece in tokenizer([text])[0]]  # the Python path
    token_ids = np.array(
        [tokenizer.cls_token_id, *pieces[: max_length - 2], tokenizer.sep_token_id], "int32"
    )
    return np.asarray(model(_encoder_inputs(token_ids, tokenizer.sep_token_id)))[0]


def serving_texts():
    """TEXTS plus invalid UTF-8, as a tf.string batch; and their repaired str."""
    raw = [text.encode("utf-8") for text in TEXTS] + [INVALID_UTF8]
    return tf.constant(raw), [item.decode("utf-8", errors="replace") for item in raw]


def check_token_outputs(outputs, decoded_texts, expected_label_ids, label_names):
    """Asserts serving outputs equal the references, padding included."""
    width = max(len(reference_words(text)) for text in decoded_texts)
    assert outputs["words"].shape == (len(decoded_texts), width)
    for row, text in enumerate(decoded_texts):
        words = reference_words(text)
        count = len(words)
        assert outputs["word_count"][row] == count
        decoded_words = [w.decode("utf-8") for w in outputs["words"][row, :count]]
        assert decoded_words == [w for w, _, _ in words]
        assert outputs["start_offsets"][row, :count].tolist() == [s for _, s, _ in words]
        assert outputs["end_offsets"][row, :count].tolist() == [e for _, _, e in words]
        assert outputs["label_ids"][row, :count].tolist() == expected_label_ids[row]
        expected_labels = [label_names[i] if i >= 0 else "" for i in expected_label_ids[row]]
        assert [b.decode() for b in outputs["labels"][row, :count]] == expected_labels
        assert (outputs["label_ids"][row, count:] == -1).all()
        assert (outputs["words"][row, count:] == b"").all()


def test_split_words_matches_reference():
    texts, decoded = serving_texts()
    words, starts, ends = bert_export.split_words(sanitize_text(texts))
    for row, text in enumerate(decoded):
        expected = reference_words(text)
        assert [w.decode("utf-8") for w in words[row].numpy()] == [w for w, _, _ in expected]
        assert starts[row].numpy().tolist() == [s for _, s, _ in expected]
        assert ends[row].numpy().tolist() == [e for _, _, e in expected]
    assert reference_words("a\u00a0b, c")[:2] == [("a\u00a0b", 0, 4), (",", 4, 5)]


@pytest.fixture(scope="module")
def untrained_token_classifier():
    backbone, tokenizer = load_bert_checkpoint(default_checkpoint())
    keras.utils.set_random_seed(7)
    model = bert_tasks.build_token_classifier(backbone, num_labels=5, dropout=0.0)
    return model, tokenizer


def test_token_classifier_export_matches_python_reference(untrained_token_classifier, tmp_path):
    model, tokenizer = untrained_token_classifier
    label_names = ["O", "B-A", "I-A", "B-B", "I-B"]
    max_length = 16  # most words of the long text get no label
    path = bert_export.export_bert_token_classifier(
        model, tokenizer, label_names, tmp_path / "ner", max_length
    )
    assert path == tmp_path / "ner" / "1"
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    texts, decoded = serving_texts()
    outputs = {k: v.numpy() for k, v in serve(text=texts).items()}
    expected = [reference_word_label_ids(model, tokenizer, text, max_length) for text in decoded]
    check_token_outputs(outputs, decoded, expected, label_names)
    # The random head predicts several labels, so equality above says something.
    assert len({i for row in expected for i in row if i >= 0}) > 1
    assert outputs["word_count"][3] == 4800 and (outputs["label_ids"][3, 14:] == -1).all()
    empty = serve(text=tf.constant([], tf.string))
    assert empty["labels"].shape == (0, 0) and empty["word_count"].shape == (0,)
    assert {k: v.dtype for k, v in empty.items()} == {
        "words": tf.string, "labels": tf.string, "label_ids": tf.int64,
        "start_offsets": tf.int64, "end_offsets": tf.int64, "word_count": tf.int64,
    }
    assert_warmup_replays(path, output_names=tuple(empty))
