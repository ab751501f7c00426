"""The scheduler's unit of work: reconcile one Rollout, say when it is due again, and make a
fault that keeps recurring visible where users look.

A conflict is ordinary (someone wrote first): decide again almost at once. Any other
exception goes back to the scheduler, which retries with backoff (never a crash loop).
After `FAULT_ATTEMPTS` failures in a row it is also written to the Rollout's status, as the
`ReconcileFailed` condition naming the exception, with an Event: the operator's log is not
where a user looks. The next reconcile that succeeds sets the condition back to False, with a
`Reconciled` Event. Both Events are owed by the condition's change, so they go through the
outbox (`notify.outbox`) with it: a restart between the write and the post loses neither.
A write refused because this replica no longer leads is no fault either: the work is due
again at once, and runs when (and where) leadership is.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from parachute import clock, conditions, faults, kube, listings, telemetry
from parachute.api import Condition, RolloutStatus
from parachute.notify import outbox
from parachute.plan.model import Event, EventType
from parachute.scheduler import Key

logger = logging.getLogger("parachute.engine_loop")

# After a lost write race, decide again almost at once from what was written.
CONFLICT_RETRY = timedelta(milliseconds=200)
# Failures in a row before a fault is reported: one or two are usually passing trouble.
FAULT_ATTEMPTS = 3
# How much of an exception's text reaches status and Events.
FAULT_TEXT = 300

Work = Callable[[str, str, datetime], Awaitable[datetime | None]]
# Writes a fault (reason, message) to the Rollout's status, or clears one (None).
FaultWriter = Callable[[Key, tuple[str, str] | None, datetime], Awaitable[None]]


def describe(error: BaseException) -> tuple[str, str]:
    """(reason, message) for status: the exception's type, and its text made short and safe.

    Only the first part of the text is kept (an API error's headers and body are left out),
    and credentials in URLs are masked.
    """
    kind = type(error).__name__
    lines = []
    for line in str(error).splitlines():
        if line.startswith(("HTTP response headers", "HTTP response body")):
            break
        lines.append(line.strip())
    text = re.sub(r"://[^/\s@]+@", "://***@", " ".join(part for part in lines if part))
    if len(text) > FAULT_TEXT:
        text = text[: FAULT_TEXT - 1] + "…"
    return kind, f"{kind}: {text}" if text else kind


class ReconcileLoop:
    """`reconcile` for the scheduler, with conflicts retried and faults reported."""

    def __init__(
        self,
        work: Work,
        write_fault: FaultWriter | None = None,
        now: Callable[[], datetime] = clock.now,
        attempts: int = FAULT_ATTEMPTS,
    ) -> None:
        self._work = work
        self._write_fault = write_fault or write_fault_to_status
        self._now = now
        self._attempts = attempts
        self._failures: dict[Key, int] = {}
        # Rollouts whose status may hold a ReconcileFailed True: reported by this process, or
        # not yet looked at since it started (a fault from before a restart is cleared too).
        self._maybe_failed: set[Key] = set()
        self._seen: set[Key] = set()

    async def __call__(self, key: Key) -> datetime | None:
        now = self._now()
        started = time.monotonic()
        try:
            with listings.one_reconcile():
                following = await self._work(*key, now)
        except kube.ConflictError:
            telemetry.reconciled("conflict", time.monotonic() - started)
            return now + CONFLICT_RETRY
        except kube.NotLeadingError:
            telemetry.reconciled("not_leading", time.monotonic() - started)
            return now
        except kube.GoneError:  # its delete wakes the handler that forgets it
            telemetry.reconciled("gone", time.monotonic() - started)
            self.forget(key)
            return None
        except Exception as error:
            telemetry.reconciled("error", time.monotonic() - started)
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            if failures >= self._attempts:
                await self._report(key, describe(error), now)
                # The backoff's next try may be minutes away: the fault's Event is recorded now.
                await outbox.settle_at_rest(key, None, now)
            raise
        telemetry.reconciled("ok", time.monotonic() - started)
        self._failures.pop(key, None)
        if key in self._maybe_failed or key not in self._seen:
            await self._report(key, None, now)
        return await outbox.settle_at_rest(key, following, now)

    def forget(self, key: Key) -> None:
        """The Rollout is gone."""
        self._failures.pop(key, None)
        self._maybe_failed.discard(key)
        self._seen.discard(key)

    async def _report(self, key: Key, fault: tuple[str, str] | None, now: datetime) -> None:
        try:
            await self._write_fault(key, fault, now)
        except (kube.ConflictError, kube.NotLeadingError):  # try again after the next reconcile
            self._maybe_failed.add(key)
            return
        except Exception:  # reporting is a courtesy: the scheduler's backoff goes on regardless
            logger.exception("could not write the fault of %s/%s to its status", *key)
            self._maybe_failed.add(key)
            return
        self._seen.add(key)
        if fault is None:
            self._maybe_failed.discard(key)
        else:
            self._maybe_failed.add(key)


def reported(
    current: list[Condition], fault: tuple[str, str] | None, now: datetime, generation: int | None
) -> tuple[list[Condition], Event] | None:
    """The conditions with ReconcileFailed set (or cleared), and the Event that change owes;
    None when they say so already."""
    if fault is None:
        changed = conditions.clear_failed(current, now=now, generation=generation)
    else:
        reason, message = fault
        changed = conditions.mark_failed(
            current, reason=reason, message=message, now=now, generation=generation
        )
    if changed is None:
        return None
    failed = next(c for c in changed if c.type == conditions.RECONCILE_FAILED)
    if fault is None:
        return changed, Event(EventType.normal, "Reconciled", failed.message)
    return changed, Event(EventType.warning, conditions.RECONCILE_FAILED, failed.message)


async def write_fault_to_status(key: Key, fault: tuple[str, str] | None, now: datetime) -> None:
    """Set (or clear) ReconcileFailed in the Rollout's status, with an Event when it changes.
    The Event is owed by that change, so it goes through the outbox like the reconcile's: written
    with the condition, posted after, and posted by whoever writes next if this process dies
    in between."""
    namespace, name = key
    # The copy: this follows a reconcile that read or wrote the Rollout (at adoption a read of
    # each Rollout, 10,000 at 10,000), and the write below is refused if the copy is behind.
    body = await kube.latest_rollout(namespace, name)
    if body is None:
        return
    old: dict[str, Any] = dict(body.get("status") or {})
    current = [Condition.model_validate(c) for c in old.get("conditions") or []]
    readable = _readable(old)
    change = reported(current, fault, now, body["metadata"].get("generation"))
    if change is None:
        if readable is not None:  # an Event owed by an earlier write that a restart cut short
            await outbox.deliver(body, None, readable, now, written=False)
        return
    changed, event = change
    dumped = [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in changed]
    owing = None
    if readable is not None:
        owing = outbox.prepare(key, [], readable.model_copy(update={"conditions": changed}), (event,), now,
                               new_id=outbox.new_id)  # fmt: skip
    new = (
        owing.model_dump(by_alias=True, exclude_none=True, mode="json")
        if owing
        else {**old, "conditions": dumped}
    )
    await kube.patch_rollout_status(
        namespace, name, old, new, body["metadata"]["resourceVersion"], decided=False
    )
    faults.point("fault-status-written", namespace)
    if owing is not None:
        await outbox.deliver(body, None, owing, now, written=True)
        return
    # A status the operator cannot read has no outbox it could keep: told directly, at most once.
    try:
        await kube.post_event(body, event.type.value, event.reason, event.message)
    except kube.NotLeadingError:
        raise
    except Exception as error:
        logger.warning("could not post Event %s: %s", event.reason, type(error).__name__)


def _readable(status: dict[str, Any]) -> RolloutStatus | None:
    """The status as the operator reads it; None when it cannot be (which may be the very fault)."""
    try:
        return RolloutStatus.model_validate(status)
    except ValidationError:
        return None
