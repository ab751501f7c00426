"""The scheduler runs each Rollout when it is due, never two reconciles of one Rollout at
once, and backs off from failures; each reconcile knows what made it due."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from parachute import telemetry
from parachute.scheduler import Key, Scheduler, Woken

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
        scheduler.wake(A)  # woken again while it waits: it has read nothing yet, so once is enough
        scheduler.wake(A)
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(story())
    assert slow.overlaps == [] and slow.calls.count(A) == 1


def test_a_rollout_waiting_for_a_free_slot_is_not_run_again_for_a_later_due_time() -> None:
    slow = SlowWork()

    async def story() -> None:
        scheduler = Scheduler(slow.work, concurrency=1)
        scheduler.wake(B)  # B takes the slot
        scheduler.wake(A)  # waits for it
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.02)
        # A next check it has not read yet (another replica's status): its run says when next.
        scheduler.wake(A, now() + timedelta(milliseconds=200))
        await asyncio.sleep(0.6)
        task.cancel()

    asyncio.run(story())
    assert slow.calls == [B, A]


class Gate:
    """Leadership as a switch: the scheduler runs only while it is on."""

    def __init__(self, open_: bool = False) -> None:
        self.open = open_
        self._changed = asyncio.Event()

    def is_open(self) -> bool:
        return self.open

    async def wait_open(self) -> None:
        while not self.open:
            self._changed.clear()
            await self._changed.wait()

    def set(self, open_: bool) -> None:
        self.open = open_
        self._changed.set()


def test_a_standby_runs_nothing_but_keeps_what_is_due_and_runs_it_on_taking_over() -> None:
    calls: list[Key] = []

    async def work(key: Key) -> datetime | None:
        calls.append(key)
        return None

    async def story() -> list[Key]:
        gate = Gate(open_=False)
        scheduler = Scheduler(work, gate=gate)
        task = asyncio.create_task(scheduler.run())
        scheduler.wake(A)
        scheduler.wake(B, now() + timedelta(milliseconds=50))
        await asyncio.sleep(0.2)
        standing_by = list(calls)
        assert scheduler.pending == 2  # warm: both still due
        gate.set(True)
        await asyncio.sleep(0.1)
        task.cancel()
        return standing_by

    assert asyncio.run(story()) == []
    assert sorted(calls) == sorted([A, B])


def test_standing_down_cancels_work_under_way_and_the_next_leader_runs_it_again() -> None:
    started: list[Key] = []
    finished: list[Key] = []

    async def work(key: Key) -> datetime | None:
        started.append(key)
        await asyncio.sleep(0.2)
        finished.append(key)
        return None

    async def story() -> None:
        gate = Gate(open_=True)
        scheduler = Scheduler(work, gate=gate)
        task = asyncio.create_task(scheduler.run())
        scheduler.wake(A)
        await asyncio.sleep(0.05)
        gate.set(False)
        scheduler.stand_down()
        await asyncio.sleep(0.3)
        assert (started, finished) == ([A], [])  # cut short, and not run again while standing by
        assert scheduler.pending == 1
        gate.set(True)
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(story())
    assert started == [A, A] and finished == [A]


def test_work_waiting_for_a_slot_when_the_gate_closes_is_not_run() -> None:
    slow = SlowWork()

    async def story() -> None:
        gate = Gate(open_=True)
        scheduler = Scheduler(slow.work, concurrency=1, gate=gate)
        scheduler.wake(A)
        scheduler.wake(B)  # waits for A's slot
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.05)
        gate.set(False)
        await asyncio.sleep(0.2)
        assert slow.calls == [A] and scheduler.pending == 1  # B is due again, for the next leader
        task.cancel()

    asyncio.run(story())


def test_a_recovering_rollout_takes_the_next_free_slot_ahead_of_routine_work() -> None:
    order: list[Key] = []
    routine = [("shop", f"routine-{n}") for n in range(5)]
    failing: Key = ("shop", "failing")

    async def work(key: Key) -> datetime | None:
        order.append(key)
        await asyncio.sleep(0.05)
        return None

    async def story() -> None:
        scheduler = Scheduler(work, concurrency=1)
        for key in routine:
            scheduler.wake(key)
        scheduler.recovering(failing, True)
        scheduler.wake(failing, now() + timedelta(milliseconds=20))  # due after them all
        await run_for(scheduler, 0.6)

    asyncio.run(story())
    # The first routine reconcile had the slot; the failing one is next, not sixth.
    assert order[:2] == [routine[0], failing]
    assert sorted(order[2:]) == sorted(routine[1:])


def test_a_rollout_back_to_routine_waits_its_turn_again() -> None:
    order: list[Key] = []
    routine = [("shop", f"routine-{n}") for n in range(3)]
    healed: Key = ("shop", "healed")

    async def work(key: Key) -> datetime | None:
        order.append(key)
        await asyncio.sleep(0.05)
        return None

    async def story() -> None:
        scheduler = Scheduler(work, concurrency=1)
        for key in routine:
            scheduler.wake(key)
        scheduler.recovering(healed, True)
        scheduler.recovering(healed, False)
        scheduler.wake(healed, now() + timedelta(milliseconds=20))
        await run_for(scheduler, 0.5)

    asyncio.run(story())
    assert order == [*routine, healed]


def test_a_critical_breach_of_a_rollout_waiting_for_a_slot_runs_at_once() -> None:
    order: list[Key] = []
    routine = [("shop", f"routine-{n}") for n in range(4)]

    async def work(key: Key) -> datetime | None:
        order.append(key)
        await asyncio.sleep(0.05)
        return None

    async def story() -> None:
        scheduler = Scheduler(work, concurrency=1)
        for key in routine:
            scheduler.wake(key)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.01)  # routine-0 runs, the others wait for its slot
        scheduler.wake(routine[3], urgent=True)
        await asyncio.sleep(0.01)
        assert order == [routine[0], routine[3]]
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(story())
    assert sorted(order) == sorted(routine)


def test_at_most_the_slots_run_at_once_however_many_are_due() -> None:
    running = 0
    most = 0

    async def work(key: Key) -> datetime | None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return None

    async def story() -> None:
        scheduler = Scheduler(work, concurrency=3)
        for n in range(30):
            scheduler.wake(("shop", f"r-{n}"))
        await run_for(scheduler, 0.5)
        assert scheduler.pending == 0

    asyncio.run(story())
    assert most == 3


def test_a_slot_taken_by_work_cancelled_before_it_began_is_given_back() -> None:
    slow = SlowWork()

    async def story() -> None:
        gate = Gate(open_=True)
        scheduler = Scheduler(slow.work, concurrency=1, gate=gate)
        scheduler.wake(A)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0)  # A is given the slot; its reconcile has not taken a step yet
        scheduler.stand_down()  # leadership lost in the same turn
        await asyncio.sleep(0.05)
        scheduler.wake(B)
        await asyncio.sleep(0.4)
        task.cancel()

    asyncio.run(story())
    assert B in slow.calls


def test_a_wake_while_reconciling_runs_once_more_only_if_it_is_still_news_at_the_end() -> None:
    slow = SlowWork()

    async def story() -> None:
        scheduler = Scheduler(slow.work)
        scheduler.wake(A)
        scheduler.wake(B)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.03)  # both under way
        scheduler.wake(A, news=lambda: False)  # its own write's event, seen before the answer
        scheduler.wake(B, news=lambda: True)  # someone else's change
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(story())
    assert slow.calls.count(A) == 1 and slow.calls.count(B) == 2


def test_each_reconcile_knows_what_made_it_due() -> None:
    seen: list[tuple[Key, str]] = []

    async def work(key: Key) -> datetime | None:
        seen.append((key, telemetry.woken()))
        looks = [k for k, _ in seen].count(key)
        await asyncio.sleep(0.05)
        if key == B and looks == 1:
            raise RuntimeError("the API server did not answer")
        return now() + timedelta(milliseconds=50) if key == A and looks == 1 else None

    async def story() -> None:
        scheduler = Scheduler(work, max_backoff=0.1)
        scheduler.wake(A, woken=Woken.DEPLOYMENT)
        scheduler.wake(A, now() + timedelta(seconds=5), woken=Woken.TIME)  # later: the earlier cause stands
        scheduler.wake(B, woken=Woken.LISTING)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.4)  # A: its own next look; B: retried
        scheduler.wake(A, woken=Woken.ROLLOUT)
        await asyncio.sleep(0.02)
        scheduler.wake(A, news=lambda: True, woken=Woken.TRACKED)  # while it runs: once more after
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(story())
    assert [cause for key, cause in seen if key == A] == ["deployment", "time", "rollout", "tracked"]
    assert [cause for key, cause in seen if key == B] == ["listing", "retry"]


def test_a_run_once_more_is_counted_under_the_wake_that_was_news() -> None:
    seen: list[str] = []

    async def work(key: Key) -> datetime | None:
        seen.append(telemetry.woken())
        await asyncio.sleep(0.05)
        return None

    async def story() -> None:
        scheduler = Scheduler(work)
        scheduler.wake(A, woken=Woken.TIME)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.02)  # under way
        scheduler.wake(A, news=lambda: True, woken=Woken.DEPLOYMENT)  # someone else's change
        scheduler.wake(A, news=lambda: False, woken=Woken.ROLLOUT)  # the echo of its own write
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(story())
    assert seen == ["time", "deployment"]


def test_work_cut_short_by_standing_down_runs_again_for_the_same_reason() -> None:
    seen: list[str] = []

    async def work(key: Key) -> datetime | None:
        seen.append(telemetry.woken())
        await asyncio.sleep(0.2)
        return None

    async def story() -> None:
        gate = Gate(open_=True)
        scheduler = Scheduler(work, gate=gate)
        task = asyncio.create_task(scheduler.run())
        scheduler.wake(A, woken=Woken.LISTING)
        await asyncio.sleep(0.05)
        gate.set(False)
        scheduler.stand_down()
        await asyncio.sleep(0.05)
        gate.set(True)
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(story())
    assert seen == ["listing", "listing"]
