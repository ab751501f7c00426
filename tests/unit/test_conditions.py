"""Conditions follow the API conventions: lastTransitionTime moves only when status does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from parachute.api import ConditionStatus
from parachute.conditions import READY, RECONCILE_FAILED, clear_failed, mark_failed, set_condition, timestamp

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_timestamps_are_utc_rfc3339() -> None:
    assert timestamp(T0) == "2026-11-26T10:00:00Z"
    assert (
        timestamp(datetime(2026, 11, 26, 11, 0, tzinfo=timezone(timedelta(hours=1))))
        == "2026-11-26T10:00:00Z"
    )
    assert timestamp(datetime(2026, 11, 26, 10, 0)) == "2026-11-26T10:00:00Z"


def test_same_status_keeps_the_transition_time_but_updates_the_message() -> None:
    first = set_condition(
        None, type_=READY, status=ConditionStatus.true, reason="A", message="one", now=T0, generation=1
    )
    later = T0 + timedelta(minutes=5)
    second = set_condition(
        first, type_=READY, status=ConditionStatus.true, reason="B", message="two", now=later, generation=2
    )
    assert second[0].last_transition_time == "2026-11-26T10:00:00Z"
    assert (second[0].reason, second[0].message, second[0].observed_generation) == ("B", "two", 2)


def test_a_status_change_moves_the_transition_time() -> None:
    first = set_condition(
        None, type_=READY, status=ConditionStatus.true, reason="A", message="", now=T0, generation=1
    )
    later = T0 + timedelta(minutes=5)
    second = set_condition(
        first, type_=READY, status=ConditionStatus.false, reason="B", message="", now=later, generation=1
    )
    assert second[0].last_transition_time == "2026-11-26T10:05:00Z"


def test_other_conditions_are_left_alone() -> None:
    both = set_condition(
        None, type_="A", status=ConditionStatus.true, reason="r", message="", now=T0, generation=1
    )
    both = set_condition(
        both, type_="B", status=ConditionStatus.false, reason="r", message="", now=T0, generation=1
    )
    assert [c.type for c in both] == ["A", "B"]


def test_a_fault_is_marked_once_and_cleared_by_the_next_success() -> None:
    failed = mark_failed(None, reason="KeyError", message="KeyError: 'x'", now=T0, generation=3)
    assert failed is not None
    [condition] = failed
    assert (condition.type, condition.status, condition.reason, condition.message) == (
        RECONCILE_FAILED,
        ConditionStatus.true,
        "KeyError",
        "KeyError: 'x'",
    )
    later = T0 + timedelta(minutes=1)
    assert mark_failed(failed, reason="KeyError", message="KeyError: 'x'", now=later, generation=3) is None
    other = mark_failed(failed, reason="TypeError", message="TypeError: no", now=later, generation=3)
    assert other is not None and other[0].last_transition_time == "2026-11-26T10:00:00Z"

    cleared = clear_failed(failed, now=later, generation=3)
    assert cleared is not None
    assert (cleared[0].status, cleared[0].reason) == (ConditionStatus.false, "Reconciled")
    assert cleared[0].message == "reconciled again after KeyError: 'x'"
    assert clear_failed(cleared, now=later, generation=3) is None
    assert clear_failed(None, now=later, generation=3) is None
