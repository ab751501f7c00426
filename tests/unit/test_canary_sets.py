"""More of a canary ReplicaSet's pods ready wake the Rollout whose stage waits on them, a grace
later, when its canary Deployment does not say so by then (when the controller keeps up, the
Deployment's own event has woken it), and only then."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from parachute import canary_sets, handlers, listings, sharding, watched
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


def test_a_new_replica_set_without_ready_pods_brings_none() -> None:
    counts = canary_sets.ReadyCounts()
    assert counts.rose(replica_set(None)) is None
    assert counts.rose(replica_set(0)) is None


def test_more_pods_ready_are_news_and_the_same_or_fewer_are_not() -> None:
    counts = canary_sets.ReadyCounts()
    counts.rose(replica_set(0))
    assert counts.rose(replica_set(1)) == 1
    assert counts.rose(replica_set(1)) is None
    assert counts.rose(replica_set(0)) is None  # its Deployment's event says it: the larger count counts
    assert counts.rose(replica_set(1)) == 1


def test_a_deleted_replica_set_brings_none_and_is_forgotten() -> None:
    counts = canary_sets.ReadyCounts()
    counts.rose(replica_set(2))
    assert counts.rose(replica_set(2), deleted=True) is None
    assert len(counts) == 0


def test_a_replica_set_with_none_ready_is_not_remembered() -> None:
    counts = canary_sets.ReadyCounts()
    counts.rose(replica_set(2))
    counts.rose(replica_set(0))
    assert len(counts) == 0


def test_the_target_is_named_by_the_canary_deployment_that_owns_the_replica_set() -> None:
    assert canary_sets.target_of(replica_set(1)) == "checkout"
    assert canary_sets.target_of(replica_set(1, owner="checkout-canary-canary")) == "checkout-canary"
    assert canary_sets.target_of(replica_set(1, owner="checkout")) is None
    assert canary_sets.target_of(replica_set(1, owner="-canary")) is None
    assert canary_sets.target_of(replica_set(1, kind="Rollout")) is None


class Wakes:
    def __init__(self) -> None:
        self.woken: list[tuple[Key, Woken]] = []

    def wake(self, key: Key, woken: Woken = Woken.TIME, **_: Any) -> None:
        self.woken.append((key, woken))


@pytest.fixture
def memo(monkeypatch: pytest.MonkeyPatch) -> kopf.Memo:
    monkeypatch.setattr(canary_sets, "READY", canary_sets.ReadyCounts())
    monkeypatch.setattr(canary_sets, "GRACE", 0.01)
    monkeypatch.setattr(listings, "REPLICA_SETS", listings.Listings())
    monkeypatch.setattr(watched, "DEPLOYMENTS", watched.Copies())
    index = RolloutIndex()
    index.saw(
        {"metadata": {"namespace": "shop", "name": "checkout"}, "spec": {"targetRef": {"name": "checkout"}}}
    )
    return kopf.Memo(options=handlers.Options(), index=index, served=set(), scheduler=Wakes())


def canary_deployment(ready: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "checkout-canary", "resourceVersion": str(10 + ready)},
        "status": {"readyReplicas": ready},
    }


def events(memo: kopf.Memo, *bodies: dict[str, Any], type: str = "MODIFIED") -> None:
    """The events, then the grace: what the canary Deployment's copy says by then decides."""

    async def story() -> None:
        for body in bodies:
            await handlers.on_canary_replica_set(namespace="shop", body=kopf.Body(body), memo=memo, type=type)
        await asyncio.sleep(canary_sets.GRACE * 5)

    asyncio.run(story())


def test_pods_ready_that_the_canary_deployment_does_not_show_yet_wake_the_rollout(memo: kopf.Memo) -> None:
    watched.DEPLOYMENTS.seen(canary_deployment(0))  # the controller has not written its count
    listings.REPLICA_SETS.put(("shop", "checkout"), ("v1", "v2"), [], listings.REPLICA_SETS.clock(), [])
    events(memo, replica_set(0), replica_set(1))
    assert memo.scheduler.woken == [(("shop", "checkout"), Woken.REPLICA_SET)]
    assert len(listings.REPLICA_SETS) == 0  # a kept listing would not show them


def test_pods_ready_that_the_canary_deployment_shows_by_the_grace_wake_nothing_more(memo: kopf.Memo) -> None:
    watched.DEPLOYMENTS.seen(canary_deployment(1))  # its own event came, and woke the Rollout
    events(memo, replica_set(1))
    assert memo.scheduler.woken == []


def test_without_a_copy_of_the_canary_deployment_the_rollout_is_woken(memo: kopf.Memo) -> None:
    events(memo, replica_set(1))
    assert len(memo.scheduler.woken) == 1


def test_the_same_or_fewer_pods_ready_or_a_deleted_replica_set_wake_nothing(memo: kopf.Memo) -> None:
    events(memo, replica_set(1), replica_set(1))
    events(memo, replica_set(0))
    events(memo, replica_set(2), type="DELETED")
    assert len(memo.scheduler.woken) == 1


def test_a_replica_set_of_no_rollouts_canary_wakes_nothing(memo: kopf.Memo) -> None:
    events(memo, replica_set(1, owner="payments-canary", name="payments-canary-1"))
    events(memo, replica_set(1, owner="checkout", name="checkout-1"))
    assert memo.scheduler.woken == []


def test_a_rollout_of_another_shard_is_not_woken(memo: kopf.Memo) -> None:
    memo.options = handlers.Options(selector=sharding.parse("team=payments"))
    events(memo, replica_set(1))
    assert memo.scheduler.woken == []


def test_pods_ready_that_are_gone_again_by_the_grace_wake_nothing(memo: kopf.Memo) -> None:
    """The canary scaled to 0 (its release ended) before its Deployment said the pods were ready."""
    events(memo, replica_set(3), replica_set(0))
    assert memo.scheduler.woken == []
