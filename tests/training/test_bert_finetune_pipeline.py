"""Untruncated evaluation batches of the BERT trainer stay within memory.

An encoder without a position table reads whole reviews; attention memory
grows with batch x length^2, so long reviews must come in smaller batches.
"""

import numpy as np
import pytest

from kerapos.checkpoints import bert
from kerapos.data.imdb import Split
from kerapos.training import bert_finetune

pytestmark = pytest.mark.skipif(
    not (bert.default_checkpoint() / "vocab.txt").is_file(),
    reason="all-MiniLM-L6-v2 is not cached (make test fetches it)",
)
BATCH_SIZE = 8


def test_untruncated_batches_shrink_with_length_and_keep_every_review():
    _, tokenizer = bert.load_bert_checkpoint(bert.default_checkpoint())
    words = [3, 5, 40, 90, 200, 700, 700, 1500, 1500, 3000, 5000]  # roughly one piece per word
    texts = np.array([" ".join(["film"] * n) for n in words], dtype=object)
    split = Split(texts, np.arange(len(texts)) % 2)
    pipeline = bert_finetune._Pipeline(tokenizer, bert_finetune.FinetuneOptions(batch_size=BATCH_SIZE))

    lengths, labels = [], []
    for inputs, batch_labels in pipeline.untruncated_texts(split):
        rows, width = inputs["token_ids"].shape
        pieces = width - 2  # [CLS] and [SEP]
        # No more rows than fit the memory of BATCH_SIZE rows of 512 pieces (at least one).
        budget = BATCH_SIZE * bert_finetune.UNTRUNCATED_BUCKET_LENGTH**2
        assert rows <= max(1, budget // pieces**2), (rows, width)
        lengths += list(inputs["padding_mask"].numpy().sum(axis=1))
        labels += list(batch_labels.numpy())
    assert sorted(lengths) == sorted(n + 2 for n in words)  # every review, whole
    assert sorted(labels) == sorted(split.labels)
    assert max(lengths) == 5002  # past the 4,096-piece bucket: a batch of one
