"""A fault in a reconcile reaches the Rollout's status after a few attempts in a row, with
backoff going on and no crash loop; a conflict is no fault; the next success clears it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from parachute import engine_loop, faults, kube, watched
from parachute.engine_loop import CONFLICT_RETRY, FAULT_ATTEMPTS, ReconcileLoop, describe
from parachute.notify import outbox
from parachute.notify.outbox import event_name
from parachute.plan.model import Event, EventType
from parachute.scheduler import Key, Scheduler

A: Key = ("shop", "checkout")
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


class Status:
    """An in-memory status writer: what the Rollout's ReconcileFailed condition says."""

    def __init__(self) -> None:
        self.writes: list[tuple[Key, tuple[str, str] | None]] = []

    async def write(self, key: Key, fault: tuple[str, str] | None, _: datetime) -> None:
        self.writes.append((key, fault))

    @property
    def faults(self) -> list[tuple[str, str] | None]:
        return [fault for _, fault in self.writes]


class Work:
    """A reconcile that raises whatever is queued, then succeeds."""

    def __init__(self, *outcomes: BaseException | None) -> None:
        self.outcomes = list(outcomes)

    async def __call__(self, namespace: str, name: str, now: datetime) -> datetime | None:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return now + timedelta(minutes=1)


def run(loop: ReconcileLoop, times: int) -> list[datetime | BaseException | None]:
    async def story() -> list[datetime | BaseException | None]:
        results: list[datetime | BaseException | None] = []
        for _ in range(times):
            try:
                results.append(await loop(A))
            except Exception as error:
                results.append(error)
        return results

    return asyncio.run(story())


def test_a_fault_is_written_to_status_after_a_few_attempts_in_a_row_and_still_raised() -> None:
    status = Status()
    fault = KeyError("targetRef")
    loop = ReconcileLoop(Work(*[fault] * FAULT_ATTEMPTS), status.write, now=lambda: T0)
    results = run(loop, FAULT_ATTEMPTS)
    assert all(r is fault for r in results)  # the scheduler still backs off
    assert status.faults == [("KeyError", "KeyError: 'targetRef'")]


def test_one_passing_failure_is_not_reported() -> None:
    status = Status()
    loop = ReconcileLoop(Work(RuntimeError("blip")), status.write, now=lambda: T0)
    run(loop, 2)
    assert status.faults == [None]  # the first success only looks for an old fault to clear


def test_the_next_success_clears_the_fault_once() -> None:
    status = Status()
    loop = ReconcileLoop(Work(*[ValueError("bad")] * FAULT_ATTEMPTS), status.write, now=lambda: T0)
    results = run(loop, FAULT_ATTEMPTS + 2)
    assert results[-1] == T0 + timedelta(minutes=1)
    assert status.faults == [("ValueError", "ValueError: bad"), None]


def test_a_fault_from_before_a_restart_is_looked_for_once() -> None:
    status = Status()
    loop = ReconcileLoop(Work(), status.write, now=lambda: T0)
    run(loop, 3)
    assert status.faults == [None]


def test_a_conflict_is_no_fault_and_is_decided_again_at_once() -> None:
    status = Status()
    loop = ReconcileLoop(Work(*[kube.ConflictError("changed")] * 5), status.write, now=lambda: T0)
    assert run(loop, 5) == [T0 + CONFLICT_RETRY] * 5
    assert status.faults == []


def test_a_rollout_deleted_while_it_is_reconciled_is_no_fault_and_nothing_more_is_due() -> None:
    status = Status()
    loop = ReconcileLoop(Work(*[kube.GoneError("deleted")] * FAULT_ATTEMPTS), status.write, now=lambda: T0)
    assert run(loop, FAULT_ATTEMPTS) == [None] * FAULT_ATTEMPTS
    assert status.faults == []


