"""Fast decoding from a causal LM: a key/value cache and a compiled sampling loop.

`CachedDecoder` runs the layers of a `build_causal_lm` model on new tokens
against a fixed-size key/value cache (a `[batch, S, heads, head_dim]` keys
and values buffer per block, written in place): a prompt is prefilled in one call, then one or
several tokens go in per step, each costing O(S) instead of a full pass over
the context. Every scheme and inference-time variant gives the uncached
model's logits (`PositionalMultiHeadAttention.call_with_cache` says how).

`generate` decodes a batch of prompts with greedy, temperature, top-k and
top-p (nucleus) sampling, a stop token, a maximum of new tokens and a seed.
With the cache, the whole loop is one `tf.function(jit_compile=True)`
(prefill, then a `tf.while_loop` of one-token steps over a fixed buffer of
`prompt + max_new_tokens` slots, so XLA compiles it once per shape).
Prompts of different lengths are right-padded: every row decodes at the
same position, and a row still inside its prompt keeps its own next token
instead of the sampled one (keras-hub's `CausalLM.generate` does the same).
Sampling is stateless: step `i` of row `r` draws from a hash of
`(seed, i, r)`, so a seed gives the same tokens with and without the cache,
compiled or not, and in the generation SavedModel.

Attention sinks (StreamingLLM, Xiao et al. 2024, arXiv:2309.17453) keep
memory constant while streaming past any length: the cache holds the first
`sink_tokens` tokens plus the `window` most recent ones, and positions are
assigned inside the cache (slot `j` is position `j`). It is constant memory,
not a longer context: a token evicted from the window is forgotten. It needs
a scheme that acts inside attention (keys are stored unrotated and rotated
by their slot at every step); input schemes (sinusoidal, learned) add
positions to the embeddings, where they cannot be reassigned.

Example:
```python
model = build_causal_lm(256, "rotary", num_layers=2, hidden_dim=64,
                        num_heads=4, intermediate_dim=128)
new_tokens = generate(model, [[72, 101], [10]], max_new_tokens=20,
                      temperature=0.8, top_p=0.9, seed=1)
```
"""

import tensorflow as tf
from keras import ops

from kerapos import positions
from kerapos.models.causal_lm import EMPTY_PROMPT_CONTEXT
from kerapos.models.causal_lm import last_logits_function
from kerapos.utils import checks

# Prompt buffers are padded up to a multiple of this, so prompts of nearby
# lengths share one compiled program.
PROMPT_BUCKET = 64


