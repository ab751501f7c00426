"""The outbox: the Events and notifications a status change owes are written with it, removed
once delivered, tried again with backoff when delivery fails, and bounded in number and time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from parachute import kube, watched
from parachute.api import Notification, OutboxEntry, RolloutStatus
from parachute.notify import outbox, webhooks
from parachute.notify.outbox import Failed
from parachute.notify.webhooks import cloud_event
from parachute.plan.model import Event, EventType

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
SLACK = Notification.model_validate({"slack": {"webhookSecretRef": {"name": "s", "key": "url"}}})
BUS = Notification.model_validate({"cloudEvents": {"urlSecretRef": {"name": "b", "key": "url"}}})
PAGE = Notification.model_validate({"statusPage": {
    "pageIdSecretRef": {"name": "p", "key": "id"}, "tokenSecretRef": {"name": "p", "key": "token"},
}})  # fmt: skip
FAILED = Event(EventType.warning, "MetricFailed", "error-rate: 6% over 5%")
ROLLING_BACK = Event(EventType.warning, "RollingBack", "rolling back revision rev-2")


def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


def entry(id_: str, *, ago: timedelta = timedelta(), **fields: object) -> OutboxEntry:
    return OutboxEntry.model_validate({
        "id": id_, "reason": "RollingBack", "message": "m", "type": "Warning",
        "createdAt": (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ"), **fields,
    })  # fmt: skip


def holding(*entries: OutboxEntry) -> RolloutStatus:
    return RolloutStatus(outbox=list(entries))


def test_each_event_is_owed_and_a_rollback_is_owed_to_each_webhook_but_not_the_status_page() -> None:
    owed = outbox.entries_for([FAILED, ROLLING_BACK], [SLACK, PAGE, BUS], "rev-2-1", NOW, ids())
    assert [(e.reason, e.type, e.target) for e in owed] == [
        ("MetricFailed", "Warning", None),
        ("RollingBack", "Warning", None),
        ("RollingBack", None, 0),
        ("RollingBack", None, 2),
    ]
    assert len({e.id for e in owed}) == 4
    assert all(e.incident == "rev-2-1" for e in owed if e.target is not None)


def test_what_is_owed_is_added_to_what_is_still_owed() -> None:
    status, dropped = outbox.owe(holding(entry("old")), [entry("new")])
    assert [e.id for e in status.outbox or []] == ["old", "new"] and dropped == []


def test_a_full_outbox_drops_its_oldest() -> None:
    full = holding(*(entry(f"e{i}") for i in range(outbox.MAX_ENTRIES)))
    status, dropped = outbox.owe(full, [entry("new")])
    assert [e.id for e in dropped] == ["e0"]
    assert len(status.outbox or []) == outbox.MAX_ENTRIES and (status.outbox or [])[-1].id == "new"


def test_what_was_delivered_is_removed_and_the_outbox_goes_when_empty() -> None:
    status, given_up = outbox.settle(holding(entry("a"), entry("b")), {"a": None}, NOW)
    assert [e.id for e in status.outbox or []] == ["b"] and given_up == []
    status, _ = outbox.settle(status, {"b": None}, NOW)
    assert status.outbox is None


def test_a_failed_delivery_is_tried_again_later_and_later() -> None:
    status, _ = outbox.settle(holding(entry("a")), {"a": Failed(0, "connection refused")}, NOW)
    (failed,) = status.outbox or []
    assert failed.attempts == 1 and failed.last_error == "connection refused"
    assert failed.retry_at == (NOW + outbox.FIRST_RETRY).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [outbox.retry_after(n) for n in (1, 2, 3)] == [timedelta(seconds=10), timedelta(seconds=20),
                                                         timedelta(seconds=40)]  # fmt: skip
    assert outbox.retry_after(20) == outbox.LAST_RETRY


def test_a_failure_recorded_twice_counts_once() -> None:
    # The reconcile's write and the follow-up patch may both record the same outcome.
    outcome = {"a": Failed(0, "timed out")}
    once, _ = outbox.settle(holding(entry("a")), outcome, NOW)
    twice, _ = outbox.settle(once, outcome, NOW + timedelta(seconds=1))
    assert twice == once
    assert outbox.unsettled(once, outcome) == {}


def test_an_entry_failing_for_long_enough_is_given_up() -> None:
    old = entry("a", ago=outbox.GIVE_UP_AFTER, attempts=7)
    status, given_up = outbox.settle(holding(old, entry("b")), {"a": Failed(7, "503")}, NOW)
    assert [e.id for e in given_up] == ["a"] and [e.id for e in status.outbox or []] == ["b"]


def test_only_what_is_not_yet_recorded_is_kept_in_memory() -> None:
    status = holding(entry("a"), entry("b", attempts=1))
    known = {"a": None, "b": Failed(0, "x"), "gone": None}
    assert outbox.unsettled(status, known) == {"a": None}


def test_due_now_is_what_was_never_tried_or_is_past_its_retry_and_not_under_way() -> None:
    later = (NOW + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    past = (NOW - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = holding(entry("new"), entry("waiting", retry_at=later), entry("again", retry_at=past),
                     entry("sending"))  # fmt: skip
    assert [e.id for e in outbox.due(status, NOW, busy={"sending"})] == ["new", "again"]
    assert outbox.next_attempt_at(status, NOW) == NOW + timedelta(seconds=5)
    assert outbox.next_attempt_at(holding(entry("new")), NOW) is None


def test_an_entry_is_posted_as_the_same_event_each_time() -> None:
    name = outbox.event_name("checkout", "uid-1", "id-1")
    assert name == outbox.event_name("checkout", "uid-1", "id-1")
    assert name.startswith("checkout.")
    assert name != outbox.event_name("checkout", "uid-2", "id-1")  # a new Rollout of that name
    assert name != outbox.event_name("checkout", "uid-1", "id-2")
    assert len(outbox.event_name("x" * 253, "uid-1", "id-1")) <= 253


def test_a_cloud_event_carries_the_entry_id_so_receivers_can_deduplicate() -> None:
    rollout = {"metadata": {"namespace": "shop", "name": "checkout"}}
    sent = [
        cloud_event(rollout, "RollingBack", "m", None, id_="id-1", occurred="2026-12-04T10:00:00Z")
        for _ in range(2)
    ]
    assert sent[0] == sent[1] and sent[0]["id"] == "id-1" and sent[0]["time"] == "2026-12-04T10:00:00Z"


def test_a_status_change_is_written_with_what_it_owes() -> None:
    key = ("shop", "prepared")
    status = outbox.prepare(key, [BUS], RolloutStatus(), [ROLLING_BACK], NOW, new_id=ids(), incident="i-1")
    assert [(e.id, e.target) for e in status.outbox or []] == [("id-1", None), ("id-2", 0)]
    outbox.forget(key)


ROLLOUT = {"metadata": {"namespace": "shop", "name": "delivered", "uid": "uid-1"}}
KEY = ("shop", "delivered")


def test_events_posted_again_after_a_restart_are_the_same_events_and_then_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posted: list[str | None] = []

    async def post_event(
        rollout: object, type_: str, reason: str, message: str, name: str | None = None
    ) -> bool:
        posted.append(name)
        return posted.count(name) == 1  # the API server: AlreadyExists the second time

    monkeypatch.setattr(kube, "post_event", post_event)
    status = outbox.prepare(KEY, [], RolloutStatus(), [FAILED, ROLLING_BACK], NOW, new_id=ids())
    asyncio.run(outbox.deliver(ROLLOUT, [], status, NOW, written=True))
    asyncio.run(outbox.deliver(ROLLOUT, [], status, NOW, written=True))  # delivered: not again
    assert len(posted) == 2
    outbox.forget(KEY)  # a restart: the outbox in status still holds them
    asyncio.run(outbox.deliver(ROLLOUT, [], status, NOW, written=True))
    assert posted[:2] == posted[2:] and len(set(posted)) == 2
    assert outbox.prepare(KEY, [], status, [], NOW, new_id=ids()).outbox is None
    outbox.forget(KEY)


def test_events_a_replica_may_no_longer_post_are_left_for_the_next_leader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refused(*_: object, **__: object) -> bool:
        raise kube.NotLeadingError("not the leader")

    monkeypatch.setattr(kube, "post_event", refused)
    status = outbox.prepare(KEY, [], RolloutStatus(), [ROLLING_BACK], NOW, new_id=ids())
    with pytest.raises(kube.NotLeadingError):
        asyncio.run(outbox.deliver(ROLLOUT, [], status, NOW, written=True))
    assert outbox.prepare(KEY, [], status, [], NOW, new_id=ids()) == status  # still owed, no failure counted
    assert [e.id for e in outbox.due(status, NOW, outbox._in_flight.get(KEY, set()))] == ["id-1"]
    outbox.forget(KEY)


def test_a_notification_whose_receiver_hangs_holds_up_no_delivery_and_stays_owed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posted: list[str] = []
    hanging = asyncio.Event()

    async def post_event(
        rollout: object, type_: str, reason: str, message: str, name: str | None = None
    ) -> bool:
        posted.append(reason)
        return True

    async def never_answered(*_: object, **__: object) -> str | None:
        await hanging.wait()
        return None

    monkeypatch.setattr(kube, "post_event", post_event)
    monkeypatch.setattr(webhooks, "deliver", never_answered)
    status = outbox.prepare(KEY, [BUS], RolloutStatus(), [ROLLING_BACK], NOW, new_id=ids())

    async def story() -> list[str]:
        await outbox.deliver(ROLLOUT, [BUS], status, NOW, written=True)  # returns: the POST goes on behind
        under_way = sorted(outbox._in_flight.get(KEY, set()))
        for task in list(outbox._tasks):
            task.cancel()
        return under_way

    assert asyncio.run(story()) == ["id-2"]  # the notification, still being delivered
    assert posted == ["RollingBack"]  # the Event went out meanwhile
    assert [e.id for e in outbox.prepare(KEY, [BUS], status, [], NOW, new_id=ids()).outbox or []] == ["id-2"]
    outbox.forget(KEY)


COMPLETED = Event(EventType.normal, "ReleaseCompleted", "r2")
STARTED = Event(EventType.normal, "ReleaseStarted", "r3")


class Stored:
    """One Rollout in the API server: guarded status patches, and reads that may be slow."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.version, self.status, self.posted = 1, {}, []  # type: ignore[var-annotated]
        self.slow: asyncio.Event | None = None
        self.patches = self.reads = 0
        monkeypatch.setattr(watched, "ROLLOUTS", watched.Copies())
        monkeypatch.setattr(kube, "post_event", self.post_event)
        monkeypatch.setattr(kube, "read_rollout", self.read)
        monkeypatch.setattr(kube, "patch_rollout_status", self.patch)

    async def post_event(
        self, rollout: object, type_: str, reason: str, message: str, name: str | None = None
    ) -> bool:
        self.posted.append(reason)
        return True

    async def read(self, namespace: str, name: str) -> dict[str, object]:
        self.reads += 1
        answer = {"metadata": {"namespace": namespace, "name": name, "resourceVersion": str(self.version)},
                  "status": dict(self.status)}  # fmt: skip
        if self.slow is not None:
            await self.slow.wait()  # the answer is of the version it was asked at
        return answer

    async def patch(
        self,
        namespace: str,
        name: str,
        old: object,
        new: dict[str, object],
        version: str,
        *,
        decided: bool = True,
    ) -> None:
        if version != str(self.version):
            raise kube.ConflictError("the Rollout changed")
        self.version, self.status, self.patches = self.version + 1, new, self.patches + 1

    async def decide(self, events: list[Event], new_id: Callable[[], str]) -> None:
        """A reconcile: read, write what it owes over what it read, then deliver."""
        status = outbox.prepare(
            KEY, [], RolloutStatus.model_validate(self.status), events, NOW, new_id=new_id
        )
        await self.patch(*KEY, self.status, status.model_dump(by_alias=True, exclude_none=True, mode="json"),
                         str(self.version))  # fmt: skip
        await outbox.deliver(ROLLOUT, [], status, NOW, written=True)

    def reasons_owed(self) -> list[object]:
        return [entry["reason"] for entry in self.status.get("outbox", [])]  # type: ignore[attr-defined]


