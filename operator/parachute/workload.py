"""The workload Parachute runs beside the user's Deployment: observe it, and make it as
the planner intends.

The target (the user's or GitOps') is only paused and unpaused. The new version runs in a
canary Deployment Parachute owns (`<target>-canary`): the target's pod template plus a
canary label, owned by the Rollout, so it goes away with the Rollout. Writes are "ensure":
build what should be, read what is, create it if missing, refuse if it is someone else's,
patch only what differs.
"""

from __future__ import annotations

import copy
from typing import Any

from parachute import api, faults
from parachute.kube_api import KubeApi
from parachute.plan.desired_workload import (
    CONFIGURATION,
    RESTARTED_AT,
    canary_name,
    configuration_revision,
    ready_by_revision,
    ready_of_template,
    restart_stamp,
    revision_of,
    rolled_out,
    sets_by_hash,
    status_current,
)
from parachute.plan.model import CanaryState, Observed, Serving, TargetState, WorkloadIntent

CANARY_LABEL = f"{api.GROUP}/canary"
ROLLOUT_LABEL = f"{api.GROUP}/rollout"
REVISION_ANNOTATION = f"{api.GROUP}/revision"
# A canary's old ReplicaSets kept (scaled to 0): nothing reads them, and every one carrying the
# canary label is in the operator's watch of canaries' ReplicaSets (the Deployment's default keeps 10).
CANARY_HISTORY = 1
COMMANDS = (api.PROMOTE_ANNOTATION, api.ABORT_ANNOTATION, api.RETRY_ANNOTATION, api.RESOLVED_ANNOTATION)


class ForeignObjectError(Exception):
    """An object Parachute would manage exists and belongs to someone else: it is left alone."""


def target_state(deployment: dict[str, Any]) -> TargetState:
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return TargetState(
        revision=revision_of(spec.get("template") or {}),
        replicas=replicas,
        paused=bool(spec.get("paused")),
        images=tuple(c.get("image", "") for c in containers),
        rolled_out=rolled_out(deployment),
        restarted_at=restart_stamp(deployment),
        status_current=status_current(deployment),
    )


def canary_state(deployment: dict[str, Any], replica_sets: list[dict[str, Any]] | None = None) -> CanaryState:
    """The canary as its Deployment says, its ready pods of its current template also counted
    from its ReplicaSets: the Deployment controller writes the Deployment's count after the
    ReplicaSet's, and at 10,000 Rollouts it was minutes behind (3,263 canaries ready by their
    ReplicaSets and none by their Deployments), every stage waiting on the later word. (A
    canary ReplicaSet's pods becoming ready wake its Rollout when its Deployment lags:
    `parachute.canary_sets`.)"""
    meta, spec, status = deployment["metadata"], deployment.get("spec") or {}, deployment.get("status") or {}
    current = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    # Pods of an earlier template may still be ready: count only updated ones.
    ready = min(status.get("readyReplicas", 0), status.get("updatedReplicas", 0)) if current else 0
    if replica_sets is not None:
        ready = max(ready, ready_of_template(replica_sets, meta.get("uid"), spec.get("template") or {}))
    return CanaryState(
        revision=(meta.get("annotations") or {}).get(REVISION_ANNOTATION),
        replicas=int(spec.get("replicas", 0)),
        ready=ready,
    )


