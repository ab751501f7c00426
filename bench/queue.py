"""The recovery lane: how long a Rollout that must roll back waits for a reconcile slot while
N others are due at the same moment, with the priority lane and without it.

In-process, on the operator's own scheduler: each routine reconcile holds its slot for
`cost` seconds (about what one takes against a local API server), the failing Rollout is
due just after all of them. The figure is due -> its reconcile starting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from parachute.scheduler import Key, Scheduler

FAILING: Key = ("bench", "failing")


async def _wait_of_failing(routine: int, cost: float, priority: bool) -> float:
    started = asyncio.Event()
    due: list[float] = []

    async def work(key: Key) -> datetime | None:
        if key == FAILING:
            due.append(time.perf_counter())
            started.set()
            return None
        await asyncio.sleep(cost)
        return None

    scheduler = Scheduler(work, concurrency=8)
    now = datetime.now(UTC)
    for n in range(routine):
        scheduler.wake(("bench", f"routine-{n}"), now)
    scheduler.recovering(FAILING, priority)
    woken = time.perf_counter()
    scheduler.wake(FAILING, now + timedelta(microseconds=1))
    runner = asyncio.create_task(scheduler.run())
    await started.wait()
    runner.cancel()
    return due[0] - woken


def bench_queue(figure: Callable[[str, str, str], None], cost: float = 0.025) -> None:
    for routine in (1_000, 10_000):
        for priority in (True, False):
            waited = asyncio.run(_wait_of_failing(routine, cost, priority))
            lane = "priority lane" if priority else "no priority"
            figure(f"recovery lane: wait behind {routine:,} due, {lane}", f"{waited:.3f} s",
                   f"8 slots, {cost * 1000:.0f} ms a reconcile")  # fmt: skip
