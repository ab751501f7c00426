"""The scheduler runs each Rollout when it is due, never two reconciles of one Rollout at
once, and backs off from failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from parachute.scheduler import Key, Scheduler

A: Key = ("shop", "checkout")
B: Key = ("shop", "payments")


def now() -> datetime:
    return datetime.now(UTC)


class SlowWork:
    """A reconcile that takes 100 ms and notes every call, and any that overlapped its own key."""

    def __init__(self) -> None:
        self.running: set[Key] = set()
        self.overlaps: list[Key] = []
        self.calls: list[Key] = []

    async def work(self, key: Key) -> datetime | None:
        if key in self.running:
            self.overlaps.append(key)
        self.running.add(key)
        self.calls.append(key)
        await asyncio.sleep(0.1)
        self.running.discard(key)
        return None


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    task.cancel()


def test_work_runs_when_woken_and_again_when_it_asks() -> None:
    calls: list[Key] = []

    async def work(key: Key) -> datetime | None:
        calls.append(key)
        return now() + timedelta(milliseconds=100) if len(calls) == 1 else None

    async def story() -> None:
        scheduler = Scheduler(work)
        scheduler.wake(A)
        await run_for(scheduler, 0.4)

    asyncio.run(story())
    assert calls == [A, A]


def test_an_earlier_wake_wins_over_a_later_one() -> None:
    calls: list[Key] = []

    async def work(key: Key) -> datetime | None:
        calls.append(key)
        return None

    async def story() -> None:
        scheduler = Scheduler(work)
        scheduler.wake(A, now() + timedelta(hours=1))
        scheduler.wake(A)
        await run_for(scheduler, 0.2)
        assert scheduler.pending == 0

    asyncio.run(story())
    assert calls == [A]


def test_one_rollout_is_never_reconciled_twice_at_once_but_a_wake_is_not_lost() -> None:
    slow = SlowWork()

    async def story() -> None:
        scheduler = Scheduler(slow.work)
        task = asyncio.create_task(scheduler.run())
        scheduler.wake(A)
        await asyncio.sleep(0.03)
        scheduler.wake(A)  # while running: once more right after
        scheduler.wake(B)  # another Rollout runs alongside
        await asyncio.sleep(0.4)
        task.cancel()

    asyncio.run(story())
    assert slow.overlaps == []
    assert slow.calls.count(A) == 2 and slow.calls.count(B) == 1


def test_a_failing_reconcile_is_retried_later_not_in_a_hot_loop() -> None:
    calls: list[datetime] = []

    async def work(key: Key) -> datetime | None:
        calls.append(now())
        raise RuntimeError("API server unavailable")

    async def story() -> None:
        scheduler = Scheduler(work, max_backoff=60)
        scheduler.wake(A)
        await run_for(scheduler, 0.5)
        assert scheduler.pending == 1  # still due: after its backoff

    asyncio.run(story())
    assert len(calls) == 1


def test_a_rollout_waiting_for_a_free_slot_is_not_queued_twice() -> None:
    slow = SlowWork()

    async def story() -> None:
        scheduler = Scheduler(slow.work, concurrency=2)
        scheduler.wake(B)  # B and C take both slots
        scheduler.wake(("shop", "cart"))
        scheduler.wake(A)  # waits for one
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.02)
        scheduler.wake(A)  # woken again while it waits: runs once more, never beside itself
        scheduler.wake(A)
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(story())
    assert slow.overlaps == [] and slow.calls.count(A) == 2
