"""When analysis rounds fall: on the stage's start plus whole intervals.

A stage's wait also counts from its start, so a wait of whole intervals ends at a round's due
time: the round and the end are one look, and one status write. Rounds due from the time the
last one happened to run would drift by the scheduler's lag at every round and miss the end by
that much, making a look and a write of their own. Outside a stage (a rollback, the watch after
it) there is no wait to meet: a round follows the last by one interval.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from parachute.api import Phase, RolloutStatus
from parachute.conditions import parse_time, timestamp

STAGED = (Phase.progressing, Phase.paused)


def next_round_at(status: RolloutStatus, interval: timedelta, now: datetime) -> datetime:
    """When the round after one run at `now` is due.

    Never sooner than half an interval after `now`: a round that ran late (a busy operator)
    is not followed by another a moment later, but by the point after that.
    """
    anchor = parse_time(status.stage_started_at) if status.phase in STAGED else None
    if anchor is None or anchor > now or interval <= timedelta(0):
        return now + interval
    following = anchor + ((now - anchor) // interval + 1) * interval
    return following if following - now >= interval / 2 else following + interval


def rolling_back(due: datetime | None, interval: timedelta, now: datetime) -> datetime | None:
    """A rollback's next round, as it begins: no later than one interval away, however its
    stage's schedule had it (each level's budget is judged by rounds, and the five minutes
    count). None stays None: the round comes at once."""
    return None if due is None else min(due, now + interval)


def entering_stage(status: RolloutStatus, interval: timedelta, now: datetime) -> datetime | None:
    """A later stage's next round, as it begins. When the round that ended the stage before ran
    in this look (at this stage's start), the next is one interval in, on the new stage's
    schedule; when the stage began without one (a promote by hand, a window that opened), the
    round already due stands, and the rounds after it fall on the new schedule."""
    ran_now = any(m.last_evaluated_at == timestamp(now) and not m.fast_lane for m in status.metrics or [])
    return next_round_at(status, interval, now) if ran_now else parse_time(status.next_analysis_at)
