"""Do the watched metrics exist at all? The `MetricsAvailable` condition.

A metric whose series never existed cannot judge anything: every round would be "no data", and
the release would hold without saying what is wrong. So when a Rollout's analysis is new or has
changed (its generation), each metric's query is run once for what serves now (the target's
pods), and the condition says which metric found no series, with the query as sent and what
usually causes it. While it is False it is checked again every `RECHECK`, and a release waits
before its first stage (`plan.engine`); it starts by itself once the series are there.

A built-in's source has questions from the broadest down (is the counter scraped in the
namespace at all? for these pods? with the status code label?). The narrowest is asked first;
only when it finds nothing are the others asked, in order, so the first that finds nothing names
the cause, and where a label is named otherwise the labels the series do carry are named.
A query of the user's own is sent as written. Metrics whose empty result means zero (or that
ignore no data) are not asked. A check Prometheus could not answer makes the condition Unknown,
which holds nothing: the rounds' Error verdicts do that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from parachute import conditions, kube
from parachute.analysis.connect import provider_for, templates_for
from parachute.analysis.evaluate import variables
from parachute.analysis.provider import MetricProvider
from parachute.api import (
    ConditionStatus,
    MetricTemplateSpec,
    NoData,
    Risk,
    RolloutSpec,
    RolloutStatus,
)
from parachute.conditions import timestamp
from parachute.plan.engine import parse_time
from parachute.plan.metrics import Kind, MetricDefinition, definitions, render
from parachute.plan.sources import Check, routed_service, source_for
from parachute.plan.stages import effective_risk
from parachute.plan.verdicts import Series
from parachute.plan.versions import Versions, Where, at_rest

RECHECK = timedelta(seconds=10)
# A Rollout at rest whose series stay missing is looked at again less and less often (a
# thousand Rollouts of an app that exports no metrics must not keep Prometheus busy), but
# within five minutes, so the condition stops saying "missing" soon after they appear.
LONGEST_RECHECK = timedelta(minutes=5)


@dataclass(frozen=True)
class Missing:
    metric: str
    query: str  # as sent
    problem: str
    hint: str

    def __str__(self) -> str:
        return f"{self.metric}: {self.problem} (query: {self.query}); usually {self.hint}"


@dataclass(frozen=True)
class Availability:
    missing: tuple[Missing, ...] = ()
    unchecked: tuple[str, ...] = ()  # metrics whose check Prometheus could not answer, and why

    @property
    def status(self) -> ConditionStatus:
        if self.missing:
            return ConditionStatus.false
        return ConditionStatus.unknown if self.unchecked else ConditionStatus.true

    @property
    def message(self) -> str:
        if self.missing:
            return "; ".join(str(m) for m in self.missing)
        if self.unchecked:
            return "could not check: " + "; ".join(self.unchecked)
        return "every watched metric has series for the pods that serve now"


def _checks(metric: MetricDefinition, spec: RolloutSpec, namespace: str, where: Where) -> list[Check]:
    source = source_for(spec)
    if metric.kind == Kind.requests:
        return source.request_checks(where, namespace)
    if metric.kind == Kind.latency:
        return source.latency_checks(where, namespace)
    assert spec.analysis is not None
    # Sent as a round sends it, for what serves now: there is no canary to name yet.
    serving = Versions(judged=where, stable=where, judges_target=True)
    query = render(metric.query, variables(spec, namespace, where, serving, spec.analysis.interval))
    return [
        Check(
            query,
            "the query returned no series at all",
            "the pods are not scraped, or a label or metric name in the query differs from what the "
            "series carry",
        )
    ]


async def check(
    spec: RolloutSpec,
    namespace: str,
    provider: MetricProvider,
    templates: dict[str, MetricTemplateSpec],
    where: Where,
    *,
    risk: Risk | None = None,
) -> Availability:
    """Ask each metric's questions in order; the first empty answer is what is missing."""
    assert spec.analysis is not None
    metrics = [
        m
        for m in definitions(spec, templates, risk or effective_risk(spec))
        if not m.no_data_is_zero and m.on_no_data != NoData.ignore
    ]
    answers: dict[str, asyncio.Task[Series]] = {}

    def ask(query: str) -> asyncio.Task[Series]:
        if query not in answers:
            answers[query] = asyncio.ensure_future(provider.vector(query))
        return answers[query]

    async def one(metric: MetricDefinition) -> Missing | str | None:
        questions = _checks(metric, spec, namespace, where)
        # Each question narrows the one before it, so series for the narrowest are series for
        # all: asked first, it is the only query of a metric whose series are there. The broad
        # ones (every series of a namespace) are what is heavy for Prometheus, a thousand
        # Rollouts adopted at once asking them of the same namespace.
        narrowest = await ask(questions[-1].query)
        if narrowest.error is None and narrowest.found:
            return None
        for item in questions:
            found = await ask(item.query)
            if found.error is not None:
                return f"{metric.name}: {found.error}"
            if found.found:
                continue
            hint = item.hint
            if item.suggest:
                carried = await _carried(ask, item)
                if carried:
                    hint += f" (they carry: {', '.join(carried)})"
            return Missing(metric.name, item.query, item.missing, hint)
        return None

    outcomes = await asyncio.gather(*(one(m) for m in metrics))
    return Availability(
        missing=tuple(o for o in outcomes if isinstance(o, Missing)),
        unchecked=tuple(o for o in outcomes if isinstance(o, str)),
    )