def test_events_told_by_a_rollout_coming_to_rest_are_recorded_at_once_and_otherwise_by_its_next_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = Stored(monkeypatch)

    async def story() -> None:
        await stored.decide([COMPLETED], ids())
        soon = NOW + timedelta(seconds=10)
        assert await outbox.settle_at_rest(KEY, soon, NOW) == soon
        assert stored.patches == 1  # the reconcile due in 10 s writes it
        assert await outbox.settle_at_rest(KEY, None, NOW) is None
        assert stored.patches == 2  # at rest nothing would: a follow-up patch did
        assert await outbox.settle_at_rest(KEY, None, NOW) is None
        assert stored.patches == 2  # recorded already: nothing more to write

    asyncio.run(story())
    assert stored.posted == ["ReleaseCompleted"]
    assert stored.reasons_owed() == []  # delivered: nothing owed in status at rest
    outbox.forget(KEY)


def test_a_follow_up_made_on_a_stale_copy_is_refused_and_made_again_on_a_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = Stored(monkeypatch)

    async def story() -> None:
        await stored.decide([COMPLETED], ids())
        written = {"metadata": {"namespace": "shop", "name": "delivered", "resourceVersion": str(stored.version)},
                   "status": dict(stored.status)}  # fmt: skip
        watched.ROLLOUTS.answered(written)  # the copy: the answer to the write that owes the Event
        stored.version += 1  # someone else's write since, not seen yet
        await outbox.settle_at_rest(KEY, None, NOW)

    asyncio.run(story())
    assert (stored.patches, stored.reads) == (2, 1)  # on the copy: refused (409); on a read: written
    assert stored.reasons_owed() == []
    outbox.forget(KEY)


