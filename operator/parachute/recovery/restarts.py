"""Restarting pods that cannot re-read their flags or configuration, as `kubectl rollout
restart` does: a stamp in the pod template's annotations. The restart counts as done when
the Deployment has rolled out with that stamp."""

from __future__ import annotations

from typing import Any

from parachute import kube
from parachute.plan.workload import RESTARTED_AT


def stamp_of(deployment: dict[str, Any]) -> str | None:
    template = (deployment.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)


def rolled_out(deployment: dict[str, Any]) -> bool:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    current = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    return bool(
        current and status.get("updatedReplicas", 0) >= want and status.get("availableReplicas", 0) >= want
    )


def restarted_at(canary: dict[str, Any] | None, target: dict[str, Any], include_target: bool) -> str | None:
    """The stamp every Deployment that must restart has finished rolling out with, if one."""
    deployments = [d for d in (canary,) if d is not None]
    if include_target:
        deployments.append(target)
    stamps = {stamp_of(d) for d in deployments}
    if len(stamps) != 1 or not all(rolled_out(d) for d in deployments):
        return None
    return stamps.pop()


async def restart(namespace: str, deployment: dict[str, Any], stamp: str) -> list[str]:
    if stamp_of(deployment) == stamp:
        return []
    name = deployment["metadata"]["name"]
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    await kube.patch_deployment(namespace, name, patch)
    return [f"restarted the pods of Deployment {name}"]