def test_a_status_write_that_fails_never_hides_the_fault_from_the_scheduler() -> None:
    async def broken(key: Key, fault: tuple[str, str] | None, now: datetime) -> None:
        raise ConnectionError("API server away")

    fault = RuntimeError("boom")
    loop = ReconcileLoop(Work(*[fault] * FAULT_ATTEMPTS), broken, now=lambda: T0)
    assert run(loop, FAULT_ATTEMPTS) == [fault] * FAULT_ATTEMPTS


def test_a_failing_rollout_is_retried_with_backoff_not_in_a_hot_loop() -> None:
    status = Status()
    work = Work(*[RuntimeError("boom")] * 100)

    async def story() -> int:
        scheduler = Scheduler(ReconcileLoop(work, status.write), max_backoff=60)
        scheduler.wake(A)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.5)
        task.cancel()
        return 100 - len(work.outcomes)

    assert asyncio.run(story()) == 1
    assert status.faults == []


@pytest.mark.parametrize(
    ("error", "reason", "message"),
    [
        pytest.param(KeyError("x"), "KeyError", "KeyError: 'x'", id="type-and-text"),
        pytest.param(RuntimeError(), "RuntimeError", "RuntimeError", id="no-text"),
        pytest.param(RuntimeError("a\n  b"), "RuntimeError", "RuntimeError: a b", id="one-line"),
        pytest.param(RuntimeError("x" * 1000), "RuntimeError", "RuntimeError: " + "x" * 299 + "…", id="long-cut"),
        pytest.param(ValueError("GET https://user:secret@prom:9090/api failed"), "ValueError",
                     "ValueError: GET https://***@prom:9090/api failed", id="url-credentials-masked"),
        pytest.param(RuntimeError("(500)\nReason: Internal Server Error\nHTTP response headers: {'Audit-Id': 'x'}\n"
                                  "HTTP response body: {...}"), "RuntimeError",
                     "RuntimeError: (500) Reason: Internal Server Error", id="api-error-without-headers-and-body"),
    ],
)  # fmt: skip
def test_what_a_fault_says(error: BaseException, reason: str, message: str) -> None:
    assert describe(error) == (reason, message)


# ---------------------------------------------------------------------------- what a fault owes


def test_a_fault_reported_owes_a_warning_event_saying_it() -> None:
    reported = engine_loop.reported([], ("KeyError", "KeyError: 'x'"), T0, 3)
    assert reported is not None
    changed, event = reported
    failed = next(c for c in changed if c.type == "ReconcileFailed")
    assert (failed.status, failed.reason, failed.observed_generation) == ("True", "KeyError", 3)
    assert event == Event(EventType.warning, "ReconcileFailed", "KeyError: 'x'")


def test_a_fault_cleared_owes_a_reconciled_event_naming_what_it_was() -> None:
    failed = engine_loop.reported([], ("KeyError", "KeyError: 'x'"), T0, 3)
    assert failed is not None
    cleared = engine_loop.reported(failed[0], None, T0 + timedelta(minutes=1), 3)
    assert cleared is not None
    assert cleared[1] == Event(EventType.normal, "Reconciled", "reconciled again after KeyError: 'x'")


def test_what_status_says_already_owes_nothing() -> None:
    failed = engine_loop.reported([], ("KeyError", "KeyError: 'x'"), T0, 3)
    assert failed is not None
    assert engine_loop.reported(failed[0], ("KeyError", "KeyError: 'x'"), T0, 3) is None
    assert engine_loop.reported([], None, T0, 3) is None


