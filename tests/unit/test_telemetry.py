"""The operator's own metrics count what happened once each: a stage entered, a rollback level
entered, a verdict, a PromQL query by outcome, an API request by code, a pause of the garbage collector; Rollouts
by phase come from the leader alone; and a replica that does not lead writes nothing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from parachute import kube, telemetry
from parachute.api import MetricStatus, RolloutStatus, Verdict
from parachute.plan.verdicts import Sample, Series
from parachute.scheduler import Scheduler, Woken


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def status(**fields: object) -> RolloutStatus:
    return RolloutStatus.model_validate(fields)


PLAN = [{"name": "canary", "weight": 10}, {"name": "partial", "weight": 50}, {"name": "full", "weight": 100}]


def test_a_stage_is_counted_once_when_entered_and_not_on_every_reconcile_in_it() -> None:
    labels = {"namespace": "t-stages", "rollout": "checkout", "stage": "partial"}
    before = value("parachute_stage_transitions_total", **labels)
    old = {"stageIndex": 0, "release": {"revision": "r2"}, "plan": PLAN}
    entered = status(stageIndex=1, release={"revision": "r2"}, plan=PLAN)
    telemetry.decided("t-stages", "checkout", old, entered)
    telemetry.decided("t-stages", "checkout", {**old, "stageIndex": 1}, entered)  # same stage again
    assert value("parachute_stage_transitions_total", **labels) == before + 1


def test_a_new_release_entering_its_first_stage_is_a_transition() -> None:
    labels = {"namespace": "t-first", "rollout": "checkout", "stage": "canary"}
    old = {"stageIndex": 2, "release": {"revision": "r2"}, "plan": PLAN}
    telemetry.decided("t-first", "checkout", old, status(stageIndex=0, release={"revision": "r3"}, plan=PLAN))
    assert value("parachute_stage_transitions_total", **labels) == 1


def test_each_rollback_level_entered_is_counted_once() -> None:
    def incident(*levels: str) -> dict[str, object]:
        records = [{"level": level, "startedAt": f"2026-12-03T08:0{i}:00Z"} for i, level in enumerate(levels)]
        return {"id": "i1", "reason": "error rate", "startedAt": "2026-12-03T08:00:00Z", "levels": records}

    flag, config = (value("parachute_rollback_levels_total", namespace="t-levels", level=lv)
                    for lv in ("flag", "config"))  # fmt: skip
    telemetry.decided("t-levels", "checkout", {}, status(incidents=[incident("flag")]))
    telemetry.decided("t-levels", "checkout", {"incidents": [incident("flag")]},
                      status(incidents=[incident("flag", "config")]))  # fmt: skip
    telemetry.decided("t-levels", "checkout", {"incidents": [incident("flag", "config")]},
                      status(incidents=[incident("flag", "config")]))  # fmt: skip
    assert value("parachute_rollback_levels_total", namespace="t-levels", level="flag") == flag + 1
    assert value("parachute_rollback_levels_total", namespace="t-levels", level="config") == config + 1


def test_verdicts_are_counted_by_metric_and_outcome() -> None:
    telemetry.judged("t-verdicts", [MetricStatus(name="error-rate", verdict=Verdict.failed),
                                    MetricStatus(name="latency-p95", verdict=Verdict.successful)])  # fmt: skip
    assert (
        value("parachute_verdicts_total", namespace="t-verdicts", metric="error-rate", verdict="Failed") == 1
    )
    assert (
        value("parachute_verdicts_total", namespace="t-verdicts", metric="latency-p95", verdict="Successful")
        == 1
    )


@pytest.mark.parametrize(
    ("sample", "outcome"),
    [
        (Sample(value=0.01), "ok"),
        (Sample(), "no_data"),
        (Sample(error="Prometheus unreachable"), "error"),
        (Series.of(({"pod": "checkout-1"}, 3.0)), "ok"),
        (Series(), "no_data"),
        (Series(error="Prometheus unreachable"), "error"),
    ],
    ids=["value", "no-data", "error", "series", "no-series", "series-error"],
)
def test_a_promql_query_is_counted_by_outcome_and_timed(sample: Sample | Series, outcome: str) -> None:
    before = value("parachute_promql_queries_total", outcome=outcome)
    timed = value("parachute_promql_query_duration_seconds_count")

    async def answer() -> Sample | Series:
        return sample

    assert asyncio.run(telemetry.query(answer())) is sample
    assert value("parachute_promql_queries_total", outcome=outcome) == before + 1
    assert value("parachute_promql_query_duration_seconds_count") == timed + 1


def test_rollouts_by_phase_are_reported_by_the_leader_only() -> None:
    leading = [True]
    telemetry.leadership(lambda: leading[0])
    try:
        telemetry.observed("t-phases", "a", "Progressing")
        telemetry.observed("t-phases", "b", "Progressing")
        telemetry.observed("t-phases", "c", None)
        assert value("parachute_rollouts", namespace="t-phases", phase="Progressing") == 2
        assert value("parachute_rollouts", namespace="t-phases", phase="Pending") == 1
        assert value("parachute_leader") == 1
        leading[0] = False
        assert (
            REGISTRY.get_sample_value("parachute_rollouts", {"namespace": "t-phases", "phase": "Progressing"})
            is None
        )
        assert value("parachute_leader") == 0
        leading[0] = True
        telemetry.gone("t-phases", "a")
        assert value("parachute_rollouts", namespace="t-phases", phase="Progressing") == 1
    finally:
        telemetry.leadership(lambda: True)
        for name in "abc":
            telemetry.gone("t-phases", name)


@pytest.fixture
def unreachable() -> Iterator[client.ApiClient]:
    """A client of the operator's kind, for an API server that is not there."""
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # the discard port: nothing listens
    configuration.retries = 0
    yield kube._Client(configuration)
    kube.fence(None)


