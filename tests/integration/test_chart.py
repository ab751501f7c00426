"""The Helm chart renders what the plain manifests install, and the API server accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import utils

from parachute import install, rbac
from testbed.cluster import tool
from tests.integration.conftest import Cluster

CHART = Path(__file__).resolve().parents[2] / "helm" / "parachute"


def helm(*args: str) -> str:
    return subprocess.run([str(tool("helm")), *args], check=True, capture_output=True, text=True).stdout


def rendered(*values: str) -> list[dict[str, Any]]:
    flags = [item for value in values for item in ("--set", value)]
    text = helm(
        "template", "parachute", str(CHART), "--namespace", "parachute-system", "--include-crds", *flags
    )
    return [d for d in yaml.safe_load_all(text) if d]


def test_the_chart_lints() -> None:
    assert "0 chart(s) failed" in helm("lint", str(CHART))


def test_the_chart_grants_exactly_the_shipped_rules() -> None:
    role = next(d for d in rendered() if d["kind"] == "ClusterRole")
    assert role["rules"] == rbac.cluster_role_rules_document()


def test_extra_read_rules_for_condition_gates_are_added_to_the_shipped_ones() -> None:
    role = next(d for d in rendered("rbac.extraReadRules[0].apiGroups={batch}", "rbac.extraReadRules[0].resources={jobs}",
                                    "rbac.extraReadRules[0].verbs={get}") if d["kind"] == "ClusterRole")  # fmt: skip
    assert role["rules"] == [*rbac.cluster_role_rules_document(),
                             {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}]  # fmt: skip


def test_the_namespaced_scope_grants_a_role_in_each_watched_namespace_and_little_cluster_wide() -> None:
    documents = rendered("rbac.scope=namespaced", "watchNamespaces={shop,payments}",
                         "rbac.extraReadRules[0].apiGroups={batch}", "rbac.extraReadRules[0].resources={jobs}",
                         "rbac.extraReadRules[0].verbs={get}")  # fmt: skip
    rbac_kinds = sorted(
        (d["kind"], d["metadata"].get("namespace") or "") for d in documents if "Role" in d["kind"]
    )
    assert rbac_kinds == [
        ("ClusterRole", ""), ("ClusterRoleBinding", ""),
        ("Role", "payments"), ("Role", "shop"), ("RoleBinding", "payments"), ("RoleBinding", "shop"),
    ]  # fmt: skip
    cluster_role = next(d for d in documents if d["kind"] == "ClusterRole")
    assert cluster_role["rules"] == rbac.namespaced_cluster_role_rules_document()
    jobs = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}
    for role in (d for d in documents if d["kind"] == "Role"):
        assert role["rules"] == [*rbac.namespaced_role_rules_document(), jobs]  # gates read in the namespace
    subject = {"kind": "ServiceAccount", "name": "parachute", "namespace": "parachute-system"}
    for binding in (d for d in documents if d["kind"].endswith("Binding")):
        assert binding["subjects"] == [subject]
    container = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "--namespace=shop" in container["args"] and "--namespace=payments" in container["args"]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (["rbac.scope=namespaced"], "rbac.scope=namespaced needs the namespaces to watch in watchNamespaces"),
        (["rbac.scope=everything"], 'rbac.scope must be cluster or namespaced, not "everything"'),
    ],
    ids=["namespaced-without-namespaces", "unknown-scope"],
)
def test_a_scope_that_cannot_work_is_refused(values: list[str], complaint: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as error:
        rendered(*values)
    assert complaint in error.value.stderr


def test_the_chart_carries_the_crd_and_runs_the_operator() -> None:
    documents = rendered("watchNamespaces={shop,payments}")
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        *["CustomResourceDefinition"] * 4,  # Rollout, MetricTemplate, ClusterMetricTemplate, ReleasePolicy
        "Deployment",
        "ReleasePolicy",
        "ServiceAccount",
    ]
    container = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["args"] == ["run", "--liveness=http://0.0.0.0:8080/healthz",
                                 "--readiness=http://0.0.0.0:8081/readyz", "--namespace=shop",
                                 "--namespace=payments", "--metrics-port=9100"]  # fmt: skip
    assert container["image"] == "ghcr.io/parachute-dev/parachute:0.1.0"


def test_the_chart_ships_the_playbook_policy_the_plain_manifests_ship() -> None:
    policy = next(d for d in rendered() if d["kind"] == "ReleasePolicy")
    assert policy["spec"] == install.playbook_policy()["spec"]
    zoned = next(d for d in rendered("playbookPolicy.timeZone=Europe/Berlin") if d["kind"] == "ReleasePolicy")
    assert zoned["spec"]["window"]["timeZone"] == "Europe/Berlin"
    operator = next(d for d in rendered("defaultPolicy=playbook") if d["kind"] == "Deployment")
    assert "--default-policy=playbook" in operator["spec"]["template"]["spec"]["containers"][0]["args"]


def test_user_reports_are_off_by_default_and_on_with_their_secret_port_and_service() -> None:
    off = rendered()
    assert not any(d["kind"] == "Service" for d in off)
    operator = next(d for d in off if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert "volumes" not in operator and not any("reports" in a for a in operator["containers"][0]["args"])

    documents = rendered(
        "reports.enabled=true", "reports.secretName=support-token", "reports.secretKey=bearer"
    )
    pod = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][-2:] == [
        "--reports-port=8082",
        "--reports-token-file=/var/run/parachute/reports/bearer",
    ]
    assert {"name": "reports", "containerPort": 8082} in container["ports"]
    assert container["volumeMounts"] == [
        {"name": "reports-token", "mountPath": "/var/run/parachute/reports", "readOnly": True}
    ]
    assert pod["volumes"] == [{"name": "reports-token", "secret": {"secretName": "support-token",
                                                                   "items": [{"key": "bearer", "path": "bearer"}]}}]  # fmt: skip
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["metadata"]["name"] == "parachute-parachute-reports"
    assert service["spec"]["ports"] == [{"name": "reports", "port": 8082, "targetPort": "reports"}]
    assert (
        service["spec"]["selector"]
        == next(d for d in documents if d["kind"] == "Deployment")["spec"]["selector"]["matchLabels"]
    )  # every replica: a standby records reports too

    with pytest.raises(subprocess.CalledProcessError) as error:
        rendered("reports.enabled=true")
    assert "reports.enabled needs reports.secretName" in error.value.stderr


@pytest.mark.cluster
@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_the_api_server_accepts_everything_the_chart_renders(
    crds: Cluster, namespace: str, scope: str
) -> None:
    """A server-side dry run: schema, defaulting and admission, nothing stored."""
    values = [f"rbac.scope={scope}", f"watchNamespaces={{{namespace}}}"] if scope == "namespaced" else []
    for document in rendered(*values):
        if document["kind"] == "CustomResourceDefinition":
            continue  # installed for real by the resource tests
        if document["kind"] == "ReleasePolicy":
            crds.custom.create_cluster_custom_object("parachute.dev", "v1alpha1", "releasepolicies", document,
                                                     dry_run="All")  # fmt: skip
            continue
        document["metadata"]["namespace"] = namespace
        utils.create_from_dict(crds.api, document, dry_run="All")
