"""Random training windows of one long token stream, as a `tf.data` pipeline.

"Train short, test long" language models train on windows cut at random
offsets from the training documents joined into one stream. The offsets are
drawn up front with numpy from `seed`, so a seed always gives the same
windows in the same order. Other fixed windows (passkey samples) can take a
fixed share of every batch (`mixed_in`).

Example:
```python
stream = np.arange(1000, dtype=np.int32)
for inputs, targets in window_dataset(stream, 64, batch_size=8, steps=2, seed=0):
    ...  # inputs, targets: int32 [8, 64]; targets[:, :-1] == inputs[:, 1:]
```
"""

import numpy as np
import tensorflow as tf

from kerapos.utils import checks


def window_dataset(stream, window_length, batch_size, steps, seed, mixed_in=None):
    """`steps` batches of random windows of `stream` with next-token targets.

    Window `i` starts at `starts[i]`, where `starts` is
    `np.random.default_rng(seed).integers(0, len(stream) - window_length,
    size=steps * batch_size)`; its inputs are `stream[s : s + window_length]`
    and its targets the same shifted by one token, `stream[s + 1 : s +
    window_length + 1]`. Batch `b` holds windows `b * batch_size` to
    `(b + 1) * batch_size - 1`.

    With `mixed_in` (int `[steps * k, window_length + 1]`, whole windows of
    inputs plus the last target), batch `b` instead holds `batch_size - k`
    stream windows followed by rows `b * k` to `(b + 1) * k - 1` of
    `mixed_in`; the stream windows are those of the same seed without
    mixing, `batch_size - k` per batch.

    Args:
        stream: 1-D int array of token ids (`window_length + 2` at least).
        window_length: int, tokens per window.
        batch_size: int, windows per batch.
        steps: int, number of batches.
        seed: int, seeds the window offsets.
        mixed_in: optional int array of windows to mix into every batch.

    Returns:
        A `tf.data.Dataset` of `steps` `(inputs, targets)` pairs, each int32
        `[batch_size, window_length]`.
    """
    window_length = checks.integer(window_length, "window_length", minimum=1)
    batch_size = checks.integer(batch_size, "batch_size", minimum=1)
    steps = checks.integer(steps, "steps", minimum=0)
    checks.integer(seed, "seed")
    if stream.size < window_length + 2:
        raise ValueError(
            f"`stream` has {stream.size} tokens, too few for windows of "
            f"`window_length`={window_length} (at least {window_length + 2} needed); "
            "use a longer text or a shorter window."
        )
    mixed_per_batch = _mixed_per_batch(mixed_in, window_length, batch_size, steps)
    stream_per_batch = batch_size - mixed_per_batch
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, stream.size - window_length, size=steps * batch_size)
    starts = starts.reshape(steps, batch_size)[:, :stream_per_batch]  # [steps, stream rows]
    stream = tf.constant(stream, tf.int32)  # [stream_length]
    offsets = tf.range(window_length + 1, dtype=tf.int64)  # [window_length + 1]
    if mixed_in is None:
        mixed_in = np.zeros((steps, 0, window_length + 1), np.int32)
    mixed_in = np.asarray(mixed_in, np.int32).reshape(steps, mixed_per_batch, window_length + 1)

    def gather(batch_starts, mixed_windows):  # [stream rows], [mixed rows, window + 1]
        windows = tf.gather(stream, batch_starts[:, None] + offsets[None, :])  # [rows, window + 1]
        windows = tf.concat([windows, mixed_windows], axis=0)  # [batch, window + 1]
        return windows[:, :-1], windows[:, 1:]

    return (
        tf.data.Dataset.from_tensor_slices((starts.astype(np.int64), mixed_in))
        .map(gather)
        .prefetch(2)
    )


def _mixed_per_batch(mixed_in, window_length, batch_size, steps):
    """Rows of `mixed_in` per batch (0 without it); ValueError if its shape
    does not fit `steps` batches of `window_length + 1`-token windows."""
    if mixed_in is None:
        return 0
    shape = np.shape(mixed_in)
    if (len(shape) != 2 or shape[1] != window_length + 1 or steps == 0
            or shape[0] % steps or shape[0] // steps >= batch_size):
        raise ValueError(
            f"`mixed_in` must hold k * steps windows of window_length + 1 = "
            f"{window_length + 1} tokens, with 0 < k < batch_size={batch_size} "
            f"(steps={steps}); got shape {shape}."
        )
    return shape[0] // steps
