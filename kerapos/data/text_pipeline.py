"""In-graph tokenization and `tf.data` pipelines of token ids for classifiers.

Text is tokenized once by a Keras `TextVectorization` whose vocabulary is
learned from the training split only; the ragged token ids are kept in memory
and every epoch / evaluation length slices them, so training never re-tokenizes.
Integer batches (not strings) go to the model, which is what `MirroredStrategy`
and multi-worker training need (TF issue 80951): the tokenizer is put back in
front of the model only for export.
"""

import keras
import numpy as np
import tensorflow as tf

from kerapos.utils import checks

# Bucket boundaries (tokens) for batching reviews of similar length together:
# an LSTM pays for every padded step, so this halves the work on IMDb
# (`python -m kerapos.benchmarks.padding` counts the padding any boundaries leave;
# finer ones pad less but changed the accuracy at a seed, README, Results).
BUCKET_BOUNDARIES = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def sanitize_text(texts):
    """Replaces invalid UTF-8 bytes with U+FFFD so tokenization never fails."""
    return tf.strings.unicode_transcode(
        texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )


def build_vectorizer(train_texts, vocab_size, batch_size=1024):
    """A `TextVectorization` (lowercase, strip punctuation, split on spaces,
    ragged int64 output) whose vocabulary comes from `train_texts` only.

    `vocab_size` counts the padding id 0 and the out-of-vocabulary id 1, so it
    must be at least 3.
    """
    vocab_size = checks.integer(vocab_size, "vocab_size", minimum=3)
    vectorizer = keras.layers.TextVectorization(
        max_tokens=vocab_size, output_mode="int", ragged=True, name="vectorizer"
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(train_texts)).batch(batch_size))
    return vectorizer


def tokenize(vectorizer, texts, batch_size=2048):
    """Token ids of `texts`, untruncated: a `tf.RaggedTensor` [num_texts, None]."""
    dataset = tf.data.Dataset.from_tensor_slices(list(texts)).batch(batch_size)
    pieces = [vectorizer(sanitize_text(batch)) for batch in dataset]
    if not pieces:
        return tf.ragged.constant([], dtype=tf.int64, ragged_rank=1)
    return tf.concat(pieces, axis=0)


def truncate(token_ids, max_length):
    """Keeps the first `max_length` tokens of every row (None = all)."""
    return token_ids if max_length is None else token_ids[:, :max_length]


def make_token_dataset(token_ids, labels, batch_size, max_length=None, shuffle=False, seed=0,
                       bucket_boundaries=BUCKET_BOUNDARIES):
    """Batches `(int32 ids [batch, seq], int64 labels [batch])`, bucketed by length.

    A row of `n` tokens joins the bucket of the first boundary above `n`
    (boundaries strictly increasing; rows past the last share one bucket).
    Each batch is padded with 0 to its own longest row (at least 1 column), so
    short reviews cost little. With `shuffle`, examples are reshuffled every
    epoch before bucketing; without it the order is deterministic.

    Distributed over several workers, every worker runs this same pipeline (same
    `seed`, same batches) and `tf.distribute` gives each its slice of every
    batch (`AutoShardPolicy.DATA`): all workers then run the same number of
    steps on same-width slices, as multi-worker collectives require.
    """
    token_ids = tf.cast(truncate(token_ids, max_length), tf.int32)
    labels = np.asarray(labels, dtype=np.int64)
    # Slices of a ragged tensor arrive as ragged_rank-0 values; identity makes
    # them plain tensors, which `padded_batch` requires.
    dataset = tf.data.Dataset.from_tensor_slices((token_ids, labels)).map(
        lambda ids, label: (tf.identity(ids), label)
    )
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda ids, label: tf.shape(ids)[0],
        bucket_boundaries=list(bucket_boundaries),
        bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
        padded_shapes=([None], []),
    )
    dataset = dataset.map(
        lambda ids, label: (_at_least_one_column(ids), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    # In-memory data has no files to shard by (AUTO would fall back to DATA).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def pad_batch(token_ids):
    """Ragged ids `[batch, None]` -> int32 dense `[batch, max(1, longest)]`."""
    return _at_least_one_column(tf.cast(token_ids, tf.int32).to_tensor())


def _at_least_one_column(dense_ids):
    # Empty texts (and empty batches) still give a [batch, 1] all-padding input.
    missing = tf.maximum(0, 1 - tf.shape(dense_ids)[1])
    return tf.pad(dense_ids, [[0, 0], [0, missing]])