class CachedDecoder:
    """The layers of a causal LM run with a key/value cache.

    Works on any model made by `kerapos.models.causal_lm.build_causal_lm`
    (or loaded from one: it finds the layers by their names).

    Args:
        model: the causal LM.
        sink_tokens: None, or int >= 0 with `window`: attention sinks (see the
            module docstring); the cache then holds `sink_tokens + window`
            slots whatever the length.
        window: None, or int >= 1: the recent tokens an attention-sink cache
            keeps.

    Example:
    ```python
    decoder = CachedDecoder(model)
    cache = decoder.init_cache(batch_size=1, capacity=64)
    logits, cache = decoder.call_with_cache(prompt_ids, cache, 0)  # prefill
    logits, cache = decoder.call_with_cache(next_ids, cache, prompt_length)
    ```
    """

    def __init__(self, model, sink_tokens=None, window=None):
        self.embedding = model.get_layer("token_embedding")
        self.embedding_scale = model.get_layer("embedding_scale")
        self.blocks = [layer for layer in model.layers if layer.name.startswith("block_")]
        self.final_norm = model.get_layer("final_norm")
        names = [layer.name for layer in model.layers]
        self.input_positions = (
            model.get_layer(positions.INPUT_LAYER_NAME)
            if positions.INPUT_LAYER_NAME in names else None
        )
        if not self.blocks:
            raise ValueError(f"{model.name} has no `block_<i>` layers: not a causal LM of "
                             f"kerapos.models.causal_lm.build_causal_lm.")
        attention = self.blocks[0].attention
        self.num_heads, self.head_dim = attention.num_heads, attention.key_dim
        if (sink_tokens is None) != (window is None):
            raise ValueError("attention sinks need both sink_tokens and window "
                             f"(got sink_tokens={sink_tokens!r}, window={window!r}).")
        self.sink_tokens = checks.integer(sink_tokens, "sink_tokens", minimum=0, allow_none=True)
        self.window = checks.integer(window, "window", minimum=1, allow_none=True)
        if self.streams and self.input_positions is not None:
            raise ValueError(
                f"attention sinks assign positions inside the cache, but "
                f"{self.input_positions.__class__.__name__} adds positions to the "
                f"embeddings, where they cannot be reassigned: use a scheme that "
                f"acts in attention (rotary, alibi, t5, ...) or no sinks."
            )

    @property
    def streams(self):
        """Whether this decoder keeps an attention-sink cache."""
        return self.window is not None

    @property
    def max_length(self):
        """The most positions the model can take (a learned table's size), or None."""
        return getattr(self.input_positions, "max_length", None)

    def capacity(self, total_length):
        """Cache slots for a sequence of `total_length` tokens (int or tensor)."""
        if self.streams:
            return tf.minimum(total_length, self.sink_tokens + self.window)
        return total_length

    def init_cache(self, batch_size, capacity):
        """An empty cache: per block, `(keys, values)` of zeros
        `[batch, capacity, heads, head_dim]`."""
        shape = [batch_size, capacity, self.num_heads, self.head_dim]
        dtype = self.blocks[0].attention.compute_dtype
        return tuple((tf.zeros(shape, dtype), tf.zeros(shape, dtype)) for _ in self.blocks)

    def call_with_cache(self, token_ids, cache, cache_index):
        """Logits of new tokens at positions `cache_index ..`, and the updated cache.

        Args:
            token_ids: int32 `[batch, T]`.
            cache: from `init_cache` or an earlier call.
            cache_index: int or scalar int tensor, the slots already filled
                (`cache_index + T` must not exceed the capacity).

        Returns:
            `(float32 logits [batch, T, vocab], cache)`.
        """
        x = self.embedding_scale(self.embedding(token_ids))  # [batch, T, hidden]
        if self.input_positions is not None:
            x = self.input_positions(x, start_index=cache_index)
        rotate_cached_keys = False if self.streams else None
        layer_caches = []
        for block, block_cache in zip(self.blocks, cache):
            x, block_cache = block.call_with_cache(
                x, block_cache, cache_index, rotate_cached_keys=rotate_cached_keys
            )
            layer_caches.append(block_cache)
        x = self.final_norm(x)
        logits = tf.cast(self.embedding(x, reverse=True), tf.float32)  # [batch, T, vocab]
        return logits, tuple(layer_caches)

    def evict(self, cache, slot):
        """Makes room for a token at `slot` in an attention-sink cache.

        When `slot` is past the last slot, drops the oldest token after the
        sinks (shifting the window left by one) and returns the last slot.

        Returns:
            `(cache, the slot to write)`.
        """
        capacity = tf.shape(cache[0][0])[1]
        full = slot >= capacity
        sinks = self.sink_tokens

        def shifted(buffer):  # [batch, capacity, heads, head_dim]
            return tf.concat(
                [buffer[:, :sinks], buffer[:, sinks + 1:], tf.zeros_like(buffer[:, :1])], axis=1)

        cache = tf.nest.map_structure(lambda buffer: tf.where(full, shifted(buffer), buffer), cache)
        return cache, tf.minimum(slot, capacity - 1)


def check_sampling(max_new_tokens, temperature, top_k, top_p, stop_token, vocab_size):
    """Checked sampling arguments (ValueError with the fix otherwise)."""
    return dict(
        max_new_tokens=checks.integer(max_new_tokens, "max_new_tokens", minimum=0),
        temperature=checks.number(temperature, "temperature (0 = greedy)", minimum=0.0),
        top_k=checks.integer(top_k, "top_k (None or 0 = all tokens)", minimum=0, allow_none=True)
        or 0,
        top_p=1.0 if top_p is None else checks.number(
            top_p, "top_p (the nucleus mass, in (0, 1])", above=0.0, maximum=1.0),
        stop_token=-1 if stop_token is None else checks.integer(
            stop_token, "stop_token", minimum=0, maximum=vocab_size - 1),
    )


