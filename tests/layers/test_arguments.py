"""Every layer checks its arguments alike (kerapos.utils.checks): numpy integers
count as integers, booleans (Python or numpy) never do, and flags take Python
or numpy booleans only."""

import json

import numpy as np
import pytest

from kerapos.layers import ALiBiBias
from kerapos.layers import LearnedPositionEmbedding
from kerapos.layers import PositionalMultiHeadAttention
from kerapos.layers import RelativePositionBias
from kerapos.layers import RotaryEmbedding
from kerapos.layers import TransformerBlock

# Each layer with its integer arguments.
INTEGER_ARGUMENTS = [
    (ALiBiBias, dict(num_heads=8)),
    (LearnedPositionEmbedding, dict(max_length=8)),
    (RelativePositionBias, dict(num_heads=4, num_buckets=8, max_distance=6)),
    (RotaryEmbedding, dict(rotary_dim=4)),
    (PositionalMultiHeadAttention, dict(num_heads=2, key_dim=8, logn_train_length=16)),
    (TransformerBlock, dict(num_heads=2, hidden_dim=16, intermediate_dim=32, logn_train_length=16)),
]
FLAG_ARGUMENTS = [
    (ALiBiBias, dict(num_heads=8), "causal"),
    (RelativePositionBias, dict(num_heads=4), "bidirectional"),
    (TransformerBlock, dict(num_heads=2, hidden_dim=16, intermediate_dim=32), "causal"),
]


def config_json(layer):
    return json.dumps(layer.get_config(), sort_keys=True)


@pytest.mark.parametrize("cls, arguments", INTEGER_ARGUMENTS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("numpy_type", [np.int64, np.int32, np.uint16])
def test_numpy_integers_work_like_python_integers(cls, arguments, numpy_type):
    as_numpy = {key: numpy_type(value) for key, value in arguments.items()}
    # The config holds Python ints: the same JSON as with Python arguments.
    assert config_json(cls(name="layer", **as_numpy)) == config_json(cls(name="layer", **arguments))


@pytest.mark.parametrize(
    "cls, arguments, key",
    [(cls, arguments, key) for cls, arguments in INTEGER_ARGUMENTS for key in arguments],
    ids=lambda x: getattr(x, "__name__", x if isinstance(x, str) else ""),
)
@pytest.mark.parametrize("boolean", [True, np.True_])
def test_booleans_are_not_integers(cls, arguments, key, boolean):
    with pytest.raises(ValueError, match=f"`{key}` must be (an integer|None, a positive even int)"):
        cls(**{**arguments, key: boolean})


@pytest.mark.parametrize("cls, arguments, key", FLAG_ARGUMENTS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("flag", [False, np.False_, True, np.True_])
def test_flags_take_python_and_numpy_booleans(cls, arguments, key, flag):
    layer = cls(name="layer", **arguments, **{key: flag})
    assert getattr(layer, key) is bool(flag)
    assert config_json(layer) == config_json(cls(name="layer", **arguments, **{key: bool(flag)}))


@pytest.mark.parametrize("cls, arguments, key", FLAG_ARGUMENTS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_flags_refuse_non_booleans(cls, arguments, key, value):
    with pytest.raises(ValueError, match=f"`{key}` must be True or False"):
        cls(**arguments, **{key: value})


def test_numpy_scalars_in_rope_scaling():
    scaling = {
        "rope_type": "yarn", "factor": np.float32(4.0), "original_max_position_embeddings": np.int64(64)
    }
    layer = RotaryEmbedding(scaling=scaling, rotary_dim=8, name="layer")
    plain = RotaryEmbedding(
        scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        rotary_dim=8,
        name="layer",
    )
    assert config_json(layer) == config_json(plain)
    np.testing.assert_array_equal(layer.frequencies(), plain.frequencies())


def test_extend_to_takes_numpy_integers():
    layer = LearnedPositionEmbedding(4)
    layer.build((None, None, 2))
    layer.extend_to(np.int64(8))
    assert layer.max_length == 8 and type(layer.max_length) is int