def test_a_replica_that_does_not_lead_refuses_every_write_before_sending_it(
    unreachable: client.ApiClient,
) -> None:
    kube.fence(lambda: False)
    refused = value("parachute_api_requests_total", method="PATCH", code="error", resource="deployments")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        with pytest.raises(kube.NotLeadingError):
            unreachable.request(
                method, "http://127.0.0.1:9/apis/apps/v1/namespaces/shop/deployments/checkout"
            )
    assert (
        value("parachute_api_requests_total", method="PATCH", code="error", resource="deployments") == refused
    )  # never sent
    # Reads go on (a standby watches and reads), and so do the Lease's writes.
    with pytest.raises(Exception) as read:
        unreachable.request("GET", "http://127.0.0.1:9/api/v1/namespaces")
    assert not isinstance(read.value, kube.NotLeadingError)
    lease = kube._LeaseClient(unreachable.configuration)
    with pytest.raises(Exception) as renewal:
        lease.request("PUT", "http://127.0.0.1:9/apis/coordination.k8s.io/v1/namespaces/p/leases/parachute")
    assert not isinstance(renewal.value, kube.NotLeadingError)


def test_an_api_request_without_an_answer_is_counted_as_an_error(unreachable: client.ApiClient) -> None:
    before = value("parachute_api_requests_total", method="GET", code="error", resource="namespaces")
    with pytest.raises(Exception):  # noqa: B017  (urllib3's, whichever it is)
        unreachable.request("GET", "http://127.0.0.1:9/api/v1/namespaces")
    assert (
        value("parachute_api_requests_total", method="GET", code="error", resource="namespaces") == before + 1
    )


def test_a_rollouts_rollback_and_recovery_series_exist_at_zero_before_its_first_rollback() -> None:
    # A series born at 1 shows no increase() over any range: the dashboard would miss the rollback.
    telemetry.observed("t-zero", "checkout", "Progressing")
    zero = {"namespace": "t-zero", "rollout": "checkout"}
    assert REGISTRY.get_sample_value("parachute_rollbacks_total", zero) == 0
    assert REGISTRY.get_sample_value("parachute_recovery_objective_breaches_total", zero) == 0
    for level in ("flag", "config", "code"):
        in_namespace = {"namespace": "t-zero", "level": level}
        assert REGISTRY.get_sample_value("parachute_rollback_levels_total", in_namespace) == 0
        assert REGISTRY.get_sample_value("parachute_recovery_seconds_count", in_namespace) == 0
    telemetry.recovered("t-zero", "checkout", "code", 42.0, objective_met=True)
    assert (
        REGISTRY.get_sample_value(
            "parachute_recovery_seconds_count", {"namespace": "t-zero", "level": "code"}
        )
        == 1
    )


def _series(namespace: str) -> list[dict[str, str]]:
    return [sample.labels for family in REGISTRY.collect() for sample in family.samples
            if sample.labels.get("namespace") == namespace]  # fmt: skip


def test_a_deleted_rollout_takes_its_series_with_it_and_the_namespaces_last_takes_the_namespaces() -> None:
    for rollout in ("checkout", "cart"):
        telemetry.observed("t-gone", rollout, "Progressing")
    old = {"stageIndex": 0, "release": {"revision": "r2"}, "plan": PLAN}
    telemetry.decided("t-gone", "checkout", old, status(stageIndex=1, release={"revision": "r2"}, plan=PLAN))
    telemetry.recovered("t-gone", "checkout", "code", 4.0, True)
    telemetry.gone("t-gone", "checkout")
    assert [labels for labels in _series("t-gone") if labels.get("rollout") == "checkout"] == []
    assert (
        REGISTRY.get_sample_value(
            "parachute_recovery_seconds_count", {"namespace": "t-gone", "level": "code"}
        )
        == 1
    )
    telemetry.gone("t-gone", "cart")
    assert _series("t-gone") == []


