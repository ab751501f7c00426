"""When the fast lane looks (issue #16): just after its judged pods' samples land in Prometheus,
one look per cadence, not at a moment of the scrape's cycle unrelated to them; on its own tick
when Prometheus does not say when they land."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from parachute.analysis import fastlane as lane
from parachute.analysis.prometheus import PrometheusProvider
from parachute.analysis.provider import FixedProvider
from parachute.plan import fastlane as core
from parachute.plan.verdicts import Series
from tests.unit.test_fastlane import PROM, T0, versions, watched

MARGIN = core.LANDING_MARGIN
CANARY = "checkout-canary-5f7b8c9d4b-x7k2p"
OTHER_CANARY = "checkout-canary-5f7b8c9d4b-b4n9q"
STABLE = "checkout-6d4cf56db6-q9w8e"


def landing(at: float, pod: str = CANARY, namespace: str = "shop") -> core.Landing:
    return core.Landing({"namespace": namespace, "pod": pod, "job": "pods"}, at)


# Where in the cadence.


@pytest.mark.parametrize(
    ("landings", "expected"),
    [
        pytest.param([landing(1_000.25)], 0.25 + MARGIN, id="just-after-the-one-canary-pod"),
        pytest.param([landing(1_000.25), landing(1_007.25)], 0.25 + MARGIN, id="every-scrape-lands-alike"),
        pytest.param(
            [landing(1_000.25), landing(1_000.30, OTHER_CANARY)], 0.25 + MARGIN, id="after-both-when-close"
        ),
        pytest.param(
            [landing(1_000.20), landing(1_000.90, OTHER_CANARY), landing(1_000.85, STABLE)],
            0.20 + MARGIN,
            id="stable-pods-do-not-count",
        ),
        pytest.param([landing(1_000.95)], (0.95 + MARGIN) % 1.0, id="past-the-end-of-the-cycle"),
        pytest.param([landing(1_000.50, namespace="other")], None, id="another-namespace"),
        pytest.param([], None, id="no-target-known"),
    ],
)
def test_the_lane_looks_just_after_the_judged_pods_samples_land(
    landings: list[core.Landing], expected: float | None
) -> None:
    phase = core.look_phase([watched()], landings, 1.0)
    assert phase == pytest.approx(expected) if expected is not None else phase is None


@given(st.lists(st.floats(min_value=0, max_value=0.999), min_size=1, max_size=8))
def test_no_other_moment_leaves_the_judged_samples_less_wait(offsets: list[float]) -> None:
    landings = [landing(1_000 + o, f"checkout-canary-5f7b8c9d4b-p{i:04d}") for i, o in enumerate(offsets)]
    phase = core.look_phase([watched()], landings, 1.0)
    assert phase is not None

    def wait(at: float) -> float:
        return sum((at - round(o, 3)) % 1.0 for o in offsets)

    assert all(wait(phase) <= wait(moment / 100) + 1e-6 + MARGIN * len(offsets) for moment in range(100))


@pytest.mark.parametrize(
    ("now", "phase", "expected"),
    [
        pytest.param(100.0, None, 101.0, id="no-phase-one-cadence-on"),
        pytest.param(100.05, 0.35, 100.35 + 1.0, id="the-next-phase-at-least-half-a-cadence-on"),
        pytest.param(100.2, 0.35, 101.35, id="not-within-half-a-cadence"),
        pytest.param(100.8, 0.35, 101.35, id="the-next-cycles-phase"),
        pytest.param(100.35, 0.35, 101.35, id="one-cadence-after-a-look-on-time"),
    ],
)
def test_the_next_look(now: float, phase: float | None, expected: float) -> None:
    assert core.next_look(now, 1.0, phase) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("busy", "phase", "expected"),
    [
        pytest.param(0.2, None, 101.0, id="a-light-look-one-cadence-on"),
        pytest.param(0.5, None, 101.5, id="a-heavy-look-three-times-its-time-on"),
        pytest.param(0.2, 0.35, 101.35, id="a-light-look-at-the-next-phase"),
        pytest.param(0.5, 0.35, 102.35, id="a-heavy-look-at-the-first-phase-three-times-its-time-on"),
    ],
)
def test_a_look_that_took_the_operator_long_is_followed_no_sooner_than_three_times_its_time_on(
    busy: float, phase: float | None, expected: float
) -> None:
    # At 5,000 canaries a look took 2.6 s of every 5 s cadence: half the operator's time.
    assert core.next_look(100.0, 1.0, phase, busy) == pytest.approx(expected)


def watching(rollouts: int) -> lane.FastLane:
    """A lane watching this many Rollouts' canaries, each answered with no series."""
    fast = lane.FastLane(
        lane.Settings(cadence=1.0), wake=lambda key: None, now=lambda: T0 + timedelta(seconds=30)
    )
    provider = FixedProvider(default_vector=Series())
    for i in range(rollouts):
        w = watched(namespace="shop", name=f"app-{i}", versions=versions("shop", f"app-{i}"))
        fast.enrol(w.key, w, provider)
    return fast


def test_a_look_at_many_rollouts_lets_others_run_between_its_chunks_and_says_its_time() -> None:
    fast = watching(3 * lane.CHUNK)
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def look() -> None:
        beside = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        before = turns
        await fast.tick(PROM, 1.0)
        beside.cancel()
        assert turns - before >= 2  # after each chunk but the last

    asyncio.run(look())
    assert fast.busy[PROM] > 0


class Slow(FixedProvider):
    async def vector(self, query: str) -> Series:
        await asyncio.sleep(0.3)
        return Series()


