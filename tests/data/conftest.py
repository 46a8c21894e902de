"""Fixtures shared by the data tests."""

import pytest

from kerapos.data import sources


@pytest.fixture
def offline_tfds(monkeypatch):
    """No internet for `sources.require_internet`, as on an offline machine.

    Returns `require_unprepared(name)`, which skips the test unless
    tensorflow_datasets is installed and has not prepared `name` (a prepared
    data set loads without the network, so there is no error to see).
    """

    def unreachable(host, what):
        raise sources.DataError(f"{what} needs internet access to {host}")

    monkeypatch.setattr(sources, "require_internet", unreachable)

    def require_unprepared(name):
        tfds = pytest.importorskip("tensorflow_datasets")
        if tfds.builder(name).is_prepared():
            pytest.skip(f"{name} is already prepared for tfds on this machine")

    return require_unprepared
