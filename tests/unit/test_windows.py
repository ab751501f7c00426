"""Release windows (spec §5) as tables across time zones, DST, midnight, Friday noon,
holidays and freezes; and the property that "next open" is open and never in the past."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parachute.api import Window
from parachute.plan.windows import closed_because, never_opens, playbook_window, problems, state

BERLIN = ZoneInfo("Europe/Berlin")
PLAYBOOK = playbook_window("Europe/Berlin")


def at(text: str, zone: ZoneInfo = BERLIN) -> datetime:
    """A local wall-clock time in `zone`, e.g. 'Tue 2026-11-24 10:30'."""
    return datetime.strptime(text[4:], "%Y-%m-%d %H:%M").replace(tzinfo=zone)


def german(day: date) -> str | None:
    return holidays.country_holidays("DE", subdiv="BY", years=day.year).get(day)


@pytest.mark.parametrize(
    ("moment", "open_"),
    [
        pytest.param("Tue 2026-11-24 10:00", True, id="tuesday-ten-opens"),
        pytest.param("Tue 2026-11-24 09:59", False, id="tuesday-before-ten"),
        pytest.param("Thu 2026-11-26 13:59", True, id="thursday-before-two"),
        pytest.param("Thu 2026-11-26 14:00", False, id="thursday-two-closes"),
        pytest.param("Mon 2026-11-23 10:30", False, id="monday-opens-only-at-eleven"),
        pytest.param("Mon 2026-11-23 11:00", True, id="monday-eleven"),
        pytest.param("Fri 2026-11-27 11:00", False, id="friday-is-not-a-release-day"),
        pytest.param("Sat 2026-11-28 11:00", False, id="weekend"),
        pytest.param("Wed 2026-11-25 16:30", False, id="never-after-four"),
        pytest.param("Wed 2026-11-25 23:59", False, id="late-night"),
    ],
)
def test_the_playbook_window(moment: str, open_: bool) -> None:
    assert (closed_because(PLAYBOOK, at(moment)) == "") is open_


def test_friday_after_noon_is_denied_even_when_a_policy_allows_fridays() -> None:
    window = Window.model_validate({
        "timeZone": "Europe/Berlin",
        "allow": [{"days": ["Fri"], "start": "09:00", "end": "18:00"}],
        "deny": [{"days": ["Fri"], "start": "12:00", "end": "00:00"}],
    })  # fmt: skip
    assert closed_because(window, at("Fri 2026-11-27 11:59")) == ""
    assert "closed Fri 12:00-00:00" in closed_because(window, at("Fri 2026-11-27 12:00"))


def test_a_range_past_midnight_covers_both_days() -> None:
    window = Window.model_validate(
        {"timeZone": "UTC", "allow": [{"days": ["Sat"], "start": "22:00", "end": "02:00"}]}
    )
    assert closed_because(window, at("Sat 2026-11-28 23:00", UTC)) == ""
    assert closed_because(window, at("Sun 2026-11-29 01:59", UTC)) == ""
    assert closed_because(window, at("Sun 2026-11-29 02:00", UTC)) != ""
    assert closed_because(window, at("Fri 2026-11-27 23:00", UTC)) != ""


def test_the_same_instant_is_open_in_one_zone_and_closed_in_another() -> None:
    instant = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)  # 11:30 in Berlin, 05:30 in New York
    assert closed_because(playbook_window("Europe/Berlin"), instant) == ""
    assert closed_because(playbook_window("America/New_York"), instant) != ""


def test_wall_clock_hours_hold_across_a_dst_change() -> None:
    # Berlin leaves summer time on Sunday 25 October 2026: Tuesday 10:00 is 09:00 UTC after, 08:00 before.
    before = state(PLAYBOOK, at("Mon 2026-10-19 17:00"))
    after = state(PLAYBOOK, at("Mon 2026-10-26 17:00"))
    assert before.next_open == datetime(2026, 10, 20, 8, 0, tzinfo=UTC)
    assert after.next_open == datetime(2026, 10, 27, 9, 0, tzinfo=UTC)


def test_holidays_and_the_day_before_are_closed() -> None:
    window = Window.model_validate(
        {**PLAYBOOK.model_dump(by_alias=True, exclude_none=True),
         "holidays": {"country": "DE", "subdivision": "BY", "dayBefore": True}}
    )  # fmt: skip
    assert "the day before Christmas Day" in closed_because(window, at("Thu 2026-12-24 11:00"), german)
    assert "Christmas Day is a holiday" in closed_because(window, at("Fri 2026-12-25 11:00"), german)


def test_a_freeze_closes_everything_until_it_ends() -> None:
    window = Window.model_validate({
        **PLAYBOOK.model_dump(by_alias=True, exclude_none=True),
        "freezes": [{"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T12:00:00Z", "reason": "Black Friday prep"}],
    })  # fmt: skip
    closed = state(window, at("Tue 2026-11-24 10:30"))
    assert "frozen until 2026-11-25T12:00:00Z (Black Friday prep)" in closed.reason
    assert closed.next_open == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # 13:00 in Berlin, a Wednesday


@pytest.mark.parametrize(
    ("now", "next_open"),
    [
        pytest.param(
            "Fri 2026-11-27 16:00", datetime(2026, 11, 30, 10, 0, tzinfo=UTC), id="friday-to-monday-11"
        ),
        pytest.param(
            "Tue 2026-11-24 14:00", datetime(2026, 11, 25, 9, 0, tzinfo=UTC), id="after-two-to-tomorrow"
        ),
        pytest.param("Wed 2026-11-25 23:30", datetime(2026, 11, 26, 9, 0, tzinfo=UTC), id="over-midnight"),
    ],
)
def test_the_next_open_time(now: str, next_open: datetime) -> None:
    closed = state(PLAYBOOK, at(now))
    assert not closed.open and closed.next_open == next_open


def test_no_window_is_always_open() -> None:
    assert state(None, datetime(2026, 11, 27, 17, tzinfo=UTC)).open


def test_a_window_with_no_open_hour_never_opens() -> None:
    window = Window.model_validate({"timeZone": "UTC", "allow": [{"days": ["Mon"], "start": "10:00", "end": "11:00"}],
                                    "deny": [{"days": ["Mon"], "start": "09:00", "end": "12:00"}]})  # fmt: skip
    closed = state(window, datetime(2026, 11, 24, tzinfo=UTC))
    assert not closed.open and closed.next_open is None


EVERY_DAY = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


@pytest.mark.parametrize(
    ("window", "never"),
    [
        pytest.param({}, False, id="no-ranges-always-open"),
        pytest.param(PLAYBOOK.model_dump(by_alias=True, exclude_none=True), False, id="playbook"),
        pytest.param({"allow": [{"days": ["Mon"], "start": "10:00", "end": "11:00"}],
                      "deny": [{"days": ["Mon"], "start": "09:00", "end": "12:00"}]}, True, id="allow-inside-deny"),
        pytest.param({"allow": [{"days": ["Mon"], "start": "10:00", "end": "11:00"}],
                      "deny": [{"days": ["Tue"], "start": "09:00", "end": "12:00"}]}, False, id="deny-another-day"),
        pytest.param({"allow": [{"days": ["Sat"], "start": "22:00", "end": "02:00"}],
                      "deny": [{"days": ["Sat"], "start": "22:00", "end": "00:00"},
                               {"days": ["Sun"], "start": "00:00", "end": "02:00"}]}, True,
                     id="past-midnight-covered-on-both-days"),
        pytest.param({"allow": [{"days": ["Sat"], "start": "22:00", "end": "02:00"}],
                      "deny": [{"days": ["Sat"], "start": "22:00", "end": "00:00"},
                               {"days": ["Sun"], "start": "00:00", "end": "01:59"}]}, False,
                     id="one-minute-left-is-open"),
        pytest.param({"deny": [{"days": EVERY_DAY, "start": "00:00", "end": "00:00"}]}, True, id="deny-all-week"),
        pytest.param({"deny": [{"days": EVERY_DAY, "start": "12:00", "end": "11:59"}]}, False, id="deny-all-but-a-minute"),
        pytest.param({"allow": [{"days": ["Fri"], "start": "13:00", "end": "15:00"}]}
                     | {"deny": playbook_window().model_dump(by_alias=True)["deny"]}, True,
                     id="friday-afternoon-under-the-playbook-denials"),
    ],
)  # fmt: skip
def test_a_window_whose_hours_are_all_denied_never_opens(window: dict[str, object], never: bool) -> None:
    assert never_opens(Window.model_validate({"timeZone": "UTC", **window})) is never


def test_a_window_that_never_opens_is_a_problem_naming_the_field() -> None:
    allowed = Window.model_validate({"allow": [{"days": ["Mon"], "start": "10:00", "end": "11:00"}],
                                     "deny": [{"days": ["Mon"], "start": "09:00", "end": "12:00"}]})  # fmt: skip
    assert problems(allowed) == [("allow", "never opens: the deny ranges cover every hour it allows")]
    denied = Window.model_validate({"deny": [{"days": EVERY_DAY, "start": "00:00", "end": "00:00"}]})
    assert problems(denied) == [("deny", "never opens: the deny ranges cover the whole week")]
    assert problems(PLAYBOOK) == []


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "Europe/berlin "])
def test_an_unknown_time_zone_is_a_problem_naming_the_field(zone: str) -> None:
    assert problems(Window.model_construct(time_zone=zone)) == [
        ("timeZone", f"unknown time zone {zone!r} (an IANA name, e.g. Europe/Berlin)")
    ]


def test_peak_traffic_closes_and_is_looked_at_again_soon() -> None:
    now = at("Tue 2026-11-24 10:30")
    closed = state(PLAYBOOK, now, peak=True)
    assert closed.reason == "peak traffic" and closed.next_open == now + timedelta(minutes=5)


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)),
    st.sampled_from(ZONES),
    st.booleans(),
)
def test_next_open_is_always_open_and_never_in_the_past(
    now: datetime, zone: str, with_holidays: bool
) -> None:
    window = playbook_window(zone)
    calendar = german if with_holidays else (lambda _: None)
    if with_holidays:
        window = Window.model_validate({**window.model_dump(by_alias=True, exclude_none=True),
                                        "holidays": {"country": "DE", "dayBefore": True}})  # fmt: skip
    result = state(window, now, calendar)
    if result.open:
        return
    assert result.next_open is not None and result.next_open > now
    assert closed_because(window, result.next_open, calendar) == ""
    # And nothing earlier was open: it is the *next* open time.
    assert closed_because(window, result.next_open - timedelta(minutes=1), calendar) != ""


CLOCK_TIMES = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 59]))
RANGES = st.builds(
    lambda days, start, end: {"days": sorted(set(days)), "start": start, "end": end},
    st.lists(st.sampled_from(EVERY_DAY), min_size=1, max_size=7),
    CLOCK_TIMES,
    CLOCK_TIMES,
).filter(lambda r: r["start"] != r["end"])


@settings(max_examples=100, deadline=None)
@given(st.lists(RANGES, max_size=3), st.lists(RANGES, max_size=4),
       st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)))  # fmt: skip
def test_never_opens_agrees_with_the_search_for_the_next_open_time(
    allow: list[dict[str, object]], deny: list[dict[str, object]], now: datetime
) -> None:
    window = Window.model_validate(
        {"timeZone": "Europe/Berlin", "allow": allow or None, "deny": deny or None}
    )
    result = state(window, now)
    assert never_opens(window) is (not result.open and result.next_open is None)
