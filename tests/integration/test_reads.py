"""What a reconcile reads, on the real cluster: a Rollout at rest asks the API server once for a
canary it has not got (or none, when the watch showed it deleted), however often it looks."""

from __future__ import annotations

import urllib.request

import pytest

from tests.integration.conftest import Cluster, RunningOperator, eventually
from tests.integration.test_release import Release

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def served(port: int, prefix: str) -> float:
    """The sum of the operator's series that begin with `prefix`, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture
def release(crds: Cluster, namespace: str) -> Release:
    return Release(crds, namespace)


NOT_FOUND = 'parachute_api_requests_total{code="404",method="GET",resource="deployments"}'
RECONCILES = "parachute_reconcile_duration_seconds_count"


def test_a_rollout_at_rest_asks_once_for_the_canary_it_has_not_got(
    release: Release, operator_with_metrics: RunningOperator, metrics_port: int
) -> None:
    release.create(replicas=2)  # adopted: nothing released, so no canary
    asked = served(metrics_port, NOT_FOUND)
    assert asked >= 1  # the first look asked, and was told it is not there
    apps = release.cluster.apps
    for replicas in (3, 2, 3):  # each a change of the target the Rollout reads: it looks again
        looked = served(metrics_port, RECONCILES)
        apps.patch_namespaced_deployment("checkout", release.namespace, {"spec": {"replicas": replicas}})
        eventually(lambda: served(metrics_port, RECONCILES) > looked, timeout=30, what="looked again")  # noqa: B023
    assert served(metrics_port, NOT_FOUND) == asked


def test_a_canary_the_watch_saw_deleted_is_not_asked_for(
    release: Release, operator_with_metrics: RunningOperator, metrics_port: int
) -> None:
    release.create(replicas=2, waits={"min": "2s", "max": "4s"})
    release.new_image()
    eventually(lambda: release.status().get("phase") == "Healthy" and release.canary_replicas() == 0
               and "ReleaseCompleted" in release.reasons(), timeout=120, what="released, its canary at 0")  # fmt: skip
    looked, asked = served(metrics_port, RECONCILES), served(metrics_port, NOT_FOUND)
    release.cluster.apps.delete_namespaced_deployment("checkout-canary", release.namespace)
    eventually(lambda: served(metrics_port, RECONCILES) > looked, timeout=30, what="woken by the deletion")
    for replicas in (3, 2):
        looked = served(metrics_port, RECONCILES)
        release.cluster.apps.patch_namespaced_deployment(
            "checkout", release.namespace, {"spec": {"replicas": replicas}}
        )
        eventually(lambda: served(metrics_port, RECONCILES) > looked, timeout=30, what="looked again")  # noqa: B023
    assert served(metrics_port, NOT_FOUND) == asked
    assert release.status().get("phase") == "Healthy"
