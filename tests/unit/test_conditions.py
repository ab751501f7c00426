"""Conditions follow the API conventions: lastTransitionTime moves only when status does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from parachute.api import ConditionStatus
from parachute.conditions import READY, set_condition, timestamp

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
