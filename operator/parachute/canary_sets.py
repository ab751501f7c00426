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

The wake comes `GRACE` later: the Deployment's own event usually follows within a second when
the controller keeps up, and wakes the Rollout at once; its reconcile then decides when to look
next, and this later wake is dropped, so a timely controller costs no second reconcile (unless
the Deployment's event is handled before the ReplicaSet's: the watches are two streams).
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

    def changed(self, body: Mapping[str, Any], deleted: bool = False) -> bool:
        """Whether this event changes the ReplicaSet's ready pods (a new one counts from none;
        a deleted one changes nothing a stage waits on: its canary went or moved on)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if deleted:
            self._ready.pop(key, None)
            return False
        ready = int((body.get("status") or {}).get("readyReplicas") or 0)
        # None kept is none ready: a ReplicaSet gone while the watch was away leaves no entry behind.
        before = self._ready.pop(key, 0)
        if ready:
            self._ready[key] = ready
        return ready != before


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
