"""A decoder-only (causal) Transformer language model taking any position scheme.

`build_causal_lm` makes the model; `rebuild_causal_lm` rebuilds it with other
position settings (RoPE scaling, log-n) and the same weights, for
inference-time context extension without retraining; `extend_learned_positions`
grows a learned position table; `sample_tokens` decodes from it. Saving and
loading with the tokenizer and training length: `kerapos.checkpoints.language_model`.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from kerapos import positions
from kerapos.models.embedding import input_position_layer
from kerapos.models.embedding import position_arguments
from kerapos.models.embedding import transformer_blocks
from kerapos.utils import checks

# Context used when a prompt is empty: the model has no begin-of-text token,
# and training documents are joined with blank lines.
EMPTY_PROMPT_CONTEXT = (10,)  # "\n" as a byte token


def build_causal_lm(
    vocab_size,
    position, position_config=None, max_length=None,  # the scheme, from the registry
    num_layers=2, hidden_dim=128, num_heads=4, intermediate_dim=512,  # the block stack
    dropout=0.0, tie_embeddings=True, logn_train_length=None, context_extension=None,
):
    """A pre-norm decoder-only Transformer LM (GPT-2 layout) with any scheme.

    token embedding * sqrt(hidden_dim) [+ input position scheme] -> dropout ->
    `num_layers` x `TransformerBlock(causal=True)` (attention schemes act
    inside every block; ALiBi in its causal, one-sided form) -> final
    LayerNorm -> output projection, tied to the token embedding (Press and
    Wolf 2017, arXiv:1608.05859) or a separate matrix.

    Token ids are never masked: there is no padding id (with the byte
    tokenizer id 0 is the NUL byte). Batch texts of different lengths by
    right-padding and reading each row at its own last position: the causal
    mask keeps padding out of every earlier position.

    The embedding is a `keras.layers.ReversibleEmbedding` (not
    `kerapos.models.embedding.embed_tokens`, which masks id 0 and owns its
    embedding layer, so the output projection could not be tied to it); the
    input scheme is added exactly as there.

    Args:
        vocab_size: int, token ids lie in `[0, vocab_size)`.
        position: a `kerapos.positions` name.
        position_config: dict of extra arguments of the position layer (e.g.
            `{"scaling": {...}}` for "rotary").
        max_length: int, size of the "learned" table (required for it).
        num_layers, hidden_dim, num_heads, intermediate_dim: sizes.
        dropout: float, on embeddings, attention and residuals.
        tie_embeddings: bool, output projection = embedding matrix transposed.
        logn_train_length: optional int, log-n attention scaling past it.
        context_extension: optional dict, an inference-time context-extension
            method of rotary / xPos attention in every block (ReRoPE,
            Self-Extend, Dual Chunk; see `kerapos.layers.context_extension`).

    Returns:
        A `keras.Model` from int32 ids `[batch, seq]` to float32 logits
        `[batch, seq, vocab_size]` (float32 also under mixed precision).

    Example:
    >>> model = build_causal_lm(256, "alibi", num_layers=1, hidden_dim=32,
    ...                         num_heads=2, intermediate_dim=64)
    >>> model(np.zeros((2, 10), "int32")).shape  # [batch, seq, vocab]
    TensorShape([2, 10, 256])
    """
    vocab_size = checks.integer(vocab_size, "vocab_size", minimum=1)
    num_layers = checks.integer(num_layers, "num_layers", minimum=1)
    position_config = position_arguments(
        position, position_config, causal=True, max_length=max_length
    )

    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    embedding = keras.layers.ReversibleEmbedding(
        vocab_size, hidden_dim, tie_weights=tie_embeddings, name="token_embedding"
    )
    x = embedding(token_ids)  # [batch, seq, hidden]
    x = keras.layers.Rescaling(math.sqrt(hidden_dim), name="embedding_scale")(x)
    position_layer = input_position_layer(position, position_config)
    if position_layer is not None:
        x = position_layer(x)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    sizes = dict(num_heads=num_heads, hidden_dim=hidden_dim, intermediate_dim=intermediate_dim)
    for block in transformer_blocks(num_layers, position, position_config, dropout=dropout,
                                    causal=True, logn_train_length=logn_train_length,
                                    context_extension=context_extension, **sizes):
        x = block(x)  # [batch, seq, hidden_dim]
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = embedding(x, reverse=True)  # [batch, seq, vocab]
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(token_ids, logits, name=f"causal_lm_{position}")


def rebuild_causal_lm(model, build_config, **overrides):
    """The same LM rebuilt with `overrides` of `build_causal_lm`'s arguments.

    Weights are copied from `model`, so only weight-free settings may change:
    `position_config` (e.g. RoPE `scaling`), `logn_train_length` and
    `context_extension`.

    Args:
        model: a model made by `build_causal_lm(**build_config)`.
        build_config: dict of the arguments it was built with.
        **overrides: the arguments to change.
    """
    allowed = ("position_config", "logn_train_length", "context_extension")
    unknown = [key for key in overrides if key not in allowed]
    if unknown:
        raise ValueError(
            f"rebuild_causal_lm can only change weight-free settings "
            f"{allowed}; got {unknown}."
        )
    rebuilt = build_causal_lm(**{**build_config, **overrides})
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def extend_learned_positions(model, build_config, new_max_length, method="interpolate"):
    """A copy of an LM with a bounded scheme whose table has `new_max_length` rows.

    For schemes whose layer ends at a length (`Scheme.bounded`: "learned");
    see `LearnedPositionEmbedding.extend_to` for the methods ("interpolate":
    position interpolation, Chen et al. 2023, arXiv:2306.15595; "copy").
    The original model is left unchanged.

    Args:
        model: a model made by `build_causal_lm(**build_config)`.
        build_config: dict of the arguments it was built with.
        new_max_length: int, rows of the grown table.
        method: a method of the scheme's `extension_methods`.
    """
    scheme = positions.scheme(build_config.get("position"))
    if not scheme.bounded:
        raise ValueError(
            f"extend_learned_positions needs a model whose position table ends "
            f"(a bounded scheme such as 'learned'), got position={scheme.name!r}."
        )
    copy = build_causal_lm(**build_config)
    copy.set_weights(model.get_weights())
    for layer in positions.position_layers(copy):
        scheme.extend(layer, new_max_length, method)
    return copy


def last_logits_function(model):
    """A traced function: int32 ids `[batch, seq]` -> float32 logits of the
    last position `[batch, vocab]` (any batch and length, traced once)."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")],
        reduce_retracing=True,
    )
    def last_logits(token_ids):
        return tf.cast(model(token_ids, training=False)[:, -1, :], tf.float32)

    return last_logits


