"""What the operator may do in the cluster: the one list of RBAC rules, each with its reason.

The plain manifests and the Helm chart are generated from this list (`make crds`). A unit
test checks it against the calls the code declares (`parachute.kube`) plus what kopf itself
needs (`KOPF_USES`): nothing granted that is unused, nothing used that is not granted. The
integration tests run the operator under exactly these rules, so a missing permission fails
a test rather than a user's release.

Two ways to install:

- cluster-wide (the default): one ClusterRole. The operator serves Rollouts in every
  namespace, so it can read any Secret *by name* in any namespace (it cannot list them),
  and read and change any Deployment and ConfigMap.
- namespaced: a Role with the namespaced rules in each watched namespace, and a small
  ClusterRole for the cluster-scoped kinds it reads (ClusterMetricTemplates, ReleasePolicies).
  The operator runs with `--namespace` and reads nothing outside those namespaces.

Either way, with more than one replica (leader election), a Role in the operator's own
namespace lets it keep its Lease there: nowhere else.

Each traffic router's rules are a separate grant (`BACKEND_RULES`), a chart toggle each
(`rbac.gatewayAPI`, `rbac.istio`, `rbac.nginx`): Gateway API and Istio are on by default,
since their grants reach only clusters where their CRDs are installed and a Rollout names a
route; NGINX is off, because Ingresses exist in every cluster and its grant would let the
operator change any of them. What the routers use is declared in `parachute.routing.access`,
and a unit test holds each toggle's rules equal to its router's calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from parachute import api

RBAC_API = "rbac.authorization.k8s.io"
LABELS = {"app.kubernetes.io/name": "parachute"}


class Call(NamedTuple):
    """One kind of request to the API server: (apiGroup, resource, verb)."""

    group: str
    resource: str
    verb: str


@dataclass(frozen=True)
class Rule:
    groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    # The resources have no namespace: a Role cannot grant them, a ClusterRole must.
    cluster_scoped: bool = False
    # Needed only when the operator watches every namespace (kopf's CRD watch).
    all_namespaces_only: bool = False
    # Granted by a Role in the operator's own namespace, and only with leader election.
    operator_namespace_only: bool = False

    def as_k8s(self) -> dict[str, Any]:
        return {"apiGroups": list(self.groups), "resources": list(self.resources), "verbs": list(self.verbs)}

    def calls(self) -> frozenset[Call]:
        return frozenset(Call(g, r, v) for g in self.groups for r in self.resources for v in self.verbs)


RULES: tuple[Rule, ...] = (
    Rule((api.GROUP,), ("rollouts",), ("get", "list", "watch"),
         "kopf watches Rollouts (and writes nothing to them); a reconcile reads one afresh when its copy is stale"),
    Rule((api.GROUP,), ("rollouts/status",), ("patch",),
         "status is where a release's state lives (written with a resourceVersion precondition)"),
    Rule((api.GROUP,), ("metrictemplates",), ("list",), "the MetricTemplates a Rollout's metrics name"),
    Rule((api.GROUP,), ("clustermetrictemplates",), ("list",), "the ClusterMetricTemplates a Rollout's metrics name",
         cluster_scoped=True),
    Rule((api.GROUP,), ("releasepolicies",), ("get", "list", "watch"),
         "the ReleasePolicy a Rollout names, or the default one; a change to one wakes its Rollouts",
         cluster_scoped=True),
    Rule(("",), ("events",), ("create", "list", "watch"),
         "Events at every transition (kopf's too, on a handler error); user reports are kept as Events "
         "on their Rollout, watched (by their label) and listed (one Rollout's) to be counted"),
    Rule(("apps",), ("deployments",), ("get", "list", "watch", "create", "patch", "update"),
         "watch targets and canaries; pause the target, run the canary it owns, put a template back "
         "(never deletes: the canary goes with its Rollout, by owner reference)"),
    Rule(("apps",), ("replicasets",), ("list", "watch"),
         "find the stable revision's pod template and the pods of each version; a canary's ReplicaSets "
         "are watched (by their label), so that their pods becoming ready wake the stage waiting on them"),
    Rule(("",), ("pods",), ("list",),
         "find the pods serving a rolled-back revision, to ask their app whether it serves the flags off "
         "(spec.featureFlags.verify); before a route sends more requests to an Istio subset, see which of "
         "the Service's ready endpoints are pods carrying the subset's labels"),
    Rule(("",), ("configmaps",), ("get", "list", "watch", "create", "patch", "update", "delete"),
         "watch tracked configuration; flip flags, snapshot and restore it; keep a routing record of "
         "the user's route (deletes only that record, once the route is given back)"),
    Rule(("",), ("services",), ("get", "create", "patch", "delete"),
         "read the Service a router sends to; make and re-pin its -stable and -canary copies (deletes "
         "only copies marked with the Rollout's uid, once the route no longer sends to them)"),
    Rule(("discovery.k8s.io",), ("endpointslices",), ("list",),
         "before a route sends more requests to a Service, see that its EndpointSlices list ready pods of "
         "what it selects (a re-pinned selector's endpoints follow a moment later)"),
    Rule(("core.openfeature.dev",), ("featureflags",), ("get", "update"),
         "switch a release's OpenFeature flags off (rollback level 1)"),
    Rule(("",), ("secrets",), ("get",),
         "Prometheus credentials and webhook URLs a Rollout names, read by name (never listed)"),
    Rule(("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch"),
         "kopf notices CRDs created or changed while it runs", cluster_scoped=True, all_namespaces_only=True),
    Rule(("coordination.k8s.io",), ("leases",), ("get", "create", "update"),
         "leader election: one replica acts while it holds the Lease in the operator's own namespace",
         operator_namespace_only=True),
)  # fmt: skip


# The grants of each traffic router, by its field in spec.trafficRouting (a chart toggle each).
BACKEND_RULES: dict[str, tuple[Rule, ...]] = {
    "gatewayAPI": (
        Rule(("gateway.networking.k8s.io",), ("httproutes",), ("get", "patch"),
             "read the HTTPRoute a Rollout names and set the weights of its managed rule's backendRefs"),
    ),
    "istio": (
        Rule(("networking.istio.io",), ("virtualservices", "destinationrules"), ("get", "patch"),
             "read the VirtualService a Rollout names and set its route weights; keep the stable and "
             "canary subsets of its DestinationRule (subset-level)"),
    ),
    "nginx": (
        Rule(("networking.k8s.io",), ("ingresses",), ("get", "create", "patch", "delete"),
             "point the Ingress a Rollout names at the stable Service; make, weigh and (once the route is "
             "given back) delete its -canary copy"),
    ),
}  # fmt: skip
BACKENDS = tuple(BACKEND_RULES)
# On unless switched off: their grants reach only clusters with their CRDs installed.
DEFAULT_BACKENDS = ("gatewayAPI", "istio")


def rules_for(backends: tuple[str, ...] = DEFAULT_BACKENDS) -> tuple[Rule, ...]:
    """The core rules and those of the given routers, in the order the chart renders them."""
    unknown = set(backends) - set(BACKEND_RULES)
    if unknown:
        raise ValueError(f"no such router: {sorted(unknown)}")
    return (*RULES, *(rule for name in BACKENDS if name in backends for rule in BACKEND_RULES[name]))


@dataclass(frozen=True)
class Uses:
    """Calls kopf makes by itself, for the handlers in `parachute.handlers` and its own upkeep."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    all_namespaces_only: bool = False

    def calls(self) -> frozenset[Call]:
        return frozenset(Call(self.group, self.resource, verb) for verb in self.verbs)


