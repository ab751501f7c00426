"""MetricsAvailable: which metric has no series at all, the query as sent, what usually causes
it; and a release that does not start on metrics that never existed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from parachute import conditions
from parachute.analysis.availability import Availability, check, due, missing_reason, next_check_at
from parachute.analysis.provider import FixedProvider
from parachute.api import Condition, ConditionStatus, Phase, RolloutSpec, RolloutStatus
from parachute.plan.model import Observed
from parachute.plan.verdicts import Series
from parachute.plan.versions import Where
from tests.unit.world import T0, Story, World

SERVING = Where(pods="checkout-6d4cf56db6-[a-z0-9]{5}", workload="checkout")
SELECTOR = f'namespace="shop",pod=~"{SERVING.pods}"'
FOUND = Series.of(({}, 1.0))


def spec(**analysis: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"}, "risk": "medium",
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, **analysis},
    })  # fmt: skip


def checked(rollout: RolloutSpec, vectors: dict[str, Series], default: Series = FOUND) -> Availability:
    provider = FixedProvider(vectors=vectors, default_vector=default)
    return asyncio.run(check(rollout, "shop", provider, {}, SERVING))


def test_every_series_there_is_true() -> None:
    found = checked(spec(), {})
    assert found.status == ConditionStatus.true and found.missing == ()


def test_series_that_are_there_cost_one_query_per_metric_none_of_a_whole_namespace() -> None:
    provider = FixedProvider(default_vector=FOUND)
    rollout = spec(metrics=[{"template": "success-rate"}, {"template": "latency-p95"}])
    assert asyncio.run(check(rollout, "shop", provider, {}, SERVING)).status == ConditionStatus.true
    assert sorted(provider.queries) == [
        f"count(http_request_duration_seconds_bucket{{{SELECTOR}}})",
        f'count(http_requests_total{{{SELECTOR},code!=""}})',
    ]


def test_a_counter_nobody_scrapes_is_named_with_the_query_and_the_usual_cause() -> None:
    nothing = {
        'count(http_requests_total{namespace="shop"})': Series(),
        f"count(http_requests_total{{{SELECTOR}}})": Series(),
        f'count(http_requests_total{{{SELECTOR},code!=""}})': Series(),
    }
    found = checked(spec(metrics=[{"template": "error-rate"}]), nothing)
    assert found.status == ConditionStatus.false
    assert found.message == (
        'error-rate: no series of http_requests_total in namespace shop (query: count(http_requests_total{namespace="shop"})); '
        "usually Prometheus scrapes no pod there that exports http_requests_total: add a PodMonitor or ServiceMonitor "
        "(or a scrape job) for these pods, or name the app's request counter in spec.analysis.app.requests"
    )


def test_a_status_label_named_otherwise_is_named_with_the_one_the_series_carry() -> None:
    vectors = {
        f'count(http_requests_total{{{SELECTOR},code!=""}})': Series(),
        f"count by (code, status, status_code, response_code, http_status, http_code, statusCode) "
        f"(http_requests_total{{{SELECTOR}}})": Series.of(({"status": "200"}, 3.0), ({"status": "500"}, 1.0)),
    }
    found = checked(spec(metrics=[{"template": "success-rate"}]), vectors)
    (missing,) = found.missing
    assert missing.problem == "the pods' http_requests_total series have no code label"
    assert "set spec.analysis.app.statusLabel (they carry: status)" in missing.hint
    assert missing.query == f'count(http_requests_total{{{SELECTOR},code!=""}})'


def test_series_that_name_the_pod_in_another_label_are_told() -> None:
    vectors = {
        f"count(http_requests_total{{{SELECTOR}}})": Series(),
        f'count(http_requests_total{{{SELECTOR},code!=""}})': Series(),
        'count by (pod, pod_name, kubernetes_pod_name) (http_requests_total{namespace="shop"})': Series.of(
            ({"kubernetes_pod_name": "checkout-6d4cf56db6-x2v9q"}, 1.0)
        ),
    }
    (missing,) = checked(spec(metrics=[{"template": "error-rate"}]), vectors).missing
    assert "none whose pod label names one of the pods measured" in missing.problem
    assert (
        "set spec.analysis.labels.pod" in missing.hint and "(they carry: kubernetes_pod_name)" in missing.hint
    )


def test_a_query_of_ones_own_is_sent_as_a_round_sends_it_for_what_serves_now() -> None:
    query = 'sum(rate(payments_failed_total{namespace="{{namespace}}",pod=~"{{pods}}"}[{{window}}]))'
    sent = f"sum(rate(payments_failed_total{{{SELECTOR}}}[1m]))"
    found = checked(spec(metrics=[{"name": "payments", "query": query, "critical": "1"}]), {sent: Series()})
    (missing,) = found.missing
    assert (missing.metric, missing.query) == ("payments", sent)
    assert missing.problem == "the query returned no series at all"


def test_metrics_whose_empty_result_means_zero_are_not_asked() -> None:
    rollout = spec(metrics=[{"template": "security-alerts"}, {"template": "database-errors"},
                            {"name": "p", "query": "p", "critical": "1", "onNoData": "ignore"}])  # fmt: skip
    provider = FixedProvider(default_vector=Series())
    assert asyncio.run(check(rollout, "shop", provider, {}, SERVING)).status == ConditionStatus.true
    assert provider.queries == []


def test_a_check_prometheus_cannot_answer_is_unknown_and_holds_nothing() -> None:
    found = checked(
        spec(metrics=[{"template": "latency-p95"}]), {}, default=Series(error="Prometheus at x unreachable")
    )
    assert found.status == ConditionStatus.unknown and "unreachable" in found.message


def _status(state: ConditionStatus | None, generation: int = 1, checked_at: datetime = T0) -> RolloutStatus:
    found = [] if state is None else [Condition(type=conditions.METRICS_AVAILABLE, status=state, message="m",
                                                observed_generation=generation)]  # fmt: skip
    return RolloutStatus(conditions=found, metrics_checked_at=conditions.timestamp(checked_at))


@pytest.mark.parametrize(
    ("status", "now", "is_due"),
    [
        pytest.param(_status(None), T0, True, id="never-checked"),
        pytest.param(_status(ConditionStatus.true, generation=0), T0, True, id="the-spec-changed"),
        pytest.param(_status(ConditionStatus.true), T0 + timedelta(hours=1), False, id="true-stays-true"),
        pytest.param(_status(ConditionStatus.false), T0 + timedelta(seconds=5), False, id="false-just-checked"),
        pytest.param(_status(ConditionStatus.false), T0 + timedelta(seconds=10), True, id="false-checked-again"),
        pytest.param(_status(ConditionStatus.unknown), T0 + timedelta(seconds=10), True, id="unknown-checked-again"),
    ],
)  # fmt: skip
def test_checked_when_the_spec_changes_and_again_while_not_true(
    status: RolloutStatus, now: datetime, is_due: bool
) -> None:
    assert due(status, 1, now) is is_due


def _missing_since(
    since: datetime, checked_at: datetime, state: ConditionStatus = ConditionStatus.false
) -> RolloutStatus:
    status = _status(state, checked_at=checked_at)
    assert status.conditions is not None
    status.conditions[0].last_transition_time = conditions.timestamp(since)
    return status


@pytest.mark.parametrize(
    ("status", "now", "again"),
    [
        pytest.param(_status(ConditionStatus.true), T0, None, id="true-is-not-looked-at-again"),
        pytest.param(_status(None), T0, None, id="no-condition-the-next-reconcile-checks"),
        pytest.param(RolloutStatus(conditions=_status(ConditionStatus.false).conditions), T0, None,
                     id="not-checked-by-this-operator-the-next-reconcile-checks"),
        pytest.param(_missing_since(T0, T0), T0, T0 + timedelta(seconds=10), id="just-missing-ten-seconds"),
        pytest.param(_missing_since(T0, T0 + timedelta(minutes=1)), T0 + timedelta(minutes=1),
                     T0 + timedelta(minutes=2), id="missing-a-minute-a-minute-more"),
        pytest.param(_missing_since(T0, T0 + timedelta(hours=3)), T0 + timedelta(hours=3),
                     T0 + timedelta(hours=3, minutes=5), id="missing-for-hours-five-minutes"),
        pytest.param(_missing_since(T0, T0 + timedelta(minutes=1), ConditionStatus.unknown),
                     T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), id="unknown-like-false"),
        pytest.param(_missing_since(T0, T0), T0 + timedelta(hours=1), T0 + timedelta(hours=1, seconds=10),
                     id="a-check-that-could-not-run-is-not-asked-again-at-once"),
    ],
)  # fmt: skip
def test_a_rollout_at_rest_looks_again_for_missing_series_less_often_but_within_five_minutes(
    status: RolloutStatus, now: datetime, again: datetime | None
) -> None:
    # Nothing else wakes a Rollout at rest: without its own look the condition said "missing"
    # long after the series appeared, and the next release began by waiting for them.
    assert next_check_at(status, now) == again


def test_only_false_holds_a_release() -> None:
    assert missing_reason(_status(ConditionStatus.false)) == "m"
    assert missing_reason(_status(ConditionStatus.unknown)) == ""
    assert missing_reason(_status(ConditionStatus.true)) == ""


@dataclass
class Unmeasured(World):
    """A world whose metrics' series do not exist (until a story says they do)."""

    missing: str = ""

    def observe(self, now: datetime) -> Observed:
        return replace(super().observe(now), metrics_missing=self.missing)


def test_a_release_waits_for_metrics_that_never_existed_and_starts_once_they_do() -> None:
    story = Story(RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, "risk": "medium"}),
                  world=Unmeasured(missing="error-rate: no series of http_requests_total in namespace shop"))  # fmt: skip
    story.tick()  # adopted
    story.world.revision = "rev-2"
    decision = story.tick()
    assert story.status.phase == Phase.waiting
    assert story.status.message == (
        "revision rev-2 waits for its metrics (MetricsAvailable): error-rate: no series of http_requests_total "
        "in namespace shop"
    )
    assert decision.next_check_at == story.now + timedelta(seconds=10)
    story.world.missing = ""
    story.tick(timedelta(seconds=10))
    assert story.status.phase == Phase.progressing and story.status.stage == "1/3"
    assert "ReleaseWaiting" in story.reasons and story.reasons[-1] == "ReleaseStarted"
