"""When analysis rounds fall: on a stage's reach plus whole intervals, so the round at the end of
a stage's wait is the look that ends it (one reconcile, one status write), whatever the
scheduler's lag was at the rounds before; and not at all before anything of the new version
serves, when a round could only be Inconclusive."""

from __future__ import annotations

from datetime import timedelta

from parachute.api import (
    PROMOTE_ANNOTATION,
    MetricStatus,
    Phase,
    PlannedStage,
    ReleaseStatus,
    RolloutStatus,
    Verdict,
)
from parachute.conditions import timestamp
from parachute.plan.engine import note_reach
from parachute.plan.model import CanaryState, Serving
from parachute.plan.rounds import at_reach, deferred, next_round_at
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


def reached(story: Story) -> Story:
    """...and the look its canary's readiness wakes finds it in place."""
    released(story).tick()
    return story


def in_stage(
    started_at: timedelta = timedelta(0),
    phase: Phase = Phase.progressing,
    reached_at: timedelta | None = None,
) -> RolloutStatus:
    return RolloutStatus(phase=phase, stage_started_at=timestamp(T0 + started_at),
                         stage_reached_at=timestamp(T0 + reached_at) if reached_at is not None else None)  # fmt: skip


def test_a_stage_s_rounds_fall_on_its_reach_plus_whole_intervals() -> None:
    reached_late = in_stage(reached_at=12 * SECONDS)
    assert next_round_at(reached_late, INTERVAL, T0 + 12 * SECONDS) == T0 + 12 * SECONDS + INTERVAL
    assert next_round_at(reached_late, INTERVAL, T0 + 49 * SECONDS) == T0 + 12 * SECONDS + 2 * INTERVAL
    paused = in_stage(phase=Phase.paused, reached_at=SECONDS)
    assert next_round_at(paused, INTERVAL, T0 + 32 * SECONDS) == T0 + SECONDS + 2 * INTERVAL


def test_until_a_stage_is_reached_its_rounds_fall_on_its_start() -> None:
    assert next_round_at(in_stage(), INTERVAL, T0 + 2 * SECONDS) == T0 + INTERVAL  # the first, just in
    assert next_round_at(in_stage(), INTERVAL, T0 + 37 * SECONDS) == T0 + 2 * INTERVAL  # seven seconds late


def test_a_round_that_ran_late_is_not_followed_by_another_a_moment_later() -> None:
    assert next_round_at(in_stage(), INTERVAL, T0 + 58 * SECONDS) == T0 + 3 * INTERVAL


def test_outside_a_stage_a_round_follows_the_last_by_one_interval() -> None:
    for status in (in_stage(phase=Phase.rolling_back), in_stage(phase=Phase.rolled_back), RolloutStatus()):
        assert next_round_at(status, INTERVAL, T0 + 37 * SECONDS) == T0 + 37 * SECONDS + INTERVAL


def test_a_stage_s_wait_counts_from_its_reach_not_its_start() -> None:
    story = released(Story(ANALYSED, World(canary_delay=45 * SECONDS)))
    begun = story.now
    story.tick(45 * SECONDS)  # the canary's pods took 45 s to become ready
    assert story.status.stage_reached_at == timestamp(begun + 45 * SECONDS)
    story.judge(Verdict.successful)
    decision = story.tick(30 * SECONDS)  # 75 s after the start (a wait from it would be over), 30 s in place
    assert decision.status.stage == "1/2"
    assert decision.status.message.endswith(f"watching until {timestamp(begun + 105 * SECONDS)}")
    story.now = begun + 105 * SECONDS
    story.judge(Verdict.successful)
    assert story.tick().status.stage == "2/2"


def test_the_round_due_at_the_end_of_a_stage_s_wait_is_the_look_that_ends_it() -> None:
    story = released(Story(ANALYSED, World(canary_delay=3 * SECONDS)))
    story.now += 3 * SECONDS  # the canary is ready: the look it wakes finds the stage in place
    at = story.now
    stamped = note_reach(ANALYSED, story.status, story.world.observe(at), at)
    assert stamped.stage_reached_at == timestamp(at) and stamped.next_analysis_at == timestamp(at)
    # Its first round runs in that look, before the decision; the next one seven seconds late.
    story.status = stamped
    story.judge(Verdict.successful)
    first = next_round_at(stamped, INTERVAL, at)
    story.status = story.status.model_copy(update={"next_analysis_at": timestamp(first)})
    decision = story.tick()
    assert decision.status.stage_reached_at == timestamp(at)
    second = next_round_at(stamped, INTERVAL, first + 7 * SECONDS)
    assert decision.next_check_at == second == at + 2 * INTERVAL
    story.now = second
    story.judge(Verdict.successful)  # that round, then the decision, in one look
    assert story.tick().status.stage == "2/2"


