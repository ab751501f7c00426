"""One round of analysis for one Rollout: query every metric once, judge, and summarise.

Per version at most one query per metric, and one count of requests by outcome that every
request metric shares (error-rate and success-rate are read from it, and it is the traffic
check). Identical queries are sent once. A query of the user's own that finds no data is
followed by the count of requests, to tell "no data" from "no traffic". All are sent
concurrently; the provider is passed in, so tests can evaluate against a table.

While a stage runs, the comparison judge counts the stage so far (`since`), so that evidence
accumulates at low traffic; everything else reads the last interval.

The `user-reports` metric is asked of its own provider (`reports`: the Rollout's user reports,
counted by `parachute.reports`), and can be judged alone between rounds (`judge_reports`) when a
report arrives, through the same verdicts.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta

from parachute import telemetry
from parachute.analysis.provider import MetricProvider
from parachute.api import (
    Direction,
    Judge,
    MetricStatus,
    MetricTemplateSpec,
    Risk,
    RolloutSpec,
    Verdict,
    format_duration,
    parse_duration,
)
from parachute.plan.compare import Counts
from parachute.plan.metrics import (
    DEFAULT_MIN_REQUESTS,
    Kind,
    MetricDefinition,
    definitions,
    render,
)
from parachute.plan.model import Event, EventType
from parachute.plan.sources import Outcomes, Source, source_for
from parachute.plan.stages import effective_risk
from parachute.plan.verdicts import Sample, Series, Traffic, judge
from parachute.plan.versions import Versions, Where


@dataclass(frozen=True)
class Round:
    metrics: list[MetricStatus]
    events: list[Event]
    queries: int = 0  # sent to the provider in this round


def variables(
    spec: RolloutSpec, namespace: str, where: Where, versions: Versions, window: str
) -> dict[str, str]:
    """The placeholders of a query sent for the version `where` names."""
    return {
        "namespace": namespace, "target": spec.target_ref.name, "window": window,
        "pods": where.pods, "workload": where.workload, "service": where.service,
        "canary_pods": versions.judged.pods, "stable_pods": versions.stable.pods,
    }  # fmt: skip


class _Asked:
    """The round's queries, each sent once however many metrics need it."""

    def __init__(self, provider: MetricProvider) -> None:
        self.provider = provider
        self._vectors: dict[str, asyncio.Task[Series]] = {}
        self._samples: dict[str, asyncio.Task[Sample]] = {}

    def vector(self, query: str) -> Awaitable[Series]:
        if query not in self._vectors:
            self._vectors[query] = asyncio.ensure_future(self.provider.vector(query))
        return self._vectors[query]

    def sample(self, query: str) -> Awaitable[Sample]:
        if query not in self._samples:
            self._samples[query] = asyncio.ensure_future(self.provider.sample(query))
        return self._samples[query]

    @property
    def sent(self) -> int:
        return len(self._vectors) + len(self._samples)


@dataclass(frozen=True)
class _Count:
    """A version's requests by outcome in a window, as counted."""

    counts: Counts | None  # None: the counter has no series for these pods
    error: str | None = None


async def _count(asked: _Asked, outcomes: Outcomes) -> _Count:
    series = await asked.vector(outcomes.query)
    if series.error is not None:
        return _Count(None, series.error)
    if not series.found:
        return _Count(None)
    by = series.by(outcomes.label)
    return _Count(Counts(sum(by.values()), sum(v for k, v in by.items() if outcomes.is_bad(k))))


def stage_window(interval: timedelta, since: datetime | None, now: datetime) -> tuple[str, int]:
    """The comparison's window (the stage so far, at least one interval) and which look at the
    accumulating counts this is (0: a window of its own, nothing accumulates)."""
    if since is None or now <= since:
        return format_duration(interval), 0
    elapsed = now - since
    seconds = max(interval.total_seconds(), math.ceil(elapsed.total_seconds()))
    return format_duration(timedelta(seconds=seconds)), int(elapsed / interval) + 1


