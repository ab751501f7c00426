"""The fast lane watches a canary from its stage's start, not from the stage's first round.

A stage's first round waits its turn behind every other Rollout's routine work; the lane is
told what to watch by the reconcile that starts the release or the stage, so a canary failing
meanwhile is seen at the scrape's cadence however busy the operator is. What the lane needs is
found once per release (the rounds find it the same way); a next stage is watched as the last."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from parachute import kube
from parachute.analysis import fastlane as lane
from parachute.analysis.connect import AnalysisSetupError
from parachute.analysis.provider import FixedProvider
from parachute.api import MetricStatus, RolloutSpec, RolloutStatus, Verdict
from parachute.plan import fastlane as core
from parachute.plan.model import Observed, TargetState
from parachute.plan.verdicts import Series
from parachute.plan.versions import any_pod_of

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PROM = ("http://prometheus:9090", "", False)
KEY = ("shop", "checkout")
CANARY_POD, STABLE_POD = "checkout-canary-5f7b8c9d4b-x7k2p", "checkout-6d4cf56db6-q9w8e"
TARGET: dict[str, Any] = {
    "metadata": {"name": "checkout", "namespace": "shop", "uid": "target-uid"},
    "spec": {"selector": {"matchLabels": {"app": "checkout"}}},
}
OBSERVED = Observed(target=TargetState(revision="rev-2", replicas=3, paused=True))
ROLLED = Observed(target=TargetState(revision="rev-2", replicas=3, paused=True, rolled_out=True))
SPEC = RolloutSpec.model_validate({
    "targetRef": {"name": "checkout"}, "risk": "medium",
    "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "interval": "60s"},
})  # fmt: skip


def status(phase: str = "Progressing", stage: int = 0, started: datetime = T0, **more: Any) -> RolloutStatus:
    """A release as the reconcile that starts it (or its stage) writes it: no round yet."""
    return RolloutStatus.model_validate({
        "phase": phase, "release": {"revision": "rev-2", "stableRevision": "rev-1"},
        "plan": [{"weight": 10}, {"weight": 50}, {"weight": 100}], "stageIndex": stage,
        "stage": f"{stage + 1}/3", "stageStartedAt": started.isoformat(), **more,
    })  # fmt: skip


def series(pod: str, ok: float, failed: float = 0.0) -> list[tuple[dict[str, str], float]]:
    out = [({"namespace": "shop", "pod": pod, "code": "200"}, ok)]
    if failed:
        out.append(({"namespace": "shop", "pod": pod, "code": "500"}, failed))
    return out


class Answers(FixedProvider):
    def __init__(self, answer: Series) -> None:
        super().__init__()
        self.answer = answer

    async def vector(self, query: str) -> Series:
        self.queries.append(query)
        return self.answer


FAILING = Answers(Series.of(*series(CANARY_POD, 135, 15), *series(STABLE_POD, 1349, 1)))


class Asked:
    """What the lane's enrolment asked the cluster (none of it reaches one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, provider: Answers = FAILING) -> None:
        self.times = 0
        self.provider = provider

        async def provider_for(analysis: Any, namespace: str) -> Answers:
            self.times += 1
            return self.provider

        async def templates_for(spec: Any, namespace: str) -> dict[str, Any]:
            return {}

        async def list_replica_sets(namespace: str, selector: str) -> list[dict[str, Any]]:
            assert selector == "app=checkout"
            return []  # the canary's ReplicaSet is not made yet

        monkeypatch.setattr(lane, "provider_for", provider_for)
        monkeypatch.setattr(lane, "templates_for", templates_for)
        monkeypatch.setattr(kube, "list_replica_sets", list_replica_sets)


@pytest.fixture
def fast() -> Any:
    woken: list[tuple[str, str]] = []
    installed = lane.FastLane(lane.Settings(), woken.append, now=lambda: T0 + timedelta(seconds=2))
    installed.woken = woken  # type: ignore[attr-defined]
    lane.install(installed)
    yield installed
    lane.install(None)


def stage_starts(st: RolloutStatus, observed: Observed = OBSERVED) -> None:
    asyncio.run(lane.enrol_stage(KEY, SPEC, st, target=TARGET, canary=None, observed=observed))


