"""A target's ReplicaSets as last listed, answered again while its Deployments show no change.

Every reconcile listed the target's ReplicaSets (which revisions serve, and the pods of each
version): at 1,000 Rollouts one of a reconcile's three API requests, and one the API server
answers by filtering every ReplicaSet of the namespace. The listing is made for a target and
its canary, and kept with what was known of both Deployments just before it was asked for
(`marks`: the version of each one's copy, or its absence; `parachute.watched`).

Why it holds while the marks do: a Deployment's ReplicaSets are changed by the Deployment
controller, which then writes the Deployment's status from them (its replicas, ready and
available replicas are theirs added up), and the watch brings that as a new version of the copy.
A listing is kept only when it agrees with both copies as they were marked: the controller had
seen their last spec (`observedGeneration`), and each one's ReplicaSets add up to its status.
One that does not (caught between a ReplicaSet's change and the status the controller writes
for it, or one it never writes because the change went back before it looked) is not kept, and
the next ask lists again. What a status cannot show (pods moving between two ReplicaSets of one
Deployment with every sum unchanged, a ReplicaSet edited by hand) is bounded by `keep`: a
listing is not answered for longer than that.

Within one reconcile (`one_reconcile`), a listing not kept is still answered again while its
marks hold: a reconcile asks up to four times (what serves, whether the metrics' series exist,
where the versions analysed are, the fast lane's enrolment), and a status catching up would
otherwise list at each.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

Body = dict[str, Any]
Key = tuple[str, str]  # namespace, target
Marks = tuple[Hashable | None, ...]

KEEP = 120.0  # seconds a listing is answered at most, however still its Deployments are
SWEEP = 1000  # listings stored between two sweeps of those kept too long (never asked again)
SUMMED = ("replicas", "readyReplicas", "availableReplicas")


@dataclass(frozen=True)
class _Listing:
    marks: Marks
    text: str
    at: float  # monotonic seconds: when it was asked for


# The listings of the reconcile under way, whether kept or not.
_reconcile: contextvars.ContextVar[dict[Key, _Listing] | None] = contextvars.ContextVar(
    "parachute_listings", default=None
)


@contextlib.contextmanager
def one_reconcile() -> Iterator[None]:
    """Within this block (one reconcile), a listing is answered again while its marks hold."""
    token = _reconcile.set({})
    try:
        yield
    finally:
        _reconcile.reset(token)


class Listings:
    """The last listing of each target's ReplicaSets, with the marks it holds under."""

    def __init__(self, keep: float = KEEP, clock: Callable[[], float] = time.monotonic) -> None:
        self.keep, self.clock = keep, clock
        self._held: dict[Key, _Listing] = {}
        self._dropped: dict[Key, float] = {}  # when `drop` last said a target's listing is out of date
        self._stored = 0

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: Key, marks: Marks) -> list[Body] | None:
        """Fresh dicts of the listing, if it was made under these marks (and kept, not too long
        ago, or made in this reconcile); None: list again. Nothing is answered when a mark is
        unknown (None)."""
        if None in marks:
            return None
        held = self._held.get(key)
        if held is None or held.marks != marks or self._stale(held):
            held = (_reconcile.get() or {}).get(key)
        if held is None or held.marks != marks:
            return None
        items: list[Body] = json.loads(held.text)
        return items

    def put(
        self, key: Key, marks: Marks, items: list[Body], asked_at: float, deployments: Sequence[Body | None]
    ) -> None:
        """A listing asked for at `asked_at`, with the marks taken before it was asked and the
        Deployments they mark (None: absent); kept when it agrees with them."""
        if None in marks:
            self._held.pop(key, None)
            return
        listing = _Listing(marks, json.dumps(items), asked_at)
        this_reconcile = _reconcile.get()
        if this_reconcile is not None:
            this_reconcile[key] = listing
        dropped = self._dropped.get(key)
        if (dropped is not None and dropped >= asked_at) or not all(
            agrees(items, d) for d in deployments if d is not None
        ):  # out of date already: answered before a change its marks do not show
            self._held.pop(key, None)
            return
        self._held[key] = listing
        self._stored += 1
        if self._stored >= SWEEP:  # a target no Rollout asks about any more is not kept for ever
            self._stored = 0
            self._held = {k: v for k, v in self._held.items() if not self._stale(v)}
            self._dropped = {k: at for k, at in self._dropped.items() if self.clock() - at <= self.keep}

    def drop(self, key: Key) -> None:
        """Something its marks cannot show changed (a canary ReplicaSet's ready pods, ahead of
        its Deployment's status): the next ask lists again, and a listing asked for before now
        and answered after it is not kept."""
        self._held.pop(key, None)
        self._dropped[key] = self.clock()

    def clear(self) -> None:
        self._held.clear()
        self._dropped.clear()

    def _stale(self, held: _Listing) -> bool:
        return self.clock() - held.at > self.keep


def agrees(replica_sets: Iterable[Body], deployment: Body) -> bool:
    """The Deployment's status was written from these ReplicaSets (as far as it can tell): the
    controller had seen its last spec, and the ones it owns add up to its status."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    uid = meta.get("uid")
    owned = [
        rs.get("status") or {}
        for rs in replica_sets
        if any(o.get("uid") == uid for o in (rs.get("metadata") or {}).get("ownerReferences") or [])
    ]
    return all(sum(int(s.get(f) or 0) for s in owned) == int(status.get(f) or 0) for f in SUMMED)


REPLICA_SETS = Listings()