async def evaluate(
    spec: RolloutSpec,
    *,
    namespace: str,
    previous: list[MetricStatus] | None,
    provider: MetricProvider,
    templates: dict[str, MetricTemplateSpec],
    now: datetime,
    versions: Versions,
    since: datetime | None = None,
    risk: Risk | None = None,
    reports: MetricProvider | None = None,
) -> Round:
    """Judge every metric once, for the version `versions` says is judged (and stable where a
    metric compares with it: never once the target itself is judged, as stable is gone)."""
    assert spec.analysis is not None
    every = definitions(spec, templates, risk or effective_risk(spec))
    counted = [m for m in every if m.kind == Kind.reports]
    metrics = [m for m in every if m.kind != Kind.reports]
    source = source_for(spec)
    interval = spec.analysis.interval
    cumulative, look = stage_window(parse_duration(interval), since, now)
    min_requests = (
        spec.analysis.min_requests if spec.analysis.min_requests is not None else DEFAULT_MIN_REQUESTS
    )
    judged, stable = versions.judged, None if versions.judges_target else versions.stable
    asked = _Asked(provider)

    context = _Context(spec, source, asked, namespace, versions, judged, stable, interval, cumulative, look)

    async def one(metric: MetricDefinition) -> MetricStatus:
        canary, baseline, traffic = await _measure(metric, context)
        return judge(metric, canary, before.get(metric.name), now, stable=baseline, min_requests=min_requests,
                     traffic=traffic)  # fmt: skip

    before = {m.name: m for m in previous or []}
    measured = iter(await asyncio.gather(*(one(m) for m in metrics)))
    reported = {m.name: m for m in await _judge_reports(counted, reports, before, now)}
    # In the order the Rollout lists its metrics.
    results = [reported[m.name] if m.kind == Kind.reports else next(measured) for m in every]
    telemetry.judged(namespace, results)
    return Round(results, _told(results, before), asked.sent)


async def judge_reports(
    spec: RolloutSpec,
    *,
    namespace: str,
    previous: list[MetricStatus] | None,
    reports: MetricProvider,
    now: datetime,
    risk: Risk | None = None,
) -> Round:
    """Judge only the `user-reports` metrics, between rounds: a report has just arrived."""
    assert spec.analysis is not None
    counted = [m for m in definitions(spec, {}, risk or effective_risk(spec)) if m.kind == Kind.reports]
    before = {m.name: m for m in previous or []}
    results = await _judge_reports(counted, reports, before, now)
    telemetry.judged(namespace, results)
    return Round(results, _told(results, before))


def _told(results: list[MetricStatus], before: dict[str, MetricStatus]) -> list[Event]:
    """An Event for each metric whose verdict changed."""
    events = []
    for status in results:
        old = before.get(status.name)
        if old is None or old.verdict != status.verdict:
            bad = status.verdict in (Verdict.failed, Verdict.error, Verdict.inconclusive, Verdict.warning)
            events.append(Event(EventType.warning if bad else EventType.normal,
                                f"Metric{status.verdict.value if status.verdict else ''}", status.message or ""))  # fmt: skip
    return events


NO_REPORTS = "user reports are not counted for this Rollout"


async def _judge_reports(
    metrics: list[MetricDefinition],
    reports: MetricProvider | None,
    before: dict[str, MetricStatus],
    now: datetime,
) -> list[MetricStatus]:
    """Each user-reports metric on the highest count of one key in its window; the message names
    that key, as the incident and the RollingBack Event quote it."""
    results = []
    for metric in metrics:
        sample = await reports.sample(metric.query) if reports is not None else Sample(error=NO_REPORTS)
        status = judge(metric, sample, before.get(metric.name), now)
        if sample.value:
            keys = (await reports.vector(metric.query)).found if reports is not None else ()
            top = max(keys, key=lambda found: found[1], default=None)
            if top is not None:
                key = dict(top[0]).get("key", "")
                shown = f"{top[1]:.0f} user report{'s' if top[1] != 1 else ''} of {key}"
                status = status.model_copy(update={"message": f"{status.message} ({shown})"})
        results.append(status)
    return results


@dataclass(frozen=True)
class _Context:
    """What every metric of one round is measured with."""

    spec: RolloutSpec
    source: Source
    asked: _Asked
    namespace: str
    versions: Versions
    judged: Where
    stable: Where | None  # None once the target itself is judged: stable is gone
    interval: str
    cumulative: str  # the comparison's window: the stage so far
    look: int


