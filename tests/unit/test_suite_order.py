"""The suite's order on several workers (tests/conftest.py): the longest modules lead their
workers' shares, spread so no share waits on another's long tail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.conftest import share_sizes, shares


@dataclass
class Item:
    nodeid: str


def collected() -> list[Any]:
    long = [Item(f"tests/integration/test_soak.py::test_{i}") for i in range(2)]
    middling = [Item(f"tests/integration/test_m{m}.py::test_{i}") for m in range(4) for i in range(3)]
    unit = [Item(f"tests/unit/test_u.py::test_{i}") for i in range(40)]
    return unit + middling + long


SECONDS = {"tests/integration/test_soak.py": 600.0}


def test_the_shares_are_as_long_as_worksteal_cuts_them() -> None:
    assert share_sizes(54, 3) == [18, 18, 18]
    assert share_sizes(55, 3) == [18, 18, 19]


def test_the_longest_module_leads_a_share_of_its_own_and_the_others_spread_over_the_rest() -> None:
    order = shares(collected(), 3, SECONDS)
    cut = share_sizes(len(order), 3)
    first, second, third = order[: cut[0]], order[cut[0] : cut[0] + cut[1]], order[cut[0] + cut[1] :]
    assert [i.nodeid for i in first[:2]] == [f"tests/integration/test_soak.py::test_{i}" for i in range(2)]
    assert not any("test_m" in i.nodeid for i in first)
    assert sum("test_m" in i.nodeid for i in second) == sum("test_m" in i.nodeid for i in third) == 6
    assert sorted(i.nodeid for i in order) == sorted(i.nodeid for i in collected())


def test_a_modules_tests_stay_together() -> None:
    order = [i.nodeid.split("::")[0] for i in shares(collected(), 3, SECONDS)]
    runs = [m for k, m in enumerate(order) if k == 0 or order[k - 1] != m]
    assert len([m for m in runs if "integration" in m]) == 5