def test_an_event_that_could_not_be_posted_at_rest_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = Stored(monkeypatch)

    async def refused(*_: object, **__: object) -> bool:
        raise RuntimeError("the API server is busy")

    monkeypatch.setattr(kube, "post_event", refused)

    async def story() -> datetime | None:
        await stored.decide([COMPLETED], ids())
        return await outbox.settle_at_rest(KEY, None, NOW)

    assert asyncio.run(story()) == NOW + outbox.FIRST_RETRY  # a reconcile records the failure and retries
    assert stored.patches == 1
    outbox.forget(KEY)


def test_a_slow_follow_up_forgets_no_delivery_made_while_it_read(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = Stored(monkeypatch)
    new_id = ids()

    async def story() -> None:
        stored.slow = asyncio.Event()
        await stored.decide([COMPLETED], new_id)
        # A follow-up that runs beside the reconciles (a notification's, once answered) reads, slowly...
        follow_up = asyncio.create_task(outbox.settle_at_rest(KEY, None, NOW))
        await asyncio.sleep(0)
        await stored.decide([STARTED], new_id)  # ...while a new release is written and told
        stored.slow.set()  # the follow-up's answer: the version before the release
        await follow_up

    asyncio.run(story())
    assert stored.posted == ["ReleaseCompleted", "ReleaseStarted"]
    assert stored.reasons_owed() == []  # both delivered, neither shown owed
    outbox.forget(KEY)