def filter_logits(logits, temperature, top_k, top_p):
    """Logits `[batch, vocab]` / temperature, with tokens outside the top k and
    outside the top-p nucleus set to -inf.

    The nucleus is the smallest set of most probable tokens whose
    probability mass is at least `top_p` (Holtzman et al. 2020,
    arXiv:1904.09751); the most probable token is always kept. `top_k` 0
    keeps every token. All arguments may be tensors.
    """
    logits = tf.cast(logits, tf.float32) / tf.maximum(tf.cast(temperature, tf.float32), 1e-6)
    vocab_size = tf.shape(logits)[-1]
    ordered = tf.sort(logits, axis=-1, direction="DESCENDING")  # [batch, vocab]
    top_k = tf.cast(top_k, tf.int32)
    kth = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size) - 1
    kth_logit = tf.gather(ordered, tf.fill([tf.shape(logits)[0], 1], kth), batch_dims=1)
    probabilities = tf.nn.softmax(ordered, axis=-1)
    mass_before = tf.cumsum(probabilities, axis=-1, exclusive=True)  # [batch, vocab]
    in_nucleus = mass_before < tf.cast(top_p, tf.float32)
    # The smallest logit kept by the nucleus (position 0 is always kept).
    nucleus_logit = tf.reduce_min(tf.where(in_nucleus, ordered, ordered[:, :1]), axis=-1,
                                  keepdims=True)
    threshold = tf.maximum(kth_logit, nucleus_logit)  # [batch, 1]
    return tf.where(logits >= threshold, logits, float("-inf"))


_MASK_32 = 0xFFFFFFFF


