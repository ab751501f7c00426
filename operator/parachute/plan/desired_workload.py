"""What the workload should look like: replica arithmetic and template revisions.

The target Deployment keeps its full size, so stable can take all traffic back at once.
With replica-ratio routing the canary is sized so that ready pods split as the weight says:
canary / (stable + canary) ≈ weight. With a router the weight is the router's, and the canary
is sized for its share of the load (or at full size, when asked). What really serves is
counted from ReplicaSets: each one's pod template, hashed as a Deployment's is, and its
ready pods.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

# Annotations that change a pod template without changing the code that runs: they start new
# pods, which read the configuration afresh.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets
CONFIGURATION = "parachute.dev/configuration"  # a canary's: the tracked configuration it runs
IGNORED_TEMPLATE_ANNOTATIONS = frozenset({RESTARTED_AT, CONFIGURATION})
HASH_LABEL = "pod-template-hash"  # added by the Deployment controller to its ReplicaSets' pods


def canary_replicas(stable: int, weight: int) -> int:
    """Canary pods for `weight`% of traffic next to `stable` pods; at least one above 0%."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is outside 0..100")
    if weight == 0 or stable == 0:
        return 0 if weight == 0 else 1
    if weight == 100:
        return stable
    return max(1, round(stable * weight / (100 - weight)))


def routed_canary_replicas(target: int, weight: int, full: bool = False) -> int:
    """Canary pods for `weight`% of the load a router sends it, `target` pods taking all of it:
    target x weight / 100 rounded up, at least one above 0%; the target's size when `full`."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is outside 0..100")
    if weight == 0:
        return 0
    if full or weight == 100:
        return max(1, target)
    return max(1, math.ceil(target * weight / 100))


def actual_weight(stable: int, canary: int) -> int:
    """The share of ready pods that run the new version, in percent."""
    total = stable + canary
    return 0 if total == 0 else round(100 * canary / total)


# What Parachute reads of a Deployment's status (`status_current`, `rolled_out`, the canary's
# ready count). Conditions and the like change with these, or say nothing the planner acts on
# (a gate on a Deployment's condition reads it anew at every check). Of these, a change of
# `observedGeneration` alone wakes nothing (`as_news`).
STATUS_READ = ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
# The controller's number for its newest ReplicaSet: Parachute reads the ReplicaSets themselves.
CONTROLLER_REVISION = "deployment.kubernetes.io/revision"


def as_read(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The Deployment without what Parachute never reads of it: a change only there is no news."""
    meta = dict(deployment.get("metadata") or {})
    if CONTROLLER_REVISION in (meta.get("annotations") or {}):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k != CONTROLLER_REVISION}
    spec = dict(deployment.get("spec") or {})
    if spec.get("paused") is False:  # the API server leaves it out: an unpause's answer has none
        del spec["paused"]
    status = deployment.get("status") or {}
    return {**deployment, "metadata": meta, "spec": spec,
            "status": {k: status[k] for k in STATUS_READ if k in status}}  # fmt: skip


def as_news(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """What of a Deployment wakes its Rollout when it changes: what Parachute reads, but not the
    controller's word that it has seen the latest spec (`observedGeneration`) when its counts
    stay the same. That word follows every spec write, Parachute's own pause included (a
    thousand Rollouts adopted are a thousand such events), and no decision is left waiting on
    it alone: one that holds for a current status looks again within `CLUSTER_TICK` (the
    unpause of a paused target, a rollback's restarts), and a stage waiting for pods within
    `waiting_tick` (15 s, then a quarter of its wait) when their counts do not change (a
    Deployment at 0 replicas, pods a quota refused)."""
    read = as_read(deployment)
    return {**read, "status": {k: v for k, v in read["status"].items() if k != "observedGeneration"}}


def status_current(deployment: dict[str, Any]) -> bool:
    """The Deployment controller has seen the latest spec: the status counts describe it."""
    status = deployment.get("status") or {}
    return bool(status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0))


def rolled_out(deployment: dict[str, Any]) -> bool:
    """Every pod runs the current template and is available, and none of an older one is left."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    return bool(
        status_current(deployment)
        and status.get("updatedReplicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
    )


def restart_stamp(deployment: dict[str, Any]) -> str | None:
    """The restart stamp in the Deployment's pod template, if any."""
    template = (deployment.get("spec") or {}).get("template") or {}
    stamp = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
    return str(stamp) if stamp is not None else None


def with_config(template_revision: str, config_hashes: dict[str, str]) -> str:
    """A release's revision: the pod template's, plus the tracked configuration's when there is
    any, so that a change to a tracked ConfigMap is a release of its own."""
    if not config_hashes:
        return template_revision
    canonical = ",".join(f"{name}={digest}" for name, digest in sorted(config_hashes.items()))
    return f"{template_revision}.{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def template_revision(revision: str) -> str:
    """The pod template's part of a release's revision."""
    return revision.split(".", 1)[0]


def configuration_revision(revision: str) -> str | None:
    """The tracked configuration's part of a release's revision (None: it tracks none)."""
    parts = revision.split(".", 1)
    return parts[1] if len(parts) == 2 else None


def configuration_of(replica_set: Mapping[str, Any]) -> str | None:
    """The configuration a canary ReplicaSet's pods were started for (None: not marked; the
    target's, and a canary's made before the mark)."""
    template = (replica_set.get("spec") or {}).get("template") or {}
    mark = ((template.get("metadata") or {}).get("annotations") or {}).get(CONFIGURATION)
    return str(mark) if mark is not None else None


