"""Raw-text SavedModel of a causal LM: next-token top-k, tokenizer in-graph.

Signature `serving_default`: `text` `tf.string [None]` ->
`top_k_ids` int64 `[None, k]`, `top_k_tokens` tf.string `[None, k]` (the raw
bytes of each token), `top_k_probabilities` float32 `[None, k]` (most probable
first). Each text is read up to its last `max_context` tokens (older ones are
dropped); an empty text is read as a newline (the model has no begin-of-text
token). Any bytes are accepted: the byte tokenizer needs no valid UTF-8.
"""

import numpy as np
import tensorflow as tf

from kerapos.export import writer
from kerapos.models.causal_lm import EMPTY_PROMPT_CONTEXT
from kerapos.utils import checks


def prompt_ids(tokenizer, text, max_context):
    """In-graph token ids of each text: its last `max_context` tokens, an empty
    text read as `EMPTY_PROMPT_CONTEXT`. Returns ragged int32 `[batch, None]`
    whose rows all have at least one token."""
    token_ids = tokenizer.encode_tf(text)[:, -max_context:]  # ragged [batch, None]
    is_empty = tf.equal(token_ids.row_lengths(), 0)  # [batch]
    fallback = tf.RaggedTensor.from_row_lengths(
        tf.tile(tf.constant(EMPTY_PROMPT_CONTEXT, tf.int32),
                [tf.reduce_sum(tf.cast(is_empty, tf.int32))]),
        tf.cast(is_empty, tf.int64) * len(EMPTY_PROMPT_CONTEXT),
    )
    return tf.concat([fallback, token_ids], axis=1)


def make_serving_fn(model, tokenizer, max_context, top_k=5):
    """The `serving_default` function (see the module docstring)."""
    vocabulary = tokenizer.vocabulary_tf()  # [vocab] tf.string

    def serve(text):
        token_ids = prompt_ids(tokenizer, text, max_context)  # ragged [batch, None]
        lengths = token_ids.row_lengths()  # [batch], all >= 1
        # Right padding: the causal mask keeps it out of every real position.
        dense = token_ids.to_tensor(default_value=0)  # [batch, longest]
        # An empty batch gives [0, 0]; keep one column so the model can run.
        dense = tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)]])
        logits = tf.cast(model(dense, training=False), tf.float32)  # [batch, seq, vocab]
        last = tf.gather(logits, lengths - 1, axis=1, batch_dims=1)  # [batch, vocab]
        probabilities, ids = tf.math.top_k(tf.nn.softmax(last, axis=-1), k=top_k)
        return {
            "top_k_ids": tf.cast(ids, tf.int64),
            "top_k_tokens": tf.gather(vocabulary, ids),
            "top_k_probabilities": probabilities,
        }

    return serve


def next_token_top_k(model, tokenizer, texts, max_context, top_k=5):
    """The same next-token top-k computed eagerly with Keras (a reference for
    the export, and what `trainers/generate.py` prints).

    Returns:
        `(ids int64 [n, k], probabilities float32 [n, k])`.
    """
    all_ids, all_probabilities = [], []
    for text in texts:
        token_ids = list(tokenizer.encode(text)[-max_context:]) or list(EMPTY_PROMPT_CONTEXT)
        logits = np.asarray(
            model(np.asarray([token_ids], np.int32), training=False)[0, -1], np.float64
        )
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")[:top_k]
        all_ids.append(order.astype(np.int64))
        all_probabilities.append(probabilities[order].astype(np.float32))
    return np.stack(all_ids), np.stack(all_probabilities)


def export_language_model(model, tokenizer, base_path, max_context, top_k=5):
    """Writes the next version of a raw-text LM SavedModel under `base_path`.

    Args:
        model: a trained causal LM (ids `[batch, seq]` -> logits).
        tokenizer: its tokenizer (`ByteTokenizer`).
        base_path: TF Serving model base path (`saved_models/<name>`).
        max_context: tokens of each text the model reads (e.g. the training
            length; at most the table size of a "learned" model).
        top_k: int, number of next tokens returned.

    Returns:
        `pathlib.Path` of the version directory written.

    Raises:
        ValueError: `top_k` is not an integer in [1, vocabulary size], or
            `max_context` not an integer >= 1.
    """
    top_k = checks.integer(top_k, "top_k", minimum=1, maximum=tokenizer.vocab_size)
    max_context = checks.integer(max_context, "max_context", minimum=1)
    serve = make_serving_fn(model, tokenizer, max_context, top_k)
    return writer.write_saved_model(
        base_path, {writer.SERVING_DEFAULT: writer.Endpoint(serve)}, track=(model,)
    )
