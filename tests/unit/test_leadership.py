"""Leader election over a Lease, on a virtual clock: one replica leads at a time, a standby
takes over only after the leader's Lease has gone unrenewed for its whole duration, a leader
that cannot renew stops acting before then, and a clean stop hands over at once."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parachute import kube
from parachute.leadership import Elector, Timing

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)


class Lease:
    """One Lease in memory, with the API server's resourceVersion precondition; it can be down."""

    name = "parachute"

    def __init__(self) -> None:
        self.body: dict[str, Any] | None = None
        self.version = 0
        self.down = False

    def _stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.body = copy.deepcopy(body)
        self.body.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.body)

    async def read(self) -> dict[str, Any] | None:
        if self.down:
            raise ConnectionError("API server unreachable")
        return copy.deepcopy(self.body)

    async def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.down:
            raise ConnectionError("API server unreachable")
        return None if self.body is not None else self._stored(body)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("API server unreachable")
        assert self.body is not None
        if body["metadata"]["resourceVersion"] != self.body["metadata"]["resourceVersion"]:
            raise kube.ConflictError("Lease changed")
        return self._stored(body)

    @property
    def holder(self) -> str | None:
        return ((self.body or {}).get("spec") or {}).get("holderIdentity")


class Clock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return datetime(2026, 12, 3, 8, 0, tzinfo=UTC) + timedelta(seconds=self.seconds)


def candidates(lease: Lease, clock: Clock, *names: str) -> list[Elector]:
    return [Elector(lease, name, TIMING, monotonic=clock.monotonic, wall=clock.wall) for name in names]


def attempt(elector: Elector) -> bool:
    return asyncio.run(elector.try_acquire_or_renew())


def test_the_first_candidate_takes_an_absent_lease_and_the_second_stands_by() -> None:
    lease, clock = Lease(), Clock()
    a, b = candidates(lease, clock, "a", "b")
    assert attempt(a) and a.leading
    assert not attempt(b) and not b.leading
    spec = lease.body["spec"] if lease.body else {}
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0


def test_a_renewed_lease_is_never_taken_and_renewal_keeps_its_acquire_time() -> None:
    lease, clock = Lease(), Clock()
    a, b = candidates(lease, clock, "a", "b")
    attempt(a)
    acquired = lease.body["spec"]["acquireTime"] if lease.body else None
    for _ in range(20):  # 40 s: far past one lease duration, renewed all along
        clock.seconds += 2
        assert attempt(a) and not attempt(b)
    assert lease.holder == "a" and lease.body and lease.body["spec"]["acquireTime"] == acquired


@pytest.mark.parametrize(
    ("seconds", "a_leads", "b_takes"),
    [
        (9.9, True, False),  # renewed 9.9 s ago: still within the renew deadline
        (10.0, False, False),  # past the deadline: a stops acting, b must still wait
        (14.9, False, False),
        (15.0, False, True),  # unrenewed for the lease's duration as b saw it: b takes it
    ],
    ids=["within-deadline", "deadline", "before-expiry", "expired"],
)
def test_a_leader_that_stops_renewing_stops_acting_before_a_standby_may_take_over(
    seconds: float, a_leads: bool, b_takes: bool
) -> None:
    lease, clock = Lease(), Clock()
    a, b = candidates(lease, clock, "a", "b")
    attempt(a)
    attempt(b)  # b sees a's record now
    clock.seconds = seconds
    assert a.leading is a_leads
    assert attempt(b) is b_takes
    if b_takes:
        assert lease.holder == "b" and lease.body and lease.body["spec"]["leaseTransitions"] == 1


def test_a_standby_measures_expiry_from_when_it_first_saw_the_record_not_from_renew_time() -> None:
    """A standby that started late (or whose clock differs) never takes a Lease early."""
    lease, clock = Lease(), Clock()
    a, b = candidates(lease, clock, "a", "b")
    attempt(a)
    clock.seconds = 100  # a died long ago, but b sees the record for the first time now
    assert not attempt(b)
    clock.seconds = 114
    assert not attempt(b)
    clock.seconds = 115
    assert attempt(b)


