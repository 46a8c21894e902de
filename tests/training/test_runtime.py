"""Training FLOPs per token and the speed record built from them."""

import pytest

from kerapos.models.causal_lm import build_causal_lm
from kerapos.training import runtime


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_transformer_flops_are_6n_plus_12lhqt(position):
    vocab, d, ff, layers, length = 259, 32, 80, 3, 48
    model = build_causal_lm(vocab_size=vocab, position=position, max_length=64, num_layers=layers,
                            hidden_dim=d, num_heads=4, intermediate_dim=ff)
    # N by hand: the tied embedding is the output projection; per block the
    # query, key, value and output projections (4 d^2) and the MLP (2 d ff).
    # A learned position table is only gathered from.
    multiplying = vocab * d + layers * (4 * d * d + 2 * d * ff)
    got = runtime.transformer_training_flops_per_token(
        model, layers, d, length, lookup_only=("position_embedding",))
    assert got == 6 * multiplying + 12 * layers * length * d


def test_training_speed_is_a_share_of_the_measured_peak():
    speed = runtime.training_speed(tokens=4000, seconds=2.0, flops_per_token=10_000_000)
    peak = runtime.machine()["matmul_gflops"]
    assert speed == {"tokens_per_s": 2000.0, "flops_per_token": 10_000_000,
                     "achieved_gflops": 20.0, "share_of_peak": 20.0 / peak}
