"""A phased release, read as the spec (issue #17): audiences, not shares. Each audience is a
stage whose requests (by header or cookie) the route sends to the new version while everyone
else stays on stable; the last stage is everyone, promoted as a canary's 100%. A stage is
reached only when the route holds its audience; a rollback or an abort takes the audience's
rule away before the canary's pods go. Pure: a virtual clock, a simulated workload and route."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from parachute.api import ABORT_ANNOTATION, Phase, RecoveryLevel, RolloutSpec, Verdict
from parachute.plan.engine import stages_for
from parachute.plan.model import AudienceMatch
from parachute.reconcile import describe_validation_error
from tests.unit.world import Story, World, pin_of, spec

GATEWAY = {"gatewayAPI": {"httpRoute": "checkout", "service": "checkout"}}
INTERNAL = {
    "name": "internal",
    "header": {"name": "X-Employee", "value": "true"},
    "minWait": "1m",
    "maxWait": "5m",
}
BETA = {"name": "beta", "cookie": {"name": "beta", "value": "yes"}, "minWait": "2m", "maxWait": "5m"}
EVERYONE = {"name": "everyone", "minWait": "1m"}
AUDIENCES = [INTERNAL, BETA, EVERYONE]
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
EMPLOYEES = AudienceMatch("header", "x-employee", "true")
BETA_USERS = AudienceMatch("cookie", "beta", "yes")


def phased(audiences: list[dict[str, Any]] | None = None, **routing: Any) -> RolloutSpec:
    return spec(strategy="phased", phased={"audiences": audiences or AUDIENCES},
                trafficRouting={**GATEWAY, **routing})  # fmt: skip


def released(story: Story, revision: str = "rev-2") -> Story:
    """Adopt at rev-1 (the route is set up, sending the canary nothing), then a new template."""
    story.tick()
    story.world.revision = revision
    story.tick()
    return story


def until(story: Story, done: Any, limit: int = 60, step: timedelta = SECOND) -> None:
    for _ in range(limit):
        if done():
            return
        story.tick(step)
    raise AssertionError(f"the story did not get there: {story.status.message}")


# ---------------------------------------------------------------------------- the plan


def test_each_audience_is_a_stage_and_the_last_is_everyone_at_100() -> None:
    stages = stages_for(phased())
    assert [(s.name, s.weight, s.audience, s.min_wait, s.max_wait) for s in stages] == [
        ("internal", 0, "header x-employee: true", "1m", "5m"),
        ("beta", 0, "cookie beta=yes", "2m", "5m"),
        ("everyone", 100, None, "1m", "1m"),
    ]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        pytest.param({"strategy": "phased"}, "spec.phased: set it exactly when", id="strategy-without-audiences"),
        pytest.param({"phased": {"audiences": [INTERNAL, EVERYONE]}, "trafficRouting": GATEWAY},
                     "spec.phased: set it exactly when", id="audiences-without-strategy"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [INTERNAL, EVERYONE]}},
                     "spec.trafficRouting: a phased release needs a router", id="no-router"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [INTERNAL, EVERYONE]},
                      "trafficRouting": {"replicas": {}}},
                     "spec.trafficRouting: a phased release needs a router", id="replica-ratio-is-no-router"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [EVERYONE, INTERNAL]}, "trafficRouting": GATEWAY},
                     "the last audience is everyone", id="everyone-not-last"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [INTERNAL, {"name": "all"}, EVERYONE]},
                      "trafficRouting": GATEWAY},
                     "every audience but the last names a header or a cookie", id="everyone-twice"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [INTERNAL, {**BETA, "name": "internal"},
                                                                      EVERYONE]}, "trafficRouting": GATEWAY},
                     "audience names must be unique", id="same-name-twice"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [EVERYONE]}, "trafficRouting": GATEWAY},
                     "spec.phased.audiences: List should have at least 2 items", id="everyone-alone"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [INTERNAL, EVERYONE]}, "trafficRouting": GATEWAY,
                      "steps": [{"weight": 100}]},
                     "spec.phased: spec.steps, spec.waits and spec.watchAfterRelease are for canary", id="steps"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [BETA, EVERYONE]},
                      "trafficRouting": {"nginx": {"ingress": "shop", "service": "checkout"}}},
                     "with nginx a cookie audience's value is always", id="nginx-cookie-value"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [{**INTERNAL, "flagTargeting": "beta"},
                                                                      EVERYONE]}, "trafficRouting": GATEWAY},
                     "flagTargeting is not supported yet", id="flag-targeting-not-built"),
        pytest.param({"strategy": "phased", "phased": {"audiences": [{**INTERNAL, "cookie": BETA["cookie"]},
                                                                      EVERYONE]}, "trafficRouting": GATEWAY},
                     "set at most one of header, cookie", id="header-and-cookie"),
    ],
)  # fmt: skip
def test_a_phased_rollout_that_cannot_run_as_written_is_refused_naming_the_field(
    fields: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, **fields})
    assert says in describe_validation_error(caught.value)


def test_an_nginx_cookie_audience_is_the_cookie_saying_always() -> None:
    nginx = {"nginx": {"ingress": "shop", "service": "checkout"}}
    always = {**BETA, "cookie": {"name": "beta", "value": "always"}}
    written = spec(strategy="phased", phased={"audiences": [always, EVERYONE]}, trafficRouting=nginx)
    assert stages_for(written)[0].audience == "cookie beta=always"


# ---------------------------------------------------------------------------- through promotion


def test_a_release_goes_to_each_audience_then_to_everyone() -> None:
    story = released(Story(phased(), World(canary_delay=5 * SECOND)))
    world = story.world
    # An audience gets one canary pod; the route sends it the audience only once that is ready.
    assert world.canary is not None and world.canary.replicas == 1
    assert (world.route, world.route_audience) == (0, None)
    assert "stage 1/3 (internal) for header x-employee: true: waiting for the new version" in (
        story.status.message or ""
    )
    until(story, lambda: world.route_audience == EMPLOYEES)
    assert world.route == 0 and world.canary.ready == 1  # everyone else stays on stable
    story.tick(SECOND)  # read back: the stage is reached and its wait counts
    assert (story.status.message or "").startswith(
        "stage 1/3 (internal) for header x-employee: true: watching until"
    )
    traffic = story.status.traffic
    assert traffic is not None and (traffic.desired_audience, traffic.applied_audience) == (
        "header x-employee: true", "header x-employee: true")  # fmt: skip
    assert story.status.canary_weight == 0  # WEIGHT: everyone's share

    story.tick(MINUTE)  # healthy for its minWait: the next audience, in one write of the route
    assert story.status.stage == "2/3" and world.route_audience == BETA_USERS and world.route == 0
    assert "StageAdvanced" in story.reasons
    story.tick(SECOND)
    story.tick(2 * MINUTE)
    assert story.status.stage == "3/3" and "Promoting" in story.reasons

    # Everyone: the canary grows to full size while beta keeps it; then all traffic moves.
    assert world.canary.replicas == 10 and (world.route, world.route_audience) == (0, BETA_USERS)
    until(story, lambda: world.route == 100)
    assert world.route_audience is None  # the audience's rule goes in the same write
    until(story, lambda: story.status.phase == Phase.healthy, limit=200)
    assert story.status.message == "revision rev-2 released"
    assert world.running == "rev-2" and world.stable_pin == pin_of("rev-2")
    assert (world.route, world.route_audience) == (0, None)
    assert world.route_writes == [0, 100, 0]
    story.tick(30 * SECOND)
    assert world.canary.replicas == 0  # sent nothing, drained, retired


def test_a_stage_is_reached_only_when_the_route_holds_its_audience() -> None:
    story = released(Story(phased()))
    story.world.route_stuck = True  # a controller that never lets the rule through
    story.tick(SECOND)
    story.tick(4 * MINUTE)
    assert story.status.stage == "1/3"
    assert ("waiting for the route to send header x-employee: true to the new version and everyone else to "
            "stable (it holds no audience and 0% of everyone)") in (story.status.message or "")  # fmt: skip
    story.tick(6 * MINUTE)  # the progress deadline (10m) passes without the stage being reached
    assert story.status.phase == Phase.aborted
    assert "ProgressDeadlineExceeded" in story.reasons


def test_a_full_canary_runs_at_the_targets_size_for_an_audience() -> None:
    story = released(Story(phased(canaryScale="full"), World(canary_delay=5 * SECOND)))
    assert story.world.canary is not None and story.world.canary.replicas == 10
    until(story, lambda: story.world.route_audience == EMPLOYEES)
    assert story.world.canary.ready == 10


def test_an_audience_never_goes_to_a_canary_with_no_ready_pod() -> None:
    story = released(Story(phased()))
    until(story, lambda: story.world.route_audience == EMPLOYEES)
    world = story.world
    assert world.canary is not None
    world.canary = world.canary.__class__(world.canary.revision, world.canary.replicas, ready=0)
    world._canary_ready_at = None  # its pod died and is not back
    decision = story.tick(SECOND)
    assert decision.traffic is not None and decision.traffic.rule is None


def test_an_audience_rule_someone_removed_is_written_again() -> None:
    story = released(Story(phased()))
    until(story, lambda: story.world.route_audience == EMPLOYEES)
    story.tick(SECOND)
    story.world.route_audience = None  # deleted by hand
    decision = story.tick(SECOND)
    assert decision.traffic is not None and decision.traffic.rule == EMPLOYEES
    assert story.world.route_audience == EMPLOYEES


# ---------------------------------------------------------------------------- rollback and abort


def test_a_rollback_at_an_audience_removes_its_rule_before_the_canary_goes() -> None:
    story = released(Story(phased()))
    until(story, lambda: story.world.route_audience == EMPLOYEES)
    world = story.world
    world.route_stuck = True  # the route takes a while to change
    story.judge(Verdict.failed, immediate=True)
    decision = story.tick(SECOND)
    assert story.status.phase == Phase.rolling_back
    assert decision.traffic is not None and (decision.traffic.weight, decision.traffic.rule) == (0, None)
    incident = (story.status.incidents or [])[-1]
    assert incident.level == RecoveryLevel.code
    for _ in range(5):
        story.tick(SECOND)
        assert world.canary is not None and world.canary.replicas == 1  # the audience still reaches it
    assert ((story.status.incidents or [])[-1].levels or [])[-1].traffic_back_at is None
    world.route_stuck = False
    story.tick(SECOND)  # the rule is removed
    assert (world.route, world.route_audience) == (0, None) and world.canary.replicas == 1
    story.tick(SECOND)  # read back with no audience: traffic is back on stable, the canary drains
    record = ((story.status.incidents or [])[-1].levels or [])[-1]
    assert record.traffic_back_at is not None and "TrafficBackOnStable" in story.reasons
    story.tick(30 * SECOND)
    assert world.canary.replicas == 0
    story.world.health = story.world.health.__class__()
    until(story, lambda: story.status.phase == Phase.rolled_back)


def test_the_flag_level_keeps_the_audience_on_the_new_version() -> None:
    flagged = spec(strategy="phased", phased={"audiences": AUDIENCES}, trafficRouting=GATEWAY,
                   featureFlags={"configMapRef": {"name": "flags"}, "flags": ["new-path"]})  # fmt: skip
    story = released(Story(flagged))
    until(story, lambda: story.world.route_audience == EMPLOYEES)
    story.judge(Verdict.failed)
    decision = story.tick(SECOND)
    assert decision.status.phase == Phase.rolling_back
    assert (decision.status.incidents or [])[-1].level == RecoveryLevel.flag
    # Judged on the same split: the audience stays on the new version while the flags go off.
    assert decision.traffic is not None and decision.traffic.rule == EMPLOYEES


def test_an_abort_takes_the_audience_back_first() -> None:
    story = released(Story(phased()))
    until(story, lambda: story.world.route_audience == EMPLOYEES)
    world = story.world
    world.route_stuck = True
    world.annotations[ABORT_ANNOTATION] = "now"
    story.tick(SECOND)
    assert story.status.phase == Phase.aborted
    assert "all traffic going back to stable revision rev-1" in (story.status.message or "")
    story.tick(SECOND)
    assert world.canary is not None and world.canary.replicas == 1  # the audience still reaches it
    world.route_stuck = False
    story.tick(SECOND)
    story.tick(SECOND)
    assert world.route_audience is None and world.canary.replicas == 1  # sent nothing, it drains
    assert "all traffic back to stable revision rev-1" in (story.status.message or "")
    story.tick(30 * SECOND)
    assert world.canary.replicas == 0


# ---------------------------------------------------------------------------- invariants


@settings(max_examples=60, deadline=None)
@given(
    ready_after=st.integers(min_value=0, max_value=20),
    sticky=st.lists(st.booleans(), min_size=40, max_size=40),
    fail_at=st.one_of(st.none(), st.integers(min_value=3, max_value=35)),
)
def test_an_audience_never_reaches_a_canary_without_ready_pods_nor_outlives_them(
    ready_after: int, sticky: list[bool], fail_at: int | None
) -> None:
    story = released(Story(phased([{**INTERNAL, "minWait": "5s", "maxWait": "5s"},
                                   {**BETA, "minWait": "5s", "maxWait": "5s"}, EVERYONE]),
                           World(canary_delay=timedelta(seconds=ready_after))))  # fmt: skip
    world = story.world
    for i, stuck in enumerate(sticky):
        if fail_at == i:
            story.judge(Verdict.failed, immediate=True)
        world.route_stuck = stuck
        decision = story.tick(2 * SECOND)
        traffic = decision.traffic
        assert traffic is not None
        canary = world.canary
        if traffic.rule is not None:  # what the decision writes sends an audience to ready pods only
            assert canary is not None and canary.ready > 0
        if world.route_audience is not None:  # and the pods stay while the route holds it
            assert canary is not None and canary.replicas > 0