def runs_configuration_of(replica_set: Mapping[str, Any], revision: str) -> bool:
    """Whether `replica_set`'s pods can run the configuration of the release `revision`: those
    marked for another one read it when they started, whatever it is now."""
    mark = configuration_of(replica_set)
    return mark is None or mark == configuration_revision(revision)


def revision_of(template: dict[str, Any]) -> str:
    """A short, stable hash of a pod template: a new value is a new release.

    Keys whose value is null are not part of it: API servers before 1.34 send the template's
    `creationTimestamp: null`, later ones and the Kubernetes client's models leave it out, and
    the same template must have one revision whichever way it was read."""
    template = _without_nulls(template)
    meta = dict(template.get("metadata") or {})
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in IGNORED_TEMPLATE_ANNOTATIONS
    }
    meta["annotations"] = annotations or None
    canonical = json.dumps({**template, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def template_of_replica_set(replica_set: dict[str, Any], added_labels: Iterable[str] = ()) -> dict[str, Any]:
    """The pod template a ReplicaSet was made from: its own, without the labels added to it
    (the Deployment controller's hash, and `added_labels`, such as the canary's mark)."""
    template: dict[str, Any] = copy.deepcopy((replica_set.get("spec") or {}).get("template") or {})
    labels = (template.get("metadata") or {}).get("labels") or {}
    for label in (HASH_LABEL, *added_labels):
        labels.pop(label, None)
    return template


# A ReplicaSet's pod template changes only with its generation (every change of its spec counts
# one): its revision is hashed once, not at every reconcile that lists it. Bounded by clearing.
# What is read can change without a new generation only when an upgraded API server defaults a
# new template field; revisions hashed from reads shift then anyway (those in status with them),
# and a restart of the operator hashes every ReplicaSet afresh.
_REVISIONS: dict[tuple[str, int, tuple[str, ...]], str] = {}
REVISIONS_KEPT = 50_000


def replica_set_revision(replica_set: Mapping[str, Any], added_labels: Iterable[str] = ()) -> str:
    """The revision of the pod template `replica_set` was made from (`template_of_replica_set`)."""
    meta = replica_set.get("metadata") or {}
    uid, generation, added = meta.get("uid"), meta.get("generation"), tuple(added_labels)
    if not uid or not isinstance(generation, int):
        return revision_of(template_of_replica_set(dict(replica_set), added))
    key = (str(uid), generation, added)
    found = _REVISIONS.get(key)
    if found is None:
        if len(_REVISIONS) >= REVISIONS_KEPT:
            _REVISIONS.clear()
        found = _REVISIONS[key] = revision_of(template_of_replica_set(dict(replica_set), added))
    return found


def ready_by_revision(
    replica_sets: Iterable[dict[str, Any]], owner_uid: str | None, added_labels: Iterable[str] = ()
) -> dict[str, int]:
    """Ready pods of each template revision among the ReplicaSets `owner_uid` owns; pods marked
    with the configuration they were started for (a canary's) under `<template>.<config>`, the
    release's revision."""
    added = tuple(added_labels)
    out: dict[str, int] = {}
    for replica_set in replica_sets:
        owners = replica_set.get("metadata", {}).get("ownerReferences") or []
        ready = int((replica_set.get("status") or {}).get("readyReplicas") or 0)
        if owner_uid is None or ready <= 0 or all(o.get("uid") != owner_uid for o in owners):
            continue
        revision = replica_set_revision(replica_set, added)
        mark = configuration_of(replica_set)
        if mark is not None:
            revision = f"{revision}.{mark}"
        out[revision] = out.get(revision, 0) + ready
    return out


def ready_of_template(
    replica_sets: Iterable[dict[str, Any]], owner_uid: str | None, template: Mapping[str, Any]
) -> int:
    """Ready pods of the ReplicaSets `owner_uid` owns whose pod template is `template` exactly,
    the Deployment controller's hash label aside: a Deployment's current ReplicaSet, whatever
    its status says yet. Exactly, not by revision: a revision leaves the restart stamp out, and
    the pods of a template that differs only in it run another configuration."""
    want = _without_nulls(dict(template))
    ready = 0
    for replica_set in replica_sets:
        owners = replica_set.get("metadata", {}).get("ownerReferences") or []
        if owner_uid is None or all(o.get("uid") != owner_uid for o in owners):
            continue
        if _without_nulls(template_of_replica_set(replica_set)) == want:
            ready += int((replica_set.get("status") or {}).get("readyReplicas") or 0)
    return ready


def sets_by_hash(replica_sets: Iterable[dict[str, Any]], owner_uid: str | None) -> dict[str, tuple[str, int]]:
    """The ReplicaSets `owner_uid` owns, by pod-template-hash: (template revision, ready pods)."""
    out: dict[str, tuple[str, int]] = {}
    for replica_set in replica_sets:
        meta = replica_set.get("metadata") or {}
        owners = meta.get("ownerReferences") or []
        digest = (meta.get("labels") or {}).get(HASH_LABEL)
        if owner_uid is None or not digest or all(o.get("uid") != owner_uid for o in owners):
            continue
        ready = int((replica_set.get("status") or {}).get("readyReplicas") or 0)
        out[str(digest)] = (replica_set_revision(replica_set), ready)
    return out


CANARY_SUFFIX = "-canary"


def canary_name(target: str) -> str:
    """The name of the Deployment that runs a target's canary."""
    return f"{target}{CANARY_SUFFIX}"


def label_selector(deployment: dict[str, Any]) -> str:
    """A Deployment's `matchLabels` as a label selector (what its ReplicaSets carry)."""
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
