"""`make_token_dataset`: bucketed batches checked against plain numpy padding,
seeded shuffling and the sharding policy multi-worker training relies on."""

import numpy as np
import pytest
import tensorflow as tf

from kerapos.data import text_pipeline

NUM_EXAMPLES = 37
ROWS = [[10 + i] * (i % 9) for i in range(NUM_EXAMPLES)]  # lengths 0..8, row i holds 10+i
LABELS = [i % 2 for i in range(NUM_EXAMPLES)]


def _token_ids():
    return tf.ragged.constant(ROWS, dtype=tf.int64, ragged_rank=1)


def _padded(rows, width):
    """Independent reference: rows cut to `width` and zero-padded to it."""
    out = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        kept = row[:width]
        out[i, : len(kept)] = kept
    return out


def _example_index(ids_row):
    nonzero = ids_row[ids_row != 0]
    return int(nonzero[0]) - 10 if len(nonzero) else None


def test_bucketed_batches_keep_every_example_at_its_own_width():
    dataset = text_pipeline.make_token_dataset(_token_ids(), LABELS, batch_size=8, max_length=5)
    seen, empty_rows = [], 0
    for ids, labels in dataset.as_numpy_iterator():
        indices = [_example_index(row) for row in ids]
        real = [k for k, i in enumerate(indices) if i is not None]
        rows = [ROWS[indices[k]] for k in real]
        # Padded to the batch's own longest (truncated) row, at least 1 column.
        assert ids.shape[1] == max([1] + [min(len(row), 5) for row in rows])
        np.testing.assert_array_equal(ids[real], _padded(rows, ids.shape[1]))
        np.testing.assert_array_equal(labels[real], [LABELS[indices[k]] for k in real])
        seen += [indices[k] for k in real]
        empty_rows += len(indices) - len(real)
    assert sorted(seen) == [i for i, row in enumerate(ROWS) if row]  # nothing dropped
    assert empty_rows == sum(1 for row in ROWS if not row)
    assert dataset.element_spec[0].shape.as_list() == [None, None]


def test_shuffle_is_seeded_and_reshuffled_every_epoch():
    def epoch_orders(seed):
        dataset = text_pipeline.make_token_dataset(
            _token_ids(), LABELS, batch_size=4, max_length=9, shuffle=True, seed=seed
        )
        return [
            [_example_index(row) for batch, _ in dataset.as_numpy_iterator() for row in batch]
            for _ in range(2)
        ]

    first, second = epoch_orders(seed=3)
    assert first != second  # reshuffled between epochs
    assert epoch_orders(seed=3) == [first, second]  # every worker sees the same batches


def test_workers_shard_by_data():
    # In-memory data has no files: each worker keeps its slice of every batch.
    dataset = text_pipeline.make_token_dataset(_token_ids(), LABELS, batch_size=8)
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA


def test_vectorizer_vocabulary_comes_from_the_training_texts():
    # Padding "" and out-of-vocabulary "[UNK]" take ids 0 and 1; then words by count.
    vectorizer = text_pipeline.build_vectorizer(["b a b", "c b a"], np.int64(4))
    assert vectorizer.get_vocabulary() == ["", "[UNK]", "b", "a"]
    assert text_pipeline.tokenize(vectorizer, ["a c b"]).to_list() == [[3, 1, 2]]
    for vocab_size in (2, 3.0):
        with pytest.raises(ValueError, match=f"`vocab_size` must be an integer >= 3, got {vocab_size}"):
            text_pipeline.build_vectorizer(["a"], vocab_size)
