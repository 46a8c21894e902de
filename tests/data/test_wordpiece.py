"""Tests for kerapos.data.wordpiece: learning, files, tokenizing documents."""

import numpy as np
import pytest

from kerapos.data import wordpiece
from kerapos.data.sources import DataError

# The WordPiece learner ignores words seen fewer than 10 times: repeat.
TEXT = "\n".join(["The cat sat on the mat.", "The dogs sat on the cats!"] * 20)


@pytest.fixture(scope="module")
def vocabulary():
    return wordpiece.learn_vocabulary([TEXT], 60)


def test_special_tokens_at_bert_ids(vocabulary):
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = wordpiece.make_tokenizer(vocabulary)
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id) == (0, 2, 3, 4)
    assert len(vocabulary) <= 60 and len(set(vocabulary)) == len(vocabulary)
    # Frequent words are whole pieces; lowercase only.
    for word in ("the", "cat", "sat", "on", "mat", "."):
        assert word in vocabulary
    assert "The" not in vocabulary


def test_tokenizer_round_trips_text(vocabulary):
    tokenizer = wordpiece.make_tokenizer(vocabulary)
    ids = tokenizer(["The cats sat on the mat"])
    assert ids == [[vocabulary.index(p) for p in ["the", "cats", "sat", "on", "the", "mat"]]]
    assert tokenizer.detokenize(ids) == ["the cats sat on the mat"]
    # An unseen word is spelled with learned pieces (t ##a ##c ##o ##s), not
    # [UNK]; an unseen character is [UNK].
    unseen, unknown = tokenizer(["tacos", "\u4e2d"])
    assert unseen == [vocabulary.index(p) for p in ["t", "##a", "##c", "##o", "##s"]]
    assert unknown == [wordpiece.UNK_ID]


def test_save_and_load(vocabulary, tmp_path):
    path = tmp_path / "sub" / "vocab.txt"
    wordpiece.save_vocabulary(vocabulary, path)
    assert path.read_text("utf-8") == "".join(f"{p}\n" for p in vocabulary)
    assert wordpiece.load_vocabulary(path) == vocabulary
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "vocabulary file not found"),
        (b"\xff\xfe[PAD]\n", "is not UTF-8"),
        (b"[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\na\n", "must start with [PAD], [UNK], [CLS], [SEP], [MASK]"),
        (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n\nb\n", "piece 6 is ''"),
        (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\na\n", "the piece 'a' appears twice"),
    ],
)
def test_bad_vocabulary_files(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        wordpiece.load_vocabulary(path)


def test_learn_rejects_bad_arguments():
    # Room for one piece past the 5 special tokens at least.
    with pytest.raises(ValueError, match=r"`vocabulary_size` must be an integer >= 6, got 5\."):
        wordpiece.learn_vocabulary([TEXT], 5)
    with pytest.raises(ValueError, match="`vocabulary_size` must be an integer >= 6, got 60.0"):
        wordpiece.learn_vocabulary([TEXT], 60.0)
    with pytest.raises(ValueError, match="hold no words"):
        wordpiece.learn_vocabulary(["", "  \n "], 100)


def test_tokenize_documents_joins_lines(vocabulary):
    tokenizer = wordpiece.make_tokenizer(vocabulary)
    documents = wordpiece.tokenize_documents(tokenizer, ["the cat\n\nsat on\nthe mat.", ""])
    expected = [vocabulary.index(p) for p in ["the", "cat", "sat", "on", "the", "mat", "."]]
    assert documents[0].dtype == np.int32 and documents[0].tolist() == expected
    assert documents[1].size == 0
