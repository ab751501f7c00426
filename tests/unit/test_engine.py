"""The release state machine, read as the spec: stages, waits, manual commands, supersede,
restarts. Pure: a virtual clock and a simulated workload, no cluster."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parachute.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    Phase,
)
from parachute.plan.desired_workload import actual_weight, canary_replicas, revision_of
from parachute.plan.engine import decide
from parachute.plan.model import Health, WindowView
from parachute.plan.verdicts import NOT_HEALTHY
from tests.unit.world import T0, Story, World, spec

MEDIUM = spec(risk="medium", waits={"min": "1m", "max": "5m"})
SECONDS = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


def released(story: Story, revision: str = "rev-2") -> Story:
    """Adopt at rev-1, then the user applies a new template; the look its canary's readiness
    wakes finds the first stage in place, and its wait counts from then."""
    story.tick()
    story.world.revision = revision
    story.tick()
    story.tick()
    return story


# ---------------------------------------------------------------------------- replica arithmetic


@pytest.mark.parametrize(
    ("stable", "weight", "canary"),
    [
        pytest.param(10, 0, 0, id="zero-weight-no-pods"),
        pytest.param(10, 10, 1, id="ten-percent-of-ten"),
        pytest.param(10, 50, 10, id="half-means-as-many-as-stable"),
        pytest.param(3, 10, 1, id="at-least-one-pod-above-zero"),
        pytest.param(4, 75, 12, id="three-to-one"),
        pytest.param(10, 100, 10, id="full"),
    ],
)
def test_canary_is_sized_so_ready_pods_split_as_the_weight_says(
    stable: int, weight: int, canary: int
) -> None:
    assert canary_replicas(stable, weight) == canary


def test_actual_weight_is_the_share_of_pods() -> None:
    assert actual_weight(10, 10) == 50
    assert actual_weight(10, 1) == 9
    assert actual_weight(0, 0) == 0


def test_a_template_revision_ignores_key_order_and_restart_marks() -> None:
    a = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
    b = {"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"app": "x"}}}
    restarted = {
        **a,
        "metadata": {**a["metadata"], "annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
    }
    assert revision_of(a) == revision_of(b) == revision_of(restarted)
    assert revision_of(a) != revision_of({**a, "spec": {"containers": [{"name": "c", "image": "i:2"}]}})


def test_a_template_has_one_revision_however_it_was_read() -> None:
    """An API server before 1.34 sends `creationTimestamp: null` in a template; the Kubernetes
    client's models, and later servers, leave it out. A revision written by either is the same."""
    read_as_models = {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "i:1", "resources": {}}]},
    }
    read_raw = {
        "metadata": {"creationTimestamp": None, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "i:1", "resources": {}}]},
    }
    # Pinned: a new canonical form would make every Rollout release its unchanged template on upgrade.
    assert revision_of(read_raw) == revision_of(read_as_models) == "c6c4a20ca8"


# ---------------------------------------------------------------------------- single decisions


def test_first_sight_adopts_the_target_without_restarting_it() -> None:
    story = Story(MEDIUM, World(paused=False))
    decision = story.tick()
    assert decision.status.phase == Phase.healthy
    assert decision.status.release.stable_revision == "rev-1"
    assert decision.workload.target_paused is True  # paused: a template change no longer rolls by itself
    assert decision.workload.canary_replicas == 0
    assert story.world.running == "rev-1"  # nothing restarted
    assert story.reasons == ["Adopted"]
    assert decision.next_check_at is None


def test_a_new_template_starts_a_release_at_the_first_stage() -> None:
    story = released(Story(MEDIUM))
    status = story.status
    assert (status.phase, status.stage, status.canary_weight) == (Phase.progressing, "1/3", 10)
    assert status.release.revision == "rev-2" and status.release.stable_revision == "rev-1"
    assert story.last.workload.canary_replicas == 1 and story.last.workload.target_paused
    assert story.reasons[-1] == "ReleaseStarted"


def test_the_stage_waits_for_its_pods_before_its_wait_counts() -> None:
    story = released(Story(MEDIUM, World(canary_delay=timedelta(seconds=30))))
    decision = story.tick(10 * SECONDS)
    assert "waiting for the new version to become ready" in decision.status.message
    # Every change of the Deployments wakes the Rollout: the next look is only a safety net.
    assert decision.next_check_at == story.now + timedelta(seconds=15)