def test_a_looks_time_is_its_hold_on_the_event_loop_not_the_wait_for_its_answer() -> None:
    fast = lane.FastLane(lane.Settings(cadence=1.0), wake=lambda key: None)
    w = watched()
    fast.enrol(w.key, w, Slow())
    looks = REGISTRY.get_sample_value("parachute_fast_lane_look_seconds_count") or 0.0
    asyncio.run(fast.tick(PROM, 1.0))
    assert 0 <= fast.busy[PROM] < 0.1
    assert REGISTRY.get_sample_value("parachute_fast_lane_look_seconds_count") == looks + 1


def test_a_looks_time_counts_what_kept_the_event_loop_from_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a machine whose cores are busy the loop waits for a core and for Python's lock inside a
    # look: wall time, where the look's CPU time would leave it out.
    judge = core.judge_split

    def blocking(*args: Any, **kwargs: Any) -> core.Judged:
        time.sleep(0.2)
        return judge(*args, **kwargs)

    monkeypatch.setattr(core, "judge_split", blocking)
    fast = lane.FastLane(lane.Settings(cadence=1.0), wake=lambda key: None)
    w = watched()
    fast.enrol(w.key, w, FixedProvider(default_vector=Series()))
    asyncio.run(fast.tick(PROM, 1.0))
    assert fast.busy[PROM] >= 0.15


def test_a_server_no_rollout_reads_any_more_leaves_no_time_to_space_the_others_looks() -> None:
    fast = watching(1)

    async def go() -> None:
        watcher = asyncio.create_task(fast._watch(PROM))
        while PROM not in fast.busy:
            await asyncio.sleep(0.01)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    asyncio.run(go())
    assert PROM not in fast.busy


class Refusing(FixedProvider):
    async def vector(self, query: str) -> Series:
        raise RuntimeError("no answer")


def test_a_look_that_fails_still_says_its_time_and_a_lane_that_stands_down_forgets_it() -> None:
    fast = lane.FastLane(lane.Settings(cadence=1.0), wake=lambda key: None)
    w = watched()
    fast.enrol(w.key, w, Refusing())
    with pytest.raises(RuntimeError):
        asyncio.run(fast.tick(PROM, 1.0))
    assert PROM in fast.busy
    fast.stand_down()
    assert fast.busy == {}


def test_a_look_whose_leadership_lapses_between_chunks_counts_nothing_more() -> None:
    # A fresh memory means another process may have looked: this look's counts are not its own.
    fast = watching(2 * lane.CHUNK)
    first = fast._memory

    async def look() -> None:
        async def lapse() -> None:
            fast._memory = core.Memory()

        beside = asyncio.create_task(lapse())
        await fast.tick(PROM, 1.0)
        await beside

    asyncio.run(look())
    assert len(first.of) == lane.CHUNK and fast._memory.of == {}


@given(st.floats(min_value=0, max_value=1e9), st.floats(min_value=0, max_value=0.999))
def test_looks_come_once_a_cadence_at_their_phase(now: float, phase: float) -> None:
    following = core.next_look(now, 1.0, phase)
    assert 0.5 <= following - now <= 1.5 + 1e-6
    assert (following - phase) % 1.0 == pytest.approx(0, abs=1e-4) or (
        following - phase
    ) % 1.0 == pytest.approx(1, abs=1e-4)


# When it is asked again.


def test_the_phase_is_asked_again_when_the_judged_pods_change() -> None:
    first = [watched()]
    found = lane.Alignment(0.3, core.judged_pods(first), 1.0, at=0.0, complete=True)
    assert not found.due(first, 1.0, now=30.0)
    assert not found.due([watched(namespace="other")], 1.0, now=5.0)  # not within REALIGN
    assert found.due([watched(namespace="other")], 1.0, now=lane.REALIGN)
    assert found.due(first, 1.0, now=lane.REDETECT)


def test_the_phase_is_asked_again_while_some_judged_pods_had_no_target_yet() -> None:
    members = [watched()]
    found = lane.Alignment(None, core.judged_pods(members), 1.0, at=0.0, complete=False)
    assert not found.due(members, 1.0, now=lane.REALIGN / 2)
    assert found.due(members, 1.0, now=lane.REALIGN)


# What Prometheus says.


class Targets:
    def __init__(self, targets: list[dict[str, Any]] | Exception) -> None:
        self.targets = targets

    def get_targets(self, state: str) -> dict[str, Any]:
        if isinstance(self.targets, Exception):
            raise self.targets
        return {"activeTargets": self.targets}


def provider(targets: list[dict[str, Any]] | Exception) -> PrometheusProvider:
    found = PrometheusProvider("http://prometheus:9090")
    found._client = Targets(targets)  # type: ignore[assignment]
    return found


def test_each_targets_sample_lands_at_its_scrape_plus_its_duration() -> None:
    found = provider([
        {"labels": {"namespace": "shop", "pod": CANARY}, "lastScrape": "2026-12-03T22:40:01.250000000Z",
         "lastScrapeDuration": 0.004},
        {"labels": {"namespace": "else", "pod": CANARY}, "lastScrape": "2026-12-03T22:40:01.5Z",
         "lastScrapeDuration": 0.004},
        {"labels": {"namespace": "shop", "pod": OTHER_CANARY}, "lastScrape": "0001-01-01T00:00:00Z",
         "lastScrapeDuration": 0},
        {"labels": {"namespace": "shop", "pod": STABLE}, "lastScrape": "not a time"},
    ])  # fmt: skip
    landings = found._scrape_landings({"shop"}, "namespace")
    assert [(dict(x.labels)["pod"], x.at % 60) for x in landings] == [(CANARY, pytest.approx(1.254))]


def test_a_prometheus_that_does_not_say_leaves_the_lane_its_own_tick() -> None:
    assert provider(RuntimeError("404: only queries here"))._scrape_landings({"shop"}, "namespace") == []
