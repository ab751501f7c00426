"""When analysis rounds fall: on the stage's reach plus whole intervals.

A stage's wait counts from when it is reached (its pods ready, its traffic and flags in place),
so a wait of whole intervals ends at a round's due time: the round and the end are one look, and
one status write. Rounds due from the time the last one happened to run would drift by the
scheduler's lag at every round and miss the end by that much, making a look and a write of their
own. Until a stage is reached its rounds fall on its start. Outside a stage (a rollback, the
watch after it) there is no wait to meet: a round follows the last by one interval.

Before anything of a release's new version serves, there is nothing to judge: its rounds wait
(`deferred`), and the first comes when a pod of it is ready.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from parachute.api import Phase, RolloutStatus
from parachute.conditions import parse_time, timestamp
from parachute.plan import facts
from parachute.plan.desired_workload import template_revision
from parachute.plan.model import Observed

STAGED = (Phase.progressing, Phase.paused)


def due(status: RolloutStatus, now: datetime) -> bool:
    """The interval since the last round is over (or no round ran yet: one is due at once)."""
    at = parse_time(status.next_analysis_at)
    return at is None or now >= at


def anchor(status: RolloutStatus) -> datetime | None:
    """What a stage's rounds and wait count from: its reach, else its start; None outside one."""
    if status.phase not in STAGED:
        return None
    return parse_time(status.stage_reached_at) or parse_time(status.stage_started_at)


def next_round_at(status: RolloutStatus, interval: timedelta, now: datetime) -> datetime:
    """When the round after one run at `now` is due.

    Never sooner than half an interval after `now`: a round that ran late (a busy operator)
    is not followed by another a moment later, but by the point after that.
    """
    start = anchor(status)
    if start is None or start > now or interval <= timedelta(0):
        return now + interval
    following = start + ((now - start) // interval + 1) * interval
    return following if following - now >= interval / 2 else following + interval


def at_reach(status: RolloutStatus, interval: timedelta, now: datetime) -> datetime:
    """The next round as a stage is reached at `now`: at once, unless a round ran in this stage
    (the look that began it included) within half an interval: then one interval on, on the
    reached stage's schedule. A round a moment after another has no more to go on (the new
    pods' first requests are not scraped yet), and costs every query again. The round is when
    every metric was last evaluated (a user report is judged between rounds)."""
    started = parse_time(status.stage_started_at)
    evaluated = [parse_time(m.last_evaluated_at) for m in status.metrics or [] if not m.fast_lane]
    if not evaluated or any(moment is None for moment in evaluated):
        return now
    last = min(moment for moment in evaluated if moment is not None)
    if (started is None or last >= started) and now - last < interval / 2:
        return now + interval
    return now


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


def deferred(status: RolloutStatus, observed: Observed) -> bool:
    """Whether a release's round waits because nothing of its new version serves yet: a stage
    below 100% not reached, no ready pod of the new template in the canary or the target.

    Such a round can only be Inconclusive: queries, a status write and a count towards the
    Inconclusive hold, for nothing. Only a new pod template waits: a release of configuration
    alone runs stable's template, and its pods cannot be told apart by it. The canary's ready
    pods are counted from its ReplicaSets too (its Deployment's count lags a scale-up)."""
    release = status.release
    if status.phase not in STAGED or status.stage_reached_at is not None or release is None:
        return False
    plan, index = status.plan or [], status.stage_index
    if index is None or index >= len(plan) or plan[index].weight >= 100:
        return False
    revision = release.revision
    if not revision or revision != observed.target.revision:
        return False  # a template changed under the release: what serves is not known here
    if release.stable_revision is None or facts.same_template(revision, release.stable_revision):
        return False
    template = template_revision(revision)
    canary = observed.canary
    ready = canary.ready if canary is not None and canary.revision == revision else 0
    return max(ready, observed.serving.in_canary_of(revision), observed.serving.in_target(template)) == 0
