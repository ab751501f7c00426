"""Where each version shows in the metrics: its pods' names, its Deployment and its Service. Pure.

Parachute changes nothing on the pods to tell the versions apart: stable pods belong to the
paused target, which must stay as it is. Every Prometheus that discovers pods labels their
series with the namespace and the pod's name, and a Deployment's pods are named after their
ReplicaSet, which is named after the Deployment and its pod-template hash. So the canary's pods
are those of `<target>-canary`'s ReplicaSets, and stable's those of the target's ReplicaSets
that run the stable template: exact patterns, read from the ReplicaSets that exist.

The version a round judges is the canary until a 100% stage has rolled the target, then the
target's own pods (the new version serving there); after a rollback, what serves from the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from parachute.plan.desired_workload import (
    canary_name,
    replica_set_revision,
    runs_configuration_of,
    template_revision,
)

# A pod's name is its ReplicaSet's name and a dash, cut to 58 characters, then 5 random ones
# (Kubernetes' name generator).
GENERATED_BASE = 58
RANDOM_SUFFIX = "[a-z0-9]{5}"
# A pod-template hash: a 32-bit number written in Kubernetes' alphabet without vowels, so no
# word (`canary`, `worker`) passes for one.
TEMPLATE_HASH = "[bcdfghjklmnpqrstvwxz2456789]{1,10}"
CANARY_LABEL = "parachute.dev/canary"


@dataclass(frozen=True)
class Where:
    """One version in the metrics: its pods (a pattern of pod names), the Deployment they belong
    to, the Service a router sends its share to ("" without a router), and whether its traffic
    passes a router's canary backend."""

    pods: str
    workload: str
    service: str = ""
    canary_backend: bool = False


@dataclass(frozen=True)
class Versions:
    """The version a round judges, and stable (its baseline while the canary is judged)."""

    judged: Where
    stable: Where
    judges_target: bool = False


def pod_pattern(replica_sets: Iterable[str]) -> str:
    """An RE2 pattern (anchored, as PromQL anchors them) matching the pods of these ReplicaSets."""
    bases = sorted({_escape(f"{name}-"[:GENERATED_BASE]) for name in replica_sets})
    if not bases:
        raise ValueError("no ReplicaSet to name pods after")
    head = bases[0] if len(bases) == 1 else "(?:" + "|".join(bases) + ")"
    return head + RANDOM_SUFFIX


def any_pod_of(deployment: str) -> str:
    """The pods of any ReplicaSet of `deployment`, before one is seen (a canary not made yet)."""
    return _escape(f"{deployment}-") + TEMPLATE_HASH + "-" + RANDOM_SUFFIX


def _escape(name: str) -> str:
    # Object names hold lowercase letters, digits, '-' and '.'; a class needs no backslash, which
    # would have to be doubled inside a PromQL string.
    return name.replace(".", "[.]")


def _owned_by(replica_set: Mapping[str, Any], uid: str | None) -> bool:
    owners = (replica_set.get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(o.get("uid") == uid for o in owners)


def _names(
    replica_sets: Iterable[Mapping[str, Any]],
    owner_uid: str | None,
    revision: str | None = None,
    added_labels: tuple[str, ...] = (),
    serving_only: bool = False,
) -> list[str]:
    """Names of the ReplicaSets `owner_uid` owns, of one template revision if given, or only those
    with pods (serving) if asked."""
    out = []
    for replica_set in replica_sets:
        if not _owned_by(replica_set, owner_uid):
            continue
        if serving_only and int((replica_set.get("status") or {}).get("replicas") or 0) <= 0:
            continue
        if revision is not None and (
            replica_set_revision(replica_set, added_labels) != template_revision(revision)
            or not runs_configuration_of(replica_set, revision)
        ):
            continue
        out.append(str(replica_set["metadata"]["name"]))
    return out


def locate(
    replica_sets: Iterable[Mapping[str, Any]],
    *,
    target: Mapping[str, Any],
    canary: Mapping[str, Any] | None,
    revision: str | None,
    stable_revision: str | None,
    judges_target: bool,
    service: str | None = None,
) -> Versions:
    """Where the judged version and stable are, from the ReplicaSets of the target and the canary.

    `revision` is the release's (what the canary runs), `stable_revision` the stable one's;
    `service` the Service a router splits (its `-canary` and `-stable` copies carry the shares).
    """
    sets = list(replica_sets)
    name = str(target["metadata"]["name"])
    target_uid = (target.get("metadata") or {}).get("uid")
    stable_sets = _names(sets, target_uid, stable_revision) if stable_revision else []
    stable = Where(
        pods=pod_pattern(stable_sets) if stable_sets else any_pod_of(name),
        workload=name,
        service=f"{service}-stable" if service else "",
    )
    if judges_target:
        serving = _names(sets, target_uid, serving_only=True)
        judged = Where(
            pods=pod_pattern(serving) if serving else any_pod_of(name),
            workload=name,
            service=f"{service}-stable" if service else "",
        )
        return Versions(judged=judged, stable=stable, judges_target=True)
    canary_uid = (canary.get("metadata") or {}).get("uid") if canary else None
    canary_sets = _names(sets, canary_uid, revision, (CANARY_LABEL,)) if revision else []
    judged = Where(
        pods=pod_pattern(canary_sets) if canary_sets else any_pod_of(canary_name(name)),
        workload=canary_name(name),
        service=f"{service}-canary" if service else "",
        canary_backend=True,
    )
    return Versions(judged=judged, stable=stable)


def at_rest(
    replica_sets: Iterable[Mapping[str, Any]], target: Mapping[str, Any], service: str | None
) -> Where:
    """What serves now from the target (every ReplicaSet with pods): where a metric's series are
    looked for before any release, to tell whether they exist at all."""
    name = str(target["metadata"]["name"])
    serving = _names(list(replica_sets), (target.get("metadata") or {}).get("uid"), serving_only=True)
    return Where(
        pods=pod_pattern(serving) if serving else any_pod_of(name),
        workload=name,
        service=f"{service}-stable" if service else "",
    )
