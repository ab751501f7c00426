"""The outbox: the Events and notifications a status change owes, recorded in status by the very
write that makes the change (`status.outbox`), delivered after it, and removed once delivered.
An operator killed between the write and the posts finds them there when it starts again, and
sends them then.

At least once into the outbox, once where they land: an Event's name is derived from the
Rollout's uid and the entry's id, so posting it again is refused as AlreadyExists, which counts
as delivered; a CloudEvent's id is the entry's id, on which receivers deduplicate (with its
source). Slack's incoming webhooks take no idempotency key: there it is best effort, and a
restart between a delivery and its removal may post the message twice.

Bounded: at most MAX_ENTRIES, the oldest dropped (logged); a delivery that fails is tried again
with backoff until GIVE_UP_AFTER from when it was owed, then dropped with a warning. The outbox
is part of the Rollout's status, so a Rollout deleted takes it along.

Delivery outcomes are kept in memory until a status write records them: the reconcile's next
write, or a small follow-up patch (whichever comes first; applying an outcome twice changes
nothing). Notifications are followed by one when they are all answered; Events, posted at once,
by one only when no write is due soon (a Rollout at rest), so that a delivered Event never
stays in status looking owed, and a release under way pays no write for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from parachute import clock, kube
from parachute.api import Notification, OutboxEntry, RolloutStatus
from parachute.conditions import at
from parachute.notify import webhooks
from parachute.plan.model import Event

logger = logging.getLogger("parachute.notify.outbox")

MAX_ENTRIES = 20
FIRST_RETRY = timedelta(seconds=10)
LAST_RETRY = timedelta(minutes=2)
GIVE_UP_AFTER = timedelta(minutes=15)
MESSAGE_LIMIT = 1024  # what an Event keeps of its message
EVENT_NAME_LIMIT = 253
RECORD_CONFLICTS = 5
# At rest the follow-up runs in the reconcile's slot: a conflict there is someone else's write,
# whose event brings a reconcile that records the deliveries in turn.
RECORD_AT_REST = 2
# A reconcile due within this records the Events just posted in its own write; one due later,
# or none (a Rollout at rest), leaves it to a follow-up patch.
RECORD_WITHIN = timedelta(seconds=60)

Key = tuple[str, str]


@dataclass(frozen=True)
class Failed:
    """A delivery that failed on the entry's `attempt`-th try (its `attempts` when it was sent)."""

    attempt: int
    error: str


# None: delivered (or nothing left to deliver it to).
Outcome = Failed | None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entries_for(
    events: Iterable[Event],
    targets: Sequence[Notification],
    incident: str | None,
    now: datetime,
    new_id: Callable[[], str],
) -> list[OutboxEntry]:
    """What telling `events` owes: each as an Event, and those worth waking someone for as a
    notification to each Slack and CloudEvents target (the status page follows the incident
    record instead)."""
    owed = []
    for event in events:
        message = event.message[:MESSAGE_LIMIT]
        owed.append(OutboxEntry(id=new_id(), reason=event.reason, message=message, type=event.type.value,
                                created_at=_stamp(now)))  # fmt: skip
        if event.reason not in webhooks.NOTIFIED:
            continue
        for index, target in enumerate(targets):
            if target.slack is not None or target.cloud_events is not None:
                owed.append(OutboxEntry(id=new_id(), reason=event.reason, message=message, target=index,
                                        incident=incident, created_at=_stamp(now)))  # fmt: skip
    return owed


def owe(status: RolloutStatus, entries: Sequence[OutboxEntry]) -> tuple[RolloutStatus, list[OutboxEntry]]:
    """The status with `entries` added, and the oldest entries dropped to keep MAX_ENTRIES."""
    if not entries:
        return status, []
    kept = [*(status.outbox or []), *entries]
    dropped = kept[: max(0, len(kept) - MAX_ENTRIES)]
    return status.model_copy(update={"outbox": kept[len(dropped) :]}), dropped


def retry_after(attempts: int) -> timedelta:
    return min(LAST_RETRY, FIRST_RETRY * (1 << min(10, max(0, attempts - 1))))


def settle(
    status: RolloutStatus, outcomes: Mapping[str, Outcome], now: datetime
) -> tuple[RolloutStatus, list[OutboxEntry]]:
    """The status with delivered entries removed and failures recorded, and the entries given up
    (failing for GIVE_UP_AFTER). A failure already recorded is not counted again."""
    if not status.outbox:
        return status, []
    kept, given_up = [], []
    for entry in status.outbox:
        if entry.id not in outcomes:
            kept.append(entry)
            continue
        outcome = outcomes[entry.id]
        if outcome is None:
            continue
        if outcome.attempt != entry.attempts:  # recorded already
            kept.append(entry)
            continue
        if now - at(entry.created_at) >= GIVE_UP_AFTER:
            given_up.append(entry)
            continue
        attempts = entry.attempts + 1
        kept.append(entry.model_copy(update={
            "attempts": attempts, "last_error": outcome.error[:MESSAGE_LIMIT],
            "retry_at": _stamp(now + retry_after(attempts)),
        }))  # fmt: skip
    return status.model_copy(update={"outbox": kept or None}), given_up


