"""A canary ReplicaSet's ready pods changing wakes the Rollout whose stage waits on them, a grace
later (its Deployment's event, when the controller keeps up, wakes it first), and only then."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import kopf
import pytest

from parachute import canary_sets, clock, handlers, listings, sharding
from parachute.rollout_index import RolloutIndex
from parachute.scheduler import Key, Woken


def replica_set(
    ready: int | None,
    owner: str = "checkout-canary",
    name: str = "checkout-canary-6f7d9",
    kind: str = "Deployment",
) -> dict[str, Any]:
    status = {} if ready is None else {"readyReplicas": ready}
    return {
        "metadata": {
            "namespace": "shop",
            "name": name,
            "labels": {canary_sets.LABEL: "true"},
            "ownerReferences": [{"kind": kind, "name": owner, "uid": "u-1"}],
        },
        "status": status,
    }


def test_a_new_replica_set_without_ready_pods_is_no_change() -> None:
    counts = canary_sets.ReadyCounts()
    assert not counts.changed(replica_set(None))
    assert not counts.changed(replica_set(0))


def test_its_ready_pods_going_up_or_down_is_a_change_and_the_same_count_again_is_not() -> None:
    counts = canary_sets.ReadyCounts()
    counts.changed(replica_set(0))
    assert counts.changed(replica_set(1))
    assert not counts.changed(replica_set(1))
    assert counts.changed(replica_set(0))


def test_a_deleted_replica_set_wakes_nothing_and_is_forgotten() -> None:
    counts = canary_sets.ReadyCounts()
    counts.changed(replica_set(2))
    assert not counts.changed(replica_set(2), deleted=True)
    assert len(counts) == 0


def test_the_target_is_named_by_the_canary_deployment_that_owns_the_replica_set() -> None:
    assert canary_sets.target_of(replica_set(1)) == "checkout"
    assert canary_sets.target_of(replica_set(1, owner="checkout-canary-canary")) == "checkout-canary"
    assert canary_sets.target_of(replica_set(1, owner="checkout")) is None
    assert canary_sets.target_of(replica_set(1, owner="-canary")) is None
    assert canary_sets.target_of(replica_set(1, kind="Rollout")) is None


class Wakes:
    def __init__(self) -> None:
        self.woken: list[tuple[Key, datetime | None, Woken]] = []

    def wake(self, key: Key, at: datetime | None = None, woken: Woken = Woken.TIME, **_: Any) -> None:
        self.woken.append((key, at, woken))


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> kopf.Memo:
    monkeypatch.setattr(canary_sets, "READY", canary_sets.ReadyCounts())
    monkeypatch.setattr(listings, "REPLICA_SETS", listings.Listings())
    index = RolloutIndex()
    index.saw(
        {"metadata": {"namespace": "shop", "name": "checkout"}, "spec": {"targetRef": {"name": "checkout"}}}
    )
    return kopf.Memo(options=handlers.Options(), index=index, served=set(), scheduler=Wakes())


def event(memo: kopf.Memo, body: dict[str, Any], type: str = "MODIFIED") -> None:
    asyncio.run(handlers.on_canary_replica_set(namespace="shop", body=kopf.Body(body), memo=memo, type=type))


def test_pods_becoming_ready_wake_the_rollout_a_grace_later_and_its_listing_is_dropped(
    memo: kopf.Memo,
) -> None:
    listings.REPLICA_SETS.put(("shop", "checkout"), ("v1", "v2"), [], listings.REPLICA_SETS.clock(), [])
    event(memo, replica_set(0), type="ADDED")
    assert memo.scheduler.woken == []
    assert len(listings.REPLICA_SETS) == 1

    before = clock.now()
    event(memo, replica_set(1))
    [(key, at, woken)] = memo.scheduler.woken
    assert (key, woken) == (("shop", "checkout"), Woken.REPLICA_SET)
    assert at is not None and at >= before + timedelta(seconds=canary_sets.GRACE)
    assert len(listings.REPLICA_SETS) == 0


def test_an_event_that_leaves_the_ready_pods_as_they_were_wakes_nothing(memo: kopf.Memo) -> None:
    event(memo, replica_set(1))
    event(memo, replica_set(1))
    assert len(memo.scheduler.woken) == 1


def test_a_replica_set_of_no_rollouts_canary_wakes_nothing(memo: kopf.Memo) -> None:
    event(memo, replica_set(1, owner="payments-canary", name="payments-canary-1"))
    event(memo, replica_set(1, owner="checkout", name="checkout-1"))
    assert memo.scheduler.woken == []


def test_a_replica_set_scaled_to_none_ready_is_forgotten() -> None:
    counts = canary_sets.ReadyCounts()
    counts.changed(replica_set(2))
    assert counts.changed(replica_set(0))
    assert len(counts) == 0


def test_a_deleted_replica_set_wakes_no_rollout(memo: kopf.Memo) -> None:
    event(memo, replica_set(1))
    event(memo, replica_set(1), type="DELETED")
    assert len(memo.scheduler.woken) == 1


def test_a_rollout_of_another_shard_is_not_woken(memo: kopf.Memo) -> None:
    memo.options = handlers.Options(selector=sharding.parse("team=payments"))
    event(memo, replica_set(1))
    assert memo.scheduler.woken == []
