"""A target's ReplicaSets are answered from the last listing while the marks of its Deployments
(the versions of their copies, or their absence) are those the listing was asked under."""

from __future__ import annotations

from parachute.listings import Listings

KEY = ("shop", "app=checkout")
AT_REST = (("copy", 7, 0.0), ("absent", None, 3.0))
SETS = [{"metadata": {"name": "checkout-5d8f"}, "status": {"readyReplicas": 2}}]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_listing_is_answered_again_while_its_deployments_are_unchanged() -> None:
    listings = Listings(keep=120, clock=Clock())
    listings.put(KEY, AT_REST, SETS, asked_at=100.0)
    first = listings.get(KEY, AT_REST)
    assert first == SETS
    assert first is not None
    first[0]["status"]["readyReplicas"] = 0  # a caller's copy is its own
    assert listings.get(KEY, AT_REST) == SETS


def test_a_new_version_of_the_target_or_the_canary_lists_again() -> None:
    listings = Listings(keep=120, clock=Clock())
    listings.put(KEY, AT_REST, SETS, asked_at=100.0)
    assert listings.get(KEY, (("copy", 8, 0.0), ("absent", None, 3.0))) is None
    assert listings.get(KEY, (("copy", 7, 0.0), ("copy", 9, 0.0))) is None  # the canary was made


def test_nothing_is_kept_when_a_deployment_is_not_known() -> None:
    listings = Listings(keep=120, clock=Clock())
    listings.put(KEY, (("copy", 7, 0.0), None), SETS, asked_at=100.0)
    assert len(listings) == 0
    listings.put(KEY, AT_REST, SETS, asked_at=100.0)
    assert listings.get(KEY, (("copy", 7, 0.0), None)) is None


def test_a_listing_is_not_answered_longer_than_it_is_kept() -> None:
    clock = Clock()
    listings = Listings(keep=120, clock=clock)
    listings.put(KEY, AT_REST, SETS, asked_at=90.0)  # counted from when it was asked for
    clock.now = 210.0
    assert listings.get(KEY, AT_REST) == SETS
    clock.now = 211.0
    assert listings.get(KEY, AT_REST) is None


def test_listings_nobody_asks_for_again_are_swept() -> None:
    clock = Clock()
    listings = Listings(keep=120, clock=clock)
    listings.put(("gone", "app=old"), AT_REST, SETS, asked_at=100.0)
    clock.now = 400.0
    for n in range(1000):
        listings.put(("shop", f"app=n{n}"), AT_REST, SETS, asked_at=400.0)
    assert len(listings) == 1000
