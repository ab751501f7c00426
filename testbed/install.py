"""Install Parachute into a cluster the way a user would: the generated CRD (waiting until
it is Established) and the operator's ServiceAccount with its RBAC, cluster-wide (one
ClusterRole) or namespaced (a Role in each watched namespace and a small ClusterRole)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, utils
from kubernetes.client.exceptions import ApiException

from parachute import crd, rbac
from testbed.cluster import wait_for

OPERATOR_NAMESPACE = "parachute-system"
OPERATOR_ACCOUNT = "parachute"


def install_crd(api_client: client.ApiClient, timeout: float = 30) -> None:
    """Create or replace every Parachute CRD and wait until the API server serves them."""
    for document in crd.all_crds():
        _install_one(api_client, document, timeout)


def _install_one(api_client: client.ApiClient, document: dict[str, Any], timeout: float) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    name = document["metadata"]["name"]
    try:
        extensions.create_custom_resource_definition(document)  # type: ignore[arg-type]  # dicts are accepted
    except ApiException as error:
        if error.status != 409:
            raise
        current = extensions.read_custom_resource_definition(name)
        document["metadata"]["resourceVersion"] = current.metadata and current.metadata.resource_version
        extensions.replace_custom_resource_definition(name, document)  # type: ignore[arg-type]

    def established() -> bool:
        status = extensions.read_custom_resource_definition(name).status
        return any(
            c.type == "Established" and c.status == "True" for c in (status and status.conditions) or []
        )

    wait_for(f"CRD {name} Established", established, timeout)


def apply(api_client: client.ApiClient, document: dict[str, Any]) -> None:
    """Create the object; one that already exists is left as it is (enough for fixtures)."""
    try:
        utils.create_from_dict(api_client, document)
    except utils.FailToCreateError as failure:
        if not all(getattr(e, "status", None) == 409 for e in failure.api_exceptions):
            raise


def service_account_kubeconfig(
    admin_kubeconfig: Path, namespace: str, name: str, path: Path, hours: int = 4
) -> Path:
    """A kubeconfig for the same cluster that authenticates as a ServiceAccount (TokenRequest API)."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    core = client.CoreV1Api(config.new_client_from_config(str(admin_kubeconfig)))
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=hours * 3600)
    )
    status = core.create_namespaced_service_account_token(name, namespace, request).status
    if status is None or not status.token:
        raise RuntimeError(f"no token issued for ServiceAccount {namespace}/{name}")
    account = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster["cluster"]}],
        "users": [{"name": name, "user": {"token": status.token}}],
        "contexts": [{"name": name, "context": {"cluster": "cluster", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(account))
    path.chmod(0o600)
    return path


def install_operator_account(
    admin_kubeconfig: Path,
    kubeconfig_path: Path,
    watch_namespaces: list[str] | None = None,
    account: str = OPERATOR_ACCOUNT,
    backends: tuple[str, ...] = rbac.DEFAULT_BACKENDS,
) -> Path:
    """The operator's ServiceAccount bound to the shipped rules (with the given routers'
    toggles on); returns its kubeconfig.

    With `watch_namespaces`, or another account, its RBAC objects are named after the account,
    so it sits beside the default cluster-wide one.
    """
    api_client = config.new_client_from_config(str(admin_kubeconfig))
    name = "parachute" if watch_namespaces is None and account == OPERATOR_ACCOUNT else account
    documents = rbac.install_documents(
        OPERATOR_NAMESPACE, account, watch_namespaces, name=name, backends=backends
    )
    for document in documents:
        apply(api_client, document)
    core = client.CoreV1Api(api_client)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiException):
            core.read_namespaced_service_account(account, OPERATOR_NAMESPACE)
            break
        time.sleep(0.2)
    return service_account_kubeconfig(admin_kubeconfig, OPERATOR_NAMESPACE, account, kubeconfig_path)


def grant_router(api_client: client.ApiClient, backend: str, account: str = OPERATOR_ACCOUNT) -> None:
    """Turn a router's toggle on for an installed operator, as `helm upgrade --set rbac.<backend>=true`
    would: its rules in a ClusterRole of their own, bound to the operator's ServiceAccount."""
    name = f"{account}-router-{backend.lower()}"
    subject = {"kind": "ServiceAccount", "name": account, "namespace": OPERATOR_NAMESPACE}
    role = {"apiVersion": f"{rbac.RBAC_API}/v1", "kind": "ClusterRole", "metadata": {"name": name, "labels": rbac.LABELS},
            "rules": rbac.backend_rules_document(backend)}  # fmt: skip
    apply(api_client, role)
    apply(api_client, rbac._binding("ClusterRoleBinding", name, "ClusterRole", None, subject))


def revoke_router(api_client: client.ApiClient, backend: str, account: str = OPERATOR_ACCOUNT) -> None:
    """Turn a router's toggle off again (what `grant_router` added goes)."""
    name = f"{account}-router-{backend.lower()}"
    rbac_api = client.RbacAuthorizationV1Api(api_client)
    for delete in (rbac_api.delete_cluster_role_binding, rbac_api.delete_cluster_role):
        with contextlib.suppress(ApiException):
            delete(name)


def openfeature_crd() -> dict[str, Any]:
    """OpenFeature's FeatureFlag (core.openfeature.dev/v1beta1), trimmed to what Parachute
    touches: `spec.flagSpec.flags`, each flag a flagd definition."""
    flag = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "flagSpec": {
                        "type": "object",
                        "properties": {"flags": {"type": "object", "additionalProperties": flag}},
                    }
                },
            }
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "featureflags.core.openfeature.dev"},
        "spec": {
            "group": "core.openfeature.dev",
            "scope": "Namespaced",
            "names": {"plural": "featureflags", "singular": "featureflag", "kind": "FeatureFlag"},
            "versions": [
                {"name": "v1beta1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


def install_openfeature_crd(api_client: client.ApiClient, timeout: float = 30) -> None:
    _install_one(api_client, openfeature_crd(), timeout)
