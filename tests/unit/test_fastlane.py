"""The fast lane read as issue #16 says: one query per Prometheus and request counter for every
Rollout under release, the answer split back per Rollout and version, each judged by the rounds'
own judge with the same guards, and a breach recorded in the verdict history as the lane's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from parachute.analysis import fastlane as lane
from parachute.analysis.provider import FixedProvider
from parachute.api import AnalysisLimits, Metric, MetricStatus, Risk, RolloutSpec, RolloutStatus, Verdict
from parachute.plan import fastlane as core
from parachute.plan.compare import Counts
from parachute.plan.metrics import definitions, resolve
from parachute.plan.sources import source_for
from parachute.plan.verdicts import Series, health
from parachute.plan.versions import Versions, Where, pod_pattern
from parachute.scheduler import Scheduler

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=5)
PROM = ("http://prometheus:9090", "", False)


def spec(**analysis: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"}, "risk": "medium",
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "interval": "60s", **analysis},
    })  # fmt: skip


def versions(namespace: str, target: str = "checkout") -> Versions:
    return Versions(
        judged=Where(pods=f"{target}-canary-5f7b8c9d4b-[a-z0-9]{{5}}", workload=f"{target}-canary"),
        stable=Where(pods=f"{target}-6d4cf56db6-[a-z0-9]{{5}}", workload=target),
    )


def watched(namespace: str = "shop", name: str = "checkout", server: Any = PROM, since: datetime = T0,
            rollout: RolloutSpec | None = None, **kw: Any) -> core.Watched:  # fmt: skip
    rollout = rollout or spec()
    found = core.enrolment(
        namespace=namespace, name=name, server=server, revision="rev-2", source=source_for(rollout),
        metrics=definitions(rollout, {}, rollout.risk or Risk.medium), versions=kw.pop("versions", versions(namespace)),
        min_requests=kw.pop("min_requests", 10), since=since, previous=kw.pop("previous", ()),
    )  # fmt: skip
    assert found is not None
    return found


def series(namespace: str, pod: str, ok: float, failed: float = 0.0) -> list[tuple[dict[str, str], float]]:
    out = [({"namespace": namespace, "pod": pod, "code": "200"}, ok)]
    if failed:
        out.append(({"namespace": namespace, "pod": pod, "code": "500"}, failed))
    return out


CANARY_POD, STABLE_POD = "checkout-canary-5f7b8c9d4b-x7k2p", "checkout-6d4cf56db6-q9w8e"


# What the lane watches.


@pytest.mark.parametrize(
    ("metric", "watched_"),
    [
        pytest.param({"template": "error-rate"}, True, id="error-rate"),
        pytest.param({"template": "success-rate"}, True, id="success-rate"),
        pytest.param({"template": "error-rate", "judge": "threshold"}, True, id="error-rate-threshold"),
        pytest.param({"template": "latency-p95"}, False, id="latency-left-to-the-rounds"),
        pytest.param(
            {"name": "own", "query": "sum(x)", "critical": "1"}, False, id="own-query-left-to-the-rounds"
        ),
    ],
)
def test_the_lane_watches_rates_of_bad_requests_with_a_critical_line(
    metric: dict[str, Any], watched_: bool
) -> None:
    assert core.watchable(resolve(Metric.model_validate(metric), {})) is watched_


def test_a_rollout_whose_source_does_not_name_pods_is_not_enrolled() -> None:
    istio = spec(source="istio")
    found = core.enrolment(namespace="shop", name="checkout", server=PROM, revision="rev-2", source=source_for(istio),
                           metrics=definitions(istio, {}, istio.risk or Risk.medium), versions=versions("shop"),
                           min_requests=10, since=T0)  # fmt: skip
    assert found is None


# One query per Prometheus and counter.


def test_a_thousand_rollouts_on_one_prometheus_are_one_query() -> None:
    many = [watched(f"ns-{i}") for i in range(1000)]
    asked = core.queries(many, WINDOW)
    assert len(asked) == 1
    assert len(asked[0].members) == 1000
    assert asked[0].text.startswith("sum by (namespace, pod, code) (increase(http_requests_total{")
    assert asked[0].text.endswith("[5s]))")


@pytest.mark.parametrize(
    ("rollouts", "expected"),
    [
        pytest.param([watched("a"), watched("b")], 1, id="same-prometheus-same-counter"),
        pytest.param(
            [watched("a"), watched("b", server=("http://other:9090", "", False))], 2, id="two-prometheus"
        ),
        pytest.param(
            [watched("a"), watched("b", rollout=spec(app={"requests": "rpc_total"}))], 2, id="two-counters"
        ),
        pytest.param(
            [watched("a"), watched("b", rollout=spec(metrics=[{"template": "success-rate"}]))],
            1,
            id="error-and-success-rate-share-a-counter",
        ),
    ],
)
def test_queries_grow_with_prometheus_servers_and_counters_not_rollouts(rollouts: list[core.Watched],
                                                                        expected: int) -> None:  # fmt: skip
    assert len(core.queries(rollouts, WINDOW)) == expected


def test_the_query_names_each_namespace_and_each_versions_pods() -> None:
    text = core.queries([watched("a"), watched("b", versions=versions("b", "cart"))], WINDOW)[0].text
    assert 'namespace=~"a|b"' in text
    for pods in (versions("a").judged.pods, versions("a").stable.pods, versions("b", "cart").judged.pods):
        assert pods in text


def test_a_query_too_long_for_a_url_leaves_the_pods_to_the_split() -> None:
    many = [watched(f"ns-{i}", versions=versions(f"ns-{i}", f"app-{i}")) for i in range(200)]
    text = core.queries(many, WINDOW)[0].text
    assert len(text) <= core.MAX_QUERY
    assert "pod=~" not in text and 'namespace=~"ns-0|' in text


# The answer split back.


def test_the_answer_is_split_per_rollout_and_version() -> None:
    a, b = watched("a"), watched("b")
    query = core.queries([a, b], WINDOW)[0]
    answer = Series.of(
        *series("a", CANARY_POD, 90, 10), *series("a", STABLE_POD, 900, 1),
        *series("b", CANARY_POD, 50), *series("b", "checkout-other-1", 1000, 1000),  # another workload's pod
        *series("c", CANARY_POD, 1, 1),  # a namespace nobody watches
    )  # fmt: skip
    parts = core.split(query, answer)
    assert parts[a.key] == core.Split(Counts(100, 10), Counts(901, 1))
    assert parts[b.key] == core.Split(Counts(50, 0), None)


def test_once_the_target_is_judged_there_is_no_stable_to_split_out() -> None:
    judged = Where(pods="checkout-6d4cf56db6-[a-z0-9]{5}", workload="checkout")
    w = watched(versions=Versions(judged=judged, stable=judged, judges_target=True))
    parts = core.split(core.queries([w], WINDOW)[0], Series.of(*series("shop", STABLE_POD, 100, 2)))
    assert parts[w.key] == core.Split(Counts(102, 2), None)


def test_each_pod_is_split_to_its_own_rollout_among_names_that_begin_alike() -> None:
    """Pods are tried only against the Rollouts whose Deployments their names could be of: names
    that begin alike (app-1, app-10, app-1-canary), dotted ones, and ones past the 58 characters
    Kubernetes cuts a pod's name at keep every request where it belongs."""
    long = "payments-" + "x" * 41  # its pods' names are cut, the canary's and stable's still apart
    names = ["app-1", "app-10", "app-1-canary", "web.v2", long]
    rollouts = {
        name: watched(name=name, versions=Versions(
            judged=Where(pods=pod_pattern([f"{name}-canary-5f7b8c9d4b"]), workload=f"{name}-canary"),
            stable=Where(pods=pod_pattern([f"{name}-6d4cf56db6"]), workload=name),
        ))
        for name in names
    }  # fmt: skip
    query = core.queries(list(rollouts.values()), WINDOW)[0]
    rows = []
    for i, name in enumerate(names, start=1):
        rows += series("shop", f"{name}-canary-5f7b8c9d4b-"[:58] + "x7k2p", 10 * i, i)
        rows += series("shop", f"{name}-6d4cf56db6-"[:58] + "q9w8e", 100 * i)
    parts = core.split(query, Series.of(*rows))
    for i, name in enumerate(names, start=1):
        assert parts[rollouts[name].key] == core.Split(Counts(11 * i, i), Counts(100 * i, 0)), name


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.booleans(), st.integers(0, 500), st.integers(0, 50)), max_size=30
    )
)
def test_the_split_keeps_every_request_of_a_watched_pod_and_no_other(
    rows: list[tuple[int, bool, int, int]],
) -> None:
    rollouts = [watched(f"ns-{i}") for i in range(3)]
    query = core.queries(rollouts, WINDOW)[0]
    found = [s for ns, canary, ok, bad in rows
             for s in series(f"ns-{ns}", CANARY_POD if canary else STABLE_POD, ok, bad)]  # fmt: skip
    parts = core.split(query, Series.of(*found))
    counted = sum(c.requests for p in parts.values() for c in (p.judged, p.stable) if c is not None)
    assert counted == sum(value for labels, value in found if labels["namespace"] in ("ns-0", "ns-1", "ns-2"))


