"""The operator runs under its own ServiceAccount: allowed what its ClusterRole grants,
refused (403) anything else, and that is enough to serve Rollouts. The namespaced install
(a Role per watched namespace, a small ClusterRole) is enough to release in its namespace,
and reads nothing outside it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from testbed.install import install_operator_account
from tests.integration.analysed import Analysed
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    assert_never_refused,
    deployment,
    eventually,
    rollout,
)

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
    apps = client.AppsV1Api(as_operator)
    refused(core.list_secret_for_all_namespaces)  # only `get` of a named Secret
    refused(lambda: core.delete_namespace(namespace))
    # It deletes one ConfigMap only, its own routing record (RBAC cannot name it in advance), never in bulk.
    refused(lambda: core.delete_collection_namespaced_config_map(namespace))
    refused(
        lambda: apps.delete_namespaced_deployment("anything", namespace)
    )  # the canary goes by owner reference
    # It makes and re-pins its own -stable/-canary Services, and reads only the Services it is named.
    refused(core.list_service_for_all_namespaces)
    refused(lambda: core.delete_collection_namespaced_service(namespace))
    refused(core.list_namespace)  # kopf does not follow namespaces when it watches them all
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


# ---------------------------------------------------------------------------- the namespaced install


class NamespacedOperator(RunningOperator):
    """The operator started with `--namespace`, as the chart runs it with rbac.scope=namespaced."""

    def __init__(self, kubeconfig: Path, log: Path, namespaces: list[str]) -> None:
        super().__init__(kubeconfig, log)
        self.namespaces = namespaces

    def start(self) -> RunningOperator:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        args = [f"--namespace={namespace}" for namespace in self.namespaces]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "parachute", "run", "--verbose", *args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        return self


@pytest.fixture
def namespaced_kubeconfig(crds: Cluster, namespace: str, tmp_path: Path) -> Path:
    """A ServiceAccount bound to a Role in `namespace` only, and to the small ClusterRole."""
    return install_operator_account(crds.kubeconfig, tmp_path / "namespaced.kubeconfig",
                                    watch_namespaces=[namespace], account=f"parachute-{namespace}")  # fmt: skip


def test_the_namespaced_account_reads_nothing_outside_its_namespaces(
    crds: Cluster, namespace: str, namespaced_kubeconfig: Path
) -> None:
    as_operator = config.new_client_from_config(str(namespaced_kubeconfig))
    core, custom = client.CoreV1Api(as_operator), client.CustomObjectsApi(as_operator)
    crds.core.create_namespaced_secret("default", {"metadata": {"name": f"elsewhere-{namespace}"},
                                                   "stringData": {"k": "v"}})  # fmt: skip
    try:
        refused(lambda: core.read_namespaced_secret(f"elsewhere-{namespace}", "default"))
        refused(core.list_config_map_for_all_namespaces)
        refused(lambda: custom.list_cluster_custom_object("parachute.dev", "v1alpha1", "rollouts"))
        refused(lambda: client.ApiextensionsV1Api(as_operator).list_custom_resource_definition())
        refused(core.list_namespace)
        allowed(
            lambda: custom.list_namespaced_custom_object("parachute.dev", "v1alpha1", namespace, "rollouts")
        )
        allowed(
            lambda: custom.list_cluster_custom_object("parachute.dev", "v1alpha1", "clustermetrictemplates")
        )
        with pytest.raises(ApiException) as missing:  # allowed to look: there is none of that name
            custom.get_cluster_custom_object("parachute.dev", "v1alpha1", "releasepolicies", "none")
        assert missing.value.status == 404
    finally:
        crds.core.delete_namespaced_secret(f"elsewhere-{namespace}", "default")


@pytest.fixture
def namespaced_operator(
    namespaced_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[RunningOperator]:
    running = NamespacedOperator(namespaced_kubeconfig, tmp_path / "operator.log", [namespace]).start()
    yield running
    running.stop()
    assert_never_refused(running)


CHECKOUT_5XX = (
    'sum(rate(http_requests_total{namespace="{{namespace}}",app="{{target}}",pod=~"{{pods}}",'
    'code=~"5.."}[{{window}}])) or vector(0)'
)


@pytest.mark.prometheus
@pytest.mark.slow
def test_the_namespaced_install_releases_in_its_namespace_with_no_refusal(
    crds: Cluster, namespace: str, analysed: Analysed, namespaced_operator: RunningOperator
) -> None:
    # The cluster-scoped kinds it may read: a ClusterMetricTemplate and a ReleasePolicy.
    template, policy = f"checkout-5xx-{namespace}", f"open-{namespace}"
    crds.custom.create_cluster_custom_object("parachute.dev", "v1alpha1", "clustermetrictemplates", {
        "apiVersion": "parachute.dev/v1alpha1", "kind": "ClusterMetricTemplate", "metadata": {"name": template},
        "spec": {"query": CHECKOUT_5XX, "unit": "perMinute", "warning": "5/min", "critical": "20/min"}})  # fmt: skip
    crds.custom.create_cluster_custom_object("parachute.dev", "v1alpha1", "releasepolicies", {
        "apiVersion": "parachute.dev/v1alpha1", "kind": "ReleasePolicy", "metadata": {"name": policy},
        "spec": {}})  # fmt: skip
    try:
        analysed.release(metrics=[{"templateRef": {"kind": "ClusterMetricTemplate", "name": template}}],
                         spec={"policyRef": {"name": policy}}, min="3s", max="6s")  # fmt: skip
        eventually(analysed.released, timeout=120, what="released under the namespaced install")
        assert analysed.status()["window"]["policy"] == policy
        measured = next(m for m in analysed.status()["metrics"] if m["name"] == template)
        assert measured["successful"] > 0
    finally:
        crds.custom.delete_cluster_custom_object(
            "parachute.dev", "v1alpha1", "clustermetrictemplates", template
        )
        crds.custom.delete_cluster_custom_object("parachute.dev", "v1alpha1", "releasepolicies", policy)
