"""Rollback level 3 for a Deployment released in place: its pod template back to the stable
revision, found in the ReplicaSet that ran it (as `kubectl rollout undo` does). The template
being replaced is copied first."""

from __future__ import annotations

import json
from typing import Any

from parachute import faults
from parachute.kube_api import KubeApi
from parachute.plan.desired_workload import revision_of, template_of_replica_set
from parachute.recovery import snapshots


async def restore(
    cluster: KubeApi, rollout: dict[str, Any], target: dict[str, Any], revision: str
) -> list[str]:
    namespace, name = target["metadata"]["namespace"], target["metadata"]["name"]
    # `revision` is a pod template's revision (without the tracked configuration's part).
    if revision_of(target["spec"]["template"]) == revision:
        return []
    for replica_set in await cluster.replica_sets_of(target):
        template = template_of_replica_set(replica_set)
        if revision_of(template) != revision:
            continue
        kept = await snapshots.copy(
            cluster, rollout, target, {"template.json": json.dumps(target["spec"]["template"])}
        )
        faults.point("template-copied", namespace)
        target["spec"]["template"] = template
        await cluster.replace_deployment(namespace, name, target)
        faults.point("template-restored", namespace)
        return [
            f"Deployment {name}'s pod template restored to revision {revision} (the one replaced is kept in {kept})"
        ]
    return [f"Deployment {name}: no ReplicaSet runs revision {revision}; revert its template by hand"]
