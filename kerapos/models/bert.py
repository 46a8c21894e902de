"""Sentence embeddings from a BERT encoder (Devlin et al. 2018, arXiv:1810.04805).

`mean_pooled_embeddings` reproduces sentence-transformers' all-MiniLM-L6-v2
embeddings (Wang et al. 2020, MiniLM, arXiv:2002.10957): the mean of
``sequence_output`` over real tokens, ``[CLS]`` and ``[SEP]`` included,
padding excluded. Reading and writing BERT checkpoints is
`kerapos.checkpoints.bert` (`load_bert_checkpoint`, `default_checkpoint`).

Example:
```python
from kerapos.checkpoints import bert as bert_checkpoints
backbone, tokenizer = bert_checkpoints.load_bert_checkpoint(
    bert_checkpoints.default_checkpoint())
embeddings = mean_pooled_embeddings(backbone, tokenizer, ["Hi there."])
```
"""

import keras_hub
import numpy as np

from kerapos.utils import checks


def mean_pooled_embeddings(backbone, tokenizer, texts, max_length=128, batch_size=32):
    """Sentence embeddings: the mean of BERT's token outputs over real tokens.

    Each text becomes ``[CLS] pieces [SEP]`` (pieces truncated to fit
    `max_length`), segment 0, padded; the embedding is the average of
    ``sequence_output`` over the non-padding positions, as sentence-transformers
    pools (it does not L2-normalise here; cosine similarity is unaffected).

    Args:
        backbone: a `keras_hub.models.BertBackbone` (or a kerapos
            `BertEncoderBackbone`).
        tokenizer: its `keras_hub.models.BertTokenizer`.
        texts: a list (or 1-D array) of strings.
        max_length: tokens per text including ``[CLS]`` and ``[SEP]``; at least
            2 and at most the backbone's ``max_sequence_length`` (if not None).
        batch_size: texts per forward pass.

    Returns:
        float32 array `[len(texts), hidden_dim]`.
    """
    if isinstance(texts, (str, bytes)):
        raise ValueError(
            "texts must be a list of strings, got a single string; wrap it in "
            "a list: mean_pooled_embeddings(backbone, tokenizer, [text])"
        )
    texts = list(texts)
    not_strings = [type(text).__name__ for text in texts if not isinstance(text, str)]
    if not_strings:
        raise ValueError(f"texts must all be str; got {not_strings[0]} among them")
    # At least [CLS] and [SEP]; at most the backbone's positions (None: a
    # kerapos encoder whose position scheme has no length limit).
    max_length = checks.integer(
        max_length, "max_length", minimum=2, maximum=backbone.max_sequence_length
    )
    batch_size = checks.integer(batch_size, "batch_size", minimum=1)
    if not texts:
        return np.zeros((0, backbone.hidden_dim), dtype=np.float32)

    packer = keras_hub.layers.StartEndPacker(
        sequence_length=max_length,
        start_value=tokenizer.cls_token_id,
        end_value=tokenizer.sep_token_id,
        pad_value=tokenizer.pad_token_id,
        return_padding_mask=True,
    )
    pooled = []
    for start in range(0, len(texts), batch_size):
        token_ids, padding_mask = packer(tokenizer(texts[start : start + batch_size]))
        token_ids = np.asarray(token_ids)  # [batch, max_length]
        padding_mask = np.asarray(padding_mask)  # [batch, max_length]
        outputs = backbone(
            {
                "token_ids": token_ids,
                "segment_ids": np.zeros_like(token_ids),
                "padding_mask": padding_mask,
            },
            training=False,
        )
        sequence_output = np.asarray(outputs["sequence_output"], np.float32)
        weights = padding_mask[..., None].astype(np.float32)  # [batch, max_length, 1]
        pooled.append(
            (sequence_output * weights).sum(axis=1) / weights.sum(axis=1)
        )  # [batch, hidden_dim]
    return np.concatenate(pooled, axis=0)
