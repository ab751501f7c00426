"""Blue/green, read as the spec (issue #17): the new version at full size behind the preview
Service while the active Service selects stable; checks on preview; one switch of the active
Service's selector; the old pods kept for scaleDownDelay so that a rollback after the switch is
one switch back, the code level's action, measured; manual or automatic promotion; analysis on
active traffic after the switch. Pure: the virtual clock and the simulated world, in which the
route is the side the active Service selects (0 stable, 100 the new copy)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from parachute.api import PROMOTE_ANNOTATION, Phase, RecoveryLevel, RolloutSpec, Verdict
from parachute.plan.engine import stages_for
from tests.unit.world import T0, Story, World, pin_of, spec

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
BLUE_GREEN = {"activeService": "checkout", "previewWait": "2m", "scaleDownDelay": "5m"}


def blue_green(**settings: Any) -> RolloutSpec:
    return spec(strategy="blueGreen", blueGreen={**BLUE_GREEN, **settings})


def released(story: Story) -> Story:
    """Adopted at rev-1 (the active Service pinned to its pods), then rev-2 applied."""
    story.tick()
    story.world.revision = "rev-2"
    story.tick()
    return story


def until(story: Story, done: Any, limit: int = 400, step: timedelta = SECOND) -> None:
    for _ in range(limit):
        if done():
            return
        story.tick(step)
    raise AssertionError(f"the story did not get there: {story.status.message}")


def stage_name(story: Story) -> str | None:
    plan, index = story.status.plan or [], story.status.stage_index
    return plan[index].name if index is not None and index < len(plan) else None


# ---------------------------------------------------------------------------- the plan and the schema


def test_the_plan_is_preview_then_active_then_released() -> None:
    stages = stages_for(blue_green())
    assert [(s.name, s.weight, s.min_wait, s.max_wait) for s in stages] == [
        ("preview", 0, "2m", "2m"),
        ("active", 100, "5m", "5m"),
        ("released", 100, "0s", "0s"),
    ]


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        pytest.param({"strategy": "blueGreen"}, "exactly when", id="strategy-without-settings"),
        pytest.param({"blueGreen": BLUE_GREEN}, "exactly when", id="settings-without-strategy"),
        pytest.param(
            {"strategy": "blueGreen", "blueGreen": BLUE_GREEN, "steps": [{"weight": 100}]},
            "for canary",
            id="steps-are-the-canary's",
        ),
        pytest.param(
            {
                "strategy": "blueGreen",
                "blueGreen": BLUE_GREEN,
                "trafficRouting": {"gatewayAPI": {"httpRoute": "checkout", "service": "checkout"}},
            },
            "not supported yet",
            id="a-router's-switch-not-yet",
        ),
    ],
)
def test_the_models_refuse_what_blue_green_does_not_do(fields: dict[str, Any], refused: str) -> None:
    with pytest.raises(ValidationError, match=refused):
        spec(**fields)


# ---------------------------------------------------------------------------- a release through promotion


def test_the_new_copy_runs_at_full_size_behind_preview_while_active_selects_stable() -> None:
    story = released(Story(blue_green(), World(canary_delay=30 * SECOND)))
    assert story.status.phase == Phase.progressing and stage_name(story) == "preview"
    assert story.world.canary is not None and story.world.canary.replicas == 10  # the target's size
    assert story.world.paused and story.world.running == "rev-1"
    assert (story.world.route, story.world.stable_pin) == (0, pin_of("rev-1"))
    assert story.status.traffic is not None and story.status.traffic.router == "blueGreen"
    assert "the new copy to become ready at full size (0/10 pods)" in (story.status.message or "")
    story.tick(30 * SECOND)
    assert "watching until" in (story.status.message or "")  # the preview's wait counts from here


def test_automatic_promotion_switches_in_one_write_then_the_target_rolls_and_the_copy_goes() -> None:
    story = released(Story(blue_green()))
    until(story, lambda: stage_name(story) == "active")
    assert story.now - T0 >= 2 * MINUTE  # previewWait of health on preview first
    assert "Promoting" in story.reasons
    until(story, lambda: story.world.route == 100)
    assert story.world.route_writes.count(100) == 1  # one switch
    # The old pods stay for scaleDownDelay: the target is held at rev-1 while the copy serves.
    story.tick(4 * MINUTE)
    assert story.world.paused and story.world.running == "rev-1" and story.world.route == 100
    until(story, lambda: story.status.phase == Phase.healthy)
    assert story.world.running == "rev-2"  # the target rolled while the copy carried the traffic
    assert (story.world.route, story.world.stable_pin) == (0, pin_of("rev-2"))
    assert story.world.canary is not None and story.world.canary.replicas == 0
    assert "ReleaseCompleted" in story.reasons


def test_manual_promotion_waits_on_preview_until_promote() -> None:
    story = released(Story(blue_green(autoPromote=False)))
    story.tick(10 * MINUTE)
    story.tick(SECOND)
    assert stage_name(story) == "preview" and story.world.route == 0
    assert PROMOTE_ANNOTATION in (story.status.message or "")
    story.world.annotations[PROMOTE_ANNOTATION] = "now"
    story.tick(SECOND)
    assert stage_name(story) == "active" and "Promoted" in story.reasons
    until(story, lambda: story.world.route == 100)


def test_a_failure_on_preview_retires_the_copy_and_active_never_moved() -> None:
    story = released(Story(blue_green()))
    story.tick(SECOND)
    story.judge(Verdict.failed)
    story.tick(SECOND)
    assert story.status.phase == Phase.rolling_back
    story.tick(SECOND)
    assert story.world.canary is not None and story.world.canary.replicas == 0
    assert 100 not in story.world.route_writes


# ---------------------------------------------------------------------------- a rollback after the switch


def test_a_rollback_after_the_switch_is_one_switch_back_by_the_code_level_and_measured() -> None:
    story = released(Story(blue_green()))
    until(story, lambda: story.world.route == 100)
    story.tick(MINUTE)  # post-promotion analysis, on active traffic, finds the copy bad
    story.judge(Verdict.failed)
    story.tick(SECOND)
    assert story.status.phase == Phase.rolling_back
    incident = (story.status.incidents or [])[-1]
    assert incident.level == RecoveryLevel.code
    assert story.world.route == 0 and story.world.stable_pin == pin_of("rev-1")  # switched back at once
    assert story.world.running == "rev-1"  # the old pods were kept: nothing to start
    story.tick(SECOND)
    assert "TrafficBackOnStable" in story.reasons
    assert story.world.canary is not None and story.world.canary.replicas == 0  # then the copy goes
    story.judge(Verdict.successful)
    until(story, lambda: story.status.phase == Phase.rolled_back, step=30 * SECOND)
    incident = (story.status.incidents or [])[-1]
    assert incident.recovery_seconds is not None and incident.levels is not None
    assert incident.levels[-1].level == RecoveryLevel.code and incident.levels[-1].seconds is not None
    assert story.world.route == 0 and story.world.paused


def test_the_switch_back_is_not_counted_as_in_place_until_the_active_service_reads_stable() -> None:
    story = released(Story(blue_green()))
    until(story, lambda: story.world.route == 100)
    story.world.route_stuck = True  # the write back does not land (a conflict, a refused patch)
    story.judge(Verdict.failed)
    story.tick(SECOND)
    story.tick(SECOND)
    assert story.world.route == 100
    assert story.world.canary is not None and story.world.canary.replicas == 10  # it still serves
    assert "TrafficBackOnStable" not in story.reasons
    story.world.route_stuck = False
    story.tick(SECOND)
    story.tick(SECOND)
    assert story.world.route == 0 and "TrafficBackOnStable" in story.reasons
