"""What a reconcile reads, on the real cluster: a Rollout is adopted without a read of its own; a
Rollout at rest asks the API server once for a canary it has not got (or none, when the watch
showed it deleted), however often it looks, and lists its target's ReplicaSets again only when
the target or the canary changed; the names and versions the leader lists, page by page and
under the operator's own account, confirm the copies the watch keeps and find those deleted
unseen; a canary's ReplicaSets wake nothing when its Deployment says what they do in time."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from parachute import kube
from parachute.watched import Copies
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    assert_never_refused,
    deployment,
    eventually,
    rollout,
)
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


@pytest.fixture
def operator_with_metrics(
    operator_kubeconfig: Path, tmp_path: Path, metrics_port: int, namespace: str
) -> Iterator[RunningOperator]:
    """The operator serving only the test's namespace: what it counts is this Rollout's alone
    (Rollouts an earlier test left in namespaces still being deleted are read and listed for too)."""
    running = RunningOperator(operator_kubeconfig, tmp_path / "operator.log",
                              args=[f"--metrics-port={metrics_port}", f"--namespace={namespace}"]).start()  # fmt: skip
    yield running
    running.stop()
    assert_never_refused(running)


NOT_FOUND = 'parachute_api_requests_total{code="404",method="GET",resource="deployments"}'
RECONCILES = "parachute_reconcile_duration_seconds_count"
ROLLOUTS_READ = 'parachute_api_requests_total{code="200",method="GET",resource="rollouts"}'
REFUSED = 'parachute_api_requests_total{code="409",method="PATCH",resource="rollouts/status"}'
LISTED = 'parachute_api_requests_total{code="200",method="GET",resource="replicasets"}'
WOKEN_BY_REPLICA_SETS = 'parachute_wakes_total{woken_by="replicaset"}'


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
    # The Rollout itself came with the first listing or the watch: listed once, and read only
    # after a status write of its was refused as stale (the outbox's record of the adoption's
    # Event and a look may write at once; the one refused reads the Rollout again).
    assert served(metrics_port, ROLLOUTS_READ) == 1 + served(metrics_port, REFUSED)


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


def test_a_canarys_replica_sets_wake_nothing_while_the_deployment_controller_keeps_up(
    release: Release, operator_with_metrics: RunningOperator, metrics_port: int
) -> None:
    """Watched under the operator's own account; each canary Deployment's event says its pods are
    ready within the grace on this cluster, so no ReplicaSet's wake is owed, and none is made."""
    release.create(replicas=2, waits={"min": "2s", "max": "4s"})
    apps = release.cluster.apps

    def ready(replicas: int) -> bool:
        return (release.target().status.ready_replicas or 0) == replicas

    eventually(lambda: ready(2), timeout=30, what="target ready")
    apps.patch_namespaced_deployment("checkout", release.namespace, {"spec": {"replicas": 3}})
    eventually(lambda: ready(3), timeout=30, what="target's third pod ready")
    release.new_image()
    eventually(lambda: release.status().get("phase") == "Healthy" and "ReleaseCompleted" in release.reasons(),
               timeout=120, what="released")  # fmt: skip
    assert served(metrics_port, WOKEN_BY_REPLICA_SETS) == 0


def test_a_rollout_woken_while_its_deployments_are_unchanged_does_not_list_their_replica_sets_again(
    release: Release, operator_with_metrics: RunningOperator, metrics_port: int
) -> None:
    release.create(replicas=2)

    def settled() -> bool:  # the controller wrote the target's status from its ready pods
        status = release.target().status
        return (status.ready_replicas or 0) == (status.available_replicas or 0) == 2

    eventually(settled, timeout=30, what="target ready")

    def look(n: int) -> None:  # a change of the Rollout only: it looks again
        looked = served(metrics_port, RECONCILES)
        release.annotate("example.com/looked", str(n))
        eventually(lambda: served(metrics_port, RECONCILES) > looked, timeout=30, what="looked again")

    look(0)  # the first look since the target's pods became ready lists what serves now
    listed = served(metrics_port, LISTED)
    assert listed >= 1
    for n in range(1, 4):
        look(n)
    # Fewer than one listing a look: only a new version of the target (its status still
    # catching up with its pods) lists again.
    again = served(metrics_port, LISTED) - listed
    assert again < 3
    release.cluster.apps.patch_namespaced_deployment("checkout", release.namespace, {"spec": {"replicas": 3}})
    eventually(lambda: served(metrics_port, LISTED) > listed + again, timeout=30,
               what="the target's ReplicaSets listed again after it changed")  # fmt: skip


@pytest.fixture
def as_the_operator(operator_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`parachute.kube` in this process, under the operator's ServiceAccount."""
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    kube.api_client.cache_clear()
    yield
    kube.api_client.cache_clear()


def test_the_listed_names_and_versions_confirm_copies_and_find_the_deleted_ones(
    crds: Cluster, namespace: str, as_the_operator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "VERSIONS_PAGE", 2)  # five Deployments: three pages of one snapshot
    for n in range(5):
        crds.apps.create_namespaced_deployment(namespace, deployment(f"app-{n}", replicas=0))
    crds.custom.create_namespaced_custom_object(
        "parachute.dev", "v1alpha1", namespace, "rollouts", rollout("checkout", targetRef={"name": "app-0"})
    )
    copies = Copies()
    for n in range(5):
        copies.answered(
            crds.api.sanitize_for_serialization(crds.apps.read_namespaced_deployment(f"app-{n}", namespace))
        )
    crds.apps.delete_namespaced_deployment("app-3", namespace)

    found = asyncio.run(kube.deployment_versions(namespace))
    assert found is not None
    assert set(found.listed) == {(namespace, f"app-{n}") for n in (0, 1, 2, 4)}
    assert copies.confirm(found.listed, found.at, copies.clock(), namespace) == 1
    assert copies.known_absent(namespace, "app-3")
    assert copies.get(namespace, "app-0") is not None

    rollouts = asyncio.run(kube.rollout_versions(namespace))
    assert rollouts is not None and set(rollouts.listed) == {(namespace, "checkout")}
    everywhere = asyncio.run(kube.deployment_versions(None))
    assert everywhere is not None and (namespace, "app-4") in everywhere.listed