# Judged with the rounds' guards.

IMMEDIATE = "roll back at once"


@pytest.mark.parametrize(
    ("judged", "stable", "metrics", "verdict", "breach"),
    [
        pytest.param(Counts(150, 15), Counts(1350, 1), None, Verdict.failed, True, id="canary-failing-10pct"),
        pytest.param(Counts(150, 0), Counts(1350, 1), None, Verdict.successful, False, id="healthy"),
        pytest.param(
            Counts(1000, 1), Counts(9000, 9), None, Verdict.successful, False, id="background-0.1pct"
        ),
        pytest.param(Counts(5, 1), Counts(1350, 1), None, Verdict.inconclusive, False, id="too-few-requests"),
        pytest.param(
            Counts(12, 1), Counts(12, 0), None, Verdict.inconclusive, False, id="low-traffic-cannot-tell"
        ),
        pytest.param(None, Counts(1350, 1), None, Verdict.inconclusive, False, id="served-nothing"),
        pytest.param(None, None, None, Verdict.inconclusive, False, id="no-series-at-all"),
        pytest.param(
            None,
            None,
            [{"template": "error-rate", "onNoData": "fail"}],
            Verdict.failed,
            False,
            id="no-data-failure-is-the-rounds-not-the-lanes",
        ),
        pytest.param(
            Counts(150, 3), Counts(1350, 1), None, Verdict.warning, False, id="critical-not-yet-sustained"
        ),
        pytest.param(
            Counts(150, 3),
            Counts(1350, 1),
            [{"template": "error-rate", "judge": "threshold", "sustainFor": "0s"}],
            Verdict.failed,
            True,
            id="threshold-judge-critical-without-sustain",
        ),
        pytest.param(
            Counts(150, 15),
            Counts(1350, 1),
            [{"template": "success-rate", "rollbackAt": "95%"}],
            Verdict.failed,
            True,
            id="success-rate-below-rollback-at",
        ),
    ],
)
def test_each_rollout_is_judged_with_the_rounds_guards(
    judged: Counts | None, stable: Counts | None, metrics: list[dict[str, Any]] | None, verdict: Verdict,
    breach: bool,
) -> None:  # fmt: skip
    w = watched(rollout=spec(metrics=metrics or [{"template": "error-rate"}]))
    found = core.judge_split(w, core.Split(judged, stable), {}, T0 + timedelta(seconds=3), WINDOW)
    assert [s.verdict for s in found.statuses] == [verdict]
    assert bool(found.breaches) is breach
    if breach:
        assert found.breaches[0].status.fast_lane and found.breaches[0].status.value is not None


