import pytest
import tensorflow as tf

from kerapos.training.strategy import STRATEGIES
from kerapos.training.strategy import get_strategy
from kerapos.training.strategy import is_chief


def test_local_strategies():
    assert get_strategy("default").num_replicas_in_sync == 1
    assert isinstance(get_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    mirrored = get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2  # the 2 logical CPUs of conftest.py
    assert is_chief(mirrored)


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError) as error:
        get_strategy("horovod")
    assert all(name in str(error.value) for name in STRATEGIES)


def test_multi_worker_needs_a_valid_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="TF_CONFIG is not valid"):
        get_strategy("multi_worker")
