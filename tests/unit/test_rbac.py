"""The shipped RBAC rules grant exactly what the code asks of the API server: the calls each
function in `parachute.kube` declares, what the routers declare (`parachute.routing.access`),
plus what kopf needs. Nothing granted is unused and nothing used is ungranted, in the
cluster-wide install and in the namespaced one, with any choice of router toggles."""

from __future__ import annotations

import inspect

import pytest

from parachute import api, crd, kube, rbac
from parachute.rbac import Call
from parachute.routing import access

CLUSTER_WIDE, NAMESPACED = False, True
MODES = pytest.mark.parametrize("namespaced", [CLUSTER_WIDE, NAMESPACED], ids=["cluster-wide", "namespaced"])
TOGGLES = pytest.mark.parametrize(
    "backends",
    [(), rbac.DEFAULT_BACKENDS, ("nginx",), rbac.BACKENDS],
    ids=["no-router", "default-routers", "nginx-only", "every-router"],
)


def declared(backends: tuple[str, ...] = rbac.DEFAULT_BACKENDS) -> frozenset[Call]:
    made = {call for made in kube.CALLS.values() for call in made} | access.CORE
    for backend in backends:
        made |= access.BACKENDS[backend]
    return frozenset(made)


def kopf_uses(namespaced: bool) -> frozenset[Call]:
    return frozenset(
        call
        for uses in rbac.KOPF_USES
        if not (namespaced and uses.all_namespaces_only)
        for call in uses.calls()
    )


def test_every_function_that_talks_to_the_api_server_declares_its_calls() -> None:
    talking = {
        name
        for name, function in inspect.getmembers(kube, inspect.iscoroutinefunction)
        if function.__module__ == kube.__name__ and not name.startswith("_")
    }
    assert talking == set(kube.CALLS)


@MODES
@TOGGLES
def test_nothing_is_granted_that_no_code_uses(namespaced: bool, backends: tuple[str, ...]) -> None:
    unused = rbac.granted(namespaced, backends) - declared(backends) - kopf_uses(namespaced)
    assert not unused, f"granted but never used: {sorted(unused)}"


@MODES
@TOGGLES
def test_nothing_is_used_that_is_not_granted(namespaced: bool, backends: tuple[str, ...]) -> None:
    missing = (declared(backends) | kopf_uses(namespaced)) - rbac.granted(namespaced, backends)
    assert not missing, f"used but not granted: {sorted(missing)}"


@pytest.mark.parametrize("backend", rbac.BACKENDS)
def test_each_router_toggle_grants_exactly_what_that_router_uses(backend: str) -> None:
    toggled = frozenset(call for rule in rbac.BACKEND_RULES[backend] for call in rule.calls())
    assert toggled == access.BACKENDS[backend]
    assert toggled.isdisjoint(rbac.granted(backends=()))  # nothing of it without the toggle


def test_gateway_api_and_istio_are_granted_by_default_nginx_is_not() -> None:
    assert rbac.DEFAULT_BACKENDS == ("gatewayAPI", "istio")
    assert not {c for c in rbac.granted() if c.resource == "ingresses"}


def test_every_rule_says_why() -> None:
    assert all(rule.why for rule in rbac.RULES)
    assert all(uses.why for uses in rbac.KOPF_USES)


def test_secrets_are_read_by_name_and_never_listed_or_watched() -> None:
    verbs = {call.verb for call in rbac.granted() if call.resource == "secrets"}
    assert verbs == {"get"}


def _scopes() -> dict[tuple[str, str], str]:
    """Each granted resource's scope: Parachute's from its CRDs, the others as Kubernetes has them."""
    known = {
        ("apiextensions.k8s.io", "customresourcedefinitions"): "Cluster",
        ("core.openfeature.dev", "featureflags"): "Namespaced",
        ("apps", "deployments"): "Namespaced",
        ("apps", "replicasets"): "Namespaced",
        ("", "configmaps"): "Namespaced",
        ("", "events"): "Namespaced",
        ("", "secrets"): "Namespaced",
        ("coordination.k8s.io", "leases"): "Namespaced",
        ("", "services"): "Namespaced",
        ("", "pods"): "Namespaced",
        ("gateway.networking.k8s.io", "httproutes"): "Namespaced",
        ("networking.istio.io", "virtualservices"): "Namespaced",
        ("networking.istio.io", "destinationrules"): "Namespaced",
        ("networking.k8s.io", "ingresses"): "Namespaced",
        ("discovery.k8s.io", "endpointslices"): "Namespaced",
    }
    for document in crd.all_crds():
        plural, scope = document["spec"]["names"]["plural"], document["spec"]["scope"]
        known[(api.GROUP, plural)] = scope
        known[(api.GROUP, f"{plural}/status")] = scope
    return known


def test_the_namespaced_split_puts_each_rule_where_its_resources_live() -> None:
    scopes = _scopes()
    for rule in rbac.rules_for(rbac.BACKENDS):
        for group in rule.groups:
            for resource in rule.resources:
                assert rule.cluster_scoped == (scopes[(group, resource)] == "Cluster"), (group, resource)
    role = rbac.namespaced_role_rules_document()
    cluster_role = rbac.namespaced_cluster_role_rules_document()
    assert [r["resources"] for r in cluster_role] == [["clustermetrictemplates"], ["releasepolicies"]]
    assert {"secrets", "rollouts", "deployments", "configmaps"} <= {
        res for r in role for res in r["resources"]
    }


def test_the_namespaced_install_binds_a_role_in_each_watched_namespace() -> None:
    documents = rbac.install_documents("parachute-system", watch_namespaces=["shop", "payments"])
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in documents]
    assert kinds == [
        ("Namespace", None), ("ServiceAccount", "parachute-system"),
        ("ClusterRole", None), ("ClusterRoleBinding", None),
        ("Role", "shop"), ("RoleBinding", "shop"), ("Role", "payments"), ("RoleBinding", "payments"),
    ]  # fmt: skip
    role = next(d for d in documents if d["kind"] == "Role")
    assert role["rules"] == rbac.namespaced_role_rules_document()
    cluster_role = next(d for d in documents if d["kind"] == "ClusterRole")
    assert cluster_role["rules"] == rbac.namespaced_cluster_role_rules_document()
    for binding in (d for d in documents if d["kind"].endswith("Binding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "parachute", "namespace": "parachute-system"}
        ]


def test_the_cluster_wide_install_has_one_cluster_role_with_every_rule() -> None:
    documents = rbac.install_documents("parachute-system")
    assert [d["kind"] for d in documents] == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ]
    assert documents[2]["rules"] == rbac.cluster_role_rules_document()


def test_the_lease_is_kept_in_the_operator_namespace_only_and_only_with_leader_election() -> None:
    leases = {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    }
    assert rbac.leader_election_rules_document() == [leases]
    for elsewhere in (rbac.cluster_role_rules_document(), rbac.namespaced_role_rules_document(),
                      rbac.namespaced_cluster_role_rules_document()):  # fmt: skip
        assert leases not in elsewhere
    documents = rbac.install_documents("parachute-system", leader_election=True)
    kinds = [(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in documents]
    assert kinds[-2:] == [("Role", "parachute-leader-election", "parachute-system"),
                          ("RoleBinding", "parachute-leader-election", "parachute-system")]  # fmt: skip
    assert documents[-2]["rules"] == [leases]
    assert documents[-1]["subjects"] == [
        {"kind": "ServiceAccount", "name": "parachute", "namespace": "parachute-system"}
    ]