def unsettled(status: RolloutStatus, outcomes: Mapping[str, Outcome]) -> dict[str, Outcome]:
    """The outcomes `status` does not record yet (the rest can be forgotten)."""
    entries = {entry.id: entry for entry in status.outbox or []}
    return {
        id_: outcome
        for id_, outcome in outcomes.items()
        if id_ in entries and (outcome is None or outcome.attempt == entries[id_].attempts)
    }


def due(status: RolloutStatus, now: datetime, busy: Collection[str] = ()) -> list[OutboxEntry]:
    """The entries to deliver now: never tried or past their retry, and not being delivered."""
    return [
        entry
        for entry in status.outbox or []
        if entry.id not in busy and (entry.retry_at is None or now >= at(entry.retry_at))
    ]


def next_attempt_at(status: RolloutStatus, now: datetime) -> datetime | None:
    """When an entry that failed is tried again."""
    later = [at(e.retry_at) for e in status.outbox or [] if e.retry_at and at(e.retry_at) > now]
    return min(later) if later else None


def new_id() -> str:
    """An entry's id: unique in its Rollout, and short (it names an Event)."""
    return uuid.uuid4().hex[:16]


def event_name(rollout: str, uid: str, entry_id: str) -> str:
    """The same name each time an entry is posted: a second post is refused as AlreadyExists."""
    digest = hashlib.sha256(f"{uid}/{entry_id}".encode()).hexdigest()[:16]
    return f"{rollout[: EVENT_NAME_LIMIT - len(digest) - 1]}.{digest}"


# ---------------------------------------------------------------------------- I/O

_outcomes: dict[Key, dict[str, Outcome]] = {}
_in_flight: dict[Key, set[str]] = {}
_tasks: set[asyncio.Task[None]] = set()


def prepare(
    key: Key,
    targets: Sequence[Notification],
    status: RolloutStatus,
    events: Sequence[Event],
    now: datetime,
    *,
    new_id: Callable[[], str],
    incident: str | None = None,
) -> RolloutStatus:
    """The status to write: the outcomes known so far recorded, and what `events` owe added."""
    status = _settled(key, status, now)
    owed = entries_for(events, targets, incident, now, new_id)
    status, dropped = owe(status, owed)
    for entry in dropped:
        logger.warning("%s/%s: outbox full, %s %s dropped undelivered", *key, _what(entry), entry.reason)
    return status


async def deliver(
    rollout: dict[str, Any],
    targets: Sequence[Notification] | None,
    status: RolloutStatus,
    now: datetime,
    written: bool,
) -> None:
    """Post the Events due now, then start the notifications due in the background (none while
    `targets` is None: the spec naming them is not valid). The outcomes are written to status
    by a follow-up patch once all are known; when only Events were due and `status` was just
    written, the next reconcile records them instead, or `settle_at_rest` when none is due
    soon (an Event's name is fixed, so a post made again meanwhile, by a restarted
    operator, is refused)."""
    meta = rollout["metadata"]
    key: Key = (meta["namespace"], meta["name"])
    flying = _in_flight.setdefault(key, set())
    entries = [
        e
        for e in due(status, now, flying | set(_outcomes.get(key, {})))
        if e.target is None or targets is not None
    ]
    if not entries:
        return
    flying.update(e.id for e in entries)
    events = [e for e in entries if e.target is None]
    try:
        for entry in events:
            _done(key, entry.id, await _post_event(rollout, entry))
    except kube.NotLeadingError:  # the new leader delivers them
        flying.difference_update(e.id for e in entries)
        raise
    notes = [e for e in entries if e.target is not None]
    if not notes and written:
        return
    _spawn(_notify_and_record(rollout, targets or [], status, notes))


async def settle_at_rest(key: Key, due: datetime | None, now: datetime) -> datetime | None:
    """When to look at the Rollout again, its next reconcile being due at `due`.

    The deliveries status does not show yet are recorded by that reconcile's write when it comes
    within RECORD_WITHIN, and by a follow-up patch now when it does not (a Rollout at rest), so
    that a delivered Event never stays in status looking owed. Called at the end of a reconcile:
    no other reconcile of the Rollout runs meanwhile, so the patch, made on the reconcile's own
    answer, conflicts only with someone else's write (a notification's follow-up included:
    then one of them reads again). A delivery that failed needs a reconcile to record it and try
    again: one is due after FIRST_RETRY at the latest. Notifications still under way are
    recorded when they are answered."""
    known = _outcomes.get(key)
    if not known:
        return due
    if any(outcome is not None for outcome in known.values()):
        retry = now + FIRST_RETRY
        return retry if due is None or retry < due else due
    if not _in_flight.get(key) and (due is None or due - now > RECORD_WITHIN):
        await _record_logged(key, attempts=RECORD_AT_REST)
    return due