def test_a_stage_that_has_waited_long_for_its_pods_looks_again_less_often() -> None:
    patient = spec(risk="medium", progressDeadline="3h")
    story = released(Story(patient, World(canary_delay=timedelta(hours=2))))
    decision = story.tick(4 * 60 * SECONDS)  # 4 minutes in: a quarter of that
    assert decision.next_check_at == story.now + timedelta(minutes=1)
    decision = story.tick(60 * 60 * SECONDS)  # over an hour in: five minutes at most
    assert decision.next_check_at == story.now + timedelta(minutes=5)


def test_a_stage_waiting_for_a_route_looks_again_soon() -> None:
    routed = spec(risk="medium", waits={"min": "1m", "max": "5m"},
                  trafficRouting={"gatewayAPI": {"httpRoute": "checkout", "service": "checkout"}})  # fmt: skip
    story = released(Story(routed, World(canary_delay=timedelta(seconds=30))))
    decision = story.tick(10 * SECONDS)
    assert "waiting for the new version to become ready" in decision.status.message
    assert decision.next_check_at == story.now + timedelta(seconds=2)  # the route is read, not watched


@pytest.mark.parametrize(
    ("after", "stage"),
    [
        pytest.param(timedelta(seconds=59), "1/3", id="before-min-wait-stays"),
        pytest.param(timedelta(seconds=60), "2/3", id="at-min-wait-healthy-advances"),
    ],
)
def test_a_healthy_stage_ends_at_its_minimum_wait(after: timedelta, stage: str) -> None:
    story = released(Story(MEDIUM))
    story.tick(after)
    assert story.status.stage == stage


def test_a_stage_not_healthy_for_the_whole_wait_runs_to_its_maximum() -> None:
    story = released(Story(MEDIUM))
    story.world.health = Health(healthy_since=story.now + 30 * SECONDS)  # a warning half a minute in
    decision = story.tick(2 * MINUTE)
    assert story.status.stage == "1/3"
    assert decision.next_check_at == T0 + 5 * MINUTE
    story.tick(3 * MINUTE)  # the maximum: it must be decided, and nothing failed
    assert story.status.stage == "2/3"


def test_the_full_stage_unpauses_the_target_and_keeps_canary_capacity_until_it_rolled() -> None:
    story = released(Story(spec(steps=[{"weight": 50, "minWait": "1m"}, {"weight": 100, "minWait": "1m"}])))
    story.world.running = "rev-1"
    decision = story.tick(MINUTE)  # 50% ends: promotion
    assert story.status.stage == "2/2" and story.reasons[-1] == "Promoting"
    assert decision.workload.target_paused is False
    assert decision.workload.canary_replicas == 10  # as at 50%, until the target has rolled


def test_a_stage_says_what_it_waits_for_as_it_begins_so_its_start_is_one_status_write() -> None:
    story = released(Story(MEDIUM, World(canary_delay=30 * SECONDS)))
    story.tick(30 * SECONDS)  # the canary is ready: stage 1's wait counts
    decision = story.tick(MINUTE)  # and ends
    assert decision.status.stage == "2/3" and story.reasons[-1] == "StageAdvanced"
    assert decision.status.message.endswith("at 50%: waiting for the new version to become ready")
    said = decision.status.model_dump(exclude={"conditions", "next_check_at"})
    again = story.tick(SECONDS)  # the next look, before the larger canary is ready, has nothing new to say
    assert again.status.model_dump(exclude={"conditions", "next_check_at"}) == said


def test_a_completed_release_makes_the_new_revision_stable_and_retires_the_canary() -> None:
    story = released(Story(MEDIUM))
    story.run_until_quiet()
    status = story.status
    assert status.phase == Phase.healthy
    assert status.release.stable_revision == "rev-2"
    assert story.last.workload == story.last.workload.__class__(True, 0, None)
    assert story.reasons == ["Adopted", "ReleaseStarted", "StageAdvanced", "Promoting", "ReleaseCompleted"]
    assert status.message == "revision rev-2 released"


def test_the_pause_after_promotion_is_not_undone_while_the_status_is_behind_it() -> None:
    # Pausing the rolled-out target raises its generation; the status catches up a moment later.
    story = released(Story(MEDIUM, World(status_lags=True)))
    story.run_until_quiet()
    assert story.status.phase == Phase.healthy and story.status.release.stable_revision == "rev-2"
    assert story.world.pauses == [True, False, True]  # adopted; promoted: let roll, held again
    assert story.reasons == ["Adopted", "ReleaseStarted", "StageAdvanced", "Promoting", "ReleaseCompleted"]