class Rollout:
    """The Rollout as the API server keeps it: read, status patched, Events posted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, status: dict[str, Any]) -> None:
        self.status = status
        self.events: list[tuple[str, str | None]] = []
        monkeypatch.setattr(kube, "latest_rollout", self.read)
        monkeypatch.setattr(kube, "patch_rollout_status", self.patch)
        monkeypatch.setattr(kube, "post_event", self.post_event)

    async def read(self, namespace: str, name: str) -> dict[str, Any]:
        meta = {"namespace": namespace, "name": name, "uid": "u-1", "generation": 2, "resourceVersion": "7"}
        return {"metadata": meta, "status": dict(self.status)}

    async def patch(
        self,
        namespace: str,
        name: str,
        old: object,
        new: dict[str, Any],
        version: str,
        *,
        decided: bool = True,
    ) -> None:
        assert not decided  # a fault noted decides nothing
        self.status = new

    async def post_event(
        self, rollout: object, type_: str, reason: str, message: str, name: str | None = None
    ) -> bool:
        self.events.append((reason, name))
        return True


def test_a_fault_written_to_status_owes_its_event_in_the_same_write_and_posts_it_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rollout = Rollout(monkeypatch, {"phase": "Healthy"})
    owed: list[dict[str, Any]] = []

    def stop_after_the_write(point: str, *_: object) -> None:
        owed.extend(rollout.status.get("outbox") or [])

    monkeypatch.setattr(faults, "point", stop_after_the_write)
    asyncio.run(engine_loop.write_fault_to_status(A, ("KeyError", "KeyError: 'x'"), T0))
    assert [(e["reason"], e["type"]) for e in owed] == [("ReconcileFailed", "Warning")]
    # Posted under the outbox entry's name: a restart that posts it again posts the same Event.
    assert rollout.events == [("ReconcileFailed", event_name("checkout", "u-1", owed[0]["id"]))]
    outbox.forget(A)


def test_a_fault_in_a_status_the_operator_cannot_read_is_still_told(monkeypatch: pytest.MonkeyPatch) -> None:
    rollout = Rollout(monkeypatch, {"phase": "NoSuchPhase"})
    asyncio.run(engine_loop.write_fault_to_status(A, ("ValidationError", "ValidationError: phase"), T0))
    assert [c["reason"] for c in rollout.status["conditions"]] == ["ValidationError"]
    assert rollout.status["phase"] == "NoSuchPhase" and "outbox" not in rollout.status
    assert rollout.events == [("ReconcileFailed", None)]


def test_what_a_reconcile_owes_its_outbox_decides_when_it_is_looked_at_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[Key, datetime | None, datetime]] = []

    async def settle_at_rest(key: Key, due: datetime | None, now: datetime) -> datetime | None:
        asked.append((key, due, now))
        return now + timedelta(seconds=10)  # a delivery failed: a reconcile records it and retries

    monkeypatch.setattr(outbox, "settle_at_rest", settle_at_rest)
    loop = ReconcileLoop(Work(), Status().write, now=lambda: T0)
    assert run(loop, 1) == [T0 + timedelta(seconds=10)]
    assert asked == [(A, T0 + timedelta(minutes=1), T0)]


def test_a_fault_is_cleared_on_the_copy_the_reconcile_left_without_reading_the_rollout_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    copies = watched.Copies()
    monkeypatch.setattr(watched, "ROLLOUTS", copies)
    failed = engine_loop.reported([], ("KeyError", "KeyError: 'x'"), T0, 2)
    assert failed is not None
    shown = [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in failed[0]]
    meta = {"namespace": A[0], "name": A[1], "uid": "u-1", "resourceVersion": "7", "generation": 2}
    copies.seen({"metadata": meta, "status": {"phase": "Healthy", "conditions": shown}})
    written: list[tuple[str, dict[str, Any]]] = []

    async def read_again(*_: object) -> None:
        raise AssertionError("read from the API server")

    async def patch(
        namespace: str, name: str, old: object, new: dict[str, Any], version: str, **_: Any
    ) -> None:
        written.append((version, new))

    async def post_event(*_: object, **__: object) -> bool:
        return True

    monkeypatch.setattr(kube, "read_rollout", read_again)
    monkeypatch.setattr(kube, "patch_rollout_status", patch)
    monkeypatch.setattr(kube, "post_event", post_event)
    asyncio.run(engine_loop.write_fault_to_status(A, None, T0 + timedelta(seconds=5)))
    ((version, new),) = written
    assert version == "7"  # refused if the copy is behind the Rollout
    assert [(c["type"], c["status"]) for c in new["conditions"]] == [("ReconcileFailed", "False")]
    outbox.forget(A)
