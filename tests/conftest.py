"""The order the suite runs in on several workers: the longest modules first, spread evenly.

`make test` runs with pytest-xdist's `worksteal`: the collection is cut into one contiguous
share per worker, and a worker that runs out takes the tail of the busiest one's share. A long
module at the tail of a share then runs last, alone, while the other workers wait. So each
worker's share is built here: the integration modules dealt longest first to the share with the
least work so far (by `durations.json`, seconds per module from a past run, from its JUnit XML), each share starting
with its longest, then unit tests to even the shares' lengths. A module's tests stay together (some
have module-scoped fixtures). Every worker computes the same order from the same inputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN_SECONDS = 15.0  # a test of an integration module durations.json does not know yet


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        items[:] = shares(items, workers, json.loads(DURATIONS.read_text()))


def shares(items: list[pytest.Item], workers: int, seconds: dict[str, float]) -> list[pytest.Item]:
    modules: dict[str, list[pytest.Item]] = {}
    quick: list[pytest.Item] = []
    for item in items:
        path = item.nodeid.split("::")[0]
        if path.startswith("tests/integration/"):
            modules.setdefault(path, []).append(item)
        else:
            quick.append(item)

    def weight(path: str) -> float:
        return seconds.get(path, UNKNOWN_SECONDS * len(modules[path]))

    sizes = share_sizes(len(items), workers)
    load, dealt = [0.0] * workers, [[] for _ in range(workers)]  # type: list[float], list[list[pytest.Item]]
    for path in sorted(modules, key=weight, reverse=True):
        share = min(range(workers), key=lambda i: (load[i], len(dealt[i])))
        load[share] += weight(path)
        dealt[share] += modules[path]
    if any(len(d) > size for d, size in zip(dealt, sizes, strict=True)):
        return items  # more long tests than a share holds: the order as collected
    for share, size in zip(dealt, sizes, strict=True):
        take = size - len(share)
        share.extend(quick[:take])
        del quick[:take]
    return [item for d in dealt for item in d]


def share_sizes(count: int, workers: int) -> list[int]:
    """How worksteal cuts `count` tests among `workers` that are idle at the start."""
    sizes = []
    for remaining in range(workers, 0, -1):
        sizes.append(count // remaining)
        count -= sizes[-1]
    return sizes
