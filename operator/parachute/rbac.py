"""What the operator may do in the cluster: the one list of RBAC rules, each with its reason.

The plain manifests and the Helm chart are generated from this list (`make crds`), and an
integration test runs the operator under a ServiceAccount bound to exactly these rules,
so a missing permission fails a test rather than a user's release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parachute import api


@dataclass(frozen=True)
class Rule:
    groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def as_k8s(self) -> dict[str, Any]:
        return {"apiGroups": list(self.groups), "resources": list(self.resources), "verbs": list(self.verbs)}


RULES: tuple[Rule, ...] = (
    Rule((api.GROUP,), ("rollouts",), ("get", "list", "watch", "patch"),
         "watch Rollouts; kopf keeps its bookkeeping in their annotations"),
    Rule((api.GROUP,), ("rollouts/status",), ("get", "patch", "update"), "status is where a release's state lives"),
    Rule((api.GROUP,), ("metrictemplates", "clustermetrictemplates", "releasepolicies"), ("get", "list", "watch"),
         "metric templates and release policies Rollouts reference"),
    Rule(("",), ("events",), ("create", "patch"), "Events at every transition"),
    Rule(("events.k8s.io",), ("events",), ("create", "patch"), "Events at every transition"),
    Rule(("apps",), ("deployments",), ("get", "list", "watch", "create", "patch", "update", "delete"),
         "pause the target; run the canary Deployment it owns (deletes only what it owns)"),
    Rule(("apps",), ("replicasets",), ("get", "list", "watch"), "find the stable revision's pod template"),
    Rule(("",), ("services",), ("get", "list", "watch", "create", "patch", "delete"),
         "the -stable and -canary Services it owns"),
    Rule(("",), ("configmaps",), ("get", "list", "watch", "create", "patch", "update"),
         "flip flags, snapshot and restore tracked configuration"),
    Rule(("core.openfeature.dev",), ("featureflags",), ("get", "update"),
         "switch a release's OpenFeature flags off (rollback level 1)"),
    Rule(("",), ("secrets",), ("get",), "Prometheus credentials and webhook URLs named in a Rollout"),
    Rule(("",), ("namespaces",), ("list", "watch"), "kopf follows namespaces when running cluster-wide"),
    Rule(("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch"),
         "kopf discovers the resources it serves"),
)  # fmt: skip


def cluster_role_rules_document() -> list[dict[str, Any]]:
    return [rule.as_k8s() for rule in RULES]


def install_documents(namespace: str, service_account: str = "parachute") -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, ClusterRole and binding for the operator."""
    labels = {"app.kubernetes.io/name": "parachute"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "parachute", "labels": labels},
            "rules": cluster_role_rules_document(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "parachute", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "parachute"},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]
