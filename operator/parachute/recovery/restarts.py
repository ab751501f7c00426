"""Restarting pods that cannot re-read their flags or configuration, as `kubectl rollout
restart` does: a stamp in the pod template's annotations. The restart counts as done when
the Deployment has rolled out with that stamp."""

from __future__ import annotations

from typing import Any

from parachute.kube_api import KubeApi
from parachute.plan.desired_workload import RESTARTED_AT, restart_stamp, rolled_out


def restarted_at(canary: dict[str, Any] | None, target: dict[str, Any], include_target: bool) -> str | None:
    """The stamp every Deployment that must restart has finished rolling out with, if one."""
    deployments = [d for d in (canary,) if d is not None]
    if include_target:
        deployments.append(target)
    stamps = {restart_stamp(d) for d in deployments}
    if len(stamps) != 1 or not all(rolled_out(d) for d in deployments):
        return None
    return stamps.pop()


async def restart(cluster: KubeApi, namespace: str, deployment: dict[str, Any], stamp: str) -> list[str]:
    if restart_stamp(deployment) == stamp:
        return []
    name = deployment["metadata"]["name"]
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    await cluster.patch_deployment(namespace, name, patch)
    return [f"restarted the pods of Deployment {name}"]
