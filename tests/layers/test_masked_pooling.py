"""MaskedPooling against numpy, and the shared layer suite."""

import keras
import numpy as np
import pytest
from layer_suite import LayerSuite

from kerapos.layers.masked_pooling import MaskedPooling

DIM = 6


def random_inputs(batch=3, length=5, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, length, DIM)).astype("float32")


def test_mean_averages_the_kept_positions():
    x = random_inputs()
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]], bool)
    expected = np.stack([x[row][mask[row]].mean(axis=0) for row in range(len(x))])
    np.testing.assert_allclose(MaskedPooling("mean")(x, mask=mask), expected, rtol=1e-6)


def test_mean_without_mask_averages_everything():
    x = random_inputs()
    np.testing.assert_allclose(MaskedPooling("mean")(x), x.mean(axis=1), rtol=1e-6)


def test_all_masked_row_gives_zeros():
    x = random_inputs()
    mask = np.ones(x.shape[:2], bool)
    mask[1] = False
    pooled = np.asarray(MaskedPooling("mean")(x, mask=mask))
    np.testing.assert_array_equal(pooled[1], np.zeros(DIM))
    assert np.all(np.isfinite(pooled))


def test_first_takes_position_zero_whatever_the_mask():
    x = random_inputs()
    mask = np.zeros(x.shape[:2], bool)
    np.testing.assert_array_equal(MaskedPooling("first")(x, mask=mask), x[:, 0])


def test_reads_the_keras_mask_and_ends_it():
    tokens = keras.Input(shape=(None,), dtype="int32")
    embedded = keras.layers.Embedding(20, DIM, mask_zero=True)(tokens)
    pooled = MaskedPooling("mean")(embedded)
    model = keras.Model(tokens, [embedded, pooled])
    ids = np.array([[3, 4, 0, 0], [5, 6, 7, 8]])
    vectors, outputs = model(ids)
    expected = np.stack([np.asarray(vectors)[0, :2].mean(0), np.asarray(vectors)[1].mean(0)])
    np.testing.assert_allclose(outputs, expected, rtol=1e-6)
    assert MaskedPooling().compute_mask(vectors, ids != 0) is None


@pytest.mark.parametrize("mode", ["max", "", None, 1])
def test_bad_mode(mode):
    with pytest.raises(ValueError, match="`mode` must be one of 'mean', 'first'"):
        MaskedPooling(mode)


# -- the shared suite ------------------------------------------------------------------
class TestMeanPoolingSuite(LayerSuite):
    input_shapes = ((None, DIM),)
    mask_input = 0
    mask_passes_through = False

    def make_layer(self, **overrides):
        return MaskedPooling("mean", **overrides)

    def make_inputs(self, batch, length):
        return (np.random.randn(batch, length, DIM).astype("float32"),)


class TestFirstTokenPoolingSuite(TestMeanPoolingSuite):
    def make_layer(self, **overrides):
        return MaskedPooling("first", **overrides)

    def mask_keep(self, batch, length):
        keep = super().mask_keep(batch, length)
        keep[:, 0] = True  # the first token is the one kept
        return keep
