"""A byte-level tokenizer: token id = UTF-8 byte value (vocab 256).

Bytes make the length-extrapolation numbers easy to compare: every token is
exactly one byte, so bits per byte is `total NLL / (num_tokens * ln 2)` with
no tokenizer-dependent conversion, lengths in tokens are lengths in bytes,
and encode/decode round-trips any UTF-8 text exactly. There are no special
tokens and no padding id: the causal LM never masks, so id 0 is just the NUL
byte.

Example:
```python
tokenizer = ByteTokenizer()
ids = tokenizer.encode("héllo")           # int32 [6]
tokenizer.decode(ids) == "héllo"          # True
ragged = tokenizer.encode_tf(tf.constant(["a", "héllo"]))  # in-graph
```
"""

import numpy as np
import tensorflow as tf

VOCAB_SIZE = 256


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0..255)."""

    vocab_size = VOCAB_SIZE

    def encode(self, text):
        """`str` -> int32 array of its UTF-8 bytes."""
        if not isinstance(text, str):
            raise ValueError(f"ByteTokenizer.encode takes a str, got {type(text).__name__}.")
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, token_ids, errors="replace"):
        """Token ids -> `str`. Bytes that are not valid UTF-8 (e.g. a cut
        multi-byte character) become U+FFFD unless `errors="strict"`."""
        token_ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= VOCAB_SIZE):
            raise ValueError(
                f"byte token ids must lie in [0, {VOCAB_SIZE}); got "
                f"min {token_ids.min()}, max {token_ids.max()}."
            )
        return token_ids.astype(np.uint8).tobytes().decode("utf-8", errors=errors)

    def token_bytes(self, token_id):
        """The raw bytes of one token."""
        return bytes([int(token_id)])

    def encode_tf(self, texts):
        """In-graph encoding: `tf.string [batch]` -> ragged int32 `[batch, None]`."""
        pieces = tf.strings.bytes_split(texts)  # ragged [batch, None] 1-byte strings
        flat_bytes = tf.io.decode_raw(pieces.flat_values, tf.uint8)  # [n, 1]
        flat_ids = tf.cast(tf.reshape(flat_bytes, [-1]), tf.int32)  # [n]
        return pieces.with_flat_values(flat_ids)

    def vocabulary_tf(self):
        """`tf.string [256]`: token id -> its byte, for in-graph lookups."""
        return tf.constant([bytes([i]) for i in range(VOCAB_SIZE)], dtype=tf.string)

    def config(self):
        """JSON-able description saved next to trained models."""
        return {"type": "bytes", "vocab_size": VOCAB_SIZE}


def tokenizer_from_config(config):
    """Rebuilds a tokenizer from `ByteTokenizer.config()`."""
    if not isinstance(config, dict) or config.get("type") != "bytes":
        raise ValueError(
            f"unknown tokenizer config {config!r}; kerapos language models use "
            "{'type': 'bytes', 'vocab_size': 256}."
        )
    return ByteTokenizer()
