"""WordPiece vocabularies for BERT-style models: learn, save, load, tokenize.

The vocabulary is learned with keras-hub's `compute_word_piece_vocabulary`
(tf-text's WordPiece learner, Schuster and Nakajima 2012; the BERT recipe of
Devlin et al. 2018, arXiv:1810.04805), splitting and lowercasing exactly as
`keras_hub.models.BertTokenizer(lowercase=True)` does, so every learned piece
is reachable by the tokenizer. The BERT special tokens come first, at fixed
ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4.

Example:
```python
vocabulary = learn_vocabulary(["The cat sat.", "The cats sat."], 100)
save_vocabulary(vocabulary, "run/vocab.txt")
tokenizer = make_tokenizer(load_vocabulary("run/vocab.txt"))
tokenizer(["the cat"])
```
"""

import pathlib

import keras_hub
import tensorflow as tf

from kerapos.data.sources import DataError
from kerapos.utils import atomic
from kerapos.utils import checks

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
# Lines per tokenizer call when learning or tokenizing a corpus.
_LINES_PER_BATCH = 4096


def text_lines(texts):
    """The non-blank lines of `texts` (WordPiece never crosses a newline)."""
    return [line for text in texts for line in text.split("\n") if line.strip()]


def learn_vocabulary(texts, vocabulary_size, lowercase=True):
    """Learns a WordPiece vocabulary from `texts`.

    Args:
        texts: iterable of str (e.g. whole books; split into lines here).
        vocabulary_size: int, the largest vocabulary wanted (special tokens
            included); a small text may give fewer pieces, because the learner
            ignores words seen fewer than 10 times.
        lowercase: bool, lowercase before splitting (uncased BERT).

    Returns:
        list of str: `SPECIAL_TOKENS`, then single characters, then pieces
        (suffix pieces start with ``##``).

    Raises:
        ValueError: `vocabulary_size` is not an integer above the number of
            special tokens (it must leave room for one piece), or the texts
            hold no words.
    """
    vocabulary_size = checks.integer(
        vocabulary_size, "vocabulary_size", minimum=len(SPECIAL_TOKENS) + 1
    )
    lines = text_lines(texts)
    if not lines:
        raise ValueError("cannot learn a vocabulary: the texts hold no words.")
    dataset = tf.data.Dataset.from_tensor_slices(lines).batch(_LINES_PER_BATCH)
    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        dataset,
        vocabulary_size,
        lowercase=lowercase,
        strip_accents=False,  # as BertTokenizer
        reserved_tokens=list(SPECIAL_TOKENS),
    )


def save_vocabulary(vocabulary, path):
    """Writes one piece per line (UTF-8, ``\\n``) to `path`, atomically."""
    check_vocabulary(vocabulary, str(path))
    atomic.write_text(path, "".join(f"{piece}\n" for piece in vocabulary))


def load_vocabulary(path):
    """Reads a vocabulary written by `save_vocabulary`.

    Raises:
        DataError: the file is missing, not UTF-8, or not a BERT vocabulary
            (special tokens at their ids, no blank or repeated pieces).
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"vocabulary file not found: {path}") from None
    except UnicodeDecodeError as error:
        raise DataError(
            f"vocabulary file {path} is not UTF-8 ({error}); it must hold one "
            "UTF-8 piece per line"
        ) from None
    except OSError as error:
        raise DataError(f"cannot read vocabulary file {path}: {error}") from None
    vocabulary = text.split("\n")
    if vocabulary and vocabulary[-1] == "":
        vocabulary.pop()
    try:
        check_vocabulary(vocabulary, str(path))
    except ValueError as error:
        raise DataError(str(error)) from None
    return vocabulary


def check_vocabulary(vocabulary, where="the vocabulary"):
    """Raises ValueError unless `vocabulary` starts with `SPECIAL_TOKENS` and
    has no blank, multi-line or repeated pieces."""
    head = list(vocabulary[: len(SPECIAL_TOKENS)])
    if head != list(SPECIAL_TOKENS):
        raise ValueError(
            f"{where} must start with {', '.join(SPECIAL_TOKENS)} (ids 0-4); it "
            f"starts with {head}. Learn it with kerapos.data.wordpiece."
            "learn_vocabulary"
        )
    for index, piece in enumerate(vocabulary):
        if not piece.strip() or "\n" in piece or piece != piece.strip():
            raise ValueError(
                f"{where}: piece {index} is {piece!r}; pieces must be non-empty "
                "and hold no whitespace"
            )
    if len(set(vocabulary)) != len(vocabulary):
        seen, repeated = set(), None
        for piece in vocabulary:
            if piece in seen:
                repeated = piece
                break
            seen.add(piece)
        raise ValueError(f"{where}: the piece {repeated!r} appears twice")


def make_tokenizer(vocabulary, lowercase=True):
    """A `keras_hub.models.BertTokenizer` over `vocabulary` (a list or a file)."""
    return keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=lowercase)


def tokenize_documents(tokenizer, texts):
    """One int32 array of token ids per text (no [CLS]/[SEP]; lines joined).

    Args:
        tokenizer: a `keras_hub.models.BertTokenizer`.
        texts: list of str.

    Returns:
        list of 1-D int32 numpy arrays, one per text.
    """
    arrays = []
    for text in texts:
        batches = tf.data.Dataset.from_tensor_slices(text_lines([text]) or [""]).batch(
            _LINES_PER_BATCH
        )
        # Mapped (traced): an eager call would return Python lists.
        pieces = list(batches.map(lambda lines: tokenizer(lines).flat_values))
        arrays.append(tf.cast(tf.concat(pieces, axis=0), tf.int32).numpy())
    return arrays