def _mix(x, multiplier, shift):
    """One round of MurmurHash3's finaliser on non-negative int64 < 2^32."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, shift))
    return tf.bitwise.bitwise_and(x * multiplier, _MASK_32)  # low 32 bits (wraps are harmless)


def uniform_noise(batch_size, vocab_size, seed, step):
    """Uniform float32 `[batch, vocab]` in (0, 1), a hash of (seed, step, row, token).

    Integer ops only, so the noise is bit-identical in eager TensorFlow, in a
    graph, under XLA and in a SavedModel (TensorFlow's stateless random ops
    use another algorithm under XLA than without it).
    """
    rows = tf.range(batch_size, dtype=tf.int64)[:, None]  # [batch, 1]
    columns = tf.range(vocab_size, dtype=tf.int64)[None, :]  # [1, vocab]
    x = (tf.cast(seed, tf.int64) * 0x9E3779B1 + tf.cast(step, tf.int64) * 0x85EBCA77
         + rows * 0xC2B2AE3D + columns)
    x = tf.bitwise.bitwise_and(x, _MASK_32)
    x = _mix(_mix(_mix(x, 0x85EBCA6B, 16), 0xC2B2AE35, 13), 1, 16)
    return tf.cast((tf.cast(x, tf.float64) + 0.5) / 2.0**32, tf.float32)


def sample_next(logits, temperature, top_k, top_p, seed, step):
    """Next token ids `[batch]` from float32 logits `[batch, vocab]`: argmax when
    `temperature` is 0, else a draw from the filtered softmax (the Gumbel-max
    trick on `uniform_noise(seed, step)`)."""
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    filtered = filter_logits(logits, temperature, top_k, top_p)
    shape = tf.shape(filtered)
    gumbel = -tf.math.log(-tf.math.log(uniform_noise(shape[0], shape[1], seed, step)))
    sampled = tf.argmax(filtered + gumbel, axis=-1, output_type=tf.int32)
    return tf.where(tf.cast(temperature, tf.float32) > 0, sampled, greedy)


def _advance(tokens, index, logits, prompt_lengths, state, settings):
    """One decoding step: writes position `index` of every row.

    Rows still inside their prompt keep their prompt token; rows generating
    take the sampled token (or stop); finished rows get padding (0).

    Args:
        tokens: int32 `[batch, total]`, prompts right-padded.
        index: scalar int32, the position being written.
        logits: float32 `[batch, vocab]`, the logits of position `index - 1`.
        prompt_lengths: int32 `[batch]`.
        state: `(done [batch] bool, generated [batch] int32)`.
        settings: dict of scalar tensors (`check_sampling`'s keys, and `seed`).

    Returns:
        `(tokens, (done, generated))`.
    """
    done, generated = state
    next_token = sample_next(logits, settings["temperature"], settings["top_k"],
                             settings["top_p"], settings["seed"], index)
    in_prompt = index < prompt_lengths
    generating = tf.logical_and(tf.logical_not(in_prompt), tf.logical_not(done))
    stops = tf.logical_and(generating, tf.equal(next_token, settings["stop_token"]))
    keeps = tf.logical_and(generating, tf.logical_not(stops))
    # Gathers, not slices: XLA would compile a slice once per start index.
    prompt_token = tf.gather(tokens, index, axis=1)  # [batch]
    column = tf.where(in_prompt, prompt_token, tf.where(keeps, next_token, 0))
    tokens = ops.slice_update(tokens, [0, index], column[:, None])
    generated = generated + tf.cast(keeps, tf.int32)
    done = done | stops | (generated >= settings["max_new_tokens"])
    return tokens, (done, generated)


def _start(prompt_lengths, settings):
    done = tf.fill(tf.shape(prompt_lengths), tf.cast(settings["max_new_tokens"], tf.int32) <= 0)
    return done, tf.zeros_like(prompt_lengths)


def make_cached_loop(decoder, jit_compile=True):
    """The cached decoding loop as one traced function.

    `loop(prompt_tokens [batch, width] int32, prompt_lengths [batch] int32,
    settings)` -> `(tokens [batch, width + max_new_tokens], generated
    [batch])`: row `r`'s new tokens are `tokens[r, prompt_lengths[r] :
    prompt_lengths[r] + generated[r]]`. `settings` holds `check_sampling`'s
    keys and `seed` as scalar tensors, except that under XLA
    `max_new_tokens` must be a Python int: it sizes the buffers, and XLA
    compiles one program per shape.
    """

    def loop(prompt_tokens, prompt_lengths, settings):
        width = tf.shape(prompt_tokens)[1]
        tokens = tf.pad(prompt_tokens, [[0, 0], [0, settings["max_new_tokens"]]])
        total = tf.shape(tokens)[1]
        capacity = decoder.capacity(total)
        cache = decoder.init_cache(tf.shape(tokens)[0], capacity)
        prefill = tf.minimum(width, capacity)
        _, cache = decoder.call_with_cache(prompt_tokens[:, :prefill], cache, 0)
        start = tf.minimum(tf.reduce_min(prompt_lengths), prefill)

        def not_finished(index, tokens, cache, done, generated):
            return tf.logical_and(index < total, tf.logical_not(tf.reduce_all(done)))

        def step(index, tokens, cache, done, generated):
            slot = index - 1
            if decoder.streams:
                cache, slot = decoder.evict(cache, slot)
            fed = tf.gather(tokens, [index - 1], axis=1)  # [batch, 1]
            logits, cache = decoder.call_with_cache(fed, cache, slot)
            tokens, (done, generated) = _advance(
                tokens, index, logits[:, -1], prompt_lengths, (done, generated), settings)
            return index + 1, tokens, cache, done, generated

        done, generated = _start(prompt_lengths, settings)
        _, tokens, _, _, generated = tf.while_loop(
            not_finished, step, (start, tokens, cache, done, generated),
            maximum_iterations=total,
        )
        return tokens, generated

    return tf.function(loop, jit_compile=jit_compile, reduce_retracing=True)


class Generator:
    """`generate` with its compiled functions kept for the next call.

    Args:
        model: a causal LM of `build_causal_lm`.
        cache: bool. The key/value cache and the compiled loop (default), or
            the uncached path: a full pass over the context per new token.
        context_length: None or int. Tokens of each prompt kept (its last
            ones); on the uncached path also the context each step re-reads
            (a sliding window, what a "learned" table past its size needs).
        sink_tokens, window: attention sinks (`CachedDecoder`), cache only.
        jit_compile: bool. Compile the cached loop with XLA.
    """

    def __init__(self, model, cache=True, context_length=None, sink_tokens=None, window=None,
                 jit_compile=True):
        self.cache = bool(cache)
        self.context_length = checks.integer(
            context_length, "context_length", minimum=1, allow_none=True)
        if not self.cache and sink_tokens is not None:
            raise ValueError("attention sinks are a kind of cache: use cache=True with them.")
        self.decoder = CachedDecoder(model, sink_tokens=sink_tokens, window=window)
        self.vocab_size = self.decoder.embedding.input_dim
        self._loop = make_cached_loop(self.decoder, jit_compile=jit_compile)
        self._last_logits = last_logits_function(model)  # the uncached path
        self._advance = tf.function(_advance, reduce_retracing=True)

    def __call__(self, prompts, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                 stop_token=None, seed=0):
        """New token ids for each prompt.

        Args:
            prompts: a list of int sequences (token ids; an empty prompt is
                read as a newline, `EMPTY_PROMPT_CONTEXT`).
            max_new_tokens: int >= 0.
            temperature: float >= 0; 0 = greedy (argmax).
            top_k: None or int >= 0: sample among the k most probable (0 or
                None = all).
            top_p: None or float in (0, 1]: sample in the nucleus of that mass.
            stop_token: None or a token id that ends a row (not returned).
            seed: int, the sampling seed.

        Returns:
            list of int lists, the new tokens of each prompt.
        """
        settings = check_sampling(max_new_tokens, temperature, top_k, top_p, stop_token,
                                  self.vocab_size)
        seed = checks.integer(seed, "seed", minimum=0, maximum=2**31 - 1)
        rows = [list(map(int, prompt)) or list(EMPTY_PROMPT_CONTEXT) for prompt in prompts]
        if not rows:
            raise ValueError("generate needs at least one prompt (got an empty list).")
        if self.context_length:
            rows = [row[-self.context_length:] for row in rows]
        bad = [t for row in rows for t in row if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size}).")
        lengths = [len(row) for row in rows]
        self._check_length(max(lengths) + settings["max_new_tokens"])
        prompt_lengths = tf.constant(lengths, tf.int32)
        max_new_tokens = settings["max_new_tokens"]  # a Python int: it sizes the buffers
        settings = {key: tf.constant(value) for key, value in {**settings, "seed": seed}.items()}
        settings["max_new_tokens"] = max_new_tokens
        if self.cache:
            width = -(-max(lengths) // PROMPT_BUCKET) * PROMPT_BUCKET
            if self.decoder.max_length is not None and not self.decoder.streams:
                width = min(width, self.decoder.max_length - max_new_tokens)  # >= the longest
            prompt_tokens = tf.constant([row + [0] * (width - len(row)) for row in rows], tf.int32)
            tokens, generated = self._loop(prompt_tokens, prompt_lengths, settings)
        else:
            total = max(lengths) + max_new_tokens
            tokens = tf.constant([row + [0] * (total - len(row)) for row in rows], tf.int32)
            tokens, generated = self._uncached(tokens, prompt_lengths, settings)
        tokens, generated = tokens.numpy(), generated.numpy()
        return [tokens[r, lengths[r]:lengths[r] + generated[r]].tolist() for r in range(len(rows))]

    def _check_length(self, longest):
        limit = self.decoder.max_length
        if limit is None or self.decoder.streams:
            return
        if self.cache and longest > limit:
            raise ValueError(
                f"the prompt and new tokens need {longest} positions but the model's "
                f"position table has {limit}: generate fewer tokens, shorten the "
                f"prompt, or decode without the cache with a context_length <= {limit} "
                f"(each step then re-reads the last context_length tokens)."
            )
        if not self.cache and (self.context_length or longest) > limit:
            raise ValueError(
                f"context_length {self.context_length or longest} is past the model's "
                f"position table of {limit}: use context_length <= {limit}."
            )

    def _uncached(self, tokens, prompt_lengths, settings):
        """The same steps as the cached loop, each a full pass over the context."""
        total = int(tokens.shape[1])
        state = _start(prompt_lengths, settings)
        start = int(tf.reduce_min(prompt_lengths))
        for index in range(start, total):
            if bool(tf.reduce_all(state[0])):
                break
            first = max(0, index - self.context_length) if self.context_length else 0
            logits = self._last_logits(tokens[:, first:index])
            tokens, state = self._advance(tokens, tf.constant(index), logits, prompt_lengths,
                                          state, settings)
        return tokens, state[1]


def generate(model, prompts, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
             stop_token=None, seed=0, cache=True, context_length=None, sink_tokens=None,
             window=None):
    """New token ids for each prompt (see `Generator`; keep a `Generator` to
    reuse its compiled loop across calls)."""
    generator = Generator(model, cache=cache, context_length=context_length,
                          sink_tokens=sink_tokens, window=window)
    return generator(prompts, max_new_tokens, temperature=temperature, top_k=top_k,
                     top_p=top_p, stop_token=stop_token, seed=seed)