def test_a_paused_target_is_let_go_only_on_a_status_that_describes_its_spec() -> None:
    story = Story(spec(risk="zero"), World(status_lags=True))
    story.tick()  # adopted: paused, and the Deployment controller has not seen the pause yet
    story.world.revision = "rev-2"  # straight to 100%: the target is to roll
    held = story.tick()
    assert held.workload.target_paused is True  # its status cannot say it has not rolled already
    assert held.next_check_at is not None and held.next_check_at <= story.now + 2 * SECONDS
    assert story.tick(SECONDS).workload.target_paused is False
    story.run_until_quiet()
    assert story.world.pauses == [True, False, True] and story.status.phase == Phase.healthy


def test_a_new_version_never_ready_is_aborted_at_the_progress_deadline() -> None:
    story = released(Story(MEDIUM, World(canary_delay=timedelta(hours=1))))
    story.tick(9 * MINUTE)
    assert story.status.phase == Phase.progressing
    decision = story.tick(MINUTE)
    assert decision.status.phase == Phase.aborted
    assert decision.workload.canary_replicas == 0
    assert story.reasons[-1] == "ProgressDeadlineExceeded"


def test_a_failed_health_verdict_rolls_back_to_stable() -> None:
    story = released(Story(MEDIUM))
    story.world.health = Health(failed=True, reason="error rate 6% over 5% critical")
    decision = story.tick(10 * SECONDS)
    assert decision.status.phase == Phase.rolling_back
    assert decision.workload.canary_replicas == 0
    decision = story.tick(SECONDS)
    assert decision.status.phase == Phase.rolled_back
    assert "error rate 6%" in (story.status.incidents or [])[-1].reason


def test_an_invalid_rollout_resumes_its_release_when_valid_again() -> None:
    story = released(Story(MEDIUM))
    story.status = story.status.model_copy(update={"phase": Phase.invalid})
    story.tick(SECONDS)
    assert story.status.phase == Phase.progressing and story.status.stage == "1/3"


# ---------------------------------------------------------------------------- manual control


def test_abort_returns_all_traffic_to_stable_once() -> None:
    story = released(Story(MEDIUM))
    story.world.annotations[ABORT_ANNOTATION] = "t1"
    decision = story.tick(SECONDS)
    assert decision.status.phase == Phase.aborted
    assert decision.workload.canary_replicas == 0 and decision.workload.target_paused
    assert decision.status.commands.abort == "t1"
    assert story.reasons[-1] == "Aborted"
    story.tick(MINUTE)  # the same annotation value is not a new command
    assert story.reasons.count("Aborted") == 1


def test_retry_starts_an_aborted_release_from_the_first_stage() -> None:
    story = released(Story(MEDIUM))
    story.tick(MINUTE)
    assert story.status.stage == "2/3"
    story.world.annotations[ABORT_ANNOTATION] = "t1"
    story.tick(SECONDS)
    story.world.annotations[RETRY_ANNOTATION] = "t2"
    decision = story.tick(SECONDS)
    assert (decision.status.phase, decision.status.stage) == (Phase.progressing, "1/3")
    assert story.reasons[-1] == "ReleaseRetried"


def test_a_retry_after_the_target_runs_the_release_adds_no_canary_of_it() -> None:
    two = spec(steps=[{"weight": 50, "minWait": "1m"}, {"weight": 100, "minWait": "5m"}])
    story = released(Story(two))
    story.tick(MINUTE)
    story.tick(SECONDS)  # at 100%: the target's own pods run rev-2
    assert story.world.running == "rev-2"
    story.world.annotations[ABORT_ANNOTATION] = "t1"
    story.tick(SECONDS)
    # Aborted, and honest about it: the target still serves the new revision.
    assert "revision rev-2 still serves from the target (10 ready pods)" in (story.status.message or "")
    assert "all traffic back to stable" not in (story.status.message or "")
    story.world.annotations[RETRY_ANNOTATION] = "t2"
    decision = story.tick(SECONDS)
    assert (decision.status.phase, decision.status.stage) == (Phase.progressing, "1/2")
    assert decision.workload.canary_replicas == 0  # 50% of rev-2 beside 100% of it would only add pods
    story.tick(MINUTE)
    assert story.status.stage == "2/2" and (story.world.canary is None or story.world.canary.replicas == 0)


