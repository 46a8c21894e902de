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


def test_mixed_in_windows_take_the_end_of_every_batch():
    stream = np.random.default_rng(2).integers(0, 200, size=400).astype(np.int32)
    mixed_in = 1000 + np.arange(3 * 2 * 10, dtype=np.int32).reshape(6, 10)  # 2 per batch
    batches = [(x.numpy(), y.numpy()) for x, y in
               window_dataset(stream, 9, 5, 3, seed=4, mixed_in=mixed_in)]
    # The stream windows are the first 3 of each batch of the unmixed reference.
    expected = reference_batches(stream, 9, 5, 3, seed=4)
    assert len(batches) == 3
    for step, ((inputs, targets), (expected_inputs, expected_targets)) in enumerate(
            zip(batches, expected)):
        assert inputs.shape == targets.shape == (5, 9)
        np.testing.assert_array_equal(inputs[:3], expected_inputs[:3])
        np.testing.assert_array_equal(targets[:3], expected_targets[:3])
        np.testing.assert_array_equal(inputs[3:], mixed_in[2 * step:2 * step + 2, :-1])
        np.testing.assert_array_equal(targets[3:], mixed_in[2 * step:2 * step + 2, 1:])


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
        ({"mixed_in": np.zeros((3, 5), np.int32)}, r"k \* steps windows .* got shape \(3, 5\)"),
        ({"mixed_in": np.zeros((2, 6), np.int32)}, r"window_length \+ 1 = 5 tokens"),
        ({"mixed_in": np.zeros((2, 5), np.int32), "steps": 1}, r"0 < k < batch_size=2"),
    ],
)
def test_bad_arguments(arguments, message):
    arguments = {"stream": np.arange(50), "window_length": 4, "batch_size": 2, "steps": 1, "seed": 0,
                 **arguments}
    with pytest.raises(ValueError, match=message):
        window_dataset(**arguments)
