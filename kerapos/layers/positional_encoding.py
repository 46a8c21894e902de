"""Sinusoidal positional encoding added to the inputs (Vaswani et al., 2017)."""

import keras
from keras import ops

from kerapos.utils import checks


@keras.saving.register_keras_serializable(package="kerapos")
class PositionalEncoding(keras.layers.Layer):
    """Adds the fixed sine/cosine position encoding of the Transformer.

    For position `pos` and hidden size `d`, feature `2i` of the encoding is
    `sin(pos / max_wavelength ** (2i / d))` and feature `2i + 1` is the cosine
    of the same angle (the interleaved layout of the paper). The encoding is
    computed on the fly for whatever length arrives, so there is no table and
    no maximum length. Angles and their sines are computed in float32 whatever
    the compute dtype, so positions in the tens of thousands stay accurate
    under `mixed_float16` / `mixed_bfloat16`; only the result is cast.

    The layer returns `inputs + encoding` and passes the incoming Keras mask
    through unchanged.

    Args:
        max_wavelength: float. The longest wavelength of the sine/cosine
            curves (the "10000" of the paper). Must be positive. Defaults to
            `10000.0`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name`, `trainable`, `dtype` etc.

    Call arguments:
        inputs: float tensor `[batch, seq, hidden]`; `hidden` must be even.
        start_index: int or scalar integer tensor. Position of the first
            token, for incremental (cached) decoding. Defaults to `0`.
        positions: optional integer tensor `[seq]` or `[batch, seq]` of
            explicit positions; when given, `start_index` is ignored.

    Example:
    ```python
    tokens = keras.Input(shape=(None,), dtype="int32")
    embedded = keras.layers.Embedding(1000, 64, mask_zero=True)(tokens)
    encoded = PositionalEncoding()(embedded)  # mask propagated
    ```

    Reference:
     - [Vaswani et al., 2017. Attention Is All You Need](https://arxiv.org/abs/1706.03762)
    """

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = checks.number(max_wavelength, "max_wavelength", above=0)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                "PositionalEncoding expects inputs of shape "
                f"[batch, seq, hidden] (rank 3). Received shape {input_shape}."
            )
        hidden_dim = input_shape[-1]
        if hidden_dim is None or hidden_dim % 2:
            raise ValueError(
                "PositionalEncoding needs a known, even hidden size (features "
                "come in sin/cos pairs). Received hidden size "
                f"{hidden_dim} from input shape {input_shape}; project the "
                "inputs to an even width first."
            )
        self.hidden_dim = hidden_dim

    def encoding(self, positions):
        """The float32 encoding of `positions`, shape `[..., hidden]`.

        Available once the layer is built (it needs the hidden size).

        Args:
            positions: numeric tensor of any shape, e.g. `[seq]` or
                `[batch, seq]`.
        """
        positions = ops.cast(positions, "float32")
        exponents = ops.arange(0, self.hidden_dim, 2, dtype="float32")
        # [hidden / 2]: 1 / max_wavelength ** (2i / d)
        inverse_frequencies = ops.power(
            ops.cast(self.max_wavelength, "float32"), -exponents / self.hidden_dim
        )
        # [..., hidden / 2]
        angles = ops.expand_dims(positions, -1) * inverse_frequencies
        # [..., hidden / 2, 2] -> [..., hidden]: sin, cos interleaved.
        pairs = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
        return ops.reshape(pairs, (*ops.shape(angles)[:-1], self.hidden_dim))

    def call(self, inputs, start_index=0, positions=None):
        if positions is None:
            sequence_length = ops.shape(inputs)[1]
            # [seq]
            positions = ops.arange(sequence_length, dtype="float32") + ops.cast(
                start_index, "float32"
            )
        else:
            positions = ops.convert_to_tensor(positions)
            if "int" not in keras.backend.standardize_dtype(positions.dtype):
                raise ValueError(
                    "`positions` must be an integer tensor (float positions "
                    "would be autocast to the compute dtype and lose "
                    f"precision). Received dtype {positions.dtype}."
                )
            if len(positions.shape) not in (1, 2):
                raise ValueError(
                    "`positions` must have shape [seq] or [batch, seq]. "
                    f"Received shape {positions.shape}."
                )
        # [seq, hidden] or [batch, seq, hidden]
        encoding = ops.cast(self.encoding(positions), self.compute_dtype)
        return inputs + encoding

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config
