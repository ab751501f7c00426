"""A target's ReplicaSets as last listed, answered again while its Deployments show no change.

Every reconcile listed the target's ReplicaSets (which revisions serve, and the pods of each
version): at 1,000 Rollouts one of a reconcile's three API requests, and one the API server
answers by filtering every ReplicaSet of the namespace. The listing is made for a target and
its canary, and kept with what was known of both Deployments just before it was asked for
(`marks`: the version of each one's copy, or its absence; `parachute.watched`).

Why it holds while the marks do: a Deployment's ReplicaSets are changed by the Deployment
controller, and it writes the Deployment's status when they change (its replicas, ready,
available and updated replicas are theirs added up), which the watch brings as a new version of
the copy. A listing made after the marks were taken has seen every change before them; a change
after them moves a mark first, and the next ask lists again. What a Deployment's status cannot
show (pods that moved between two of its ReplicaSets with every sum unchanged, a ReplicaSet
edited by hand) is bounded by `keep`: a listing is not answered for longer than that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

Body = dict[str, Any]
Key = tuple[str, str]  # namespace, label selector
Marks = tuple[Hashable | None, ...]

KEEP = 120.0  # seconds a listing is answered at most, however still its Deployments are
SWEEP = 1000  # listings stored between two sweeps of those kept too long (never asked again)


@dataclass(frozen=True)
class _Listing:
    marks: Marks
    text: str
    at: float  # monotonic seconds: when it was asked for


class Listings:
    """The last listing of each selector's ReplicaSets, with the marks it holds under."""

    def __init__(self, keep: float = KEEP, clock: Callable[[], float] = time.monotonic) -> None:
        self.keep, self.clock = keep, clock
        self._held: dict[Key, _Listing] = {}
        self._stored = 0

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: Key, marks: Marks) -> list[Body] | None:
        """Fresh dicts of the listing, if it was made under these marks and not too long ago;
        None: list again. Nothing is answered when a mark is unknown (None)."""
        held = self._held.get(key)
        if held is None or None in marks or held.marks != marks or self._stale(held):
            return None
        items: list[Body] = json.loads(held.text)
        return items

    def put(self, key: Key, marks: Marks, items: list[Body], asked_at: float) -> None:
        """A listing asked for at `asked_at`, with the marks taken before it was asked."""
        if None in marks:
            self._held.pop(key, None)
            return
        self._held[key] = _Listing(marks, json.dumps(items), asked_at)
        self._stored += 1
        if self._stored >= SWEEP:  # a target no Rollout asks about any more is not kept for ever
            self._stored = 0
            self._held = {k: v for k, v in self._held.items() if not self._stale(v)}

    def clear(self) -> None:
        self._held.clear()

    def _stale(self, held: _Listing) -> bool:
        return self.clock() - held.at > self.keep


REPLICA_SETS = Listings()