# kopf reads the API's discovery documents (/api, /apis), which every authenticated user
# may read, and with `--namespace` it observes no namespaces and no CRDs
# (`settings.scanning.disabled`, set in `parachute.__main__`): the names are exact.
KOPF_USES: tuple[Uses, ...] = (
    Uses(api.GROUP, "rollouts", ("list", "watch"), "kopf.on.event on Rollouts, and the first listing that indexes them (parachute.rollout_index)"),
    Uses("apps", "deployments", ("list", "watch"), "kopf.on.event on Deployments wakes their Rollouts"),
    Uses("apps", "replicasets", ("list", "watch"),
         "kopf.on.event on canary ReplicaSets (by their label) wakes the stage waiting on their pods"),
    Uses("", "configmaps", ("list", "watch"), "kopf.on.event on ConfigMaps wakes the Rollouts tracking one"),
    Uses(api.GROUP, "releasepolicies", ("list", "watch"), "kopf.on.event on ReleasePolicies wakes their Rollouts"),
    Uses("", "events", ("create",), "kopf posts an Event when a handler fails (posting level ERROR)"),
    Uses("", "events", ("list", "watch"), "kopf.on.event on the Events recording user reports wakes their Rollouts"),
    Uses("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"),
         "kopf's resource observer, when it watches the whole cluster", all_namespaces_only=True),
)  # fmt: skip


