"""A target's ReplicaSets are answered from the last listing while the marks of its Deployments
(the versions of their copies, or their absence) are those the listing was asked under, and the
listing was kept only if it added up to their status."""

from __future__ import annotations

from typing import Any

from parachute.listings import Listings, agrees, one_reconcile

KEY = ("shop", "checkout")
AT_REST = (("copy", 7), ("absent", None, 3.0))


def replica_set(owner: str, ready: int, replicas: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{owner}-5d8f", "ownerReferences": [{"uid": owner}]},
        "status": {"replicas": ready if replicas is None else replicas, "readyReplicas": ready,
                   "availableReplicas": ready},
    }  # fmt: skip


def deployment(uid: str, ready: int, generation: int = 2, observed: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "generation": generation},
        "status": {"observedGeneration": observed, "replicas": ready, "readyReplicas": ready,
                   "availableReplicas": ready},
    }  # fmt: skip


SETS = [replica_set("target", 2)]
TARGET = deployment("target", 2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_listing_is_answered_again_while_its_deployments_are_unchanged() -> None:
    listings = Listings(keep=120, clock=Clock())
    listings.put(KEY, AT_REST, SETS, 100.0, [TARGET, None])
    first = listings.get(KEY, AT_REST)
    assert first == SETS
    assert first is not None
    first[0]["status"]["readyReplicas"] = 0  # a caller's copy is its own
    assert listings.get(KEY, AT_REST) == SETS


def test_a_new_version_of_the_target_or_the_canary_lists_again() -> None:
    listings = Listings(keep=120, clock=Clock())
    listings.put(KEY, AT_REST, SETS, 100.0, [TARGET, None])
    assert listings.get(KEY, (("copy", 8), ("absent", None, 3.0))) is None
    assert listings.get(KEY, (("copy", 7), ("copy", 9))) is None  # the canary was made


def test_a_dropped_listing_is_listed_again_and_one_asked_for_before_the_drop_is_not_kept() -> None:
    clock = Clock()
    listings = Listings(keep=120, clock=clock)
    listings.put(KEY, AT_REST, SETS, 100.0, [TARGET, None])
    clock.now = 101.0
    listings.drop(KEY)  # a canary ReplicaSet's pods changed: the marks cannot show it
    assert listings.get(KEY, AT_REST) is None
    listings.put(KEY, AT_REST, SETS, 100.5, [TARGET, None])  # asked before the drop, answered after
    assert listings.get(KEY, AT_REST) is None
    listings.put(KEY, AT_REST, SETS, 101.5, [TARGET, None])  # asked after it
    assert listings.get(KEY, AT_REST) == SETS


def test_nothing_is_kept_when_a_deployment_is_not_known() -> None:
    listings = Listings(keep=120, clock=Clock())
    listings.put(KEY, (("copy", 7), None), SETS, 100.0, [TARGET, None])
    assert len(listings) == 0
    listings.put(KEY, AT_REST, SETS, 100.0, [TARGET, None])
    assert listings.get(KEY, (("copy", 7), None)) is None


def test_a_listing_that_does_not_agree_with_its_deployments_is_not_kept() -> None:
    listings = Listings(keep=120, clock=Clock())
    listings.put(KEY, AT_REST, SETS, 100.0, [TARGET, None])
    listings.put(KEY, AT_REST, [replica_set("target", 1)], 100.0, [TARGET, None])  # ahead of its status
    assert listings.get(KEY, AT_REST) is None


def test_a_listing_adds_up_to_a_deployment_when_the_controller_wrote_its_status_from_it() -> None:
    canary = deployment("canary", 1)
    both = [replica_set("target", 2), replica_set("canary", 1), replica_set("someone-else", 5)]
    assert agrees(both, TARGET) and agrees(both, canary)  # each counts only its own
    assert not agrees(
        [replica_set("target", 1), replica_set("target", 0, replicas=1)], deployment("target", 1)
    )
    assert not agrees(SETS, deployment("target", 2, generation=3, observed=2))  # its new spec not seen yet
    assert agrees([], deployment("canary", 0))  # made, no ReplicaSet yet, nothing counted


def test_a_listing_is_not_answered_longer_than_it_is_kept() -> None:
    clock = Clock()
    listings = Listings(keep=120, clock=clock)
    listings.put(KEY, AT_REST, SETS, 90.0, [TARGET, None])  # counted from when it was asked for
    clock.now = 210.0
    assert listings.get(KEY, AT_REST) == SETS
    clock.now = 211.0
    assert listings.get(KEY, AT_REST) is None


def test_listings_nobody_asks_for_again_are_swept() -> None:
    clock = Clock()
    listings = Listings(keep=120, clock=clock)
    listings.put(("gone", "old"), AT_REST, SETS, 100.0, [TARGET, None])
    clock.now = 400.0
    for n in range(1000):
        listings.put(("shop", f"app-{n}"), AT_REST, SETS, 400.0, [TARGET, None])
    assert len(listings) == 1000


def test_within_one_reconcile_a_listing_not_kept_is_answered_again_while_its_marks_hold() -> None:
    listings = Listings(keep=120, clock=Clock())
    catching_up = [replica_set("target", 1)]  # the target's status not written from it yet
    with one_reconcile():
        listings.put(KEY, AT_REST, catching_up, 100.0, [TARGET, None])
        assert listings.get(KEY, AT_REST) == catching_up
        assert listings.get(KEY, (("copy", 8), ("absent", None, 3.0))) is None
    assert listings.get(KEY, AT_REST) is None  # the next reconcile lists again
