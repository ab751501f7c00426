"""One round of analysis against a table of answers: what is asked, how often, and what is said."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from parachute.analysis.evaluate import Round, evaluate
from parachute.analysis.provider import FixedProvider
from parachute.api import MetricStatus, RolloutSpec, Verdict
from parachute.plan.verdicts import Sample, Series
from parachute.plan.versions import Versions, Where

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CANARY = Where(pods="checkout-canary-5f7b8c9d4b-[a-z0-9]{5}", workload="checkout-canary")
STABLE = Where(pods="checkout-6d4cf56db6-[a-z0-9]{5}", workload="checkout")
RELEASE = Versions(judged=CANARY, stable=STABLE)


def spec(**analysis: object) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"}, "risk": "medium",
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "interval": "30s", **analysis},
    })  # fmt: skip


def run(
    rollout: RolloutSpec,
    provider: FixedProvider,
    previous: list[MetricStatus] | None = None,
    versions: Versions = RELEASE,
    since: datetime | None = None,
) -> Round:
    return asyncio.run(evaluate(rollout, namespace="shop", previous=previous, provider=provider, templates={},
                                now=T0, versions=versions, since=since))  # fmt: skip


def codes(ok: float, failed: float = 0.0, label: str = "code") -> Series:
    """What a count by status code returns: a series per code (none for a code never served)."""
    series = [({label: "200"}, ok)]
    if failed:
        series.append(({label: "500"}, failed))
    return Series.of(*series)


class ByPods(FixedProvider):
    """Answers every count with `canary`'s or `stable`'s codes, by the pods the query names."""

    def __init__(self, canary: Series, stable: Series, latency: float = 0.05, **kw: Any) -> None:
        super().__init__(default=Sample.of(latency), **kw)
        self.canary, self.stable = canary, stable

    async def vector(self, query: str) -> Series:
        self.queries.append(query)
        return self.canary if CANARY.pods in query else self.stable


def test_medium_risk_asks_one_count_and_one_latency_per_version() -> None:
    provider = ByPods(codes(400), codes(3600))
    round_ = run(spec(), provider)
    assert [m.name for m in round_.metrics] == ["error-rate", "latency-p95", "success-rate"]
    # Per version: the requests counted by code (error-rate, success-rate and the traffic check
    # share it) and the latency quantile.
    assert round_.queries == len(provider.queries) == 4
    assert sum(CANARY.pods in q for q in provider.queries) == 2
    assert sum(STABLE.pods in q for q in provider.queries) == 2
    assert all('namespace="shop"' in q and "version" not in q for q in provider.queries)
    assert "sum by (code) (increase(http_requests_total{" in provider.queries[0]


def test_while_a_stage_runs_the_rates_count_the_stage_so_far() -> None:
    provider = ByPods(codes(400), codes(3600))
    round_ = run(spec(), provider, since=T0 - timedelta(minutes=5))
    # The stage's counts (5m) for the comparison, the last interval (30s) for latency's traffic.
    assert round_.queries == 5
    assert sum("[5m]" in q for q in provider.queries) == 2 and any("[30s]" in q for q in provider.queries)
    error_rate = round_.metrics[0]
    assert error_rate.comparison is not None and error_rate.comparison.window == "5m"


def test_a_missing_error_series_is_zero_errors_when_requests_exist() -> None:
    # A healthy app has never answered 500: the count has no series for it at all.
    round_ = run(spec(), ByPods(codes(1400), codes(14000)))
    error_rate, _, success_rate = round_.metrics
    assert error_rate.verdict == Verdict.successful and error_rate.value == 0.0
    assert success_rate.verdict == Verdict.successful and success_rate.value == 1.0
    assert error_rate.comparison is not None and error_rate.comparison.requests == 1400


def test_the_status_code_label_is_a_setting() -> None:
    provider = ByPods(codes(1400, 70, label="status"), codes(14000, 0, label="status"))
    round_ = run(spec(app={"statusLabel": "status"}), provider)
    assert "sum by (status)" in provider.queries[0]
    assert round_.metrics[0].verdict == Verdict.warning  # 5%, worse than stable: critical, not yet sustained
    assert round_.metrics[0].comparison is not None and round_.metrics[0].comparison.errors == 70


def test_status_shows_the_counts_the_rates_and_the_confidence() -> None:
    round_ = run(spec(metrics=[{"template": "error-rate"}]), ByPods(codes(394, 6), codes(3564, 36)))
    status = round_.metrics[0]
    assert status.verdict == Verdict.inconclusive
    assert status.value == pytest.approx(0.015) and status.stable_value == pytest.approx(0.01)
    assert status.comparison is not None
    assert (status.comparison.requests, status.comparison.errors) == (400, 6)
    assert (status.comparison.stable_requests, status.comparison.stable_errors) == (3600, 36)
    assert status.comparison.confidence is not None and 0.5 < status.comparison.confidence < 0.95
    assert status.message == (
        "error-rate 1.5% (6 of 400) vs stable 1% (36 of 3600): cannot tell yet, worse with 76.1% "
        "confidence, 95% needed over 30s"
    )


def test_no_traffic_makes_request_metrics_inconclusive() -> None:
    round_ = run(spec(), ByPods(codes(0), codes(0)))
    assert {m.verdict for m in round_.metrics} == {Verdict.inconclusive}
    assert "no traffic" in (round_.metrics[0].message or "")


def test_no_request_series_at_all_is_no_data_and_says_why() -> None:
    round_ = run(spec(metrics=[{"template": "error-rate"}]), ByPods(Series(), Series()))
    status = round_.metrics[0]
    assert status.verdict == Verdict.inconclusive
    assert "http_requests_total has no series for these pods" in (status.message or "")


def test_a_canary_without_request_series_while_stable_has_them_has_served_nothing() -> None:
    # A labelled counter appears with its first request: the canary's pods have simply had none.
    round_ = run(spec(), ByPods(Series(), codes(3600)))
    assert {m.verdict for m in round_.metrics} == {Verdict.inconclusive}
    assert all("no traffic to judge (0 requests" in (m.message or "") for m in round_.metrics)


def test_after_promotion_the_new_version_is_judged_where_its_traffic_is_and_stable_is_not_asked() -> None:
    serving = Where(pods="checkout-7b9f5c8d4-[a-z0-9]{5}", workload="checkout")
    provider = ByPods(codes(0), codes(2000))
    round_ = run(spec(), provider, versions=Versions(judged=serving, stable=STABLE, judges_target=True))
    assert all(serving.pods in q for q in provider.queries)
    assert round_.metrics[0].comparison is not None and round_.metrics[0].comparison.stable_requests is None


def test_a_query_of_ones_own_uses_the_same_placeholders_for_each_version() -> None:
    query = 'sum(rate(payments_failed_total{namespace="{{namespace}}",pod=~"{{pods}}"}[{{window}}]))'
    provider = ByPods(codes(400), codes(3600), latency=0.0)
    run(
        spec(metrics=[{"name": "payments", "query": query, "critical": "1", "compareWithStable": True}]),
        provider,
    )
    assert provider.queries == [
        f'sum(rate(payments_failed_total{{namespace="shop",pod=~"{CANARY.pods}"}}[30s]))',
        f'sum(rate(payments_failed_total{{namespace="shop",pod=~"{STABLE.pods}"}}[30s]))',
    ]


def test_a_query_of_ones_own_with_no_data_asks_whether_there_was_traffic() -> None:
    provider = ByPods(codes(1400), codes(3600), latency=float("nan"))
    provider.default = Sample()
    round_ = run(spec(metrics=[{"name": "payments", "query": "sum(rate(p[{{window}}]))", "critical": "1"}]),
                 provider)  # fmt: skip
    assert len(provider.queries) == 2  # the query, then the count of requests
    assert "no data while the version served 1400 requests" in (round_.metrics[0].message or "")


def test_a_verdict_change_is_an_event_and_the_same_verdict_is_not() -> None:
    provider = ByPods(codes(3600, 400), codes(36000, 36))
    first = run(spec(metrics=[{"template": "error-rate"}]), provider)
    assert [e.reason for e in first.events] == ["MetricFailed"]
    again = run(spec(metrics=[{"template": "error-rate"}]), provider, previous=first.metrics)
    assert again.events == []


def test_a_bad_query_is_an_error_naming_the_metric() -> None:
    query = "sum(rate(payments_failed_total[{{window}}]"
    provider = FixedProvider(
        answers={}, default=Sample(error="bad query: 1:44: parse error: unclosed left parenthesis")
    )
    round_ = run(spec(metrics=[{"name": "payment-failures", "query": query, "critical": "1"}]), provider)
    status = round_.metrics[0]
    assert status.verdict == Verdict.error
    assert (status.message or "").startswith("payment-failures: bad query: ") and "parse error" in (
        status.message or ""
    )


def test_prometheus_own_words_are_kept_for_a_bad_query() -> None:
    from parachute.analysis.prometheus import _api_error

    content = b'{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": 1:44: parse error"}'
    assert (
        _api_error(f"HTTP Status Code 400 ({content!r})")
        == 'bad query: invalid parameter "query": 1:44: parse error'
    )
