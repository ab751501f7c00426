"""Canary ReplicaSets' ready pods as their watch last showed them: a change wakes the stage
waiting on them.

A canary's ready pods are counted from its ReplicaSets too (`workload.canary_state`): the
Deployment controller writes a Deployment's count after its ReplicaSet's, and at 10,000 Rollouts
it was minutes late. Without this watch a stage waiting for its canary learnt of a ReplicaSet's
pods only at its Deployment's event or at its own next look (a quarter of its wait later, up to
five minutes). Only ReplicaSets carrying the canary label are watched (the API server applies
the selector; it selects ReplicaSets on no field but their name and namespace): a canary scaled
to 0 keeps its ReplicaSets, two at most (`workload.CANARY_HISTORY`), so at rest two per target
that has had a canary, and only their ready pods are remembered.

Pods becoming ready are looked at again `GRACE` later: when the controller keeps up, the
Deployment's own event has come by then and woken the Rollout, and its copy says as many ready
(`caught_up`), so nothing more is done; only when it still says fewer is the Rollout woken. (A
wake 5 s later for every change cost a reconcile in vain whenever the Deployment's event had
been handled first, or while the Rollout's reconcile ran: at 1,000 Rollouts, hundreds.) Pods
becoming unready wake nothing: a canary's ready pods are the larger of the two counts, and the
Deployment's event says it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parachute.plan.desired_workload import CANARY_SUFFIX
from parachute.plan.versions import CANARY_LABEL

Key = tuple[str, str]  # namespace, ReplicaSet

LABEL = CANARY_LABEL  # on a canary's pod template, so on its ReplicaSets: what the watch selects

GRACE = 5.0  # seconds: the Deployment's own event, when the controller keeps up, comes first


class ReadyCounts:
    """The ready pods of each canary ReplicaSet, as last shown."""

    def __init__(self) -> None:
        self._ready: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def ready(self, namespace: str, name: str) -> int:
        """Its ready pods as last shown (none, when not shown or gone)."""
        return self._ready.get((namespace, name), 0)

    def rose(self, body: Mapping[str, Any], deleted: bool = False) -> int | None:
        """The ReplicaSet's ready pods, if this event brings more of them than the last (a new one
        counts from none; a deleted one brings none: its canary went or moved on)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if deleted:
            self._ready.pop(key, None)
            return None
        ready = int((body.get("status") or {}).get("readyReplicas") or 0)
        # None kept is none ready: a ReplicaSet gone while the watch was away leaves no entry behind.
        before = self._ready.pop(key, 0)
        if ready:
            self._ready[key] = ready
        return ready if ready > before else None


def caught_up(canary: Mapping[str, Any] | None, ready: int) -> bool:
    """The canary Deployment's copy says at least `ready` pods ready (None: no copy to go by)."""
    return canary is not None and int((canary.get("status") or {}).get("readyReplicas") or 0) >= ready


def target_of(body: Mapping[str, Any]) -> str | None:
    """The target whose canary owns this ReplicaSet (None: not a canary Deployment's)."""
    for owner in (body.get("metadata") or {}).get("ownerReferences") or []:
        name = owner.get("name") or ""
        if (
            owner.get("kind") == "Deployment"
            and name.endswith(CANARY_SUFFIX)
            and len(name) > len(CANARY_SUFFIX)
        ):
            return name.removesuffix(CANARY_SUFFIX)
    return None


READY = ReadyCounts()