def granted(namespaced: bool = False, backends: tuple[str, ...] = DEFAULT_BACKENDS) -> frozenset[Call]:
    """Every call the shipped rules allow, in one install mode, with the given routers."""
    return frozenset(
        call
        for rule in rules_for(backends)
        if not (namespaced and rule.all_namespaces_only)
        for call in rule.calls()
    )


def cluster_role_rules_document(backends: tuple[str, ...] = DEFAULT_BACKENDS) -> list[dict[str, Any]]:
    """The ClusterRole of the cluster-wide install."""
    return [rule.as_k8s() for rule in rules_for(backends) if not rule.operator_namespace_only]


def namespaced_role_rules_document(backends: tuple[str, ...] = DEFAULT_BACKENDS) -> list[dict[str, Any]]:
    """The Role in each watched namespace, in the namespaced install."""
    return [
        rule.as_k8s()
        for rule in rules_for(backends)
        if not rule.cluster_scoped and not rule.operator_namespace_only
    ]


def leader_election_rules_document() -> list[dict[str, Any]]:
    """The Role in the operator's own namespace, when it runs more than one replica."""
    return [rule.as_k8s() for rule in RULES if rule.operator_namespace_only]


def backend_rules_document(backend: str) -> list[dict[str, Any]]:
    """One router's rules: what its chart toggle adds to the ClusterRole (or to each Role)."""
    return [rule.as_k8s() for rule in BACKEND_RULES[backend]]


def namespaced_cluster_role_rules_document() -> list[dict[str, Any]]:
    """The small ClusterRole of the namespaced install: cluster-scoped kinds only."""
    return [rule.as_k8s() for rule in RULES if rule.cluster_scoped and not rule.all_namespaces_only]


def _binding(
    kind: str, name: str, role_kind: str, namespace: str | None, subject: dict[str, str]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": LABELS}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{RBAC_API}/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC_API, "kind": role_kind, "name": name},
        "subjects": [subject],
    }


def install_documents(
    namespace: str,
    service_account: str = "parachute",
    watch_namespaces: list[str] | None = None,
    *,
    name: str = "parachute",
    backends: tuple[str, ...] = DEFAULT_BACKENDS,
    leader_election: bool = False,
) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount and RBAC for the operator.

    With `watch_namespaces`, the namespaced install: a Role and RoleBinding in each of them
    and the small ClusterRole; else one ClusterRole for the whole cluster. With
    `leader_election`, a Role and RoleBinding for the Lease in the operator's namespace.
    """
    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": LABELS}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace, "labels": LABELS},
        },
    ]
    cluster_rules = (
        cluster_role_rules_document(backends)
        if watch_namespaces is None
        else namespaced_cluster_role_rules_document()
    )
    documents += [
        {
            "apiVersion": f"{RBAC_API}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": LABELS},
            "rules": cluster_rules,
        },
        _binding("ClusterRoleBinding", name, "ClusterRole", None, subject),
    ]
    for watched in watch_namespaces or []:
        documents += [
            {
                "apiVersion": f"{RBAC_API}/v1",
                "kind": "Role",
                "metadata": {"name": name, "namespace": watched, "labels": LABELS},
                "rules": namespaced_role_rules_document(backends),
            },
            _binding("RoleBinding", name, "Role", watched, subject),
        ]
    if leader_election:
        documents += leader_election_documents(namespace, service_account, f"{name}-leader-election")
    return documents


def leader_election_documents(
    namespace: str, service_account: str = "parachute", name: str = "parachute-leader-election"
) -> list[dict[str, Any]]:
    """The Role (leases in `namespace` only) and its RoleBinding to the operator's ServiceAccount."""
    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    return [
        {
            "apiVersion": f"{RBAC_API}/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": LABELS},
            "rules": leader_election_rules_document(),
        },
        _binding("RoleBinding", name, "Role", namespace, subject),
    ]
