"""A stage says what it exposes: the new version's share of traffic, and the flags' state.

Told as stories on a virtual clock: Parachute switches the release's flags at the stage that
names a state, counts the stage as reached only once the store shows it, records it, and
switches them off on a rollback. And what a rollback says is what serves, seen per pod
template, never a guess from the stage's weight (issue #11's scenario is the first story).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from parachute.api import FlagState, Incident, Phase, RecoveryLevel, Verdict
from parachute.conditions import timestamp
from parachute.plan import flags
from tests.unit.world import Story, World, spec

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
ANALYSIS = {"prometheus": {"address": "http://prometheus:9090"}, "interval": "10s"}
FLAGS = {"configMapRef": {"name": "checkout-flags"}, "flags": ["new-checkout"]}
WAITS = {"min": "1m", "max": "1m"}


def flag_gated(**fields: object) -> Story:
    """Default risk with featureFlags: the flag-gated plan, waits of a minute. The store starts
    with the flag ON, left over from an earlier feature."""
    story = Story(
        spec(featureFlags=FLAGS, analysis=ANALYSIS, waits=WAITS, **fields), World(flags=FlagState.on)
    )
    story.tick()
    story.world.revision = "rev-2"
    return story


def at_stage(story: Story, stage: str) -> None:
    """Follow the planner's own wake-ups until `stage` is reached and watched."""
    for _ in range(100):
        decision = story.tick()
        if story.status.stage == stage and "watching" in (story.status.message or ""):
            return
        story.now = max(story.now + SECOND, decision.next_check_at or story.now)
    raise AssertionError(f"never reached stage {stage}: {story.status.message}")


def incident(story: Story) -> Incident:
    assert story.status.incidents
    return story.status.incidents[-1]


def fail(story: Story) -> None:
    story.judge(Verdict.failed)
    story.tick(SECOND)
    assert story.status.phase == Phase.rolling_back


def heal_after_window(story: Story) -> None:
    story.now += 11 * SECOND
    story.judge(Verdict.successful)
    story.tick()


# ---------------------------------------------------------------------------- the issue's scenario


def test_a_flag_gated_release_failing_with_its_flags_on_is_rolled_back_to_what_really_serves() -> None:
    story = flag_gated(recovery={"levels": ["code"], "restoreTemplate": True})
    story.world.roll_delay = 20 * SECOND
    at_stage(story, "3/3")
    assert story.world.flags == FlagState.on and story.world.running == "rev-2"
    fail(story)
    opened = incident(story)
    # What the target was seen running, not inferred from the stage's weight.
    assert opened.new_code_in_target is True
    assert [r.level for r in opened.levels or []] == [RecoveryLevel.code]
    assert opened.levels and opened.levels[0].changed == [
        "canary scaled to 0",
        "flags new-checkout off in ConfigMap checkout-flags, as Parachute had set them for this release",
        "target's pod template restored to revision rev-1",
    ]
    assert story.last is not None and story.last.flags == FlagState.off
    assert story.world.revision == "rev-1"  # the template is restored
    story.tick(SECOND)  # let go, the target rolls: the new revision still serves meanwhile
    story.tick(10 * SECOND)
    assert story.world.bad_pods("rev-2") == 5
    assert story.status.phase == Phase.rolling_back and opened.levels[0].applied_at is None
    assert "revision rev-2 still serves from the target (5 ready pods)" in (story.status.message or "")
    story.tick(10 * SECOND)  # no pod of rev-2 is ready any more: applied, and then judged
    assert incident(story).levels[0].applied_at == timestamp(story.now)  # type: ignore[index]
    assert story.status.phase == Phase.rolling_back
    heal_after_window(story)
    assert story.status.phase == Phase.rolled_back
    message = story.status.message or ""
    assert "all traffic on stable revision rev-1, with flags new-checkout off" in message
    assert story.world.canary is None  # never a canary of a revision the target runs
    story.tick(SECOND)
    assert story.status.phase == Phase.rolled_back and "RevertedToStable" in story.reasons
    assert "watched until" in (story.status.message or "")


def test_the_flag_level_leaves_the_code_in_place_and_says_so() -> None:
    story = flag_gated()
    at_stage(story, "3/3")
    fail(story)
    assert incident(story).level == RecoveryLevel.flag and incident(story).new_code_in_target
    story.tick(SECOND)
    heal_after_window(story)
    assert story.status.phase == Phase.rolled_back
    message = story.status.message or ""
    assert (
        "revision rev-2 still serves from the target (10 ready pods), with flags new-checkout off" in message
    )
    assert "all traffic on stable" not in message


# ---------------------------------------------------------------------------- stages set the flags


def test_the_flag_gated_plan_switches_the_flags_off_first_and_on_at_its_last_stage() -> None:
    story = flag_gated()
    decision = story.tick(SECOND)
    assert decision.flags == FlagState.off  # asked for as the stage begins: new pods start with them off
    assert story.world.flags == FlagState.off
    at_stage(story, "1/3")
    assert story.status.flags and story.status.flags.state == FlagState.off
    assert story.status.flags.reason == "stage 1/3 (infrastructure)" and story.status.flags.in_place_at
    at_stage(story, "3/3")
    assert story.world.flags == FlagState.on
    assert story.status.flags.state == FlagState.on and story.status.flags.reason == "stage 3/3 (full)"
    story.run_until_quiet()
    assert story.status.phase == Phase.healthy and story.world.flags == FlagState.on
    set_events = [e.message for e in story.events if e.reason == "FlagsSet"]
    assert set_events == [
        "flags new-checkout off in ConfigMap checkout-flags (stage 1/3 (infrastructure))",
        "flags new-checkout off in ConfigMap checkout-flags (stage 2/3 (integration))",
        "flags new-checkout on in ConfigMap checkout-flags (stage 3/3 (full))",
    ]
    assert story.world.canary is None  # the code went to everyone at once: no canary


