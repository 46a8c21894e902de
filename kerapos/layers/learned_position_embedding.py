"""A trainable position table added to the inputs (BERT / GPT-2 style)."""

import keras
import numpy as np
from keras import ops

from kerapos.utils import checks

EXTEND_METHODS = ("interpolate", "copy")


@keras.saving.register_keras_serializable(package="kerapos")
class LearnedPositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding per absolute position, up to `max_length`.

    Row `p` of a trainable `[max_length, hidden]` table is added to the token
    at position `p` (BERT, GPT-2). The table cannot say anything about
    positions it does not have, so an input that reaches past `max_length`
    is an error, never a silent clamp or zero row:

    * lengths known when the call is traced raise `ValueError` right away;
    * lengths known only at run time (e.g. a SavedModel with a `None`
      sequence dim) fail with `tf.errors.InvalidArgumentError` from a runtime
      assertion naming both lengths;
    * under XLA, where runtime assertions compile to nothing, an over-long
      slice fails to compile; and when `start_index` is a value computed
      inside the compiled program (e.g. a decoding-loop counter), rows past
      the table come out as NaN instead of a clamped copy of the last rows.

    A trained table can be grown with `extend_to()` (position interpolation
    or Longformer-style copying) to accept longer inputs.

    The incoming Keras mask is passed through unchanged.

    Args:
        max_length: int. Number of positions in the table; positive.
        embeddings_initializer: initializer of the table. Defaults to
            `"glorot_uniform"` (as keras-hub's `PositionEmbedding`).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable`, `dtype` etc.

    Call arguments:
        inputs: float tensor `[batch, seq, hidden]`.
        start_index: int or scalar integer tensor. Position of the first
            token, for incremental (cached) decoding: rows
            `start_index : start_index + seq` are added. Defaults to `0`.

    Example:
    ```python
    tokens = keras.Input(shape=(None,), dtype="int32")
    embedded = keras.layers.Embedding(1000, 64, mask_zero=True)(tokens)
    position_layer = LearnedPositionEmbedding(max_length=512)
    outputs = position_layer(embedded)
    # ... train, then accept 2048 tokens:
    position_layer.extend_to(2048, method="interpolate")
    ```

    References:
     - [Devlin et al., 2019. BERT](https://arxiv.org/abs/1810.04805)
     - [Chen et al., 2023. Position Interpolation](https://arxiv.org/abs/2306.15595)
       (`extend_to(method="interpolate")`)
     - [Beltagy et al., 2020. Longformer](https://arxiv.org/abs/2004.05150)
       (`extend_to(method="copy")`)
    """

    def __init__(
        self,
        max_length,
        embeddings_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_length = checks.integer(max_length, "max_length", minimum=1)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "LearnedPositionEmbedding expects inputs of shape "
                "[batch, seq, hidden] (rank 3, known hidden size). "
                f"Received shape {input_shape}."
            )
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_length, input_shape[-1]),
            initializer=self.embeddings_initializer,
            trainable=True,
        )

    def call(self, inputs, start_index=0):
        sequence_length, hidden_dim = ops.shape(inputs)[1:]
        static_start = checks.is_integer(start_index)
        if static_start:
            start_index = int(start_index)
            if start_index < 0:
                raise ValueError(
                    f"`start_index` must be >= 0. Received: {start_index}."
                )
        if isinstance(sequence_length, int):
            if static_start and start_index + sequence_length > self.max_length:
                raise ValueError(
                    f"{self.name}: start_index + sequence_length = "
                    f"{start_index} + {sequence_length} = "
                    f"{start_index + sequence_length}" + self._past_table()
                )
            if sequence_length > self.max_length:
                raise ValueError(
                    f"{self.name}: sequence_length = {sequence_length}"
                    + self._past_table()
                )
        if not static_start:
            start_index = ops.cast(start_index, "int32")
        if not (static_start and isinstance(sequence_length, int)):
            in_table = ops.logical_and(
                start_index >= 0,
                start_index + sequence_length <= self.max_length,
            )
            start_index = self._assert_in_table(
                in_table, start_index, sequence_length
            )
        # [seq, hidden]
        rows = ops.slice(
            self.embeddings, (start_index, 0), (sequence_length, hidden_dim)
        )
        if not static_start:
            # XLA drops runtime assertions and clamps slice starts; poison
            # the rows instead of returning the wrong ones.
            rows = ops.where(in_table, rows, float("nan"))
        return inputs + ops.cast(rows, self.compute_dtype)

    def _past_table(self):
        return (
            f" reaches past max_length = {self.max_length} (the size of the "
            "learned position table). Shorten the input, or grow the table "
            "with `layer.extend_to(new_max_length)`."
        )

    def _assert_in_table(self, in_table, start_index, sequence_length):
        """Runtime check for values unknown when tracing; returns the start
        index made to depend on it, so the slice cannot run before it."""
        # No runtime assertion exists in `keras.ops`; other backends go unchecked.
        if keras.backend.backend() != "tensorflow":
            return start_index
        import tensorflow as tf

        check = tf.debugging.Assert(
            in_table,
            [
                f"{self.name}: start_index =",
                start_index,
                "and start_index + sequence_length =",
                start_index + sequence_length,
                "must lie in [0, max_length =",
                self.max_length,
                "], the size of the learned position table. Shorten the "
                "input, or grow the table with "
                "`layer.extend_to(new_max_length)`.",
            ],
        )
        with tf.control_dependencies([check]):
            return tf.identity(start_index)

    def extend_to(self, new_max_length, method="interpolate"):
        """Grows the trained table to `new_max_length` rows, in place.

        The weight is re-created with the new shape (same dtype and
        trainability) and `max_length` / `get_config()` are updated, so a
        `.keras` file saved afterwards holds the bigger table. Works on a
        layer inside a built model, which then accepts the longer inputs.
        Re-run `model.compile(...)` before training or `predict` again:
        it drops functions traced against the old table. Under a
        `tf.distribute` strategy, call it inside the same `strategy.scope()`.

        Args:
            new_max_length: int, larger than the current `max_length`.
            method: `"interpolate"` (position interpolation, Chen et al.
                2023): new row `p` is the old table linearly interpolated at
                fractional position `p * max_length / new_max_length`, so
                row 0 is kept. `"copy"` (Longformer, Beltagy et al. 2020):
                new row `p` is old row `p % max_length`, so the trained rows
                are kept exactly and repeated.

        Returns:
            The layer itself.
        """
        if not self.built:
            raise ValueError(
                f"{self.name}: `extend_to()` grows a built (trained) table; "
                "this layer has no table yet. Create it with "
                f"`max_length={new_max_length}` instead."
            )
        new_max_length = checks.integer(new_max_length, "new_max_length", minimum=1)
        if new_max_length <= self.max_length:
            raise ValueError(
                f"{self.name}: `new_max_length` ({new_max_length}) must be "
                f"larger than the current max_length ({self.max_length})."
            )
        checks.choice(method, "method", EXTEND_METHODS)
        old_length = self.max_length
        old_table = ops.convert_to_numpy(self.embeddings).astype(np.float64)
        if method == "copy":
            new_table = old_table[np.arange(new_max_length) % old_length]
        else:
            positions = np.arange(new_max_length) * old_length / new_max_length
            lower = np.floor(positions).astype(np.int64)
            upper = np.minimum(lower + 1, old_length - 1)
            weight = (positions - lower)[:, None]
            new_table = (
                old_table[lower] * (1.0 - weight) + old_table[upper] * weight
            )

        old_weight = self.embeddings
        self._tracker.unlock()
        del self.embeddings
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=new_table.shape,
            initializer="zeros",
            dtype=old_weight.dtype,
            trainable=old_weight.trainable,
        )
        self._tracker.lock()
        self.embeddings.assign(ops.cast(new_table, old_weight.dtype))
        self.max_length = int(new_max_length)
        return self

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config

