"""When each Rollout is next due, and one loop that reconciles whatever is due.

Replaces per-object timers: kopf would put a finalizer on every object with a timer, and
one heap of due times scales further than thousands of timer tasks. The heap is only a
cache: the due times come from the reconciles, `status.nextCheckAt` and watch events, so a
new process rebuilds it from the first listing. `status.nextCheckAt` is never later than the
planner's next check (a look that would only move it later is not written), so a standby's
heap warmed from it looks early, never late.

Due work waits in two queues, not as tasks: at most `concurrency` reconciles run, and a freed
slot goes to a Rollout that is rolling back or failing before routine checks (the recovery
lane), so that the five-minute objective does not depend on how many others are due. A
critical breach found by the fast lane runs at once, without waiting for a slot.

With a gate (leader election, `parachute.leadership`), a standby keeps its heap warm from the
watch but runs nothing until the gate opens; when it closes, work under way is cancelled and
put back as due, so that whoever leads next runs it from what was written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from parachute import telemetry

Key = tuple[str, str]  # namespace, name
Work = Callable[[Key], Awaitable[datetime | None]]

logger = logging.getLogger("parachute.scheduler")


class Woken(StrEnum):
    """What made a Rollout due: a reconcile that decided nothing is counted under it."""

    LISTING = "listing"  # the first listing: adoption, or a new process
    ROLLOUT = "rollout"  # someone else changed the Rollout
    DEPLOYMENT = "deployment"  # its target or its canary changed
    REPLICA_SET = "replicaset"  # its canary's ReplicaSet has more pods ready than its Deployment says
    TRACKED = "tracked"  # a ConfigMap it tracks, its routing record or its policy changed
    LANE = "lane"  # the fast lane found a critical breach
    REPORT = "report"  # a user report
    TIME = "time"  # a due time: its own next look (after a 409 too), or one another replica wrote
    RETRY = "retry"  # its last reconcile raised


def utcnow() -> datetime:
    return datetime.now(UTC)


class Gate(Protocol):
    """Whether this process may run work now (it leads), and a way to wait until it may."""

    def is_open(self) -> bool: ...

    async def wait_open(self) -> None: ...


class Scheduler:
    def __init__(
        self,
        work: Work,
        clock: Callable[[], datetime] = utcnow,
        concurrency: int = 8,
        max_backoff: float = 60,
        gate: Gate | None = None,
    ) -> None:
        self._work = work
        self._gate = gate
        # Lag counts from when this process could first run the work: not the time it stood by.
        self._opened_at = datetime.min.replace(tzinfo=UTC)
        self._clock = clock
        self._due: dict[Key, datetime] = {}
        self._woken: dict[Key, Woken] = {}  # why it is due: the cause of its earliest due time
        self._heap: list[tuple[datetime, Key]] = []
        self._running: set[Key] = set()  # queued for a slot or reconciling
        self._started: set[Key] = set()  # reconciling: it may have read what a wake now changes
        # Woken while reconciling: run once more right after (why: the first such wake) ...
        self._again: dict[Key, Woken] = {}
        # ... or if one of these is still news (why: the first that is)
        self._again_if: dict[Key, list[tuple[Callable[[], bool], Woken]]] = {}
        self._urgent: set[Key] = set()  # a critical breach: runs without waiting for a slot
        self._recovering: set[Key] = set()  # rolling back or failing: first to a free slot
        # Due, waiting for a slot: (due, key), recovering ones first, else first come.
        self._queued: dict[bool, collections.deque[tuple[datetime, Key]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }
        self._slots = concurrency
        telemetry.in_vain_causes(list(Woken))
        self._failures: dict[Key, int] = {}
        self._changed = asyncio.Event()
        self._max_backoff = max_backoff
        self._tasks: dict[asyncio.Task[None], Key] = {}
        self._holding: set[asyncio.Task[None]] = set()  # tasks with a slot not yet given back

    def wake(
        self,
        key: Key,
        at: datetime | None = None,
        urgent: bool = False,
        news: Callable[[], bool] | None = None,
        woken: Woken = Woken.TIME,
    ) -> None:
        """Make `key` due at `at` (now if None), unless it is already due earlier. An urgent wake
        (a critical breach) is due now and runs ahead of routine work, without waiting for a slot.
        `news`, for a wake while its reconcile runs: asked when that reconcile ends, whether
        what woke it is still news (the event of the reconcile's own write, seen before the
        write's answer, is not)."""
        telemetry.woke(woken)
        at = at or self._clock()
        if urgent:
            at = min(at, self._clock())
            self._urgent.add(key)
        if urgent and key in self._running and (queued := self._take_queued(key)) is not None:
            self._woken[key] = woken
            self._start(key, queued[0])  # it was waiting for a slot: it runs now
            return
        if key in self._running:
            if key not in self._started:
                return  # still waiting for a slot: it reads what this wake is about, and says when next
            if at > self._clock():
                self._schedule(key, at, woken)
                return
            if news is None:
                self._again.setdefault(key, woken)
            else:
                self._again_if.setdefault(key, []).append((news, woken))
            return
        self._schedule(key, at, woken)

    def recovering(self, key: Key, yes: bool) -> None:
        """Whether `key` is rolling back or has a failed verdict: its reconciles go first."""
        if not yes:
            self._recovering.discard(key)
            return
        if key in self._recovering:
            return
        self._recovering.add(key)
        queued = self._take_queued(key, lanes=(False,))
        if queued is not None:  # queued as routine already: it moves to the recovery lane
            self._queued[True].append(queued)

    def _take_queued(self, key: Key, lanes: tuple[bool, ...] = (True, False)) -> tuple[datetime, Key] | None:
        """Take `key` out of the queues if it waits there (a scan: only on rare transitions)."""
        for lane in lanes:
            for item in self._queued[lane]:
                if item[1] == key:
                    self._queued[lane].remove(item)
                    return item
        return None

    def forget(self, key: Key) -> None:
        self._due.pop(key, None)
        self._woken.pop(key, None)
        self._again.pop(key, None)
        self._again_if.pop(key, None)
        self._urgent.discard(key)
        self._recovering.discard(key)

    @property
    def pending(self) -> int:
        return len(self._due)

    def _schedule(self, key: Key, at: datetime, woken: Woken = Woken.TIME) -> None:
        current = self._due.get(key)
        if current is not None and current <= at:
            return
        self._due[key] = at
        self._woken[key] = woken
        heapq.heappush(self._heap, (at, key))
        self._changed.set()

    def _due_again(self, key: Key) -> None:
        """Due at once, for the reason it was due before (work put back, not newly woken)."""
        self._schedule(key, self._clock(), self._woken.get(key, Woken.TIME))

    def stand_down(self) -> None:
        """The gate closed: cancel what runs (each is due again at once, for whoever leads next)."""
        for task in list(self._tasks):
            task.cancel()
        self._unqueue()

    def _unqueue(self) -> None:
        """Work waiting for a slot is due again, for whoever leads next."""
        for lane in self._queued.values():
            while lane:
                _, key = lane.popleft()
                self._running.discard(key)
                self._due_again(key)

    def _open(self) -> bool:
        return self._gate is None or self._gate.is_open()

    async def run(self) -> None:
        while True:
            if self._gate is not None and not self._gate.is_open():
                self._unqueue()
                await self._gate.wait_open()
                self._opened_at = self._clock()
                continue
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                at, key = heapq.heappop(self._heap)
                if self._due.get(key) != at:
                    continue  # superseded by an earlier or later wake
                del self._due[key]
                if key in self._running:  # running already: once more right after
                    if key in self._started:
                        self._again.setdefault(key, self._woken.pop(key, Woken.TIME))
                    continue  # (waiting for a slot: it reads everything when it starts)
                # Running from the moment it is queued: a wake while it waits for a slot must
                # not start a second reconcile of the same Rollout beside it.
                self._running.add(key)
                if key in self._urgent:
                    self._start(key, at)
                else:
                    self._queued[key in self._recovering].append((at, key))
            self._dispatch()
            delay = (self._heap[0][0] - now).total_seconds() if self._heap else 3600.0
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, min(delay, 3600.0)))

    def _dispatch(self) -> None:
        """Start queued work while slots are free: the recovery lane first."""
        while self._slots > 0 and (self._queued[True] or self._queued[False]):
            at, key = (self._queued[True] or self._queued[False]).popleft()
            self._slots -= 1
            self._start(key, at, slot=True)

    def _start(self, key: Key, due: datetime, slot: bool = False) -> None:
        self._urgent.discard(key)
        task = asyncio.create_task(self._one(key, due))
        self._tasks[task] = key
        if slot:
            self._holding.add(task)
        task.add_done_callback(self._finished)

    def _give_back(self, task: asyncio.Task[None]) -> None:
        if task in self._holding:
            self._holding.discard(task)
            self._slots += 1
            self._changed.set()  # the run loop starts the next queued

    def _finished(self, task: asyncio.Task[None]) -> None:
        key = self._tasks.pop(task)
        self._give_back(task)  # also for a task cancelled before its first step
        if task.cancelled():  # stood down (or shutting down): due again at once, for the next leader
            self._running.discard(key)
            self._again.pop(key, None)
            self._again_if.pop(key, None)
            self._due_again(key)

    async def _one(self, key: Key, due: datetime) -> None:
        try:
            await self._reconcile(key, due)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._give_back(task)

    async def _reconcile(self, key: Key, due: datetime) -> None:
        if not self._open():  # the gate closed while it waited for a slot
            self._running.discard(key)
            self._due_again(key)
            return
        telemetry.late((self._clock() - max(due, self._opened_at)).total_seconds())
        self._started.add(key)
        self._urgent.discard(key)  # it reads everything now: a breach found before this is seen
        woken, next_woken = self._woken.pop(key, Woken.TIME), Woken.TIME
        try:
            with telemetry.woken_by(woken):
                following = await self._work(key)
            self._failures.pop(key, None)
        except asyncio.CancelledError:
            self._woken.setdefault(key, woken)  # due again at once, for the same reason
            raise
        except Exception as error:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            backoff = min(self._max_backoff, 2 ** min(failures, 10))
            logger.warning("reconcile of %s/%s failed (%s); again in %ss", *key, error, backoff)
            following, next_woken = self._clock() + timedelta(seconds=backoff), Woken.RETRY
        finally:
            self._running.discard(key)
            self._started.discard(key)
        maybe = self._again_if.pop(key, [])
        again = self._again.pop(key, None) or next((why for news, why in maybe if news()), None)
        if again is not None:
            following, next_woken = self._clock(), again
        if following is not None:
            self._schedule(key, following, next_woken)