async def _measure(metric: MetricDefinition, c: _Context) -> tuple[Sample, Sample | None, Traffic]:
    """The judged version's sample, stable's (when compared), and the traffic behind them."""
    recent = c.source.outcomes(c.judged, c.namespace, c.interval)
    if metric.kind == Kind.requests:
        if metric.judge == Judge.compare:
            mine_q = c.source.outcomes(c.judged, c.namespace, c.cumulative)
            theirs_q = (
                c.source.outcomes(c.stable, c.namespace, c.cumulative) if c.stable is not None else None
            )
            for query in (mine_q, theirs_q):
                if query is not None:
                    c.asked.vector(query.query)  # both on their way before either is awaited
            mine = await _count(c.asked, mine_q)
            theirs = await _count(c.asked, theirs_q) if theirs_q is not None else None
            if _served_nothing(mine, theirs):
                return _rate(mine), None, Traffic(requests=0, window=c.cumulative, look=c.look)
            return _rate(mine), None, Traffic(
                requests=mine.counts.requests if mine.counts else None, counts=mine.counts,
                stable=theirs.counts if theirs else None, window=c.cumulative, look=c.look,
                unknown_because=_unknown(c.source, mine),
            )  # fmt: skip
        mine = await _count(c.asked, recent)
        return _rate(mine, metric), None, await _traffic_of(c, mine)
    if metric.kind == Kind.latency:
        c.asked.vector(recent.query)
        canary_task = c.asked.sample(
            c.source.latency_query(c.judged, c.namespace, c.interval, metric.quantile)
        )
        stable_task = (
            c.asked.sample(c.source.latency_query(c.stable, c.namespace, c.interval, metric.quantile))
            if metric.compare_with_stable and c.stable is not None
            else None
        )
        counted = await _count(c.asked, recent)
        canary = await canary_task
        baseline = await stable_task if stable_task is not None else None
        return canary, baseline, await _traffic_of(c, counted)

    def sent_for(where: Where) -> str:
        return render(metric.query, variables(c.spec, c.namespace, where, c.versions, c.interval))

    canary_task = c.asked.sample(sent_for(c.judged))
    stable_task = (
        c.asked.sample(sent_for(c.stable)) if metric.compare_with_stable and c.stable is not None else None
    )
    canary = await canary_task
    baseline = await stable_task if stable_task is not None else None
    if canary.has_value or canary.error is not None or metric.no_data_is_zero:
        return canary, baseline, Traffic()
    # No data: was there any traffic to have data about?
    return canary, baseline, await _traffic_of(c, await _count(c.asked, recent))


def _rate(count: _Count, metric: MetricDefinition | None = None) -> Sample:
    """The rate of bad requests (success-rate: of good ones) as a sample; an error stays one."""
    if count.error is not None:
        return Sample(error=count.error)
    if count.counts is None or count.counts.requests <= 0:
        return Sample()
    rate = count.counts.rate
    below = metric is not None and metric.direction == Direction.below
    return Sample.of(1.0 - rate if below else rate)


def _served_nothing(mine: _Count, theirs: _Count | None) -> bool:
    """The judged pods have no request series while stable's pods have one: a labelled counter
    has no series before its first request, so pods scraped like stable's have served none."""
    return mine.counts is None and mine.error is None and theirs is not None and theirs.counts is not None


async def _traffic_of(c: _Context, count: _Count) -> Traffic:
    """The judged version's traffic; with no request series at all, stable's pods tell whether
    that means "no traffic yet" or "nobody can tell"."""
    if count.counts is None and count.error is None and c.stable is not None:
        theirs = await _count(c.asked, c.source.outcomes(c.stable, c.namespace, c.interval))
        if _served_nothing(count, theirs):
            return Traffic(requests=0)
    return _traffic(c.source, count)


def _traffic(source: Source, count: _Count) -> Traffic:
    return Traffic(
        requests=count.counts.requests if count.counts else None, unknown_because=_unknown(source, count)
    )


def _unknown(source: Source, count: _Count) -> str:
    if count.error is not None:
        return f"traffic unknown: {count.error}"
    if count.counts is None:
        return f"traffic unknown: {source.requests} has no series for these pods"
    return ""