def test_the_immediate_trigger_says_so_on_the_sample_that_decided() -> None:
    found = core.judge_split(watched(), core.Split(Counts(150, 15), Counts(1350, 1)), {}, T0, WINDOW)
    breach = {b.status.name: b for b in found.breaches}["error-rate"]
    assert breach.status.immediate and IMMEDIATE in (breach.status.message or "")
    assert breach.status.comparison is not None and breach.status.comparison.window == "5s"
    assert (breach.status.comparison.requests, breach.status.comparison.errors) == (150, 15)


def test_a_critical_line_fails_only_once_it_held_for_sustain_for_across_the_lanes_looks() -> None:
    w = watched(rollout=spec(metrics=[{"template": "error-rate", "judge": "threshold", "sustainFor": "30s"}]))
    memory = core.Memory()
    verdicts = []
    for second in range(0, 40, 5):
        found = core.judge_split(w, core.Split(Counts(150, 3), Counts(1350, 1)), memory.previous(w),
                                 T0 + timedelta(seconds=second), WINDOW)  # fmt: skip
        memory.keep(w, found.statuses)
        verdicts.append((second, found.statuses[0].verdict, bool(found.breaches)))
    assert verdicts[:6] == [(s, Verdict.warning, False) for s in range(0, 30, 5)]
    assert verdicts[6:] == [(30, Verdict.failed, True), (35, Verdict.failed, True)]