def test_a_leader_cut_off_from_the_api_server_stands_down_at_the_deadline_and_says_so() -> None:
    lease, clock = Lease(), Clock()
    (a,) = candidates(lease, clock, "a")
    told: list[bool] = []
    a.on_change(told.append)
    attempt(a)
    a.notice()
    lease.down = True
    clock.seconds = 8
    assert not attempt(a) and a.leading  # one failed renewal is not the end
    clock.seconds = 10
    a.notice()
    assert not a.leading and told == [True, False]
    lease.down = False
    clock.seconds = 11
    assert attempt(a)  # its own Lease, still naming it: it leads again
    a.notice()
    assert told == [True, False, True]


def test_a_clean_stop_gives_the_lease_up_and_a_standby_takes_it_at_once() -> None:
    lease, clock = Lease(), Clock()
    a, b = candidates(lease, clock, "a", "b")
    told: list[bool] = []
    a.on_change(told.append)
    attempt(a)
    a.notice()
    attempt(b)

    asyncio.run(a.release())

    assert not a.leading and told == [True, False]
    assert lease.holder is None
    clock.seconds += 0.1
    assert attempt(b) and lease.holder == "b"


def test_a_conflict_while_renewing_stands_down_at_once() -> None:
    lease, clock = Lease(), Clock()
    (a,) = candidates(lease, clock, "a")
    attempt(a)
    stale = lease.body

    async def taken(body: dict[str, Any]) -> dict[str, Any]:
        raise kube.ConflictError("someone wrote first")

    lease.replace = taken  # type: ignore[method-assign]
    assert lease.body is stale
    assert not attempt(a) and not a.leading


def test_the_gate_opens_when_leading_and_waits_otherwise() -> None:
    lease, clock = Lease(), Clock()
    a, b = candidates(lease, clock, "a", "b")

    async def story() -> tuple[bool, bool]:
        await a.try_acquire_or_renew()
        a.notice()
        await asyncio.wait_for(a.wait_open(), 1)  # open: returns at once
        waiting = asyncio.create_task(b.wait_open())
        await asyncio.sleep(0.01)
        blocked = not waiting.done()
        await a.release()
        await b.try_acquire_or_renew()
        b.notice()
        await asyncio.wait_for(waiting, 1)
        return blocked, waiting.done()

    assert asyncio.run(story()) == (True, True)


@pytest.mark.parametrize(
    ("lease_duration", "renew_deadline", "retry_period"),
    [(10, 10, 2), (15, 10, 10), (15, 20, 2), (15, 10, 0)],
    ids=["deadline-equals-duration", "retry-equals-deadline", "deadline-past-duration", "no-retry-period"],
)
def test_timings_that_would_let_two_lead_are_refused(
    lease_duration: float, renew_deadline: float, retry_period: float
) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        Timing(lease_duration, renew_deadline, retry_period)


# Steps of a story: a candidate tries, time passes, the API server goes down or comes back,
# or a candidate stops cleanly.
STEP = st.one_of(
    st.tuples(st.just("attempt"), st.integers(0, 2)),
    st.tuples(st.just("advance"), st.floats(0.1, 20)),
    st.tuples(st.just("outage"), st.booleans()),
    st.tuples(st.just("release"), st.integers(0, 2)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=60))
def test_never_two_leaders_at_once_whatever_happens(steps: list[tuple[str, Any]]) -> None:
    lease, clock = Lease(), Clock()
    electors = candidates(lease, clock, "a", "b", "c")
    for kind, value in steps:
        if kind == "attempt":
            attempt(electors[value])
        elif kind == "advance":
            clock.seconds += value
        elif kind == "outage":
            lease.down = value
        else:
            asyncio.run(electors[value].release())
        leaders = [e.identity for e in electors if e.leading]
        assert len(leaders) <= 1, (leaders, clock.seconds)
        if leaders:  # whoever leads is the one the Lease names
            assert lease.holder == leaders[0]
