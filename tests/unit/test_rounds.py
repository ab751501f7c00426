"""When analysis rounds fall: on a stage's start plus whole intervals, so the round at the end
of a stage's wait is the look that ends it (one reconcile, one status write), whatever the
scheduler's lag was at the rounds before."""

from __future__ import annotations

from datetime import timedelta

from parachute.api import PROMOTE_ANNOTATION, Phase, RolloutStatus, Verdict
from parachute.conditions import timestamp
from parachute.plan.rounds import next_round_at
from tests.unit.world import T0, Story, World, spec

INTERVAL = timedelta(seconds=30)
SECONDS = timedelta(seconds=1)
ANALYSED = spec(risk="medium", analysis={"prometheus": {"address": "http://prometheus:9090"}, "interval": "30s"},
                steps=[{"name": "canary", "weight": 10, "minWait": "60s"}, {"name": "full", "weight": 100, "minWait": "30s"}])  # fmt: skip


def released(story: Story) -> Story:
    """Adopted at rev-1, then a new template: stage 1 begins."""
    story.tick()
    story.world.revision = "rev-2"
    story.tick()
    return story


def in_stage(started_at: timedelta = timedelta(0), phase: Phase = Phase.progressing) -> RolloutStatus:
    return RolloutStatus(phase=phase, stage_started_at=timestamp(T0 + started_at))


def test_a_stage_s_rounds_fall_on_its_start_plus_whole_intervals() -> None:
    assert next_round_at(in_stage(), INTERVAL, T0 + 2 * SECONDS) == T0 + INTERVAL  # the first, just in
    assert next_round_at(in_stage(), INTERVAL, T0 + 37 * SECONDS) == T0 + 2 * INTERVAL  # seven seconds late
    assert next_round_at(in_stage(phase=Phase.paused), INTERVAL, T0 + 31 * SECONDS) == T0 + 2 * INTERVAL


def test_a_round_that_ran_late_is_not_followed_by_another_a_moment_later() -> None:
    assert next_round_at(in_stage(), INTERVAL, T0 + 58 * SECONDS) == T0 + 3 * INTERVAL


def test_outside_a_stage_a_round_follows_the_last_by_one_interval() -> None:
    for status in (in_stage(phase=Phase.rolling_back), in_stage(phase=Phase.rolled_back), RolloutStatus()):
        assert next_round_at(status, INTERVAL, T0 + 37 * SECONDS) == T0 + 37 * SECONDS + INTERVAL


def test_the_round_due_at_the_end_of_a_stage_s_wait_is_the_look_that_ends_it() -> None:
    story = released(Story(ANALYSED, World()))
    started = story.now
    # The first round ran a moment after the start, the next one seven seconds late.
    first = next_round_at(story.status, INTERVAL, started + 1 * SECONDS)
    second = next_round_at(story.status, INTERVAL, first + 7 * SECONDS)
    decision = story.tick(3 * SECONDS)  # the canary is ready: the stage's wait counts
    assert decision.next_check_at == second == started + 2 * INTERVAL
    story.now = second
    story.judge(Verdict.successful)  # that round, then the decision, in one look
    assert story.tick().status.stage == "2/2"


def test_a_later_stage_s_first_round_is_one_interval_into_it() -> None:
    story = released(Story(ANALYSED, World()))
    story.now += 60 * SECONDS
    story.judge(Verdict.successful)  # the round due at the end of stage 1's wait, in the look that ends it
    decision = story.tick()
    assert decision.status.stage == "2/2"
    assert decision.status.next_analysis_at == timestamp(story.now + INTERVAL)


def test_a_stage_begun_without_a_round_keeps_the_round_already_due() -> None:
    story = released(Story(ANALYSED, World()))
    due = story.now + 40 * SECONDS
    story.status = story.status.model_copy(update={"next_analysis_at": timestamp(due)})
    story.world.annotations[PROMOTE_ANNOTATION] = "now"
    decision = story.tick(25 * SECONDS)  # promoted by hand, between rounds
    assert decision.status.stage == "2/2"
    assert decision.status.next_analysis_at == timestamp(due)


def test_a_rollback_s_first_round_is_no_later_than_one_interval_after_the_failing_one() -> None:
    story = released(Story(ANALYSED, World()))
    story.tick(30 * SECONDS)
    # The stage's schedule had the next round 45 s away (the failing one ran 15 s late).
    story.status = story.status.model_copy(update={"next_analysis_at": timestamp(story.now + 45 * SECONDS)})
    story.judge(Verdict.failed)
    decision = story.tick()
    assert decision.status.phase == Phase.rolling_back
    assert decision.status.next_analysis_at == timestamp(story.now + INTERVAL)