def owned_by(obj: dict[str, Any], rollout: dict[str, Any]) -> bool:
    uid = rollout["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


async def observe(
    cluster: KubeApi, rollout: dict[str, Any], target: dict[str, Any]
) -> tuple[Observed, dict[str, Any] | None]:
    """What the planner sees, and the canary Deployment as read (for `act`, so it is read once)."""
    namespace = rollout["metadata"]["namespace"]
    canary = await cluster.read_deployment(namespace, canary_name(target["metadata"]["name"]))
    if canary is not None and not owned_by(canary, rollout):
        raise ForeignObjectError(
            f"Deployment {namespace}/{canary['metadata']['name']} exists and is not this Rollout's; "
            "Parachute will not overwrite it (rename it, or delete it if it is left over)"
        )
    annotations = rollout["metadata"].get("annotations") or {}
    # One list: the canary's ReplicaSets carry the target's labels too.
    replica_sets = await cluster.replica_sets_of(target)
    observed = Observed(
        target=target_state(target),
        canary=canary_state(canary, replica_sets) if canary else None,
        commands={k: v for k, v in annotations.items() if k in COMMANDS},
        serving=serving(replica_sets, target, canary),
    )
    return observed, canary


def serving(
    replica_sets: list[dict[str, Any]], target: dict[str, Any], canary: dict[str, Any] | None
) -> Serving:
    """Ready pods of each template revision, in the target and in the canary, from their
    ReplicaSets."""
    canary_uid = canary["metadata"].get("uid") if canary else None
    return Serving(
        target=ready_by_revision(replica_sets, target["metadata"].get("uid")),
        canary=ready_by_revision(replica_sets, canary_uid, (CANARY_LABEL,)),
        target_sets=sets_by_hash(replica_sets, target["metadata"].get("uid")),
    )


def desired_canary(
    rollout: dict[str, Any], target: dict[str, Any], replicas: int, revision: str
) -> dict[str, Any]:
    meta = rollout["metadata"]
    template = copy.deepcopy(target["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[CANARY_LABEL] = "true"
    # A release of configuration alone leaves the pod template as it was: the canary's pods must
    # start again to read it (a second change while the first's canary runs would otherwise be
    # judged on pods that read the first), as the target's are restarted at its promotion.
    configuration = configuration_revision(revision)
    if configuration is not None:
        annotations = template["metadata"].get("annotations") or {}
        template["metadata"]["annotations"] = {**annotations, CONFIGURATION: configuration}
    selector = copy.deepcopy(target["spec"]["selector"])
    selector.setdefault("matchLabels", {})[CANARY_LABEL] = "true"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": canary_name(target["metadata"]["name"]),
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "parachute", ROLLOUT_LABEL: meta["name"]},
            "annotations": {REVISION_ANNOTATION: revision},
            "ownerReferences": [api.owner_reference(meta["name"], meta["uid"])],
        },
        "spec": {
            "replicas": replicas,
            "selector": selector,
            "template": template,
            "revisionHistoryLimit": CANARY_HISTORY,
        },
    }


async def act(
    cluster: KubeApi,
    rollout: dict[str, Any],
    target: dict[str, Any],
    current: dict[str, Any] | None,
    intent: WorkloadIntent,
) -> list[str]:
    """Make the workload as `intent` says; returns what was changed (for logs).

    `current` is the canary as `observe` read it (and found to be this Rollout's): only this
    reconcile changes it, and a replace is guarded by its resourceVersion.
    """
    namespace = rollout["metadata"]["namespace"]
    name = target["metadata"]["name"]
    changed = []
    if intent.target_restart and restart_stamp(target) != intent.target_restart:
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: intent.target_restart}}}}}
        await cluster.patch_deployment(namespace, name, patch)
        changed.append(f"restarted the pods of Deployment {name} (new configuration)")
        faults.point("target-restarted", namespace)
    # A pause carries the Rollout's mark, so that a target whose Rollout is gone is known and
    # given back unpaused (parachute.handback); a pause from before the mark gets it too.
    marked = (target["metadata"].get("annotations") or {}).get(api.PAUSED_BY_ANNOTATION)
    mark = rollout["metadata"]["name"] if intent.target_paused else None
    if bool(target["spec"].get("paused")) != intent.target_paused or marked != mark:
        pause: dict[str, Any] = {
            "metadata": {"annotations": {api.PAUSED_BY_ANNOTATION: mark}},
            "spec": {"paused": intent.target_paused},
        }
        await cluster.patch_deployment(namespace, name, pause)
        changed.append(f"{'paused' if intent.target_paused else 'unpaused'} Deployment {name}")
        faults.point("target-paused" if intent.target_paused else "target-unpaused", namespace)

    if intent.canary_replicas == 0 or intent.canary_revision is None:
        if current is not None and current["spec"].get("replicas", 0) != 0:
            await cluster.patch_deployment(namespace, canary_name(name), {"spec": {"replicas": 0}})
            changed.append(f"scaled {canary_name(name)} to 0")
            faults.point("canary-retired", namespace)
        return changed
    desired = desired_canary(rollout, target, intent.canary_replicas, intent.canary_revision)
    if current is None:
        await cluster.create_deployment(namespace, desired)
        changed.append(f"created {canary_name(name)} with {intent.canary_replicas} replicas")
        faults.point("canary-created", namespace)
    elif canary_state(current).revision != intent.canary_revision:
        # Replaced whole, not patched: a merge would keep containers the new template dropped.
        current["metadata"].setdefault("annotations", {}).update(desired["metadata"]["annotations"])
        current["spec"] = {
            **current["spec"],
            "replicas": intent.canary_replicas,
            "template": desired["spec"]["template"],
            "revisionHistoryLimit": CANARY_HISTORY,
        }
        await cluster.replace_deployment(namespace, canary_name(name), current)
        changed.append(f"moved {canary_name(name)} to revision {intent.canary_revision}")
        faults.point("canary-replaced", namespace)
    elif current["spec"].get("replicas", 0) != intent.canary_replicas:
        await cluster.patch_deployment(
            namespace, canary_name(name), {"spec": {"replicas": intent.canary_replicas}}
        )
        changed.append(f"scaled {canary_name(name)} to {intent.canary_replicas}")
        faults.point("canary-scaled", namespace)
    return changed
