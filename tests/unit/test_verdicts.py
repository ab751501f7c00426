"""Verdicts read as spec §3: four outcomes never conflated, NaN and empty results handled,
sustained means held at every evaluation, and "no data" never rolls back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from parachute.api import AnalysisLimits, Metric, MetricStatus, Verdict
from parachute.plan.metrics import (
    MetricSpecError,
    UnknownTemplateError,
    parse_threshold,
    render,
    resolve,
)
from parachute.plan.verdicts import NOT_HEALTHY, Sample, Traffic, health, judge

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
# The fixed lines alone (judge: threshold): the comparison judge has tests of its own.
ERROR_RATE = resolve(Metric(template="error-rate", judge="threshold"), {})
LATENCY = resolve(Metric(template="latency-p95"), {})
SUCCESS = resolve(Metric(template="success-rate", judge="threshold"), {})
SECURITY = resolve(Metric(template="security-alerts"), {})
DB = resolve(Metric(template="database-errors"), {})


@pytest.mark.parametrize(
    ("text", "unit", "value"),
    [
        pytest.param("0.5%", "ratio", 0.005, id="percent"),
        pytest.param("400ms", "seconds", 0.4, id="milliseconds"),
        pytest.param("1.5s", "seconds", 1.5, id="seconds"),
        pytest.param("10/min", "perMinute", 10, id="per-minute"),
        pytest.param("2/s", "perMinute", 120, id="per-second-as-per-minute"),
        pytest.param("0.1", "number", 0.1, id="bare"),
    ],
)
def test_thresholds_are_read_in_the_templates_unit(text: str, unit: str, value: float) -> None:
    assert parse_threshold(text, unit) == pytest.approx(value)


def test_the_builtins_carry_the_playbooks_numbers() -> None:
    assert (ERROR_RATE.warning, ERROR_RATE.critical, ERROR_RATE.rollback_at) == (0.002, 0.005, 0.05)
    assert (LATENCY.warning, LATENCY.critical, LATENCY.compare_with_stable) == (0.3, 0.5, True)
    assert (SUCCESS.warning, SUCCESS.critical) == (pytest.approx(0.998), pytest.approx(0.995))
    assert (DB.warning, DB.critical) == (10, 50)
    assert SECURITY.rollback_at == 0 and SECURITY.no_data_is_zero
    assert ERROR_RATE.sustain_for == timedelta(minutes=10)


def test_a_rollout_may_override_one_threshold() -> None:
    latency = resolve(Metric(template="latency-p95", critical="400ms"), {})
    assert (latency.warning, latency.critical) == (0.3, 0.4)


def test_an_unknown_template_is_named() -> None:
    with pytest.raises(UnknownTemplateError, match="no template named 'checkout-errors'"):
        resolve(Metric.model_validate({"templateRef": {"name": "checkout-errors"}}), {})


def test_queries_are_rendered_with_the_pods_of_the_version_they_are_sent_for() -> None:
    db = resolve(Metric(template="database-errors"), {})
    query = render(db.query, {"namespace": "shop", "pods": "checkout-canary-7d9f8-[a-z]{5}", "window": "1m"})
    assert (
        query == 'sum(rate(db_errors_total{namespace="shop",pod=~"checkout-canary-7d9f8-[a-z]{5}"}[1m])) * 60'
    )


def test_label_names_are_settings() -> None:
    from parachute.api import MetricLabels

    db = resolve(Metric(template="database-errors"), {}, MetricLabels(namespace="kubernetes_namespace",
                                                                      pod="kubernetes_pod_name"))  # fmt: skip
    assert 'kubernetes_namespace="{{namespace}}",kubernetes_pod_name=~"{{pods}}"' in db.query


@pytest.mark.parametrize(
    ("query", "says"),
    [
        pytest.param('sum(rate(x{version="{{canary}}"}[1m]))', 'select the judged version\'s pods with pod=~"{{pods}}"',
                     id="retired-canary"),
        pytest.param('sum(rate(x{version="{{version}}"}[1m]))', "{{version}} was a version label value",
                     id="retired-version"),
        pytest.param("sum(rate(x{app=\"{{app}}\"}[1m]))", "unknown placeholder {{app}}", id="unknown"),
        pytest.param('sum(rate(x{service="{{service}}"}[1m]))', "spec.trafficRouting names no router",
                     id="service-without-a-router"),
    ],
)  # fmt: skip
def test_a_placeholder_no_round_can_fill_is_refused_naming_the_field(query: str, says: str) -> None:
    with pytest.raises(MetricSpecError, match=r"spec\.analysis\.metrics\[0\]\.query") as refused:
        resolve(Metric(name="x", query=query, critical="1"), {}, field="spec.analysis.metrics[0]")
    assert says in str(refused.value)


def judged(metric, sample: Sample, previous=None, at=T0, **kw) -> MetricStatus:  # type: ignore[no-untyped-def]
    return judge(metric, sample, previous, at, **kw)


@pytest.mark.parametrize(
    ("metric", "sample", "verdict"),
    [
        pytest.param(ERROR_RATE, Sample.of(0.0001), Verdict.successful, id="error-rate-baseline"),
        pytest.param(ERROR_RATE, Sample.of(0.003), Verdict.warning, id="error-rate-warning-band-watch"),
        pytest.param(
            ERROR_RATE, Sample.of(0.008), Verdict.warning, id="error-rate-critical-not-yet-sustained"
        ),
        pytest.param(ERROR_RATE, Sample.of(0.06), Verdict.failed, id="error-rate-over-5-percent-at-once"),
        pytest.param(LATENCY, Sample.of(0.2), Verdict.successful, id="latency-fine"),
        pytest.param(LATENCY, Sample.of(0.35), Verdict.warning, id="latency-warning"),
        pytest.param(SUCCESS, Sample.of(0.9999), Verdict.successful, id="success-rate-fine"),
        pytest.param(SUCCESS, Sample.of(0.997), Verdict.warning, id="success-rate-below-warning"),
        pytest.param(SECURITY, Sample(), Verdict.successful, id="no-security-alert-firing"),
        pytest.param(SECURITY, Sample.of(1), Verdict.failed, id="any-security-alert-rolls-back"),
        pytest.param(DB, Sample(), Verdict.successful, id="no-db-error-series-is-zero"),
        pytest.param(ERROR_RATE, Sample(), Verdict.inconclusive, id="empty-result-inconclusive"),
        pytest.param(ERROR_RATE, Sample.of(float("nan")), Verdict.inconclusive, id="nan-inconclusive"),
        pytest.param(ERROR_RATE, Sample.of(float("inf")), Verdict.inconclusive, id="inf-inconclusive"),
        pytest.param(
            ERROR_RATE, Sample(error="connection refused"), Verdict.error, id="prometheus-down-error"
        ),
    ],
)
def test_one_evaluation(metric, sample: Sample, verdict: Verdict) -> None:  # type: ignore[no-untyped-def]
    assert judged(metric, sample).verdict == verdict


def test_no_traffic_is_inconclusive_and_says_so() -> None:
    status = judged(ERROR_RATE, Sample.of(0.0), requests=3, min_requests=10)
    assert status.verdict == Verdict.inconclusive
    assert "too little traffic to judge (3 requests in the window, fewer than 10)" in status.message


def test_nan_never_reaches_a_comparison() -> None:
    status = judged(ERROR_RATE, Sample.of(float("nan")))
    assert status.value is None


def test_critical_must_hold_at_every_evaluation_for_sustain_for() -> None:
    first = judged(ERROR_RATE, Sample.of(0.008), at=T0)
    assert first.verdict == Verdict.warning and first.breached_since == "2026-11-24T10:00:00Z"
    almost = judged(ERROR_RATE, Sample.of(0.008), first, at=T0 + timedelta(minutes=9, seconds=59))
    assert almost.verdict == Verdict.warning
    held = judged(ERROR_RATE, Sample.of(0.008), almost, at=T0 + timedelta(minutes=10))
    assert held.verdict == Verdict.failed


def test_one_good_evaluation_breaks_the_sustained_window() -> None:
    first = judged(ERROR_RATE, Sample.of(0.008), at=T0)
    dip = judged(ERROR_RATE, Sample.of(0.001), first, at=T0 + timedelta(minutes=5))
    assert dip.breached_since is None
    again = judged(ERROR_RATE, Sample.of(0.008), dip, at=T0 + timedelta(minutes=11))
    assert again.verdict == Verdict.warning  # the clock started over


def test_latency_is_compared_with_stable_within_ten_percent() -> None:
    assert judged(LATENCY, Sample.of(0.120), stable=Sample.of(0.100)).verdict == Verdict.warning
    assert judged(LATENCY, Sample.of(0.105), stable=Sample.of(0.100)).verdict == Verdict.successful
    assert judged(LATENCY, Sample.of(0.120), stable=Sample()).verdict == Verdict.successful  # no baseline


def test_past_the_tolerance_over_stable_is_critical_and_fails_once_sustained() -> None:
    first = judged(LATENCY, Sample.of(0.130), stable=Sample.of(0.100), at=T0)
    assert first.verdict == Verdict.warning and first.breached_since == "2026-11-24T10:00:00Z"
    assert first.message == "latency-p95 130ms 30% above stable's 100ms (tolerance 10%), for 0s so far"
    later = T0 + timedelta(minutes=4, seconds=10)
    held = judged(LATENCY, Sample.of(0.130), first, at=later, stable=Sample.of(0.100))
    assert held.verdict == Verdict.warning and held.message.endswith("for 4m10s so far")
    failed = judged(LATENCY, Sample.of(0.130), held, at=T0 + timedelta(minutes=10), stable=Sample.of(0.100))
    assert failed.verdict == Verdict.failed
    assert failed.message == "latency-p95 130ms 30% above stable's 100ms (tolerance 10%), for 10m"
    assert not failed.immediate  # sustained, not an immediate trigger


def test_back_within_the_tolerance_starts_the_sustained_window_over() -> None:
    first = judged(LATENCY, Sample.of(0.130), stable=Sample.of(0.100), at=T0)
    back = judged(LATENCY, Sample.of(0.105), first, at=T0 + timedelta(minutes=5), stable=Sample.of(0.100))
    assert back.verdict == Verdict.successful and back.breached_since is None
    assert back.message == "latency-p95 105ms (stable 100ms)"


@pytest.mark.parametrize(
    ("canary", "stable", "verdict", "says"),
    [
        pytest.param(0.600, 0.100, Verdict.warning, "above critical 500ms; 500% above stable's 100ms",
                     id="past-both-names-both"),
        pytest.param(0.600, 0.590, Verdict.warning, "above critical 500ms, for",
                     id="absolute-critical-even-close-to-stable"),
        pytest.param(0.350, 0.340, Verdict.warning, "above warning 300ms: watching (stable 340ms)",
                     id="warning-band-close-to-stable"),
        pytest.param(0.350, 0.100, Verdict.warning, "250% above stable's 100ms (tolerance 10%), for",
                     id="warning-band-far-from-stable-is-critical"),
        pytest.param(0.090, 0.100, Verdict.successful, "latency-p95 90ms (stable 100ms)", id="faster-than-stable"),
    ],
)  # fmt: skip
def test_the_comparison_with_stable_and_the_absolute_thresholds_together(
    canary: float, stable: float, verdict: Verdict, says: str
) -> None:
    status = judged(LATENCY, Sample.of(canary), stable=Sample.of(stable))
    assert status.verdict == verdict and says in status.message


def test_a_comparison_below_stable_for_metrics_where_lower_is_worse() -> None:
    success = resolve(
        Metric(template="success-rate", compareWithStable=True, tolerance="1%", critical="50%"), {}
    )
    status = judged(success, Sample.of(0.97), stable=Sample.of(0.999))
    assert status.verdict == Verdict.warning and "3% below stable's 99.9% (tolerance 1%)" in status.message


@pytest.mark.parametrize(
    ("stable", "note"),
    [
        pytest.param(Sample(), "(stable has no data: absolute thresholds only)", id="no-data"),
        pytest.param(Sample(error="timeout"), "(stable not measured: timeout; absolute thresholds only)",
                     id="not-measured"),
        pytest.param(Sample.of(0.0), "(stable measures 0: absolute thresholds only)", id="zero"),
    ],
)  # fmt: skip
def test_without_a_stable_value_only_the_absolute_thresholds_judge_and_the_message_says_so(
    stable: Sample, note: str
) -> None:
    fine = judged(LATENCY, Sample.of(0.200), stable=stable)
    assert fine.verdict == Verdict.successful and fine.message == f"latency-p95 200ms {note}"
    critical = judged(LATENCY, Sample.of(0.600), stable=stable)
    assert critical.verdict == Verdict.warning and critical.message.endswith(note)


def test_a_metric_not_compared_this_round_says_nothing_about_stable() -> None:
    # After promotion the new version is stable: there is nothing to compare with, and no note.
    assert judged(LATENCY, Sample.of(0.200), stable=None).message == "latency-p95 200ms"


def test_durations_in_messages_are_read_as_people_read_them() -> None:
    first = judged(ERROR_RATE, Sample.of(0.008), at=T0)
    again = judged(ERROR_RATE, Sample.of(0.008), first, at=T0 + timedelta(seconds=0.00471))
    assert again.message == "error-rate 0.8% above critical 0.5%, for 0s so far"
    hours = judged(ERROR_RATE, Sample.of(0.008), first, at=T0 + timedelta(hours=2, seconds=5.4))
    assert hours.message == "error-rate 0.8% above critical 0.5%, for 2h5s"


def test_counts_are_kept_per_outcome_and_errors_in_a_row() -> None:
    status = None
    for sample in (Sample.of(0.0), Sample(error="timeout"), Sample(error="timeout"), Sample()):
        status = judged(ERROR_RATE, sample, status)
    assert status is not None
    assert (status.successful, status.errors, status.inconclusive, status.failed) == (1, 2, 1, 0)
    assert status.consecutive_errors == 0 and status.consecutive_inconclusive == 1


LIMITS = AnalysisLimits()


def test_a_failed_metric_fails_the_stage() -> None:
    result = health([judged(ERROR_RATE, Sample.of(0.06))], LIMITS, T0)
    assert result.failed and "roll back at once" in result.reason


def test_errors_in_a_row_hold_the_release_and_never_fail_it() -> None:
    status = None
    for _ in range(4):
        status = judged(ERROR_RATE, Sample(error="connection refused"), status)
    result = health([status], LIMITS, T0)  # type: ignore[list-item]
    assert not result.failed
    assert "connection refused" in result.hold_reason and "4 times in a row" in result.hold_reason


def test_too_many_inconclusive_in_a_row_hold_and_data_returning_releases_the_hold() -> None:
    status = None
    for _ in range(4):
        status = judged(ERROR_RATE, Sample(), status)
    assert "no data" in health([status], LIMITS, T0).hold_reason  # type: ignore[list-item]
    status = judged(ERROR_RATE, Sample.of(0.0), status)
    assert health([status], LIMITS, T0).hold_reason == ""


def test_healthy_since_is_the_latest_start_of_an_unbroken_run_of_successes() -> None:
    a = judged(ERROR_RATE, Sample.of(0.0), at=T0)
    b = judged(LATENCY, Sample.of(0.1), at=T0 + timedelta(minutes=1))
    assert health([a, b], LIMITS, T0).healthy_since == T0 + timedelta(minutes=1)
    warned = judged(LATENCY, Sample.of(0.35), b, at=T0 + timedelta(minutes=2))
    assert health([a, warned], LIMITS, T0).healthy_since == NOT_HEALTHY


def test_a_stage_is_fresh_only_when_every_metric_was_evaluated_during_it() -> None:
    old = judged(ERROR_RATE, Sample.of(0.0), at=T0)
    assert not health([old], LIMITS, T0 + timedelta(minutes=1)).fresh
    assert health([old], LIMITS, T0).fresh


def test_a_metric_healthy_since_the_stages_first_round_was_healthy_all_stage() -> None:
    first_round = judged(ERROR_RATE, Sample.of(0.0), at=T0 + timedelta(seconds=20))
    assert health([first_round], LIMITS, T0, grace=timedelta(seconds=30)).healthy_since == T0
    assert health([first_round], LIMITS, T0).healthy_since == T0 + timedelta(seconds=20)


def test_a_reached_stage_s_grace_counts_from_its_reach_and_its_freshness_from_its_start() -> None:
    reached, grace = T0 + timedelta(seconds=45), timedelta(seconds=30)
    after_reach = judged(ERROR_RATE, Sample.of(0.0), at=T0 + timedelta(seconds=70))  # slow pods, then a round
    summary = health([after_reach], LIMITS, T0, grace=grace, reached=reached)
    assert summary.healthy_since == reached and summary.fresh
    before_reach = judged(ERROR_RATE, Sample.of(0.0), at=T0 + timedelta(seconds=5))  # the round at the start
    assert health([before_reach], LIMITS, T0, grace=grace, reached=reached).fresh


PAYMENTS = resolve(
    Metric(name="payment-failures", query="sum(rate(payments_failed_total[1m]))", critical="1"), {}
)


@pytest.mark.parametrize(
    ("traffic", "verdict", "says"),
    [
        pytest.param(Traffic(requests=3), Verdict.inconclusive, "too little traffic to judge (3 requests in the window",
                     id="too-little-traffic"),
        pytest.param(Traffic(requests=0), Verdict.inconclusive, "no traffic to judge (0 requests in the window",
                     id="no-traffic"),
        pytest.param(Traffic(requests=1400), Verdict.inconclusive,
                     "no data while the version served 1400 requests in the window", id="no-data-with-traffic"),
        pytest.param(Traffic(unknown_because="traffic unknown: http_requests_total has no series for these pods"),
                     Verdict.inconclusive, "no data (traffic unknown: http_requests_total has no series",
                     id="traffic-unknown"),
    ],
)  # fmt: skip
def test_a_metric_of_ones_own_tells_no_data_from_no_traffic(
    traffic: Traffic, verdict: Verdict, says: str
) -> None:
    status = judged(PAYMENTS, Sample(), traffic=traffic, min_requests=10)
    assert status.verdict == verdict and says in status.message


def test_a_metric_of_ones_own_with_data_is_judged_however_little_the_traffic() -> None:
    assert judged(PAYMENTS, Sample.of(0.2), traffic=Traffic(requests=3), min_requests=10).verdict == (
        Verdict.successful
    )


@pytest.mark.parametrize(
    ("on_no_data", "verdict"),
    [
        pytest.param("hold", Verdict.inconclusive, id="hold-by-default-never-a-pass-never-a-rollback"),
        pytest.param("fail", Verdict.failed, id="fail-for-teams-that-treat-missing-data-as-failure"),
        pytest.param("ignore", Verdict.successful, id="ignore"),
    ],
)
def test_on_no_data_says_what_no_data_means(on_no_data: str, verdict: Verdict) -> None:
    metric = resolve(Metric(name="p", query="sum(rate(p[1m]))", critical="1", onNoData=on_no_data), {})
    status = judged(metric, Sample(), traffic=Traffic(requests=500), min_requests=10)
    assert status.verdict == verdict
    # ... but too little traffic is Inconclusive whatever onNoData says.
    assert (
        judged(metric, Sample(), traffic=Traffic(requests=2), min_requests=10).verdict == Verdict.inconclusive
    )


def test_the_default_for_no_data_is_hold_and_templates_may_say_otherwise() -> None:
    from parachute.api import MetricTemplateSpec

    template = MetricTemplateSpec(query="sum(rate(p[1m]))", critical="1", onNoData="fail")
    ref = Metric.model_validate({"templateRef": {"name": "p"}})
    assert resolve(ref, {"MetricTemplate/p": template}).on_no_data == "fail"
    assert resolve(Metric(name="q", query="q", critical="1"), {}).on_no_data == "hold"