def test_a_healthy_look_resets_the_sustain() -> None:
    w = watched(rollout=spec(metrics=[{"template": "error-rate", "judge": "threshold", "sustainFor": "10s"}]))
    memory = core.Memory()
    for second, errors in ((0, 3), (5, 0), (10, 3), (15, 3)):
        found = core.judge_split(w, core.Split(Counts(150, errors), None), memory.previous(w),
                                 T0 + timedelta(seconds=second), WINDOW)  # fmt: skip
        memory.keep(w, found.statuses)
    assert found.statuses[0].verdict == Verdict.warning  # critical since 10 s, not since 0 s


def test_the_memory_is_forgotten_when_the_stage_changes() -> None:
    memory = core.Memory()
    w = watched()
    memory.keep(w, [MetricStatus(name="error-rate", breached_since="2026-11-24T10:00:00Z")])
    assert memory.previous(w)
    assert memory.previous(watched(since=T0 + timedelta(minutes=1))) == {}


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        pytest.param(0, 1, id="at-the-stage-start"),
        pytest.param(4.9, 1, id="within-the-first-window"),
        pytest.param(5, 2, id="second-window"),
        pytest.param(600, 121, id="ten-minutes-in"),
    ],
)
def test_looks_are_counted_one_per_window_of_the_stage(elapsed: float, expected: int) -> None:
    assert core.look(T0, T0 + timedelta(seconds=elapsed), WINDOW) == expected


def test_ten_minutes_in_a_failing_canary_is_still_caught() -> None:
    later = T0 + timedelta(minutes=10)
    found = core.judge_split(watched(), core.Split(Counts(75, 8), Counts(675, 1)), {}, later, WINDOW)
    assert [b.status.name for b in found.breaches] == ["error-rate"]


# Recorded in the verdict history.


def breach(revision: str = "rev-2") -> core.Breach:
    found = core.judge_split(watched(), core.Split(Counts(150, 15), Counts(1350, 1)), {}, T0, WINDOW)
    status = next(b.status for b in found.breaches if b.status.name == "error-rate")
    return core.Breach("shop", "checkout", revision, status)


def routine() -> list[MetricStatus]:
    return [
        MetricStatus(
            name="error-rate",
            verdict=Verdict.warning,
            successful=4,
            inconclusive=1,
            healthy_since=None,
            message="error-rate 0.3%",
        ),
        MetricStatus(
            name="latency-p95", verdict=Verdict.successful, successful=5, healthy_since="2026-11-24T09:59:00Z"
        ),
    ]


def test_a_breach_replaces_its_metric_marked_as_the_lanes_and_fails_the_stage() -> None:
    metrics, events = core.record(routine(), [breach()], "rev-2")
    recorded = metrics[0]
    assert recorded.fast_lane and recorded.verdict == Verdict.failed
    assert (recorded.successful, recorded.failed, recorded.inconclusive) == (4, 1, 1)
    assert (recorded.message or "").startswith(core.FAST_LANE_PREFIX)
    assert metrics[1] == routine()[1]
    assert [e.reason for e in events] == ["MetricFailed"]
    assert health(metrics, AnalysisLimits(), T0).failed


@pytest.mark.parametrize(
    ("history", "revision"),
    [
        pytest.param(None, "rev-3", id="another-release"),
        pytest.param("recorded", "rev-2", id="recorded-already"),
        # The round that ran in the same reconcile failed it on the same evidence.
        pytest.param("failed-by-a-round", "rev-2", id="failed-by-a-round"),
    ],
)
def test_a_stale_or_repeated_breach_is_not_recorded(history: str | None, revision: str) -> None:
    metrics = routine()
    if history == "recorded":
        metrics, _ = core.record(metrics, [breach()], "rev-2")
    if history == "failed-by-a-round":
        metrics[0] = metrics[0].model_copy(update={"verdict": Verdict.failed, "failed": 1})
    after, events = core.record(metrics, [breach()], revision)
    assert events == [] and after == metrics


# The watcher, against a table of answers.


class Answers(FixedProvider):
    def __init__(self, answer: Series) -> None:
        super().__init__()
        self.answer = answer

    async def vector(self, query: str) -> Series:
        self.queries.append(query)
        return self.answer