def sample_tokens(
    model,
    prompt_ids,
    max_new_tokens,
    context_length=None,
    temperature=1.0,
    top_k=None,
    seed=0,
    last_logits=None,
):
    """Decodes `max_new_tokens` token ids after `prompt_ids`.

    Each step re-reads the last `context_length` tokens (None = all; needed
    for models that cannot read past a length, e.g. "learned"). An empty
    prompt is read as a newline (`EMPTY_PROMPT_CONTEXT`).

    Args:
        model: a causal LM.
        prompt_ids: 1-D int sequence.
        max_new_tokens: int >= 0.
        context_length: optional int, tokens of context kept per step.
        temperature: float; 0 = greedy (argmax), else softmax(logits / t).
        top_k: optional int, sample among the k most probable tokens only.
        seed: int, seeds the sampler (same seed -> same tokens).
        last_logits: optional `last_logits_function(model)` to reuse.

    Returns:
        int list of the new token ids.
    """
    max_new_tokens = checks.integer(max_new_tokens, "max_new_tokens", minimum=0)
    temperature = checks.number(temperature, "temperature", minimum=0.0)  # 0: greedy
    top_k = checks.integer(top_k, "top_k", minimum=1, allow_none=True)
    context_length = checks.integer(context_length, "context_length", minimum=1, allow_none=True)
    last_logits = last_logits or last_logits_function(model)
    rng = np.random.default_rng(seed)
    tokens = [int(t) for t in prompt_ids] or list(EMPTY_PROMPT_CONTEXT)
    new_tokens = []
    for _ in range(max_new_tokens):
        context = tokens[-context_length:] if context_length else tokens
        logits = last_logits(tf.constant([context], tf.int32))[0].numpy().astype(np.float64)
        if temperature == 0:
            next_token = int(np.argmax(logits))
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.size:
                threshold = np.sort(logits)[-top_k]
                logits = np.where(logits >= threshold, logits, -np.inf)
            probabilities = np.exp(logits - logits.max())
            probabilities /= probabilities.sum()
            next_token = int(rng.choice(logits.size, p=probabilities))
        tokens.append(next_token)
        new_tokens.append(next_token)
    return new_tokens
