"""A label selector says which Rollouts one operator serves, with the syntax `kubectl -l` takes."""

from __future__ import annotations

import pytest

from parachute import sharding

SHARD_A = {"parachute.dev/shard": "a", "team": "payments"}
SHARD_B = {"parachute.dev/shard": "b"}
NO_SHARD: dict[str, str] = {}


@pytest.mark.parametrize(
    ("selector", "labels", "served"),
    [
        ("", NO_SHARD, True),
        ("parachute.dev/shard=a", SHARD_A, True),
        ("parachute.dev/shard==a", SHARD_B, False),
        ("parachute.dev/shard!=a", SHARD_B, True),
        ("parachute.dev/shard!=a", NO_SHARD, True),
        ("parachute.dev/shard in (a, b)", SHARD_B, True),
        ("parachute.dev/shard in (a,b)", NO_SHARD, False),
        ("parachute.dev/shard notin (a)", NO_SHARD, True),
        ("parachute.dev/shard", SHARD_B, True),
        ("!parachute.dev/shard", SHARD_B, False),
        ("!parachute.dev/shard", NO_SHARD, True),
        ("parachute.dev/shard=a,team=payments", SHARD_A, True),
        ("parachute.dev/shard in (a,b), team", SHARD_B, False),
    ],
    ids=["empty-serves-all", "equals", "double-equals", "not-equals", "not-equals-missing", "in",
         "in-missing", "notin-missing", "exists", "absent-present", "absent", "and", "set-and-exists"],
)  # fmt: skip
def test_a_selector_serves_the_rollouts_it_selects(
    selector: str, labels: dict[str, str], served: bool
) -> None:
    assert sharding.parse(selector).matches(labels) is served


@pytest.mark.parametrize(
    "selector",
    ["shard=a=b", "shard in a,b", "shard in ()", "=a", "shard>1", "sh ard=a"],
    ids=["two-equals", "set-without-parentheses", "empty-set", "no-key", "unknown-operator", "space-in-key"],
)
def test_a_selector_that_cannot_be_read_is_refused_naming_the_term(selector: str) -> None:
    with pytest.raises(ValueError, match="label selector"):
        sharding.parse(selector)