def test_a_stage_counts_as_reached_only_once_its_flags_are_seen() -> None:
    story = flag_gated()
    story.world.cannot_switch_on = "new-checkout without a true or on variant"
    at_stage(story, "2/3")
    story.tick(MINUTE)
    story.tick(SECOND)
    assert story.status.stage == "3/3" and story.world.flags == FlagState.off
    assert "waiting for flags new-checkout to be on: new-checkout without a true or on variant" in (
        story.status.message or ""
    )
    story.tick(10 * MINUTE)  # the progress deadline
    assert story.status.phase == Phase.aborted and "ProgressDeadlineExceeded" in story.reasons


def test_a_missing_flag_store_holds_the_stage_and_says_why() -> None:
    story = flag_gated()
    story.world.flags, story.world.flags_problem = None, "ConfigMap checkout-flags not found"
    story.tick(SECOND)
    story.tick(SECOND)
    assert story.last is not None and story.last.flags is None  # nothing to write to
    assert "waiting for flags new-checkout to be off: ConfigMap checkout-flags not found" in (
        story.status.message or ""
    )


def test_steps_without_flags_leave_the_flags_as_they_are() -> None:
    steps = [{"weight": 10, "minWait": "1m"}, {"weight": 100, "minWait": "1m"}]
    story = Story(spec(steps=steps, featureFlags=FLAGS, recovery={"levels": ["code"]}, analysis=ANALYSIS),
                  World(flags=FlagState.on))  # fmt: skip
    story.tick()
    story.world.revision = "rev-2"
    story.tick(SECOND)
    story.tick(SECOND)
    fail(story)  # and a code-level rollback of flags Parachute never set leaves them too
    story.tick(SECOND)
    heal_after_window(story)
    assert story.status.phase == Phase.rolled_back
    assert story.world.flags == FlagState.on and story.status.flags is None
    assert all(e.reason != "FlagsSet" for e in story.events)


def test_a_rollback_switches_off_flags_a_stage_switched_on() -> None:
    steps = [{"weight": 10, "minWait": "1m", "flags": "on"}, {"weight": 100, "minWait": "1m"}]
    story = Story(spec(steps=steps, featureFlags=FLAGS, recovery={"levels": ["code"]}, analysis=ANALYSIS),
                  World(flags=FlagState.off))  # fmt: skip
    story.tick()
    story.world.revision = "rev-2"
    story.tick(SECOND)
    story.tick(SECOND)
    assert story.world.flags == FlagState.on and story.status.flags and story.status.flags.in_place_at
    fail(story)
    assert story.world.flags == FlagState.off
    assert story.status.flags and story.status.flags.reason == "rollback of revision rev-2"
    story.tick(SECOND)
    heal_after_window(story)
    assert story.status.phase == Phase.rolled_back
    assert "all traffic on stable revision rev-1, with flags new-checkout off" in (story.status.message or "")


# ---------------------------------------------------------------------------- the store


def test_flagd_flags_switched_on_serve_their_on_variant_to_everyone() -> None:
    document = {"flags": {
        "new-checkout": {"state": "DISABLED", "variants": {"enabled": "yes", "off": False}, "defaultVariant": "off",
                         "targeting": {"if": [{"in": ["@beta", {"var": "email"}]}, "enabled", "off"]}},
        "plain": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    }}  # fmt: skip
    on, changed = flags.flagd_set(document, ["new-checkout", "plain"], FlagState.on)
    flag = on["flags"]["new-checkout"]
    assert (flag["state"], flag["defaultVariant"], "targeting" in flag) == ("ENABLED", "enabled", False)
    assert "new-checkout: targeting cleared" in changed and not any(c.startswith("plain") for c in changed)
    assert flags.flagd_state(on, ["new-checkout", "plain"]) == FlagState.on
    assert flags.flagd_state(document, ["new-checkout"]) == FlagState.off  # disabled: the code default
    targeted = {"flags": {"plain": {**document["flags"]["plain"], "targeting": {"if": [True, "off", "on"]}}}}
    assert flags.flagd_state(targeted, ["plain"]) is None  # targeting splits it
    assert document["flags"]["new-checkout"]["state"] == "DISABLED"  # the input is untouched


def test_a_flagd_flag_without_an_on_variant_is_not_switched_on_and_says_why() -> None:
    document = {
        "flags": {
            "colour": {"state": "ENABLED", "variants": {"red": "r", "off": False}, "defaultVariant": "off"}
        }
    }
    same, changed = flags.flagd_set(document, ["colour", "missing"], FlagState.on)
    assert same == document and any("no true or on variant" in c for c in changed)
    assert flags.flagd_cannot_switch_on(document, ["colour", "missing"]) == (
        "missing not defined; colour without a true or on variant"
    )


@pytest.mark.parametrize(
    ("data", "state"),
    [
        pytest.param({"a": "true", "b": "TRUE "}, FlagState.on, id="all-true-is-on"),
        pytest.param({"a": "false"}, FlagState.off, id="a-missing-key-is-off"),
        pytest.param({"a": "true", "b": "false"}, None, id="mixed-is-neither"),
    ],
)
def test_plain_flags_are_on_or_off_only_together(data: dict[str, str], state: FlagState | None) -> None:
    assert flags.plain_state(data, ["a", "b"]) == state
    assert flags.plain_state(flags.plain_set(data, ["a", "b"], FlagState.on), ["a", "b"]) == FlagState.on
