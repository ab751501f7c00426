"""The collector's thresholds let a reconcile's objects die young: a young generation of 20,000
objects, the older one collected every 20 young collections, the oldest left as it is."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from parachute import heap


@pytest.fixture(autouse=True)
def thresholds_put_back() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_operators_young_generations_are_large_and_the_oldest_is_the_default() -> None:
    oldest = gc.get_threshold()[2]
    heap.tune()
    assert gc.get_threshold() == (20_000, 20, oldest)
