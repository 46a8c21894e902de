"""Raw-text generation SavedModel of a causal LM, for TF Serving.

Two signatures, both with the byte tokenizer and the cached decoding loop of
`kerapos.models.generation` in the graph:

* `serving_default`: `text` `tf.string [None]` only, decoded greedily with
  the export's defaults (`max_new_tokens`, no stop token).
* `generate`: `text` plus the scalars `max_new_tokens` (int32),
  `temperature` (float32, 0 = greedy), `top_k` (int32, 0 = all), `top_p`
  (float32 in (0, 1]) and `seed` (int32). TF Serving's Predict API needs
  every input of the signature it calls, so the inputs with defaults are
  those of `serving_default`: a client sends only `text` there, or all six
  to `generate`.

Outputs of both: `generated_text` `tf.string [None]` (the new bytes only),
`generated_ids` int32 `[None, max_new_tokens]` (the new token ids, -1 after
the last), `generated_lengths` int32 `[None]`. Each text is read up to its
last `max_context` tokens, an empty one as a newline. Bad values (e.g.
`max_new_tokens` < 0 or above the export's limit, `temperature` < 0,
`top_p` outside (0, 1]) fail with INVALID_ARGUMENT and a message naming the
input. The loop runs as a TensorFlow graph, not compiled by XLA, so the
export loads in any TF Serving 2.x build; greedy outputs equal
`Generator(model)`'s.
"""

import tensorflow as tf

from kerapos.export import writer
from kerapos.export.language_model import prompt_ids
from kerapos.models.generation import CachedDecoder
from kerapos.models.generation import make_cached_loop
from kerapos.utils import checks

GENERATE = "generate"
SETTINGS_SIGNATURE = (
    tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int32, name="seed"),
)


def _checked(max_new_tokens, temperature, top_k, top_p, max_new_tokens_limit):
    """The settings after in-graph checks (INVALID_ARGUMENT naming the input)."""
    assertions = [
        tf.debugging.assert_greater_equal(
            max_new_tokens, 0, message="max_new_tokens must be >= 0"),
        tf.debugging.assert_less_equal(
            max_new_tokens, max_new_tokens_limit,
            message=f"max_new_tokens must be <= {max_new_tokens_limit} (this export's limit)"),
        tf.debugging.assert_greater_equal(
            temperature, 0.0, message="temperature must be >= 0 (0 = greedy)"),
        tf.debugging.assert_greater_equal(top_k, 0, message="top_k must be >= 0 (0 = all)"),
        tf.debugging.assert_greater(top_p, 0.0, message="top_p must be in (0, 1]"),
        tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1]"),
    ]
    with tf.control_dependencies(assertions):
        return tf.identity(max_new_tokens)


def make_generate_fn(model, tokenizer, max_context, max_new_tokens_limit):
    """The `generate` function: (text, max_new_tokens, temperature, top_k,
    top_p, seed) -> outputs (see the module docstring)."""
    loop = make_cached_loop(CachedDecoder(model), jit_compile=False)
    vocabulary = tokenizer.vocabulary_tf()  # [vocab] tf.string

    def generate(text, max_new_tokens, temperature, top_k, top_p, seed):
        max_new_tokens = _checked(max_new_tokens, temperature, top_k, top_p,
                                  max_new_tokens_limit)
        token_ids = prompt_ids(tokenizer, text, max_context)  # ragged [batch, None]
        lengths = tf.cast(token_ids.row_lengths(), tf.int32)  # [batch], all >= 1
        dense = token_ids.to_tensor(default_value=0)  # [batch, longest]
        # An empty batch gives [0, 0]; keep one column so the model can run.
        dense = tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)]])
        settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, stop_token=tf.constant(-1), seed=seed)
        tokens, generated = loop(dense, lengths, settings)  # [batch, width + new], [batch]
        offsets = tf.range(tf.shape(tokens)[1])[None, :] - lengths[:, None]  # [batch, total]
        is_new = tf.logical_and(offsets >= 0, offsets < generated[:, None])
        new_ids = tf.ragged.boolean_mask(tokens, is_new)  # ragged [batch, None]
        dense_ids = new_ids.to_tensor(default_value=-1)  # [batch, longest]
        dense_ids = tf.pad(dense_ids, [[0, 0], [0, max_new_tokens - tf.shape(dense_ids)[1]]],
                           constant_values=-1)  # [batch, max_new_tokens]
        return {
            "generated_text": tf.strings.reduce_join(tf.gather(vocabulary, new_ids), axis=-1),
            "generated_ids": dense_ids,
            "generated_lengths": generated,
        }

    return generate


def export_generation_model(model, tokenizer, base_path, max_context, max_new_tokens=64,
                            max_new_tokens_limit=1024):
    """Writes the next version of a raw-text generation SavedModel under `base_path`.

    Args:
        model: a causal LM of `kerapos.models.causal_lm.build_causal_lm`.
        tokenizer: its tokenizer (`ByteTokenizer`).
        base_path: TF Serving model base path (`saved_models/<name>`).
        max_context: tokens of each prompt kept (its last ones).
        max_new_tokens: `serving_default`'s number of new tokens.
        max_new_tokens_limit: the most new tokens a request may ask for (it
            bounds each request's memory: the cache holds `max_context +
            max_new_tokens` positions per row).

    Returns:
        `pathlib.Path` of the version directory written.

    Raises:
        ValueError: a non-positive size, or a learned position table smaller
            than `max_context + max_new_tokens_limit`.
    """
    max_context = checks.integer(max_context, "max_context", minimum=1)
    max_new_tokens_limit = checks.integer(max_new_tokens_limit, "max_new_tokens_limit", minimum=1)
    max_new_tokens = checks.integer(max_new_tokens, "max_new_tokens", minimum=0,
                                    maximum=max_new_tokens_limit)
    table = CachedDecoder(model).max_length
    if table is not None and max_context + max_new_tokens_limit > table:
        raise ValueError(
            f"the model's position table has {table} rows, fewer than max_context + "
            f"max_new_tokens_limit = {max_context} + {max_new_tokens_limit}: lower them so "
            f"that every request fits the table.")
    generate = make_generate_fn(model, tokenizer, max_context, max_new_tokens_limit)

    def serve(text):
        return generate(text, tf.constant(max_new_tokens), tf.constant(0.0), tf.constant(0),
                        tf.constant(1.0), tf.constant(0))

    return writer.write_saved_model(
        base_path,
        {
            writer.SERVING_DEFAULT: writer.Endpoint(serve),
            GENERATE: writer.Endpoint(generate, writer.TEXT_SIGNATURE + SETTINGS_SIGNATURE),
        },
        track=(model,),
    )
