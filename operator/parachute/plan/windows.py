"""When a release may progress (spec §5): weekly ranges in a time zone, freezes, holidays.

Pure: the time and the holiday calendar come in. Ranges are read in local wall-clock time,
so "10:00-14:00" means ten to two on the clock in that zone on both sides of a DST change.
A range whose end is before its start runs past midnight; "16:00-00:00" is "after four".

`next_open` answers "until when": the first moment at or after `now` when the window is
open, found by walking the boundaries where the answer can change, never by sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from parachute.api import Freeze, WeeklyRange, Window, parse_duration

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HORIZON = timedelta(days=400)  # how far ahead "next open" looks before it says "never"

# Whether a local date is a holiday (and its name); the caller binds the country's calendar.
Calendar = Callable[[date], str | None]


def no_holidays(_: date) -> str | None:
    return None


def playbook_window(time_zone: str = "UTC") -> Window:
    """The playbook's windows: best Tue-Thu 10-14, acceptable Mon 11-14; never Friday after
    12:00, never after 16:00 (holidays need a country, so a policy adds them)."""
    return Window.model_validate({
        "timeZone": time_zone,
        "allow": [{"days": ["Tue", "Wed", "Thu"], "start": "10:00", "end": "14:00"},
                  {"days": ["Mon"], "start": "11:00", "end": "14:00"}],
        "deny": [{"days": ["Fri"], "start": "12:00", "end": "00:00"},
                 {"days": list(DAYS), "start": "16:00", "end": "00:00"}],
    })  # fmt: skip


@dataclass(frozen=True)
class WindowState:
    open: bool
    reason: str = ""  # why it is closed
    next_open: datetime | None = None  # None when open, or when it never opens


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _in_range(rng: WeeklyRange, local: datetime) -> bool:
    """Whether a local wall-clock moment falls in a weekly range (half-open: start ≤ t < end)."""
    start, end = _clock(rng.start), _clock(rng.end)
    today, yesterday = DAYS[local.weekday()], DAYS[(local.weekday() - 1) % 7]
    now = local.time()
    if start < end:
        return today in rng.days and start <= now < end
    # Past midnight: from start on its day to end on the next day.
    return (today in rng.days and now >= start) or (yesterday in rng.days and now < end)


def _frozen(freezes: list[Freeze], moment: datetime) -> Freeze | None:
    for freeze in freezes:
        start = datetime.fromisoformat(freeze.start.replace("Z", "+00:00"))
        end = datetime.fromisoformat(freeze.end.replace("Z", "+00:00"))
        if start <= moment < end:
            return freeze
    return None


def closed_because(
    window: Window, moment: datetime, calendar: Calendar = no_holidays, peak: bool = False
) -> str:
    """Why the window is closed at `moment` ("" when it is open). Freezes first, peak last."""
    local = moment.astimezone(ZoneInfo(window.time_zone))
    reasons = (
        _freeze_reason(window, moment),
        _holiday_reason(window, local, calendar),
        _hours_reason(window, local),
        "peak traffic" if peak else "",
    )
    return next((reason for reason in reasons if reason), "")


def _freeze_reason(window: Window, moment: datetime) -> str:
    freeze = _frozen(window.freezes or [], moment)
    if freeze is None:
        return ""
    return f"frozen until {freeze.end}" + (f" ({freeze.reason})" if freeze.reason else "")


def _holiday_reason(window: Window, local: datetime, calendar: Calendar) -> str:
    if window.holidays is None:
        return ""
    today = calendar(local.date())
    if today:
        return f"{today} is a holiday"
    tomorrow = calendar(local.date() + timedelta(days=1))
    return f"the day before {tomorrow}" if tomorrow and window.holidays.day_before else ""


def _hours_reason(window: Window, local: datetime) -> str:
    for rng in window.deny or []:
        if _in_range(rng, local):
            return f"closed {'/'.join(rng.days)} {rng.start}-{rng.end} ({window.time_zone})"
    if window.allow and not any(_in_range(rng, local) for rng in window.allow):
        return f"outside the allowed hours ({window.time_zone})"
    return ""


def problems(window: Window) -> list[tuple[str, str]]:
    """What makes a window unusable, as (field, message): an unknown time zone, or weekly
    hours that leave no minute of the week open (freezes and holidays only ever close more,
    so such a window never opens). Empty when the window can work."""
    try:
        ZoneInfo(window.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return [("timeZone", f"unknown time zone {window.time_zone!r} (an IANA name, e.g. Europe/Berlin)")]
    if never_opens(window):
        if window.allow:
            return [("allow", "never opens: the deny ranges cover every hour it allows")]
        return [("deny", "never opens: the deny ranges cover the whole week")]
    return []


# A week that starts on a Monday: only weekdays and wall-clock times matter to weekly ranges.
_A_MONDAY = date(2024, 1, 1)


def never_opens(window: Window) -> bool:
    """Whether the weekly ranges leave no minute of the week open.

    The answer can change only where a range starts or ends or a day begins, so those
    moments of one week are the only ones to look at.
    """
    marks = {_clock(t) for rng in (window.allow or []) + (window.deny or []) for t in (rng.start, rng.end)}
    marks.add(time(0, 0))
    week = (datetime.combine(_A_MONDAY + timedelta(days=d), mark) for d in range(7) for mark in marks)
    return all(_hours_reason(window, moment) for moment in week)


def _boundaries(window: Window, after: datetime) -> Iterator[datetime]:
    """Every moment after `after` where the window's answer may change, in order."""
    zone = ZoneInfo(window.time_zone)
    marks = {_clock(t) for rng in (window.allow or []) + (window.deny or []) for t in (rng.start, rng.end)}
    marks.add(time(0, 0))  # a new day: holidays and weekdays change
    fixed = sorted(
        datetime.fromisoformat(t.replace("Z", "+00:00"))
        for f in window.freezes or []
        for t in (f.start, f.end)
    )
    day = after.astimezone(zone).date()
    end = after + HORIZON
    while True:
        todays = [datetime.combine(day, mark, tzinfo=zone) for mark in sorted(marks)]
        todays += [f for f in fixed if f.astimezone(zone).date() == day]
        for moment in sorted(todays):
            utc = moment.astimezone(UTC)
            if utc > after:
                if utc > end:
                    return
                yield utc
        day += timedelta(days=1)


def state(
    window: Window | None, now: datetime, calendar: Calendar = no_holidays, peak: bool = False
) -> WindowState:
    """Open, or closed with the reason and the next open time (None: not within a year)."""
    if window is None:
        return WindowState(open=True)
    reason = closed_because(window, now, calendar, peak)
    if not reason:
        return WindowState(open=True)
    if peak and reason == "peak traffic":
        # Peak traffic is measured, not scheduled: look again soon rather than predict it.
        recheck = window.peak_traffic.recheck if window.peak_traffic else "5m"
        return WindowState(open=False, reason=reason, next_open=now + parse_duration(recheck))
    for moment in _boundaries(window, now):
        if not closed_because(window, moment, calendar):
            return WindowState(open=False, reason=reason, next_open=moment)
    return WindowState(open=False, reason=reason, next_open=None)