def test_promote_ends_the_current_wait_at_once() -> None:
    story = released(Story(MEDIUM))
    story.world.annotations[PROMOTE_ANNOTATION] = "t1"
    story.tick(SECONDS)
    assert story.status.stage == "2/3"
    assert story.status.commands.promote == "t1"
    story.tick(SECONDS)  # the same value does not skip the next stage too
    assert story.status.stage == "2/3"


def test_a_promote_given_while_nothing_waits_does_not_skip_a_later_release() -> None:
    story = Story(MEDIUM)
    story.tick()
    story.world.annotations[PROMOTE_ANNOTATION] = "early"
    story.tick(SECONDS)
    story.world.revision = "rev-2"
    story.tick(SECONDS)
    story.tick(SECONDS)
    assert story.status.stage == "1/3"


def test_pause_holds_the_stage_and_the_wait_clock() -> None:
    story = released(Story(MEDIUM))
    story.spec = MEDIUM.model_copy(update={"paused": True})
    story.tick(30 * SECONDS)
    assert story.status.phase == Phase.paused
    assert story.last.workload.canary_replicas == 1  # held where it was, not rolled back
    story.tick(10 * MINUTE)
    assert story.status.stage == "1/3"
    story.spec = MEDIUM
    story.tick(SECONDS)  # resumed: 30 s of the 60 s minimum were spent before the pause
    assert story.status.phase == Phase.progressing and story.status.stage == "1/3"
    story.tick(29 * SECONDS)
    assert story.status.stage == "1/3"
    story.tick(SECONDS)
    assert story.status.stage == "2/3"
    assert story.reasons[-3:] == ["Paused", "Resumed", "StageAdvanced"]


# ---------------------------------------------------------------------------- supersede and cancel


def test_a_second_template_during_a_release_supersedes_it_cleanly() -> None:
    story = released(Story(MEDIUM))
    story.tick(MINUTE)
    assert story.status.stage == "2/3"
    story.world.revision = "rev-3"
    decision = story.tick(SECONDS)
    assert decision.status.release.revision == "rev-3"
    assert decision.status.release.stable_revision == "rev-1"
    assert decision.status.stage == "1/3"
    assert decision.workload.canary_revision == "rev-3" and decision.workload.canary_replicas == 1
    assert story.reasons[-1] == "ReleaseSuperseded"


def test_a_template_put_back_to_stable_cancels_the_release() -> None:
    story = released(Story(MEDIUM))
    story.world.revision = "rev-1"
    decision = story.tick(SECONDS)
    assert decision.status.phase == Phase.healthy
    assert decision.workload.canary_replicas == 0
    assert story.reasons[-1] == "ReleaseCancelled"


# ---------------------------------------------------------------------------- restarts


def test_a_restart_mid_stage_resumes_at_the_same_stage_without_repeating_anything() -> None:
    story = released(Story(MEDIUM))
    story.tick(MINUTE)
    before = story.status
    # A new operator process knows only what status says.
    after = decide(
        MEDIUM, before, story.world.observe(story.now + SECONDS), story.now + SECONDS, generation=1
    )
    assert after.status.stage == before.stage and after.status.stage_started_at == before.stage_started_at
    assert after.events == ()


def test_status_is_written_only_when_something_changed() -> None:
    story = released(Story(MEDIUM))
    first = story.tick(SECONDS).status
    second = decide(MEDIUM, first, story.world.observe(story.now), story.now, generation=1).status
    assert second == first


# ---------------------------------------------------------------------------- properties

actions = st.sampled_from(["tick", "wait", "abort", "retry", "promote", "template", "pause", "slow"])


