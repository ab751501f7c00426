"""One round of analysis for one Rollout: query every metric once, judge, and summarise.

At most one query per metric and version per interval, plus one traffic query, all sent
concurrently. The provider is passed in, so tests can evaluate against a table.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from parachute import telemetry
from parachute.analysis.provider import MetricProvider
from parachute.api import (
    MetricStatus,
    MetricTemplateSpec,
    RolloutSpec,
    Verdict,
    VersionLabels,
)
from parachute.plan.metrics import (
    DEFAULT_MIN_REQUESTS,
    TRAFFIC_QUERY,
    MetricDefinition,
    default_metrics,
    render,
    resolve,
)
from parachute.plan.model import Event, EventType
from parachute.plan.stages import effective_risk
from parachute.plan.verdicts import Sample, judge


@dataclass(frozen=True)
class Round:
    metrics: list[MetricStatus]
    events: list[Event]


def definitions(spec: RolloutSpec, templates: dict[str, MetricTemplateSpec]) -> list[MetricDefinition]:
    """The Rollout's metrics, or the built-ins its risk watches. Raises UnknownTemplateError."""
    assert spec.analysis is not None
    metrics = spec.analysis.metrics or default_metrics(effective_risk(spec))
    return [resolve(m, templates) for m in metrics]


async def evaluate(
    spec: RolloutSpec,
    *,
    namespace: str,
    previous: list[MetricStatus] | None,
    provider: MetricProvider,
    templates: dict[str, MetricTemplateSpec],
    now: datetime,
    promoted: bool = False,
) -> Round:
    """Judge every metric once. After promotion the new version runs as the target, so the
    queries look at the stable label (where the new version's traffic now is)."""
    assert spec.analysis is not None
    versions = spec.analysis.versions or VersionLabels()
    judged_version = versions.stable if promoted else versions.canary
    variables = {
        "namespace": namespace, "target": spec.target_ref.name, "canary": versions.canary,
        "stable": versions.stable, "window": spec.analysis.interval,
    }  # fmt: skip
    metrics = definitions(spec, templates)

    async def ask(query: str, version: str) -> Sample:
        return await provider.sample(render(query, {**variables, "version": version}))

    needs_traffic = any(m.needs_traffic for m in metrics)
    compare = [m.compare_with_stable and not promoted for m in metrics]
    traffic_task = ask(TRAFFIC_QUERY, judged_version) if needs_traffic else _nothing()
    canary_tasks = [ask(m.query, judged_version) for m in metrics]
    stable_tasks = [
        ask(m.query, versions.stable) if c else _nothing() for m, c in zip(metrics, compare, strict=True)
    ]
    traffic, *samples = await asyncio.gather(traffic_task, *canary_tasks, *stable_tasks)
    canary_samples, stable_samples = samples[: len(metrics)], samples[len(metrics) :]

    requests = None
    if needs_traffic and traffic.error is None:
        requests = traffic.value or 0.0  # no series at all: nobody called it
    min_requests = (
        spec.analysis.min_requests if spec.analysis.min_requests is not None else DEFAULT_MIN_REQUESTS
    )
    before = {m.name: m for m in previous or []}
    results, events = [], []
    for metric, canary, stable, compared in zip(
        metrics, canary_samples, stable_samples, compare, strict=True
    ):
        status = judge(metric, canary, before.get(metric.name), now, stable=stable if compared else None,
                       requests=requests, min_requests=min_requests)  # fmt: skip
        old = before.get(metric.name)
        if old is None or old.verdict != status.verdict:
            bad = status.verdict in (Verdict.failed, Verdict.error, Verdict.inconclusive, Verdict.warning)
            events.append(Event(EventType.warning if bad else EventType.normal,
                                f"Metric{status.verdict.value if status.verdict else ''}", status.message or ""))  # fmt: skip
        results.append(status)
    telemetry.judged(namespace, results)
    return Round(results, events)


async def _nothing() -> Sample:
    return Sample()
