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
from parachute.conditions import parse_time

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