@settings(max_examples=150, deadline=None)
@given(st.lists(actions, min_size=1, max_size=40), st.sampled_from(["low", "medium", "high"]))
def test_invariants_hold_whatever_happens(script: list[str], risk: str) -> None:
    story = Story(spec(risk=risk, waits={"min": "1m", "max": "3m"}))
    story.tick()
    revisions, paused = 1, False
    for n, action in enumerate(script):
        previous = story.status
        if action == "abort":
            story.world.annotations[ABORT_ANNOTATION] = f"a{n}"
        elif action == "retry":
            story.world.annotations[RETRY_ANNOTATION] = f"r{n}"
        elif action == "promote":
            story.world.annotations[PROMOTE_ANNOTATION] = f"p{n}"
        elif action == "template":
            revisions += 1
            story.world.revision = f"rev-{revisions}"
        elif action == "pause":
            paused = not paused
            story.spec = story.spec.model_copy(update={"paused": paused})
        elif action == "slow":
            story.world.canary_delay = timedelta(minutes=2)
        decision = story.tick(MINUTE if action == "wait" else SECONDS)
        status = decision.status

        assert 0 <= (status.canary_weight or 0) <= 100
        assert decision.workload.canary_replicas >= 0
        if status.phase in (Phase.aborted, Phase.rolled_back, Phase.healthy):
            assert decision.workload.canary_replicas == 0  # stable serves everything
        restarted = (status.release.started_at != previous.release.started_at) if previous.release else True
        if previous.stage_index is not None and status.stage_index is not None and not restarted:
            assert status.stage_index >= previous.stage_index, "a stage never goes back except on retry"


def test_a_stage_is_never_decided_at_its_maximum_on_no_data() -> None:
    story = released(Story(MEDIUM))
    story.world.health = Health(healthy_since=NOT_HEALTHY, undecided_reason="error-rate: no data")
    decision = story.tick(6 * MINUTE)
    assert story.status.stage == "1/3"
    assert "held, cannot decide on error-rate: no data" in decision.status.message
    story.world.health = Health(healthy_since=NOT_HEALTHY)  # a round that measured: decided at last
    story.tick(SECONDS)
    assert story.status.stage == "2/3"


def test_a_hold_stops_progress_but_never_rolls_back() -> None:
    story = released(Story(MEDIUM))
    story.world.health = Health(hold_reason="Prometheus unreachable (4 times in a row)")
    decision = story.tick(10 * MINUTE)
    assert (decision.status.phase, decision.status.stage) == (Phase.progressing, "1/3")
    assert decision.workload.canary_replicas == 1


# ---------------------------------------------------------------------------- windows

CLOSED = WindowView(
    open=False, reason="Friday after 12:00", next_open=T0 + timedelta(days=3), policy="playbook"
)


def test_a_release_outside_its_window_waits_and_says_until_when() -> None:
    story = Story(MEDIUM, World(window=CLOSED))
    story.tick()
    story.world.revision = "rev-2"
    decision = story.tick(SECONDS)
    assert decision.status.phase == Phase.waiting
    assert decision.workload.canary_replicas == 0  # nothing of the new version runs yet
    assert "Friday after 12:00 (policy playbook); next open 2026-11-27T10:00:00Z" in decision.status.message
    assert decision.next_check_at == CLOSED.next_open
    assert decision.status.window.policy == "playbook" and decision.status.window.open is False
    assert story.reasons[-1] == "ReleaseWaiting"


def test_a_waiting_release_starts_by_itself_when_the_window_opens() -> None:
    story = Story(MEDIUM, World(window=CLOSED))
    story.tick()
    story.world.revision = "rev-2"
    story.tick(SECONDS)
    story.world.window = WindowView(policy="playbook")
    decision = story.tick(timedelta(days=3))
    assert (decision.status.phase, decision.status.stage) == (Phase.progressing, "1/3")
    assert story.reasons[-1] == "ReleaseStarted"


def test_a_stage_that_is_done_waits_for_the_window_before_the_next() -> None:
    story = released(Story(MEDIUM))
    story.world.window = CLOSED
    decision = story.tick(2 * MINUTE)
    assert decision.status.stage == "1/3" and decision.workload.canary_replicas == 1
    assert "stage 1/3 done; the next waits for the release window" in decision.status.message


def test_a_hotfix_ignores_the_window_and_says_so() -> None:
    story = Story(MEDIUM, World(window=CLOSED, hotfix=True))
    story.tick()
    story.world.revision = "rev-2"
    decision = story.tick(SECONDS)
    assert decision.status.phase == Phase.progressing
    assert "HotfixIgnoresWindow" in story.reasons


def test_a_rollback_is_never_held_by_a_window() -> None:
    story = released(Story(MEDIUM))
    story.world.window = WindowView(open=False, reason="frozen until Monday", next_open=None, policy="freeze")
    story.world.health = Health(failed=True, reason="error rate 6%")
    decision = story.tick(SECONDS)
    assert decision.status.phase == Phase.rolling_back and decision.workload.canary_replicas == 0
    assert story.tick(SECONDS).status.phase == Phase.rolled_back
