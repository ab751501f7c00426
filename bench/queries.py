"""PromQL queries per Rollout per analysis interval, counted by sending one round of each case
to a provider that answers from a table (no Prometheus needed): how many queries the built-ins
and a query of one's own cost, against the target of one per metric per version."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from parachute.analysis.evaluate import evaluate
from parachute.analysis.provider import FixedProvider
from parachute.api import RolloutSpec
from parachute.plan.verdicts import Sample, Series
from parachute.plan.versions import Versions, Where, pod_pattern

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)
CANARY = Where(pod_pattern(["checkout-canary-5f7b8c9d4b"]), "checkout-canary")
STABLE = Where(pod_pattern(["checkout-6d4cf56db6"]), "checkout")
OWN = {
    "name": "payments",
    "query": 'sum(rate(payments_failed_total{pod=~"{{pods}}"}[{{window}}]))',
    "critical": "1",
}


def _spec(risk: str, metrics: list[dict[str, Any]] | None = None) -> RolloutSpec:
    analysis: dict[str, Any] = {"prometheus": {"address": "http://prometheus:9090"}, "interval": "1m"}
    if metrics is not None:
        analysis["metrics"] = metrics
    return RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, "risk": risk, "analysis": analysis})


def _round(spec: RolloutSpec, versions: Versions, since: datetime | None, answer: Sample) -> tuple[int, int]:
    traffic = Series.of(({"code": "200"}, 1000.0), ({"code": "500"}, 2.0))
    provider = FixedProvider(default=answer, default_vector=traffic)
    result = asyncio.run(evaluate(spec, namespace="shop", previous=None, provider=provider, templates={},
                                  now=NOW, versions=versions, since=since))  # fmt: skip
    return len(provider.queries), len(result.metrics)


def bench_queries(figure: Callable[..., None]) -> None:
    release, promoted = Versions(CANARY, STABLE), Versions(STABLE, STABLE, judges_target=True)
    stage, data, nothing = NOW - timedelta(minutes=30), Sample.of(0.02), Sample()
    cases = [
        ("medium risk, first look of a stage", _spec("medium"), release, None, data),
        ("medium risk, 30 min into a stage", _spec("medium"), release, stage, data),
        ("medium risk, 100% once the target rolled", _spec("medium"), promoted, None, data),
        ("high risk, 30 min into a stage", _spec("high"), release, stage, data),
        ("a query of one's own, with data", _spec("medium", [OWN]), release, stage, data),
        ("a query of one's own, no data", _spec("medium", [OWN]), release, stage, nothing),
    ]
    for name, spec, versions, since, answer in cases:
        queries, metrics = _round(spec, versions, since, answer)
        most = metrics * (1 if versions.judges_target else 2)
        figure(f"queries per interval: {name}", f"{queries}",
               f"{metrics} metrics; one per metric per version would be {most}")  # fmt: skip
    figure("queries across Rollouts sharing a template", "not batched",
           "each Rollout's round sends its own: their pods differ")  # fmt: skip
