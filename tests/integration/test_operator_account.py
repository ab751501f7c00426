"""The operator runs under its own ServiceAccount: allowed what its ClusterRole grants,
refused (403) anything else, and that is enough to serve Rollouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import Cluster, RunningOperator, deployment, eventually, rollout

pytestmark = pytest.mark.cluster


@pytest.fixture
def as_operator(operator_kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(str(operator_kubeconfig))


def allowed(call: Callable[[], Any]) -> None:
    call()


def refused(call: Callable[[], Any]) -> None:
    with pytest.raises(ApiException) as error:
        call()
    assert error.value.status == 403, error.value


def test_the_service_account_may_do_what_its_role_grants(
    crds: Cluster, namespace: str, as_operator: client.ApiClient
) -> None:
    custom, apps, core = (
        client.CustomObjectsApi(as_operator),
        client.AppsV1Api(as_operator),
        client.CoreV1Api(as_operator),
    )
    crds.custom.create_namespaced_custom_object(
        "parachute.dev", "v1alpha1", namespace, "rollouts", rollout("r", targetRef={"name": "checkout"})
    )
    allowed(lambda: custom.list_cluster_custom_object("parachute.dev", "v1alpha1", "rollouts"))
    allowed(lambda: custom.patch_namespaced_custom_object_status(
        "parachute.dev", "v1alpha1", namespace, "rollouts", "r", {"status": {"phase": "Pending"}}))  # fmt: skip
    allowed(lambda: apps.create_namespaced_deployment(namespace, deployment("checkout-canary", replicas=0)))
    allowed(
        lambda: core.create_namespaced_config_map(namespace, {"metadata": {"name": "snapshot"}, "data": {}})
    )
    allowed(lambda: core.create_namespaced_event(namespace, {
        "metadata": {"generateName": "r."}, "reason": "Probe", "message": "probe", "type": "Normal",
        "involvedObject": {"kind": "Rollout", "name": "r", "namespace": namespace}}))  # fmt: skip


def test_the_service_account_is_refused_everything_else(
    crds: Cluster, namespace: str, as_operator: client.ApiClient
) -> None:
    core, rbac = client.CoreV1Api(as_operator), client.RbacAuthorizationV1Api(as_operator)
    refused(core.list_secret_for_all_namespaces)  # only `get` of a named Secret
    refused(lambda: core.delete_namespace(namespace))
    refused(lambda: core.delete_namespaced_config_map("anything", namespace))  # it never deletes user config
    refused(lambda: rbac.create_cluster_role({"metadata": {"name": "escalate"}, "rules": []}))
    refused(lambda: core.create_namespaced_pod(namespace, {
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))  # fmt: skip


def test_the_operator_serves_rollouts_under_its_own_account(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    def create(name: str, target: str) -> None:
        crds.custom.create_namespaced_custom_object(
            "parachute.dev", "v1alpha1", namespace, "rollouts", rollout(name, targetRef={"name": target})
        )

    def status(name: str) -> dict[str, Any]:
        body = crds.custom.get_namespaced_custom_object(
            "parachute.dev", "v1alpha1", namespace, "rollouts", name
        )
        return dict(body.get("status") or {})

    crds.apps.create_namespaced_deployment(namespace, deployment("checkout"))
    create("checkout", "checkout")
    create("orphan", "missing")

    invalid = eventually(lambda: status("orphan").get("phase") == "Invalid" and status("orphan"), timeout=60,
                         what="orphan Rollout marked Invalid")  # fmt: skip
    assert invalid["message"] == f"spec.targetRef.name: Deployment {namespace}/missing not found"
    condition = next(c for c in invalid["conditions"] if c["type"] == "Invalid")
    assert (condition["status"], condition["reason"]) == ("True", "InvalidSpec")
    assert condition["observedGeneration"] == 1

    # The invalid one does not stop the operator from serving the other.
    served = eventually(
        lambda: status("checkout").get("phase") == "Healthy" and status("checkout"), timeout=30
    )
    assert served["observedGeneration"] == 1
    assert served["risk"] == "medium"

    # Nothing Parachute needs blocks deletion: no finalizer on the user's Rollout.
    body = crds.custom.get_namespaced_custom_object(
        "parachute.dev", "v1alpha1", namespace, "rollouts", "checkout"
    )
    assert not body["metadata"].get("finalizers")

    # When the missing target appears, the Rollout becomes valid by itself.
    crds.apps.create_namespaced_deployment(namespace, deployment("missing"))
    eventually(lambda: status("orphan").get("phase") == "Healthy", timeout=30, what="orphan recovers")