def test_a_canary_is_watched_by_the_lane_from_its_stages_start_before_its_first_round(
    fast: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    Asked(monkeypatch)
    started = status()
    assert started.metrics is None and started.next_analysis_at is None  # no round has run
    stage_starts(started)
    assert fast.watched == 1 and fast.enrolled(KEY) == ("rev-2", T0)
    # Its pods are named before its ReplicaSet exists, as a round names them.
    watched = fast._watched[KEY]
    assert watched.versions.judged.pods == any_pod_of("checkout-canary") and watched.since == T0

    # Its first look finds the failing canary and wakes it; the breach fails its stage.
    assert asyncio.run(fast.tick(PROM, 1.0)) == 1
    assert fast.woken == [KEY]
    merged, events = lane.merge(KEY, started)
    assert merged.last_verdict == Verdict.failed and [e.reason for e in events] == ["MetricFailed"]


def test_what_the_lane_needs_is_asked_once_per_release_and_a_next_stage_is_watched_as_the_last(
    fast: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = Asked(monkeypatch)
    stage_starts(status())
    stage_starts(status())  # any later reconcile of the stage
    assert asked.times == 1
    first = fast._watched[KEY]

    later = T0 + timedelta(minutes=5)
    routine = [MetricStatus(name="error-rate", verdict=Verdict.successful, successful=5)]
    stage_starts(status(stage=1, started=later, metrics=[m.model_dump() for m in routine]))
    assert asked.times == 1 and fast.enrolled(KEY) == ("rev-2", later)
    moved = fast._watched[KEY]
    assert moved == core.next_stage(first, later, routine)
    assert moved.since == later and moved.versions == first.versions and moved.previous == tuple(routine)


def test_a_stage_that_judges_the_targets_pods_is_found_anew(
    fast: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = Asked(monkeypatch)
    stage_starts(status(stage=1))
    stage_starts(status(stage=2, started=T0 + timedelta(minutes=5)), observed=ROLLED)
    assert asked.times == 2 and fast._watched[KEY].versions.judges_target


def test_a_rounds_enrolment_of_the_same_stage_keeps_the_lanes_count_of_its_looks(
    fast: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    Asked(monkeypatch, Answers(Series.of(*series(CANARY_POD, 150), *series(STABLE_POD, 1500))))
    started = status()
    stage_starts(started)
    asyncio.run(fast.tick(PROM, 1.0))
    kept = fast._memory.of[KEY]
    watched = fast._watched[KEY]
    lane.enrol(KEY, SPEC, started, provider=FAILING, templates={}, versions=watched.versions, since=T0,
               previous=[])  # fmt: skip
    assert fast.enrolled(KEY) == ("rev-2", T0) and fast._memory.of[KEY] == kept


@pytest.mark.parametrize("phase", ["RollingBack", "RolledBack", "Healthy"])
def test_the_enrolment_is_dropped_when_the_release_ends_or_rolls_back(
    fast: Any, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    asked = Asked(monkeypatch)
    stage_starts(status())
    ended = status(phase)
    # The reconcile that leaves the release drops it (as a round under any other phase does).
    lane.leave(KEY)
    stage_starts(ended)
    assert fast.watched == 0 and fast.enrolled(KEY) is None and asked.times == 1
    stage_starts(status())
    lane.enrol(KEY, SPEC, ended, provider=FAILING, templates={}, versions=fast._watched[KEY].versions,
               since=T0, previous=[])  # fmt: skip
    assert fast.watched == 0 and fast.enrolled(KEY) is None


def test_a_stage_the_lane_cannot_be_told_of_is_left_to_its_first_round(
    fast: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_secret(analysis: Any, namespace: str) -> Answers:
        raise AnalysisSetupError("spec.analysis.prometheus.auth.secretRef: Secret shop/prom not found")

    monkeypatch.setattr(lane, "provider_for", no_secret)
    stage_starts(status())
    assert fast.watched == 0 and fast.enrolled(KEY) is None


def test_without_the_lane_nothing_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = Asked(monkeypatch)
    stage_starts(status())
    assert asked.times == 0
