"""Deleting a Rollout gives its Deployment back unpaused, with no finalizer: mid-release the
target then rolls to the new template by itself, and a deletion while the operator was down
is caught when it starts again."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
PAUSED_BY = "parachute.dev/paused-by"


def target(cluster: Cluster, namespace: str) -> Any:
    return cluster.apps.read_namespaced_deployment("checkout", namespace)


def images(cluster: Cluster, namespace: str) -> set[str]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=checkout").items
    return {p.spec.containers[0].image for p in pods if p.metadata.deletion_timestamp is None}


def delete_rollout(cluster: Cluster, namespace: str) -> None:
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "checkout")


def mid_release(cluster: Cluster, namespace: str) -> None:
    """A release held at its first stage (long waits), the target paused with the Rollout's mark."""
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "10m", "max": "20m"}
    )
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_adopted(cluster, namespace)
    new_image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
    cluster.apps.patch_namespaced_deployment("checkout", namespace, new_image)
    eventually(lambda: rollout_status(cluster, namespace).get("stage") == "1/3", timeout=60, what="stage 1")
    eventually(lambda: "checkout:2.0" in images(cluster, namespace), timeout=60, what="canary pod")
    held = target(cluster, namespace)
    assert held.spec.paused is True
    assert held.metadata.annotations[PAUSED_BY] == "checkout"
    assert images(cluster, namespace) == {"registry.example/checkout:1.0", "checkout:2.0"}


def handed_back(cluster: Cluster, namespace: str) -> None:
    eventually(lambda: target(cluster, namespace).spec.paused is not True, timeout=30, what="target unpaused")
    assert PAUSED_BY not in (target(cluster, namespace).metadata.annotations or {})
    # Nobody holds it now: it rolls to the new template by itself, and the canary goes with its owner.
    eventually(lambda: images(cluster, namespace) == {"checkout:2.0"}, timeout=90, what="rolled by itself")
    eventually(lambda: not cluster.apps.list_namespaced_deployment(namespace, field_selector="metadata.name=checkout-canary").items,
               timeout=60, what="canary garbage-collected")  # fmt: skip


def test_deleting_a_rollout_mid_release_unpauses_its_target(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    mid_release(crds, namespace)
    delete_rollout(crds, namespace)
    handed_back(crds, namespace)
    assert "is gone: unpaused Deployment checkout" in operator.output


def test_a_rollout_deleted_while_the_operator_was_down_is_caught_when_it_starts(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    mid_release(crds, namespace)
    operator.stop()
    delete_rollout(crds, namespace)
    eventually(lambda: not crds.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
               what="deleted at once: no finalizer holds it")  # fmt: skip
    assert target(crds, namespace).spec.paused is True  # nobody was there to hand it back

    operator.start()
    handed_back(crds, namespace)
