"""The scheduler's unit of work: reconcile one Rollout and say when it is due again."""

from __future__ import annotations

from datetime import datetime, timedelta

from parachute import clock, kube
from parachute.reconcile import reconcile
from parachute.scheduler import Key

# After a lost write race, decide again almost at once from what was written.
CONFLICT_RETRY = timedelta(milliseconds=200)


async def reconcile_key(key: Key) -> datetime | None:
    namespace, name = key
    now = clock.now()
    try:
        return await reconcile(namespace, name, now)
    except kube.ConflictError:
        return now + CONFLICT_RETRY
