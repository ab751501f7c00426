"""One round of analysis against a table of answers: what is asked, how often, and what is said."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from parachute.analysis.evaluate import evaluate
from parachute.analysis.provider import FixedProvider
from parachute.api import RolloutSpec, Verdict
from parachute.plan.verdicts import Sample

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def spec(**analysis: object) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"}, "risk": "medium",
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "interval": "30s", **analysis},
    })  # fmt: skip


def run(rollout: RolloutSpec, provider: FixedProvider, previous=None, promoted: bool = False):  # type: ignore[no-untyped-def]
    return asyncio.run(evaluate(rollout, namespace="shop", previous=previous, provider=provider, templates={},
                                now=T0, promoted=promoted))  # fmt: skip


def test_medium_risk_watches_three_builtins_with_one_query_each_plus_traffic_and_a_baseline() -> None:
    provider = FixedProvider(default=Sample.of(0.0))
    round_ = run(spec(), provider)
    assert [m.name for m in round_.metrics] == ["error-rate", "latency-p95", "success-rate"]
    # 3 metrics for the canary, 1 stable baseline (latency), 1 traffic query.
    assert len(provider.queries) == 5
    assert all('namespace="shop",app="checkout"' in q for q in provider.queries)
    assert sum('version="stable"' in q for q in provider.queries) == 1
    assert all("[30s]" in q for q in provider.queries)


def test_no_traffic_makes_request_metrics_inconclusive() -> None:
    round_ = run(spec(), FixedProvider(default=Sample()))
    assert {m.verdict for m in round_.metrics} == {Verdict.inconclusive}
    assert "no traffic" in round_.metrics[0].message


def test_a_verdict_change_is_an_event_and_the_same_verdict_is_not() -> None:
    provider = FixedProvider(default=Sample.of(0.0))
    provider.default = Sample.of(100.0)  # traffic and values: 100 requests, a "100" everywhere
    first = run(spec(metrics=[{"template": "error-rate"}]), provider)
    assert [e.reason for e in first.events] == ["MetricFailed"]
    again = run(spec(metrics=[{"template": "error-rate"}]), provider, previous=first.metrics)
    assert again.events == []


def test_after_promotion_the_new_version_is_judged_where_its_traffic_is() -> None:
    provider = FixedProvider(default=Sample.of(50.0))
    run(spec(metrics=[{"template": "error-rate"}]), provider, promoted=True)
    assert all('version="stable"' in q for q in provider.queries)


def test_a_bad_query_is_an_error_naming_the_metric() -> None:
    query = "sum(rate(payments_failed_total[{{window}}]"
    provider = FixedProvider(
        answers={}, default=Sample(error="bad query: 1:44: parse error: unclosed left parenthesis")
    )
    round_ = run(spec(metrics=[{"name": "payment-failures", "query": query, "critical": "1"}]), provider)
    status = round_.metrics[0]
    assert status.verdict == Verdict.error
    assert status.message.startswith("payment-failures: bad query: ") and "parse error" in status.message


def test_prometheus_own_words_are_kept_for_a_bad_query() -> None:
    from parachute.analysis.prometheus import _api_error

    content = b'{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": 1:44: parse error"}'
    assert (
        _api_error(f"HTTP Status Code 400 ({content!r})")
        == 'bad query: invalid parameter "query": 1:44: parse error'
    )
