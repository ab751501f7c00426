"""A release with a traffic router, read as the spec (issue #12): the planner decides the
canary's share and whether it may receive traffic yet; the router only makes it true and
reads it back. Capacity apart from traffic; a stage reached only when the route holds its
weight; the 100% handover; rollback and abort put traffic back first, then scale the canary
down. Pure: a virtual clock and a simulated workload and route, no cluster."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parachute.api import ABORT_ANNOTATION, Phase, RecoveryLevel, Verdict
from parachute.conditions import timestamp
from parachute.plan.desired_workload import routed_canary_replicas
from parachute.plan.engine import decide
from tests.unit.world import Story, World, pin_of, spec

GATEWAY = {"gatewayAPI": {"httpRoute": "checkout", "service": "checkout"}}
ROUTED = spec(risk="medium", waits={"min": "1m", "max": "5m"}, trafficRouting=GATEWAY)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


def released(story: Story, revision: str = "rev-2") -> Story:
    """Adopt at rev-1 (the route is set up at 0%), then the user applies a new template."""
    story.tick()
    story.world.revision = revision
    story.tick()
    return story


def until(story: Story, done: object, limit: int = 60, step: timedelta = SECOND) -> None:
    """Tick a second at a time until `done()` holds."""
    for _ in range(limit):
        if done():  # type: ignore[operator]
            return
        story.tick(step)
    raise AssertionError("the story did not get there")


# ---------------------------------------------------------------------------- capacity apart from traffic


@pytest.mark.parametrize(
    ("target", "weight", "full", "canary"),
    [
        pytest.param(10, 0, False, 0, id="no-share-no-pods"),
        pytest.param(10, 10, False, 1, id="ten-percent-of-ten"),
        pytest.param(10, 5, False, 1, id="rounded-up"),
        pytest.param(3, 10, False, 1, id="at-least-one-pod"),
        pytest.param(10, 50, False, 5, id="half-the-load-half-the-pods"),
        pytest.param(7, 50, False, 4, id="half-of-seven-rounded-up"),
        pytest.param(10, 10, True, 10, id="full-size-before-traffic-moves"),
        pytest.param(10, 100, False, 10, id="all-the-load-all-the-pods"),
    ],
)
def test_with_a_router_the_canary_is_sized_for_its_share_of_the_load(
    target: int, weight: int, full: bool, canary: int
) -> None:
    assert routed_canary_replicas(target, weight, full) == canary


def test_replica_ratio_has_no_traffic_intent_and_no_traffic_status() -> None:
    story = released(Story(spec(risk="medium", waits={"min": "1m", "max": "5m"})))
    assert story.last is not None
    assert story.last.traffic is None and story.status.traffic is None
    assert story.world.canary is not None and story.world.canary.replicas == 1  # 10 x 10 / 90, rounded


def test_the_route_is_set_up_at_adoption_and_sends_nothing_to_the_canary() -> None:
    story = Story(ROUTED)
    decision = story.tick()
    assert decision.status.phase == Phase.healthy
    assert decision.traffic is not None and decision.traffic.weight == 0
    assert decision.traffic.stable == pin_of("rev-1")
    assert decision.status.traffic is not None
    assert (decision.status.traffic.router, decision.status.traffic.desired) == ("gatewayAPI", 0)
    assert decision.status.traffic.applied is None  # not set up until this decision is acted on
    story.tick()
    assert story.status.traffic is not None and story.status.traffic.applied == 0
    assert story.status.traffic.verified


def test_traffic_moves_only_once_the_canarys_pods_are_ready() -> None:
    story = Story(ROUTED, World(canary_delay=timedelta(seconds=20)))
    released(story)
    assert story.world.canary is not None and story.world.canary.replicas == 1
    for _ in range(10):
        decision = story.tick(SECOND)
        assert decision.traffic is not None and decision.traffic.share == 10
        assert not decision.traffic.open and decision.traffic.weight == 0
        assert story.world.route == 0
    assert "waiting for the new version to become ready" in (story.status.message or "")
    until(story, lambda: story.world.route == 10, limit=20)
    assert story.world.canary.ready == 1  # the weight was written once the pod was ready


def test_a_stage_is_reached_only_when_the_route_holds_its_weight() -> None:
    story = released(Story(ROUTED))
    story.world.route_stuck = True  # a controller that never lets the weight through
    story.tick(SECOND)
    story.tick(4 * MINUTE)
    assert story.status.stage == "1/3"
    assert "waiting for the route to send 10% to the canary (it holds 0%)" in (story.status.message or "")
    story.tick(6 * MINUTE)  # the progress deadline (10m) passes without the stage being reached
    assert story.status.phase == Phase.aborted
    assert "ProgressDeadlineExceeded" in story.reasons


def test_a_release_goes_10_50_100_with_traffic_first_and_capacity_for_its_share() -> None:
    story = released(Story(ROUTED))
    world = story.world
    sizes, shares = [], []
    for _ in range(40):
        story.tick(MINUTE)
        assert world.canary is not None
        sizes.append(world.canary.replicas)
        shares.append(world.route)
        if story.status.phase == Phase.healthy:
            break
    assert story.status.phase == Phase.healthy and story.status.message == "revision rev-2 released"
    # Weights only ever written in the plan's order; back to 0 once stable runs the new version.
    assert world.route_writes == [0, 10, 50, 100, 0]
    assert 1 in sizes and 5 in sizes and 10 in sizes
    # Released once stable runs it; the canary, sent nothing, drains for scaleDownDelay (30s).
    assert story.status.traffic is not None and story.status.traffic.draining_since is not None
    story.tick(30 * SECOND)
    assert world.canary is not None and world.canary.replicas == 0
    story.tick(SECOND)  # seen gone: nothing drains any more
    assert story.status.traffic is not None and story.status.traffic.draining_since is None
    assert world.running == "rev-2" and world.paused
    assert world.stable_pin == pin_of("rev-2")  # the stable backend was re-pinned to the rolled target
    assert "Promoting" in story.reasons and "ReleaseCompleted" in story.reasons


def test_the_full_stage_hands_over_in_order() -> None:
    """Canary at full size → 100% to the canary → the target rolls → stable re-pinned to it →
    the route back to stable → the canary scaled to 0 once it has drained."""
    plan = spec(
        steps=[{"weight": 10, "minWait": "1m"}, {"weight": 100, "minWait": "1m"}], trafficRouting=GATEWAY
    )
    story = released(Story(plan, World(roll_delay=timedelta(seconds=30), canary_delay=timedelta(seconds=5))))
    world = story.world
    until(story, lambda: world.route == 10, limit=20)
    steps, at = [], []
    for _ in range(200):
        story.tick(SECOND)
        canary = world.canary
        assert canary is not None
        step = (canary.replicas, world.route, world.paused, world.running, world.stable_pin)
        if not steps or steps[-1] != step:
            steps.append(step)
            at.append(story.now)
        if canary.replicas == 0:
            break
    old, new = pin_of("rev-1"), pin_of("rev-2")
    assert steps == [
        (1, 10, True, "rev-1", old),  # stage 1 at 10%
        (10, 10, True, "rev-1", old),  # stage 2: the canary grows to full size first; traffic stays
        (10, 100, True, "rev-1", old),  # all traffic to the full-size canary
        (10, 100, False, "rev-1", old),  # only then is the target let go to roll
        (10, 0, True, "rev-2", new),  # rolled: stable re-pinned to it, traffic back to stable
        (0, 0, True, "rev-2", new),  # and the canary retired once the route reads 0%, and drained
    ]
    # Written at 0%, read back a tick later, then kept for scaleDownDelay (30s) from that read-back.
    assert at[-1] - at[-2] == 31 * SECOND


def test_a_full_canary_is_at_the_targets_size_before_traffic_moves() -> None:
    full = spec(risk="medium", waits={"min": "1m", "max": "5m"},
                trafficRouting={**GATEWAY, "canaryScale": "full"})  # fmt: skip
    story = released(Story(full, World(canary_delay=timedelta(seconds=5))))
    assert story.world.canary is not None and story.world.canary.replicas == 10
    until(story, lambda: story.world.route == 10)
    assert story.world.canary.ready == 10
    assert story.status.canary_weight == 10  # WEIGHT stays the canary's share of traffic


def test_a_hand_edit_is_put_back_to_the_stages_weight() -> None:
    story = released(Story(ROUTED))
    until(story, lambda: story.world.route == 10)
    story.world.route = 40  # someone edits the route
    decision = story.tick(SECOND)
    assert decision.traffic is not None and decision.traffic.weight == 10
    assert story.world.route == 10


def test_the_canary_keeps_no_share_it_has_no_ready_pods_for() -> None:
    story = released(Story(ROUTED))
    until(story, lambda: story.world.route == 10)
    world = story.world
    assert world.canary is not None
    world.canary = world.canary.__class__(world.canary.revision, world.canary.replicas, ready=0)
    world._canary_ready_at = None  # its pod died and is not back
    decision = story.tick(SECOND)
    assert decision.traffic is not None and decision.traffic.weight == 0


# ---------------------------------------------------------------------------- rollback and abort


def test_a_rollback_puts_traffic_back_first_then_scales_the_canary_down() -> None:
    story = released(Story(ROUTED))
    until(story, lambda: story.world.route == 10)
    world = story.world
    world.route_stuck = True  # the route takes a while to go back
    story.judge(Verdict.failed, immediate=True)
    story.tick(SECOND)
    assert story.status.phase == Phase.rolling_back
    for _ in range(5):
        story.tick(SECOND)
        assert world.canary is not None and world.canary.replicas == 1  # held while the route sends it 10%
    incident = (story.status.incidents or [])[-1]
    assert incident.level == RecoveryLevel.code
    assert (incident.levels or [])[-1].traffic_back_at is None
    world.route_stuck = False
    story.tick(SECOND)  # the reset reaches the route
    assert world.route == 0 and world.canary.replicas == 1
    story.tick(SECOND)  # read back at 0%: the canary, sent nothing, drains
    record = ((story.status.incidents or [])[-1].levels or [])[-1]
    assert record.traffic_back_at is not None
    assert "TrafficBackOnStable" in story.reasons
    assert record.applied_at == record.traffic_back_at  # the drain does not delay the recovery
    story.tick(29 * SECOND)
    assert world.canary.replicas == 1
    story.tick(SECOND)  # scaleDownDelay (30s) after the read-back: now it goes
    assert world.canary.replicas == 0
    story.world.health = story.world.health.__class__()
    until(story, lambda: story.status.phase == Phase.rolled_back)


def test_the_flag_level_keeps_traffic_where_it_is() -> None:
    flagged = spec(risk="medium", waits={"min": "1m", "max": "5m"}, trafficRouting=GATEWAY,
                   steps=[{"weight": 10, "minWait": "1m", "flags": "on"}, {"weight": 100}],
                   featureFlags={"configMapRef": {"name": "flags"}, "flags": ["new-path"]})  # fmt: skip
    flagged = flagged.model_copy(update={"waits": None})
    story = released(Story(flagged))
    until(story, lambda: story.world.route == 10)
    story.judge(Verdict.failed)
    decision = story.tick(SECOND)
    assert decision.status.phase == Phase.rolling_back
    assert (decision.status.incidents or [])[-1].level == RecoveryLevel.flag
    # Judged on the same split: the stage's share stays while the flags go off.
    assert decision.traffic is not None and decision.traffic.weight == 10 and story.world.route == 10


def test_an_abort_puts_traffic_back_first_and_says_so_only_once_it_is() -> None:
    story = released(Story(ROUTED))
    until(story, lambda: story.world.route == 10)
    world = story.world
    world.route_stuck = True
    world.annotations[ABORT_ANNOTATION] = "now"
    story.tick(SECOND)
    assert story.status.phase == Phase.aborted
    assert "all traffic going back to stable revision rev-1" in (story.status.message or "")
    story.tick(SECOND)
    assert world.canary is not None and world.canary.replicas == 1
    world.route_stuck = False
    story.tick(SECOND)
    story.tick(SECOND)
    assert world.route == 0 and world.canary.replicas == 1  # sent nothing, it drains
    assert "all traffic back to stable revision rev-1" in (story.status.message or "")
    story.tick(30 * SECOND)
    assert world.canary.replicas == 0


def test_a_superseding_release_moves_the_canary_only_once_the_route_sends_it_nothing() -> None:
    story = released(Story(ROUTED, World(canary_delay=timedelta(seconds=5))))
    until(story, lambda: story.world.route == 10, limit=20)
    world = story.world
    world.route_stuck = True
    world.revision = "rev-3"
    story.tick(SECOND)
    story.tick(SECOND)
    assert world.canary is not None and world.canary.revision == "rev-2"  # still serving 10%
    world.route_stuck = False
    until(story, lambda: world.canary is not None and world.canary.revision == "rev-3")
    assert 0 in world.route_writes[world.route_writes.index(10) :]


# ---------------------------------------------------------------------------- invariants


@settings(max_examples=60, deadline=None)
@given(
    ready_after=st.integers(min_value=0, max_value=30),
    sticky=st.lists(st.booleans(), min_size=30, max_size=30),
    fail_at=st.one_of(st.none(), st.integers(min_value=3, max_value=25)),
)
def test_traffic_never_reaches_a_canary_that_is_not_ready_nor_outlives_its_pods(
    ready_after: int, sticky: list[bool], fail_at: int | None
) -> None:
    story = released(Story(ROUTED, World(canary_delay=timedelta(seconds=ready_after))))
    world = story.world
    for i, stuck in enumerate(sticky):
        if fail_at == i:
            story.judge(Verdict.failed, immediate=True)
        world.route_stuck = stuck
        before = world.canary
        seen = story.world.route
        decision = story.tick(timedelta(seconds=7))
        traffic = decision.traffic
        assert traffic is not None and 0 <= traffic.weight <= 100
        canary = story.seen.canary if story.seen is not None else None
        if traffic.weight > (seen or 0):
            # More traffic for the canary only when its pods for that share are ready.
            assert canary is not None and canary.ready >= 1
            assert (
                canary.ready >= routed_canary_replicas(world.replicas, traffic.weight)
                or traffic.weight == 100
            )
        if before is not None and before.replicas > 0 and (seen or 0) > 0:
            # Capacity never leaves while the route (as read) still sends the canary traffic.
            assert decision.workload.canary_replicas >= before.replicas or (
                decision.workload.canary_revision == before.revision
                and decision.workload.canary_replicas >= before.replicas
            )


def test_decide_is_pure_with_a_router() -> None:
    story = released(Story(ROUTED))
    until(story, lambda: story.world.route == 10)
    seen = story.world.observe(story.now)
    first = decide(ROUTED, story.status, seen, story.now)
    again = decide(ROUTED, story.status, seen, story.now)
    assert first == again


# ---------------------------------------------------------------------------- draining and holding


def test_an_aborted_canary_drains_for_scale_down_delay_from_the_read_back() -> None:
    short = spec(risk="medium", waits={"min": "1m", "max": "5m"},
                 trafficRouting={**GATEWAY, "scaleDownDelay": "5s"})  # fmt: skip
    story = released(Story(short))
    until(story, lambda: story.world.route == 10)
    world = story.world
    world.annotations[ABORT_ANNOTATION] = "now"
    story.tick(SECOND)  # 0% written
    read_back = story.now + SECOND
    decision = story.tick(SECOND)  # read back at 0%: the drain starts
    assert story.status.traffic is not None and story.status.traffic.draining_since == timestamp(read_back)
    assert decision.next_check_at == read_back + 5 * SECOND  # looked at again when it ends
    story.tick(4 * SECOND)
    assert world.canary is not None and world.canary.replicas == 1
    story.tick(SECOND)
    assert world.canary.replicas == 0


def test_a_restart_mid_drain_resumes_it_from_status() -> None:
    """The drain's start is in status: an operator that starts again keeps its end, neither
    starting the wait over nor cutting it short."""
    story = released(Story(ROUTED))
    until(story, lambda: story.world.route == 10)
    story.world.annotations[ABORT_ANNOTATION] = "now"
    story.tick(SECOND)
    story.tick(SECOND)
    began = story.status.traffic.draining_since if story.status.traffic else None
    assert began is not None
    # A new operator process: nothing carried over but the status the API server holds.
    restarted = Story(ROUTED, story.world, story.now + 20 * SECOND, story.status)
    decision = restarted.tick()
    assert decision.status.traffic is not None and decision.status.traffic.draining_since == began
    assert decision.workload.canary_replicas == 1
    assert decision.next_check_at == restarted.now + 10 * SECOND
    restarted.tick(10 * SECOND)
    assert restarted.world.canary is not None and restarted.world.canary.replicas == 0


def test_a_canary_whose_drain_ended_while_the_operator_was_away_goes_at_once() -> None:
    story = released(Story(ROUTED))
    until(story, lambda: story.world.route == 10)
    story.world.annotations[ABORT_ANNOTATION] = "now"
    story.tick(SECOND)
    story.tick(SECOND)
    story.tick(5 * MINUTE)
    assert story.world.canary is not None and story.world.canary.replicas == 0


def test_after_a_routed_rollback_the_draining_canary_is_not_said_to_serve() -> None:
    story = released(Story(ROUTED))
    until(story, lambda: story.world.route == 10)
    story.judge(Verdict.failed, immediate=True)
    story.tick(SECOND)
    story.tick(SECOND)
    story.world.health = story.world.health.__class__()
    until(story, lambda: story.status.phase == Phase.rolled_back)
    assert story.world.canary is not None and story.world.canary.replicas == 1
    message = story.status.message or ""
    assert "all traffic on stable revision rev-1" in message
    assert "canary's 1 ready pod are sent nothing and drain" in message
    until(story, lambda: story.world.canary is not None and story.world.canary.replicas == 0)
    story.tick(SECOND)
    assert "drain" not in (story.status.message or "")


def test_replica_ratio_retires_the_canary_at_once() -> None:
    """Its pods ARE the traffic: nothing sends to them once they are gone, so nothing drains."""
    story = released(Story(spec(risk="medium", waits={"min": "1m", "max": "5m"})))
    story.tick(SECOND)
    story.world.annotations[ABORT_ANNOTATION] = "now"
    story.tick(SECOND)
    assert story.world.canary is not None and story.world.canary.replicas == 0


def test_a_growing_canary_keeps_the_share_the_route_holds_until_it_is_ready() -> None:
    """10% → 50%: the canary grows from 1 to 5 pods, and its Deployment reads 0 ready until its
    controller catches up. The route stays at 10% (never 0%) until the 5 pods are ready."""
    story = released(Story(ROUTED, World(canary_delay=timedelta(seconds=20), canary_status_lags=True)))
    world = story.world
    until(story, lambda: world.route == 10, limit=40)
    until(story, lambda: world.canary is not None and world.canary.replicas == 5, limit=400)
    shares = []
    for _ in range(30):
        story.tick(SECOND)
        shares.append(world.route)
    assert shares[0] == 10 and shares[-1] == 50
    assert set(shares) == {10, 50}
    assert world.route_writes == [0, 10, 50]