async def _carried(ask: Callable[[str], Awaitable[Series]], item: Check) -> list[str]:
    """Which of the suggested label names the series carry (asked once for metrics that share
    the question)."""
    found = await ask(f"count by ({', '.join(item.suggest)}) ({item.suggest_from})")
    present: set[str] = set()
    for labels, _ in found.found:
        present.update(name for name, value in labels if value)
    return [name for name in item.suggest if name in present]


def due(status: RolloutStatus, generation: int | None, now: datetime) -> bool:
    """Checked when the spec changed, and again every RECHECK while the answer is not True (when
    something wakes the Rollout: a release waiting for its series looks every RECHECK; at rest,
    `next_check_at` wakes it)."""
    current = next((c for c in status.conditions or [] if c.type == conditions.METRICS_AVAILABLE), None)
    if current is None or current.observed_generation != generation:
        return True
    if current.status == ConditionStatus.true:
        return False
    checked = parse_time(status.metrics_checked_at)
    return checked is None or now - checked >= RECHECK


def next_check_at(status: RolloutStatus, now: datetime) -> datetime | None:
    """When the condition is checked again by itself: while it is not True, after as long as
    it has been so (RECHECK at least, LONGEST_RECHECK at most). Without this a Rollout at rest
    kept a False condition until something else woke it, and a release then began with a
    Waiting detour for series that had long been there. Never sooner than RECHECK from `now`:
    a check that could not run (a rollback's analysis set-up failing) is not asked for again
    at once."""
    current = next((c for c in status.conditions or [] if c.type == conditions.METRICS_AVAILABLE), None)
    if current is None or current.status == ConditionStatus.true:
        return None
    checked = parse_time(status.metrics_checked_at)
    if checked is None:
        return None  # never checked by this operator: the next reconcile checks it (`due`)
    since = parse_time(current.last_transition_time) or checked
    return max(now + RECHECK, checked + min(LONGEST_RECHECK, max(RECHECK, checked - since)))


def missing_reason(status: RolloutStatus) -> str:
    """Why a release may not start for its metrics ("" when nothing says so)."""
    current = next((c for c in status.conditions or [] if c.type == conditions.METRICS_AVAILABLE), None)
    if current is None or current.status != ConditionStatus.false:
        return ""
    return current.message


async def refresh(
    spec: RolloutSpec,
    status: RolloutStatus,
    *,
    namespace: str,
    target: dict[str, Any],
    now: datetime,
    generation: int | None,
) -> RolloutStatus:
    """The status with `MetricsAvailable` checked anew when it is due (the I/O of `check`)."""
    assert spec.analysis is not None
    if not due(status, generation, now):
        return status
    provider = await provider_for(spec.analysis, namespace)
    templates = await templates_for(spec, namespace)
    replica_sets = await kube.replica_sets_of(target)
    where = at_rest(replica_sets, target, routed_service(spec))
    found = await check(spec, namespace, provider, templates, where)
    reason = {ConditionStatus.true: "SeriesFound", ConditionStatus.false: "SeriesMissing",
              ConditionStatus.unknown: "CheckFailed"}[found.status]  # fmt: skip
    checked = conditions.set_condition(
        status.conditions, type_=conditions.METRICS_AVAILABLE, status=found.status, reason=reason,
        message=found.message, now=now, generation=generation,
    )  # fmt: skip
    return status.model_copy(update={"metrics_checked_at": timestamp(now), "conditions": checked})