def test_one_look_sends_one_query_for_every_rollout_and_wakes_only_the_failing_one() -> None:
    woken: list[tuple[str, str]] = []
    provider = Answers(Series.of(
        *series("ns-7", CANARY_POD, 135, 15), *series("ns-7", STABLE_POD, 1349, 1),
        *[s for i in range(100) if i != 7 for s in series(f"ns-{i}", CANARY_POD, 150)],
    ))  # fmt: skip
    fast = lane.FastLane(lane.Settings(), woken.append, now=lambda: T0 + timedelta(seconds=2))
    for i in range(100):
        fast.enrol((f"ns-{i}", "checkout"), watched(f"ns-{i}"), provider)
    assert asyncio.run(fast.tick(PROM, 1.0)) == 1
    assert len(provider.queries) == 1 and woken == [("ns-7", "checkout")]
    taken = fast.take(("ns-7", "checkout"))
    assert [b.status.name for b in taken] == ["error-rate"]
    assert fast.take(("ns-7", "checkout")) == []


def test_the_lane_looks_only_while_leading() -> None:
    provider = Answers(Series.of(*series("shop", CANARY_POD, 120, 30)))
    woken: list[tuple[str, str]] = []
    leading = False
    fast = lane.FastLane(lane.Settings(cadence=1.0), woken.append, lambda: leading, now=lambda: T0)
    fast.enrol(("shop", "checkout"), watched(), provider)

    async def story() -> None:
        task = asyncio.create_task(fast.run())
        await asyncio.sleep(0.3)
        assert provider.queries == []
        nonlocal leading
        leading = True
        await asyncio.sleep(1.3)
        task.cancel()

    asyncio.run(story())
    assert provider.queries and woken


def test_a_breach_reaches_the_rollouts_status_only_while_it_is_under_release() -> None:
    fast = lane.FastLane(lane.Settings(), lambda key: None, now=lambda: T0)
    lane.install(fast)
    try:
        status = RolloutStatus.model_validate(
            {
                "phase": "Progressing",
                "release": {"revision": "rev-2"},
                "metrics": [m.model_dump() for m in routine()],
            }
        )
        fast._breaches[("shop", "checkout")] = {"error-rate": breach()}
        counted = (
            REGISTRY.get_sample_value(
                "parachute_verdicts_total", {"namespace": "shop", "metric": "error-rate", "verdict": "Failed"}
            )
            or 0.0
        )
        merged, events = lane.merge(("shop", "checkout"), status)
        assert merged.last_verdict == Verdict.failed and merged.metrics and merged.metrics[0].fast_lane
        assert events
        # The verdict that decides the rollback is counted like the rounds' verdicts.
        assert (
            REGISTRY.get_sample_value(
                "parachute_verdicts_total", {"namespace": "shop", "metric": "error-rate", "verdict": "Failed"}
            )
            == counted + 1
        )
        fast._breaches[("shop", "checkout")] = {"error-rate": breach()}
        rolling = status.model_copy(update={"phase": "RollingBack"})
        assert lane.merge(("shop", "checkout"), rolling) == (rolling, [])
    finally:
        lane.install(None)


def test_without_the_lane_nothing_is_merged() -> None:
    status = RolloutStatus.model_validate({"phase": "Progressing"})
    assert lane.merge(("shop", "checkout"), status) == (status, [])


@pytest.mark.parametrize(
    ("cadence", "setting", "expected"),
    [
        pytest.param(1.0, None, 3.0, id="three-looks-at-1s"),
        pytest.param(15.0, None, 45.0, id="three-looks-at-15s"),
        pytest.param(1.0, 10.0, 10.0, id="a-setting"),
        pytest.param(5.0, 3.0, 10.0, id="never-under-two-scrapes"),
    ],
)
def test_the_lanes_window(cadence: float, setting: float | None, expected: float) -> None:
    assert lane.window_for(cadence, setting).total_seconds() == expected


def test_the_lane_is_turned_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lane.ENV, "off")
    assert not lane.Settings.from_env().enabled
    monkeypatch.setenv(lane.ENV, "")
    assert lane.Settings.from_env().enabled and not lane.Settings.from_env(enabled=False).enabled


# Ahead of routine work.


def test_an_urgent_wake_runs_without_waiting_for_a_slot() -> None:
    ran: list[tuple[str, str]] = []

    async def story() -> None:
        release = asyncio.Event()

        async def work(key: tuple[str, str]) -> None:
            ran.append(key)
            if key[1] != "urgent":
                await release.wait()

        scheduler = Scheduler(work, concurrency=2)
        task = asyncio.create_task(scheduler.run())
        for i in range(4):
            scheduler.wake(("shop", f"busy-{i}"))
        await asyncio.sleep(0.05)
        scheduler.wake(("shop", "urgent"), urgent=True)
        await asyncio.sleep(0.05)
        assert ("shop", "urgent") in ran and len(ran) == 3  # two busy in their slots, then the urgent one
        release.set()
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(story())
