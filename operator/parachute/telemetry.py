"""The operator's own metrics, for Prometheus to scrape (`--metrics-port`).

What releases do: Rollouts by phase, stage transitions, verdicts by metric, rollbacks by level,
recovery times. How the operator itself is doing: reconcile latency, how late the scheduler
runs what is due, PromQL queries and Kubernetes API requests by outcome, the garbage
collector's pauses, and whether this replica leads.

Each replica serves its own. Counters grow where the work was done, which is the leader; the
gauge of Rollouts by phase is reported by the leader alone (a standby watches the same
Rollouts, and two replicas reporting them would count each twice), so a sum over replicas is
right. `parachute_leader` is 1 on the replica that acts.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import gc
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from parachute.api import MetricStatus, RecoveryLevel, RolloutStatus
from parachute.plan.verdicts import Sample, Series

Answer = TypeVar("Answer", Sample, Series)

# A `_created` series beside every counter and histogram doubles what a scrape reads (with a
# counter per Rollout, ten thousand lines at 10,000) and no dashboard or alert reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Per Rollout only what names the Rollout that needs a look (it rolled back, its recovery took
# too long): a histogram per Rollout and level was 42 lines per Rollout, 420,000 at 10,000
# Rollouts, and rendering them took the operator's Python lock for 11 s a scrape. A Rollout's
# own recovery times and levels are in its status (`incidents`) and its postmortem.
RECOVERY_SECONDS = Histogram(
    "parachute_recovery_seconds",
    "First critical verdict to health restored, per rollback, by the level that restored it.",
    ["namespace", "level"],
    buckets=(5, 15, 30, 60, 120, 180, 300, 600, 900, 1800),
)
ROLLBACKS = Counter("parachute_rollbacks_total", "Rollbacks started.", ["namespace", "rollout"])
OBJECTIVE_BREACHES = Counter(
    "parachute_recovery_objective_breaches_total",
    "Recoveries that took longer than their objective.",
    ["namespace", "rollout"],
)
ROLLBACK_LEVELS = Counter(
    "parachute_rollback_levels_total",
    "Rollback levels entered (flag, config, code): a rollback that escalates counts at each level.",
    ["namespace", "level"],
)
STAGE_TRANSITIONS = Counter(
    "parachute_stage_transitions_total",
    "Stages entered by a release, by the stage's name (or its position when it has none).",
    ["namespace", "rollout", "stage"],
)
VERDICTS = Counter(
    "parachute_verdicts_total",
    "Metric verdicts, one per metric per analysis round.",
    ["namespace", "metric", "verdict"],
)
RECONCILE_SECONDS = Histogram(
    "parachute_reconcile_duration_seconds",
    "One reconcile of one Rollout, by outcome (ok, conflict, error, not_leading, gone).",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LOOKS_IN_VAIN = Counter(
    "parachute_reconciles_in_vain_total",
    "Reconciles that wrote no status and changed no object (also counted in "
    "parachute_reconcile_duration_seconds), by what made them due: a change of no consequence "
    "(deployment, replicaset, rollout, tracked, listing), a due time (time: a poll, or the look after a 409), "
    "a failed reconcile's retry (retry), a breach or a report already seen (lane, report).",
    ["woken_by"],
)
WAKES = Counter(
    "parachute_wakes_total",
    "Wakes asked of the scheduler, by what asked (the causes of parachute_reconciles_in_vain_total; "
    "replicaset: a canary ReplicaSet's ready pods changed); a wake for a Rollout already due "
    "sooner, or that a sooner one overtakes, runs nothing of its own.",
    ["woken_by"],
)
# What made the reconcile under way due (`parachute.scheduler.Woken`), set by the scheduler.
_WOKEN_BY: contextvars.ContextVar[str] = contextvars.ContextVar("woken_by", default="unknown")
SCHEDULER_LAG = Histogram(
    "parachute_scheduler_lag_seconds",
    "From the moment a Rollout was due to the moment its reconcile started.",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 5, 10, 15, 20, 30, 45, 60),
)
PROMQL_QUERIES = Counter(
    "parachute_promql_queries_total",
    "PromQL queries sent to Prometheus, by outcome (ok, no_data, error).",
    ["outcome"],
)
PROMQL_SECONDS = Histogram(
    "parachute_promql_query_duration_seconds",
    "One PromQL query, retries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FAST_LANE_QUERIES = Counter(
    "parachute_fast_lane_queries_total",
    "PromQL queries the fast lane sent (also counted in parachute_promql_queries_total), by outcome: "
    "one per Prometheus and request counter per look, whatever the number of Rollouts.",
    ["outcome"],
)
FAST_LANE_BREACHES = Counter(
    "parachute_fast_lane_breaches_total",
    "Critical breaches the fast lane found between analysis rounds (each wakes its Rollout).",
    ["namespace"],
)
FAST_LANE_LOOK_SECONDS = Histogram(
    "parachute_fast_lane_look_seconds",
    "How long one look of the fast lane held the operator's event loop (wall clock; the wait for "
    "Prometheus's answer and the others' turns between its chunks not counted). Its count is the "
    "looks made: the next comes no sooner than three times the last looks' holds (every "
    "Prometheus's) after this one began.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_REQUESTS = Counter(
    "parachute_api_requests_total",
    "Kubernetes API requests the operator made itself (not kopf's watches), by HTTP method, status "
    "code (`error` when no response came; errors are the codes other than 2xx) and resource "
    "(`deployments`, `rollouts/status`, `events`, ...).",
    ["method", "code", "resource"],
)

GC_PAUSE_SECONDS = Histogram(
    "parachute_gc_pause_seconds",
    "One collection of Python's garbage collector, by generation (2: every object the operator "
    "holds): the whole process stops for it, every reconcile due and the fast lane's look with it.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

USER_REPORTS = Counter(
    "parachute_user_reports_total",
    "Requests to the reports endpoint, by the HTTP status answered: 202 recorded a report; 401, "
    "403, 400, 404, 409, 413, 429 and 503 refused one and recorded nothing.",
    ["code"],
)


class _State(Collector):
    """Gauges read when scraped: Rollouts by phase (from the watch), leadership, what is due."""

    def __init__(self) -> None:
        self.phases: dict[tuple[str, str], str] = {}
        self.rollouts_in: collections.Counter[str] = collections.Counter()  # by namespace
        self.stages: dict[tuple[str, str], set[str]] = {}  # stage labels to remove with the Rollout
        self.leading: Callable[[], bool] = lambda: True
        self.pending: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        leading = self.leading()
        leader = GaugeMetricFamily("parachute_leader", "1 on the replica that acts, 0 on a standby.")
        leader.add_metric([], 1.0 if leading else 0.0)
        yield leader
        rollouts = GaugeMetricFamily(
            "parachute_rollouts", "Rollouts by phase (reported by the leader).", labels=["namespace", "phase"]
        )
        if leading:
            counts: dict[tuple[str, str], int] = {}
            for (namespace, _), phase in self.phases.items():
                counts[(namespace, phase)] = counts.get((namespace, phase), 0) + 1
            for (namespace, phase), count in sorted(counts.items()):
                rollouts.add_metric([namespace, phase], count)
        yield rollouts
        pending = GaugeMetricFamily(
            "parachute_scheduler_pending", "Rollouts with a due time in the scheduler."
        )
        pending.add_metric([], self.pending())
        yield pending


STATE = _State()
REGISTRY.register(STATE)


def serve(port: int) -> None:
    start_http_server(port)
    if not any(isinstance(callback, _GcPauses) for callback in gc.callbacks):
        gc.callbacks.append(_GcPauses())


class _GcPauses:
    """Each collection's pause: the heap of a large fleet makes a full one long (600 MiB at
    10,000 Rollouts), and nothing else runs meanwhile."""

    def __init__(self) -> None:
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif self.started:
            GC_PAUSE_SECONDS.labels(str(info.get("generation", ""))).observe(
                time.perf_counter() - self.started
            )
            self.started = 0.0


def leadership(leading: Callable[[], bool]) -> None:
    """Where `parachute_leader` (and whether to report Rollouts by phase) is read from."""
    STATE.leading = leading


def scheduler(pending: Callable[[], int]) -> None:
    STATE.pending = pending


def observed(namespace: str, rollout: str, phase: str | None) -> None:
    """The watch saw a Rollout in this phase (`Pending` until it has one).

    Its rollback and recovery series (and its namespace's) are created at zero when it is first
    seen: a series born at its first rollback with the value 1 shows no `increase()` over any
    range, so a dashboard would never see a Rollout's first (often only) rollback or recovery."""
    key = (namespace, rollout)
    first = key not in STATE.phases
    STATE.phases[key] = phase or "Pending"
    if not first:
        return
    STATE.rollouts_in[namespace] += 1
    ROLLBACKS.labels(namespace, rollout)
    OBJECTIVE_BREACHES.labels(namespace, rollout)
    for level in RecoveryLevel:
        ROLLBACK_LEVELS.labels(namespace, level.value)
        RECOVERY_SECONDS.labels(namespace, level.value)


def gone(namespace: str, rollout: str) -> None:
    """The Rollout is deleted (or another shard's): its series go, and its namespace's with the
    namespace's last Rollout, so a cluster that churns Rollouts does not grow the operator's
    memory and scrapes without bound."""
    # Its own series go even when it was gone already: a reconcile under way when it went may
    # have counted for it since.
    for metric in (ROLLBACKS, OBJECTIVE_BREACHES):
        _remove(metric, namespace, rollout)
    for stage in STATE.stages.pop((namespace, rollout), set()):
        _remove(STAGE_TRANSITIONS, namespace, rollout, stage)
    if STATE.phases.pop((namespace, rollout), None) is None:
        return
    STATE.rollouts_in[namespace] -= 1
    if STATE.rollouts_in[namespace] > 0:
        return
    del STATE.rollouts_in[namespace]
    for level in RecoveryLevel:
        _remove(ROLLBACK_LEVELS, namespace, level.value)
        _remove(RECOVERY_SECONDS, namespace, level.value)


def _remove(metric: Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never created
        metric.remove(*labels)


def rollback_started(namespace: str, rollout: str) -> None:
    ROLLBACKS.labels(namespace, rollout).inc()


def recovered(namespace: str, rollout: str, level: str, seconds: float, objective_met: bool) -> None:
    RECOVERY_SECONDS.labels(namespace, level).observe(seconds)
    if not objective_met:
        OBJECTIVE_BREACHES.labels(namespace, rollout).inc()


def decided(namespace: str, rollout: str, old: dict[str, Any], new: RolloutStatus) -> None:
    """Count what one reconcile's written decision changed: a stage entered, a rollback level entered."""
    old_revision = (old.get("release") or {}).get("revision")
    new_revision = new.release.revision if new.release else None
    index = new.stage_index
    if index is not None and (index, new_revision) != (old.get("stageIndex"), old_revision):
        plan = new.plan or []
        name = (plan[index].name if index < len(plan) else None) or str(index + 1)
        STAGE_TRANSITIONS.labels(namespace, rollout, name).inc()
        STATE.stages.setdefault((namespace, rollout), set()).add(name)
    before = {
        (incident.get("id"), level.get("level"), level.get("startedAt"))
        for incident in old.get("incidents") or []
        for level in incident.get("levels") or []
    }
    for incident in new.incidents or []:
        for record in incident.levels or []:
            if (incident.id, record.level.value, record.started_at) not in before:
                ROLLBACK_LEVELS.labels(namespace, record.level.value).inc()


@contextlib.contextmanager
def woken_by(cause: str) -> Iterator[None]:
    """The reconciles run within are counted as made due by `cause`."""
    token = _WOKEN_BY.set(cause)
    try:
        yield
    finally:
        _WOKEN_BY.reset(token)


def in_vain_causes(causes: list[str]) -> None:
    """Serve a zero for each cause before any reconcile is in vain: a sum over none is no answer."""
    for cause in causes:
        LOOKS_IN_VAIN.labels(cause)
        WAKES.labels(cause)


def woken() -> str:
    """What made the reconcile under way due ("unknown" outside one)."""
    return _WOKEN_BY.get()


def woke(cause: str) -> None:
    WAKES.labels(cause).inc()


def looked_in_vain() -> None:
    LOOKS_IN_VAIN.labels(woken()).inc()


def judged(namespace: str, metrics: list[MetricStatus]) -> None:
    """One analysis round's verdicts."""
    for metric in metrics:
        VERDICTS.labels(namespace, metric.name, metric.verdict.value if metric.verdict else "None").inc()


def reconciled(outcome: str, seconds: float) -> None:
    RECONCILE_SECONDS.labels(outcome).observe(seconds)


def late(seconds: float) -> None:
    """The scheduler started a reconcile this long after it was due."""
    SCHEDULER_LAG.observe(max(0.0, seconds))


async def query(asked: Awaitable[Answer]) -> Answer:
    """Await one PromQL query (one value or a vector of series), timing it and counting it by
    outcome."""
    started = time.monotonic()
    try:
        answer = await asked
    except BaseException:
        PROMQL_QUERIES.labels("error").inc()
        raise
    finally:
        PROMQL_SECONDS.observe(time.monotonic() - started)
    empty = answer.value is None if isinstance(answer, Sample) else not answer.found
    PROMQL_QUERIES.labels("error" if answer.error is not None else "no_data" if empty else "ok").inc()
    return answer


def fast_lane_query(answer: Series) -> None:
    FAST_LANE_QUERIES.labels(
        "error" if answer.error is not None else "ok" if answer.found else "no_data"
    ).inc()


def fast_lane_look(held: float) -> None:
    FAST_LANE_LOOK_SECONDS.observe(held)


def fast_lane_breach(namespace: str) -> None:
    FAST_LANE_BREACHES.labels(namespace).inc()


def api_request(method: str, code: int | None, url: str = "") -> None:
    API_REQUESTS.labels(method, str(code) if code else "error", resource_of(url)).inc()


def resource_of(url: str) -> str:
    """The resource a request's path names, with its subresource: `/apis/apps/v1/namespaces/shop/
    deployments/checkout` is `deployments`, `.../rollouts/checkout/status` is `rollouts/status`."""
    parts = [p for p in urllib.parse.urlsplit(url).path.split("/") if p]
    # /api/v1/... or /apis/<group>/<version>/...: what follows the version.
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else []
    if len(rest) > 2 and rest[0] == "namespaces":
        rest = rest[2:]  # a namespaced resource; `namespaces/<name>` alone is the namespace
    if not rest:
        return "other"
    return f"{rest[0]}/{rest[2]}" if len(rest) >= 3 else rest[0]


def user_report(code: int) -> None:
    USER_REPORTS.labels(str(code)).inc()
