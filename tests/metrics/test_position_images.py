"""position_similarity against closed forms of each scheme's relation image."""

import numpy as np

from kerapos import positions
from kerapos.metrics.position_images import position_similarity
from kerapos.models import build_classifier

HIDDEN = 16
TINY = dict(num_layers=1, hidden_dim=HIDDEN, num_heads=2, intermediate_dim=32, dropout=0.0)


def _model(position, max_length=64):
    return build_classifier("transformer", vocab_size=50, num_classes=2, position=position,
                            max_length=max_length, **TINY)


def _distance(length):
    index = np.arange(length)
    return index[:, None] - index[None, :]  # [L, L]: i - j


def test_sinusoidal_is_the_mean_cosine_of_the_distance():
    # Each sin/cos pair contributes cos((i - j) w_k) to the dot product, and
    # every position vector has norm sqrt(HIDDEN / 2).
    frequencies = 10000.0 ** (-np.arange(0, HIDDEN, 2) / HIDDEN)  # [HIDDEN / 2]
    expected = np.cos(_distance(20)[..., None] * frequencies).mean(-1)
    np.testing.assert_allclose(position_similarity(_model("sinusoidal"), "sinusoidal", 20),
                               expected, atol=1e-5)


def test_learned_is_the_cosine_of_table_rows_up_to_the_table():
    model = _model("learned", max_length=12)
    table = np.asarray(model.get_layer(positions.INPUT_LAYER_NAME).embeddings)  # [12, HIDDEN]
    unit = table / np.linalg.norm(table, axis=-1, keepdims=True)
    np.testing.assert_allclose(position_similarity(model, "learned", 40), unit @ unit.T, atol=1e-5)


def test_rotary_is_the_logit_of_equal_contents():
    # Equal unit contents rotated by i and j: sum over pairs of (2 / d) cos((i - j) theta_k).
    head_dim = HIDDEN // TINY["num_heads"]
    thetas = 10000.0 ** (-np.arange(0, head_dim, 2) / head_dim)
    expected = np.cos(_distance(24)[..., None] * thetas).mean(-1)
    actual = position_similarity(_model("rotary"), "rotary", 24, head_dim=head_dim)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_encoder_alibi_is_the_symmetric_penalty_averaged_over_heads():
    slopes = np.array([2.0 ** -4, 2.0 ** -8])  # 2 heads: 2^(-8h/2)
    expected = -np.abs(_distance(10)) * slopes.mean()
    np.testing.assert_allclose(position_similarity(_model("alibi"), "alibi", 10), expected,
                               atol=1e-6)


def test_t5_depends_on_the_distance_only_and_none_has_no_image():
    matrix = position_similarity(_model("t5"), "t5", 10)
    assert matrix.shape == (10, 10)
    for offset in range(-9, 10):
        diagonal = np.diagonal(matrix, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-6)
    assert position_similarity(_model("none"), "none", 10) is None