def test_a_stage_found_in_place_by_the_decision_is_not_judged_before_its_first_round() -> None:
    story = released(Story(ANALYSED, World(canary_delay=3 * SECONDS)))
    decision = story.tick(3 * SECONDS)  # found by the decision, after the look's analysis (a resume, say)
    assert decision.status.message.endswith("in place; its first round is next")
    assert decision.next_check_at == story.now and decision.status.next_analysis_at == timestamp(story.now)


def test_a_status_from_before_the_reach_was_recorded_keeps_counting_from_the_stage_s_start() -> None:
    story = released(Story(ANALYSED, World(canary_delay=10 * SECONDS)))
    begun = story.now
    story.tick(10 * SECONDS)  # in place
    story.judge(Verdict.successful)
    assert story.tick().status.message.endswith(f"watching until {timestamp(begun + 70 * SECONDS)}")
    # Written by an operator from before the stamp, or through a CRD that drops it: the wait
    # counts from the start, unstamped (a stamp the CRD drops would be a write at every look).
    story.status = story.status.model_copy(update={"stage_reached_at": None})
    decision = story.tick(5 * SECONDS)
    assert decision.status.stage_reached_at is None
    assert decision.status.message.endswith(f"watching until {timestamp(begun + 60 * SECONDS)}")


def test_a_message_left_by_a_stage_of_the_same_name_before_is_no_sign_of_a_reach() -> None:
    story = reached(Story(ANALYSED, World()))
    story.judge(Verdict.successful)
    story.tick(SECONDS)
    assert "watching until" in story.status.message
    seen, now = story.world.observe(story.now), story.now
    # The same stage begun again in this look (a retry, a superseding release), in place at once.
    again = story.status.model_copy(update={"stage_started_at": timestamp(now), "stage_reached_at": None})
    assert note_reach(ANALYSED, again, seen, now).stage_reached_at == timestamp(now)
    older = again.model_copy(update={"stage_started_at": timestamp(now - SECONDS)})
    assert note_reach(ANALYSED, older, seen, now).stage_reached_at is None  # judged before: from its start


def test_at_a_stage_s_reach_a_round_runs_at_once_unless_one_ran_within_half_an_interval() -> None:
    def ran(ago: int, fast_lane: bool = False) -> RolloutStatus:
        metric = MetricStatus(name="error-rate", verdict=Verdict.successful, fast_lane=fast_lane or None,
                              last_evaluated_at=timestamp(T0 + 40 * SECONDS - ago * SECONDS))  # fmt: skip
        return in_stage().model_copy(update={"metrics": [metric]})

    now = T0 + 40 * SECONDS
    assert at_reach(in_stage(), INTERVAL, now) == now  # none ran in this stage
    assert at_reach(ran(16), INTERVAL, now) == now
    assert at_reach(ran(5), INTERVAL, now) == now + INTERVAL
    assert at_reach(ran(5, fast_lane=True), INTERVAL, now) == now  # the fast lane's look is no round
    assert at_reach(ran(41), INTERVAL, now) == now  # before this stage began
    # The round of the look that began it counts: a round at the reach, a moment later, would
    # have no more to go on (the new pods' first requests are not scraped yet).
    entered = ran(5).model_copy(update={"stage_started_at": timestamp(now - 5 * SECONDS)})
    assert at_reach(entered, INTERVAL, now) == now + INTERVAL
    report = MetricStatus(name="user-reports", verdict=Verdict.successful, last_evaluated_at=timestamp(now))
    judged_between = ran(20).model_copy(update={"metrics": [*(ran(20).metrics or []), report]})
    assert at_reach(judged_between, INTERVAL, now) == now  # a report judged since is no round


def test_a_step_edited_as_its_old_weight_comes_into_place_is_not_taken_as_reached() -> None:
    story = released(Story(ANALYSED, World(canary_delay=3 * SECONDS)))
    story.now += 3 * SECONDS
    seen = story.world.observe(story.now)
    steps = [
        {"name": "canary", "weight": 50, "minWait": "60s"},
        {"name": "full", "weight": 100, "minWait": "30s"},
    ]
    edited = ANALYSED.model_copy(update={"steps": spec(steps=steps).steps})
    assert note_reach(edited, story.status, seen, story.now) is story.status  # 50% is not in place
    assert note_reach(ANALYSED, story.status, seen, story.now).stage_reached_at == timestamp(story.now)


def test_a_later_stage_s_first_round_is_one_interval_into_it() -> None:
    story = reached(Story(ANALYSED, World()))
    story.now += 60 * SECONDS
    story.judge(Verdict.successful)  # the round due at the end of stage 1's wait, in the look that ends it
    decision = story.tick()
    assert decision.status.stage == "2/2"
    assert decision.status.next_analysis_at == timestamp(story.now + INTERVAL)


