"""`window_dataset` against windows cut by hand with numpy."""

import numpy as np
import pytest

from kerapos.data.windows import window_dataset


def reference_batches(stream, window_length, batch_size, steps, seed):
    """The documented windows: numpy offsets from `seed`, sliced one by one."""
    starts = np.random.default_rng(seed).integers(
        0, len(stream) - window_length, size=steps * batch_size
    )
    batches = []
    for step in range(steps):
        batch_starts = starts[step * batch_size : (step + 1) * batch_size]
        inputs = np.stack([stream[s : s + window_length] for s in batch_starts])
        targets = np.stack([stream[s + 1 : s + window_length + 1] for s in batch_starts])
        batches.append((inputs, targets))
    return batches


def test_windows_match_numpy_reference():
    stream = np.random.default_rng(5).integers(0, 256, size=300).astype(np.int32)
    batches = [(x.numpy(), y.numpy()) for x, y in window_dataset(stream, 17, 4, 6, seed=3)]
    expected = reference_batches(stream, 17, 4, 6, seed=3)
    assert len(batches) == 6
    for (inputs, targets), (expected_inputs, expected_targets) in zip(batches, expected):
        assert inputs.dtype == np.int32 and inputs.shape == (4, 17)
        np.testing.assert_array_equal(inputs, expected_inputs)
        np.testing.assert_array_equal(targets, expected_targets)


def test_same_seed_same_windows_other_seed_other_windows():
    stream = np.arange(1000, dtype=np.int32)

    def starts(seed):
        return [x.numpy()[:, 0].tolist() for x, _ in window_dataset(stream, 8, 5, 3, seed)]

    assert starts(0) == starts(np.int64(0))
    assert starts(0) != starts(1)


def test_shortest_stream_and_empty_dataset():
    stream = np.arange(6, dtype=np.int32)  # window_length + 2 tokens
    (inputs, targets), = list(window_dataset(stream, 4, 2, 1, seed=0))
    assert set(inputs.numpy()[:, 0].tolist()) <= {0, 1}
    np.testing.assert_array_equal(targets.numpy()[:, :-1], inputs.numpy()[:, 1:])
    assert list(window_dataset(stream, 4, 2, 0, seed=0)) == []


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"stream": np.arange(5)}, r"`stream` has 5 tokens, too few for windows of `window_length`=4 "
                                   r"\(at least 6 needed\)"),
        ({"window_length": 0}, "`window_length` must be an integer >= 1, got 0"),
        ({"batch_size": 2.0}, "`batch_size` must be an integer >= 1, got 2.0"),
        ({"steps": -1}, "`steps` must be an integer >= 0, got -1"),
        ({"seed": None}, "`seed` must be an integer, got None"),
    ],
)
def test_bad_arguments(arguments, message):
    arguments = {"stream": np.arange(50), "window_length": 4, "batch_size": 2, "steps": 1, "seed": 0,
                 **arguments}
    with pytest.raises(ValueError, match=message):
        window_dataset(**arguments)
