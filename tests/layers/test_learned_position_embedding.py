"""Tests for `kerapos.layers.learned_position_embedding.LearnedPositionEmbedding`."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_suite import LayerSuite

from kerapos.layers.learned_position_embedding import LearnedPositionEmbedding

HIDDEN = 16
MAX_LENGTH = 16


def random_inputs(batch, length, hidden=HIDDEN, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, length, hidden)).astype("float32")


def built_layer(max_length=MAX_LENGTH, hidden=HIDDEN, seed=0, **kwargs):
    """A built layer whose table is a known random matrix."""
    layer = LearnedPositionEmbedding(max_length, **kwargs)
    layer.build((None, None, hidden))
    table = np.random.default_rng(seed).normal(size=(max_length, hidden)).astype("float32")
    layer.set_weights([table])
    return layer, table


class TestLearnedPositionEmbeddingSuite(LayerSuite):
    expected_trainable_weights = 1
    mask_input = 0

    def make_layer(self, **overrides):
        return LearnedPositionEmbedding(max_length=MAX_LENGTH, **overrides)

    def make_inputs(self, batch, length):
        return (np.random.normal(size=(batch, length, HIDDEN)).astype("float32"),)

    def test_longer_than_built(self):
        layer, _, _ = self._fresh()  # extend_to changes the layer
        longer = self.build_length * 4  # 32 > MAX_LENGTH
        inputs = self._inputs(2, longer, seed=1)
        with pytest.raises(ValueError, match=r"= 32 reaches past max_length = 16.*extend_to"):
            self.call(layer, inputs)
        layer.extend_to(longer)
        outputs = np.asarray(self.call(layer, inputs))
        assert outputs.shape == (2, longer, HIDDEN)
        assert np.all(np.isfinite(outputs))


# -- forward pass against numpy -------------------------------------------------------


@pytest.mark.parametrize("length,start_index", [(1, 0), (5, 0), (16, 0), (5, 3), (1, 15), (4, 12)])
def test_forward_matches_numpy(length, start_index):
    layer, table = built_layer()
    x = random_inputs(2, length)
    expected = x + table[start_index : start_index + length][None]
    np.testing.assert_allclose(layer(x, start_index=start_index), expected, atol=1e-6)
    np.testing.assert_allclose(
        layer(x, start_index=tf.constant(start_index)), expected, atol=1e-6
    )
    np.testing.assert_allclose(
        layer(x, start_index=np.int64(start_index)), expected, atol=1e-6
    )


def test_incremental_decoding_matches_full_sequence():
    layer, _ = built_layer()
    x = random_inputs(1, 10)
    full = np.asarray(layer(x))
    steps = [np.asarray(layer(x[:, t : t + 1], start_index=t)) for t in range(10)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)


def test_traced_dynamic_start_and_length_match_numpy():
    layer, table = built_layer()
    traced = tf.function(
        lambda x, start: layer(x, start_index=start),
        input_signature=[tf.TensorSpec([None, None, HIDDEN]), tf.TensorSpec([], tf.int32)],
    )
    x = random_inputs(3, 6)
    np.testing.assert_allclose(traced(x, 9), x + table[9:15][None], atol=1e-6)


# -- inputs longer than the table ------------------------------------------------------


def test_eager_too_long_raises_value_error_naming_both_lengths():
    layer, _ = built_layer()
    with pytest.raises(ValueError, match=r"0 \+ 20 = 20 reaches past max_length = 16.*extend_to"):
        layer(random_inputs(1, 20))
    with pytest.raises(ValueError, match=r"10 \+ 8 = 18 reaches past max_length = 16.*extend_to"):
        layer(random_inputs(1, 8), start_index=10)
    # A tensor start_index is only known at run time; the length alone is not.
    with pytest.raises(ValueError, match=r"sequence_length = 20 .*max_length = 16"):
        layer(random_inputs(1, 20), start_index=tf.constant(0))


def test_negative_start_index_raises():
    layer, _ = built_layer()
    with pytest.raises(ValueError, match="start_index"):
        layer(random_inputs(1, 4), start_index=-1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="start_index"):
        layer(random_inputs(1, 4), start_index=tf.constant(-1))


def test_traced_unknown_length_raises_invalid_argument_naming_both_lengths():
    layer, _ = built_layer()
    traced = tf.function(
        lambda x: layer(x), input_signature=[tf.TensorSpec([None, None, HIDDEN])]
    )
    traced(random_inputs(1, 16))  # the whole table is fine
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        traced(random_inputs(1, 20))
    message = str(error.value)
    assert "start_index + sequence_length =] [20]" in message, message
    assert "max_length =] [16]" in message, message
    assert "extend_to" in message


def test_traced_dynamic_start_past_table_raises_invalid_argument():
    layer, _ = built_layer()
    traced = tf.function(
        lambda x, start: layer(x, start_index=start),
        input_signature=[tf.TensorSpec([None, None, HIDDEN]), tf.TensorSpec([], tf.int32)],
    )
    traced(random_inputs(1, 4), 12)  # rows 12..15: the end of the table
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[13\].*\[17\].*\[16\]"):
        traced(random_inputs(1, 4), 13)


def test_saved_model_with_unknown_length_raises_on_long_input(tmp_path):
    layer, _ = built_layer()
    inputs = keras.Input(shape=(None, HIDDEN))
    model = keras.Model(inputs, layer(inputs))
    model.export(str(tmp_path / "export"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    loaded.serve(random_inputs(1, 16))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[20\].*max_length =\] \[16\]"):
        loaded.serve(random_inputs(1, 20))


def test_xla_too_long_fails_to_compile():
    # Runtime assertions compile to nothing under XLA, but the sequence length
    # is a compile-time constant there, so the over-long slice cannot compile.
    layer, _ = built_layer()
    compiled = tf.function(
        lambda x: layer(x),
        input_signature=[tf.TensorSpec([None, None, HIDDEN])],
        jit_compile=True,
    )
    with pytest.raises(tf.errors.InvalidArgumentError):
        compiled(random_inputs(1, 20))


def test_xla_loop_counter_start_past_table_gives_nan_not_clamped_rows():
    # A start index carried by a loop is a true run-time value under XLA,
    # where slices clamp their start: the layer must not return clamped rows.
    layer, table = built_layer()
    x = random_inputs(1, 4)

    @tf.function(jit_compile=True)
    def decode(steps):
        def body(step, outputs):
            return step + 1, outputs.write(step, layer(x, start_index=step))

        outputs = tf.TensorArray(tf.float32, size=steps)
        return tf.while_loop(lambda step, _: step < steps, body, (0, outputs))[1].stack()

    outputs = decode(tf.constant(15)).numpy()  # starts 0..14; 13, 14 reach past 16
    for start in range(13):
        np.testing.assert_allclose(outputs[start], x + table[start : start + 4][None], atol=1e-6)
    assert np.all(np.isnan(outputs[13:]))


# -- extend_to -----------------------------------------------------------------------------


@pytest.mark.parametrize("new_length", [17, 32, 50])
def test_extend_interpolate_matches_np_interp(new_length):
    layer, table = built_layer()
    assert layer.extend_to(new_length, method="interpolate") is layer
    fractional_positions = np.arange(new_length) * MAX_LENGTH / new_length
    expected = np.stack(
        [
            np.interp(fractional_positions, np.arange(MAX_LENGTH), table[:, column])
            for column in range(HIDDEN)
        ],
        axis=1,
    )
    got = layer.get_weights()[0]
    assert got.shape == (new_length, HIDDEN)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(got[0], table[0])


def test_extend_interpolate_doubling_keeps_rows_and_averages_between():
    layer, table = built_layer()
    layer.extend_to(2 * MAX_LENGTH)
    new_table = layer.get_weights()[0]
    np.testing.assert_allclose(new_table[0::2], table, atol=1e-6)
    np.testing.assert_allclose(new_table[1:-1:2], (table[:-1] + table[1:]) / 2, atol=1e-6)
    np.testing.assert_allclose(new_table[-1], table[-1], atol=1e-6)


@pytest.mark.parametrize("new_length", [17, 40, 64])
def test_extend_copy_tiles_trained_rows(new_length):
    layer, table = built_layer()
    layer.extend_to(new_length, method="copy")
    repeats = -(-new_length // MAX_LENGTH)
    expected = np.tile(table, (repeats, 1))[:new_length]
    np.testing.assert_array_equal(layer.get_weights()[0], expected)


def test_extend_updates_config_and_keeps_one_weight():
    layer, _ = built_layer(name="positions")
    layer.extend_to(48)
    assert layer.max_length == 48
    assert layer.get_config()["max_length"] == 48
    assert len(layer.weights) == 1 and len(layer.trainable_weights) == 1
    assert layer.embeddings.path == "positions/embeddings"
    np.testing.assert_allclose(layer(random_inputs(1, 48)).shape, (1, 48, HIDDEN))


def test_extend_keeps_trainability_and_dtype():
    layer, _ = built_layer(trainable=False)
    layer.extend_to(20)
    assert not layer.embeddings.trainable
    assert len(layer.trainable_weights) == 0 and len(layer.non_trainable_weights) == 1

    mixed, _ = built_layer(dtype="mixed_bfloat16")
    mixed.extend_to(20, method="copy")
    assert mixed.embeddings.dtype == "float32"
    assert mixed(random_inputs(1, 20)).dtype == "bfloat16"


def test_extend_inside_trained_functional_model():
    inputs = keras.Input(shape=(None, HIDDEN))
    layer = LearnedPositionEmbedding(MAX_LENGTH)
    hidden = layer(inputs)
    outputs = keras.layers.Dense(1)(keras.ops.mean(hidden, axis=1))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    initial = np.array(layer.embeddings)
    model.fit(random_inputs(4, MAX_LENGTH), np.ones((4, 1)), epochs=1, verbose=0)
    trained = np.array(layer.embeddings)
    assert not np.allclose(initial, trained)
    with pytest.raises(ValueError, match="max_length = 16"):
        model(random_inputs(2, 64))

    layer.extend_to(64, method="copy")
    long_inputs = random_inputs(2, 64, seed=3)
    outputs = np.asarray(model(long_inputs))
    assert outputs.shape == (2, 1) and np.all(np.isfinite(outputs))
    extended = np.array(layer.embeddings)
    np.testing.assert_array_equal(extended[:MAX_LENGTH], trained)
    np.testing.assert_array_equal(extended[MAX_LENGTH : 2 * MAX_LENGTH], trained)

    # After re-compiling, the model trains the bigger table.
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(long_inputs, np.ones((2, 1)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(np.array(layer.embeddings), extended)


def test_extended_table_round_trips_through_keras_file(tmp_path):
    inputs = keras.Input(shape=(None, HIDDEN))
    layer = LearnedPositionEmbedding(MAX_LENGTH, name="positions")
    model = keras.Model(inputs, layer(inputs))
    layer.extend_to(40)
    long_inputs = random_inputs(2, 40)
    expected = np.asarray(model(long_inputs))
    path = str(tmp_path / "extended.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("positions").max_length == 40
    np.testing.assert_allclose(loaded(long_inputs), expected, atol=1e-6)


def test_extend_bad_arguments_raise():
    layer, _ = built_layer()
    with pytest.raises(ValueError, match=r"new_max_length.*\(16\).*larger.*\(16\)"):
        layer.extend_to(16)
    with pytest.raises(ValueError, match="larger"):
        layer.extend_to(8)
    with pytest.raises(ValueError, match="`method` must be one of 'interpolate', 'copy'; got 'nearest'"):
        layer.extend_to(32, method="nearest")
    with pytest.raises(ValueError, match="`new_max_length` must be an integer >= 1, got 32.5"):
        layer.extend_to(32.5)
    with pytest.raises(ValueError, match="no table yet"):
        LearnedPositionEmbedding(8).extend_to(32)
    assert layer.max_length == MAX_LENGTH and layer.get_weights()[0].shape == (16, HIDDEN)


# -- masks, config, bad input --------------------------------------------------------------


def test_config_is_complete():
    layer = LearnedPositionEmbedding(
        12, embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="pos"
    )
    config = layer.get_config()
    assert config["max_length"] == 12
    clone = LearnedPositionEmbedding.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.embeddings_initializer, keras.initializers.TruncatedNormal)
    assert clone.embeddings_initializer.stddev == 0.02


@pytest.mark.parametrize("max_length", [0, -3, 2.5, None, True, "16"])
def test_bad_max_length_raises(max_length):
    with pytest.raises(ValueError, match="`max_length` must be an integer >= 1, got"):
        LearnedPositionEmbedding(max_length)


@pytest.mark.parametrize("shape", [(5, 8), (2, 5, 3, 8)])
def test_wrong_rank_raises(shape):
    with pytest.raises(ValueError, match="rank 3"):
        LearnedPositionEmbedding(8)(np.zeros(shape, "float32"))