def test_a_rollout_costs_a_scrape_two_series_whatever_its_releases_and_rollbacks() -> None:
    # At 10,000 Rollouts a histogram per Rollout and level was 420,000 lines, 11 s of the operator's time a scrape.
    telemetry.observed("t-lines", "a", "Healthy")
    before = len(_series("t-lines"))
    telemetry.observed("t-lines", "b", "Healthy")
    telemetry.decided("t-lines", "b", {}, status(incidents=[{"id": "i1", "reason": "r", "startedAt": "2026-12-03T08:00:00Z",
                                                             "levels": [{"level": "flag", "startedAt": "2026-12-03T08:00:00Z"}]}]))  # fmt: skip
    telemetry.recovered("t-lines", "b", "flag", 12.0, True)
    assert len(_series("t-lines")) == before + 2


def test_what_a_reconcile_under_way_counts_after_its_rollout_went_goes_with_the_next_word_of_it() -> None:
    telemetry.observed("t-late", "checkout", "Progressing")
    telemetry.gone("t-late", "checkout")  # another shard's now, its reconcile still running
    old = {"stageIndex": 0, "release": {"revision": "r2"}, "plan": PLAN}
    telemetry.decided("t-late", "checkout", old, status(stageIndex=1, release={"revision": "r2"}, plan=PLAN))
    telemetry.gone("t-late", "checkout")  # the next event of it
    assert [labels for labels in _series("t-late") if labels.get("rollout") == "checkout"] == []


@pytest.mark.parametrize(
    ("url", "resource"),
    [
        ("https://10.0.0.1:6443/apis/apps/v1/namespaces/shop/deployments/checkout", "deployments"),
        ("https://10.0.0.1:6443/apis/apps/v1/namespaces/shop/replicasets?labelSelector=app", "replicasets"),
        (
            "https://10.0.0.1:6443/apis/parachute.dev/v1alpha1/namespaces/shop/rollouts/checkout/status",
            "rollouts/status",
        ),
        ("https://10.0.0.1:6443/api/v1/namespaces/shop/events", "events"),
        ("https://10.0.0.1:6443/api/v1/namespaces/shop", "namespaces"),
        ("https://10.0.0.1:6443/api/v1/namespaces", "namespaces"),
        (
            "https://10.0.0.1:6443/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x",
            "customresourcedefinitions",
        ),
        ("https://10.0.0.1:6443/version", "other"),
    ],
)
def test_each_api_request_is_counted_by_the_resource_its_path_names(url: str, resource: str) -> None:
    assert telemetry.resource_of(url) == resource


def test_a_full_collection_of_the_garbage_collector_is_timed_as_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telemetry, "start_http_server", lambda port: None)
    before = value("parachute_gc_pause_seconds_count", generation="2")
    try:
        telemetry.serve(0)
        telemetry.serve(0)  # served once more (a restart of the server): still one timer
        gc.collect(2)
    finally:
        timers = [c for c in gc.callbacks if isinstance(c, telemetry._GcPauses)]
        for timer in timers:
            gc.callbacks.remove(timer)
    assert len(timers) == 1
    assert value("parachute_gc_pause_seconds_count", generation="2") == before + 1


def test_a_reconcile_in_vain_is_counted_under_what_made_it_due() -> None:
    before = value("parachute_reconciles_in_vain_total", woken_by="deployment")
    with telemetry.woken_by("deployment"):
        telemetry.looked_in_vain()
    assert value("parachute_reconciles_in_vain_total", woken_by="deployment") == before + 1
    assert telemetry.woken() == "unknown"  # outside a reconcile


def test_every_wake_asked_of_the_scheduler_is_counted_under_who_asked() -> None:
    async def work(key: tuple[str, str]) -> None:
        return None

    before = value("parachute_wakes_total", woken_by="replicaset")
    scheduler = Scheduler(work)
    scheduler.wake(("shop", "checkout"), woken=Woken.REPLICA_SET)
    scheduler.wake(("shop", "checkout"), woken=Woken.REPLICA_SET)  # due already: asked all the same
    assert value("parachute_wakes_total", woken_by="replicaset") == before + 2
    served = REGISTRY.get_sample_value("parachute_wakes_total", {"woken_by": "lane"})
    assert served is not None  # served from the start, none asked
