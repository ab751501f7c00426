"""The plain install: namespace, ServiceAccount, RBAC from `parachute.rbac`, and the operator Deployment.

Written to `manifests/operator.yaml` by `make crds`; the Helm chart renders the same
objects from its templates and the same rule list.
"""

from __future__ import annotations

from typing import Any

from parachute import rbac
from parachute.plan.windows import playbook_window

NAMESPACE = "parachute-system"
IMAGE = "ghcr.io/parachute-dev/parachute:0.1.0"
LABELS = {"app.kubernetes.io/name": "parachute"}


def operator_deployment(namespace: str = NAMESPACE, image: str = IMAGE) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "parachute", "namespace": namespace, "labels": LABELS},
        "spec": {
            # One replica: kopf has no leader election; more need `--peering` (see the chart).
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "serviceAccountName": "parachute",
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "operator",
                            "image": image,
                            "args": ["run", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9100"],
                            "ports": [
                                {"name": "health", "containerPort": 8080},
                                {"name": "metrics", "containerPort": 9100},
                            ],
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}},
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "128Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def playbook_policy() -> dict[str, Any]:
    """The playbook's windows as a ReleasePolicy named `playbook` (spec §5)."""
    window = playbook_window("UTC").model_dump(by_alias=True, exclude_none=True)
    return {
        "apiVersion": "parachute.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "playbook", "labels": LABELS},
        "spec": {"window": window},
    }


def documents(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    return [*rbac.install_documents(namespace), operator_deployment(namespace)]