def test_a_stage_begun_without_a_round_keeps_the_round_already_due() -> None:
    story = reached(Story(ANALYSED, World()))
    due = story.now + 40 * SECONDS
    story.status = story.status.model_copy(update={"next_analysis_at": timestamp(due)})
    story.world.annotations[PROMOTE_ANNOTATION] = "now"
    decision = story.tick(25 * SECONDS)  # promoted by hand, between rounds
    assert decision.status.stage == "2/2"
    assert decision.status.next_analysis_at == timestamp(due)


# ---------------------------------------------------------------------------- before anything serves


def releasing(
    weight: int = 10, revision: str = "rev-2", stable: str = "rev-1", **fields: object
) -> RolloutStatus:
    return RolloutStatus(phase=Phase.progressing, stage_index=0, stage_started_at=timestamp(T0),
                         plan=[PlannedStage(name="canary", weight=weight, min_wait="60s")],
                         release=ReleaseStatus(revision=revision, stable_revision=stable), **fields)  # fmt: skip


def test_a_release_s_rounds_wait_until_a_pod_of_its_new_version_is_ready() -> None:
    story = released(Story(ANALYSED, World(canary_delay=20 * SECONDS)))
    assert deferred(story.status, story.world.observe(story.now))  # its canary asked for, none ready
    assert not deferred(story.status, story.world.observe(story.now + 20 * SECONDS))


def test_a_canary_s_pods_count_as_serving_before_its_deployment_says_so() -> None:
    seen = World(revision="rev-2").observe(T0)
    lagging = seen.__class__(**{**seen.__dict__, "canary": CanaryState("rev-2", 1, 0),
                                "serving": Serving(canary={"rev-2": 1})})  # fmt: skip
    assert not deferred(releasing(), lagging)


def test_a_canary_s_pods_started_for_an_earlier_configuration_are_not_the_release_s() -> None:
    """A configuration released over one whose canary runs a new template: the canary's pods of
    the first configuration still serve while those of the second start."""
    seen = World(revision="rev-2.cfg-2").observe(T0)
    first_only = seen.__class__(**{**seen.__dict__, "canary": CanaryState("rev-2.cfg-2", 1, 0),
                                   "serving": Serving(canary={"rev-2.cfg-1": 1})})  # fmt: skip
    assert deferred(releasing(revision="rev-2.cfg-2", stable="rev-1.cfg-1"), first_only)
    both = first_only.__class__(
        **{**first_only.__dict__, "serving": Serving(canary={"rev-2.cfg-1": 1, "rev-2.cfg-2": 1})}
    )
    assert not deferred(releasing(revision="rev-2.cfg-2", stable="rev-1.cfg-1"), both)
    unmarked = first_only.__class__(**{**first_only.__dict__, "serving": Serving(canary={"rev-2": 1})})
    assert not deferred(
        releasing(revision="rev-2.cfg-2", stable="rev-1.cfg-1"), unmarked
    )  # made before the mark


def test_rounds_never_wait_at_100_percent_once_reached_or_for_configuration_alone() -> None:
    seen = World(revision="rev-2").observe(T0)
    assert deferred(releasing(), seen)
    assert not deferred(releasing(weight=100), seen)  # the target's new pods serve as they come
    assert not deferred(releasing(stage_reached_at=timestamp(T0)), seen)
    config_alone = World(revision="rev-1.cfg-2").observe(T0)
    assert not deferred(releasing(revision="rev-1.cfg-2"), config_alone)
    assert not deferred(releasing().model_copy(update={"phase": Phase.rolling_back}), seen)
    assert deferred(
        releasing().model_copy(update={"phase": Phase.paused}), seen
    )  # paused before any was ready


def test_rounds_do_not_wait_while_the_target_s_own_pods_serve_the_new_version() -> None:
    seen = World(revision="rev-2").observe(T0)
    retried = seen.__class__(**{**seen.__dict__, "serving": Serving(target={"rev-2": 10})})
    assert not deferred(releasing(), retried)


def test_a_rollback_s_first_round_is_no_later_than_one_interval_after_the_failing_one() -> None:
    story = released(Story(ANALYSED, World()))
    story.tick(30 * SECONDS)
    # The stage's schedule had the next round 45 s away (the failing one ran 15 s late).
    story.status = story.status.model_copy(update={"next_analysis_at": timestamp(story.now + 45 * SECONDS)})
    story.judge(Verdict.failed)
    decision = story.tick()
    assert decision.status.phase == Phase.rolling_back
    assert decision.status.next_analysis_at == timestamp(story.now + INTERVAL)
