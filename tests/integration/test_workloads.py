"""The control plane is real: Deployments become ready on kwok's fake nodes."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Cluster, RunningOperator, deployment, eventually, rollout

pytestmark = pytest.mark.cluster


def test_a_deployment_of_three_becomes_ready(cluster: Cluster, namespace: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=3))

    def ready() -> bool:
        status = cluster.apps.read_namespaced_deployment_status("checkout", namespace).status
        return status.ready_replicas == 3 and status.available_replicas == 3

    eventually(ready, timeout=60, what="readyReplicas: 3")
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=checkout").items
    assert len(pods) == 3
    if cluster.local is not None:
        assert {p.spec.node_name for p in pods} <= {"kwok-node-1", "kwok-node-2"}
    assert all(p.status.phase == "Running" for p in pods)


def test_scaling_down_really_removes_pods(cluster: Cluster, namespace: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=3))
    eventually(lambda: cluster.apps.read_namespaced_deployment("checkout", namespace).status.ready_replicas == 3,
               timeout=60)  # fmt: skip
    cluster.apps.patch_namespaced_deployment_scale("checkout", namespace, {"spec": {"replicas": 1}})
    eventually(lambda: len(cluster.core.list_namespaced_pod(namespace, label_selector="app=checkout").items) == 1,
               timeout=60, what="pods deleted by kwok")  # fmt: skip


def test_two_rollouts_tracking_one_config_map_both_own_its_snapshot(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    crds.core.create_namespaced_config_map(namespace, {"metadata": {"name": "shared"}, "data": {"k": "v"}})
    for name in ("checkout", "payments"):
        crds.apps.create_namespaced_deployment(namespace, deployment(name))
        crds.custom.create_namespaced_custom_object("parachute.dev", "v1alpha1", namespace, "rollouts",
                                                    rollout(name, targetRef={"name": name}, configRefs=[{"name": "shared"}]))  # fmt: skip

    def owners() -> list[str]:
        copies = crds.core.list_namespaced_config_map(namespace, label_selector="parachute.dev/rollout").items
        return sorted(o.name for c in copies for o in c.metadata.owner_references or [])

    # One copy, kept as long as either Rollout needs it.
    eventually(lambda: owners() == ["checkout", "payments"], timeout=30, what="both own the snapshot")