def _spawn(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def forget(key: Key) -> None:
    """The Rollout is gone, and its outbox with it."""
    _outcomes.pop(key, None)
    _in_flight.pop(key, None)


def _settled(key: Key, status: RolloutStatus, now: datetime) -> RolloutStatus:
    """`status` with the outcomes known so far recorded; the rest of them are forgotten: this
    is a reconcile's status, read after every write the process made."""
    known = unsettled(status, _outcomes.get(key, {}))
    if known:
        _outcomes[key] = known
    else:
        _outcomes.pop(key, None)
    return _recorded(key, status, known, now)


def _recorded(key: Key, status: RolloutStatus, known: Mapping[str, Outcome], now: datetime) -> RolloutStatus:
    status, given_up = settle(status, known, now)
    for entry in given_up:
        failed = known[entry.id]
        logger.warning("%s/%s: %s %s given up after %d failed deliveries: %s", *key, _what(entry),
                       entry.reason, entry.attempts + 1, failed.error if failed else "")  # fmt: skip
    return status


def _what(entry: OutboxEntry) -> str:
    return "Event" if entry.target is None else f"notification to spec.notifications[{entry.target}]"


def _done(key: Key, entry_id: str, outcome: Outcome) -> None:
    _outcomes.setdefault(key, {})[entry_id] = outcome
    _in_flight.get(key, set()).discard(entry_id)


async def _post_event(rollout: dict[str, Any], entry: OutboxEntry) -> Outcome:
    meta = rollout["metadata"]
    name = event_name(meta["name"], meta.get("uid") or "", entry.id)
    try:
        await kube.post_event(rollout, entry.type or "Normal", entry.reason, entry.message, name=name)
    except kube.NamespaceTerminatingError:
        logger.debug("no Event %s: the namespace is being deleted", entry.reason)
    except kube.NotLeadingError:
        raise
    except Exception as error:  # an Event is owed, not vital: tried again later, never stops a release
        logger.warning("could not post Event %s: %s", entry.reason, error)
        return Failed(entry.attempts, f"{type(error).__name__}: {str(error)[:200]}")
    return None


async def _notify(
    rollout: dict[str, Any], targets: Sequence[Notification], status: RolloutStatus, entry: OutboxEntry
) -> Outcome:
    if entry.target is None or entry.target >= len(targets):
        logger.info("notification %s not sent: its target was removed from spec.notifications", entry.reason)
        return None
    incident = next((i for i in status.incidents or [] if i.id == entry.incident), None)
    shown = incident.model_dump(by_alias=True, exclude_none=True, mode="json") if incident else None
    try:
        error = await webhooks.deliver(rollout, targets[entry.target], entry.reason, entry.message, shown,
                                       key=entry.id, occurred=entry.created_at)  # fmt: skip
    except Exception as problem:  # reading a Secret failed: say so, without the request's details
        error = type(problem).__name__
    return None if error is None else Failed(entry.attempts, error)


async def _notify_and_record(
    rollout: dict[str, Any],
    targets: Sequence[Notification],
    status: RolloutStatus,
    entries: list[OutboxEntry],
) -> None:
    meta = rollout["metadata"]
    key: Key = (meta["namespace"], meta["name"])
    outcomes = await asyncio.gather(*(_notify(rollout, targets, status, e) for e in entries))
    for entry, outcome in zip(entries, outcomes, strict=True):
        _done(key, entry.id, outcome)
    await _record_logged(key)


async def _record_logged(key: Key, attempts: int = RECORD_CONFLICTS) -> None:
    try:
        await _record(key, attempts)
    except kube.NotLeadingError:
        logger.debug("outbox of %s/%s not recorded: no longer leading", *key)
    except Exception as error:  # the next reconcile's write records it instead
        logger.warning("outbox of %s/%s not recorded: %s", *key, type(error).__name__)


async def _record(key: Key, attempts: int = RECORD_CONFLICTS) -> None:
    """Write what is known of the deliveries into status (again, if a reconcile wrote first)."""
    for attempt in range(attempts):
        if not _outcomes.get(key):
            return
        # The watched copy first (most often the answer to the write that owed them): the patch
        # is guarded by its resourceVersion, and after a conflict the Rollout is read.
        body = await (kube.latest_rollout(*key) if attempt == 0 else kube.read_rollout(*key))
        if body is None:
            forget(key)
            return
        old = dict(body.get("status") or {})
        read = RolloutStatus.model_validate(old)
        # The read may be older than a reconcile's write and delivery made since: outcomes it
        # does not show are kept (pruning is `prepare`'s, in the reconcile, which reads after).
        status = _recorded(key, read, unsettled(read, _outcomes.get(key, {})), clock.now())
        new = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        if new == old:
            return
        try:
            await kube.patch_rollout_status(
                *key, old, new, body["metadata"]["resourceVersion"], decided=False
            )
            return
        except kube.ConflictError:
            continue
        except kube.GoneError:
            forget(key)
            return
    logger.info("outbox of %s/%s not recorded: the Rollout kept changing; the next reconcile will", *key)
