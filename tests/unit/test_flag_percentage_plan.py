"""A release by flag percentage: the plan, the API that says it, and stories on a virtual clock.

With flagd flags the playbook's flag-gated sequence is exactly its five stages: the code to
everyone with the flags OFF (infrastructure, integration), then the flag ON for 10% of users,
50%, and everyone. Each percentage is put in the store as its stage begins, and the stage
counts as reached once the store reads back that percentage. A failure rolls the flags back to
OFF for everyone at the flag level. A store of plain `true`/`false` cannot hold a percentage:
its plan stays off, off, on, and a step asking for one is refused, naming the field.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from parachute.api import Phase, RecoveryLevel, RolloutSpec, Verdict, describe_exposure, flag_percent
from parachute.crd import rollout_crd
from parachute.plan.stages import plan_for
from parachute.plan.strategies.canary import Canary
from tests.unit.world import Story, World, spec

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
ANALYSIS = {"prometheus": {"address": "http://prometheus:9090"}, "interval": "10s"}
FLAGD = {"configMapRef": {"name": "checkout-flags"}, "format": "flagd", "flags": ["new-checkout"]}
OPENFEATURE = {"featureFlagRef": {"name": "checkout-flags"}, "flags": ["new-checkout"]}
PLAIN = {"configMapRef": {"name": "checkout-flags"}, "flags": ["new-checkout"]}


def stages(**fields: Any) -> list[tuple[str | None, int, str | None, str | None, str | None]]:
    return [(s.name, s.weight, s.flags, s.min_wait, s.max_wait) for s in Canary().plan(spec(**fields))]


# ---------------------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    "store", [pytest.param(FLAGD, id="flagd-configmap"), pytest.param(OPENFEATURE, id="featureflag")]
)
@pytest.mark.parametrize("risk", ["medium", "high"])
def test_a_flagd_store_gets_the_playbooks_five_stages(store: dict[str, Any], risk: str) -> None:
    assert stages(risk=risk, featureFlags=store) == [
        ("infrastructure", 100, "off", "0s", "0s"),
        ("integration", 100, "off", "1h", "1h"),
        ("canary", 100, "10%", "2h", "4h"),
        ("partial", 100, "50%", "4h", "8h"),
        ("full", 100, "on", "24h", "24h"),
    ]


def test_a_plain_store_cannot_hold_a_percentage_so_its_plan_goes_from_off_to_on() -> None:
    assert [s[2] for s in stages(risk="medium", featureFlags=PLAIN)] == ["off", "off", "on"]


def test_the_waits_of_the_percentage_stages_are_overridden_like_any_other() -> None:
    waits = {"min": "5s", "max": "20s", "firstStageMin": "0s", "firstStageMax": "0s"}
    found = stages(featureFlags=FLAGD, waits=waits, watchAfterRelease="1m")
    assert [(s[2], s[3], s[4]) for s in found] == [
        ("off", "0s", "0s"), ("off", "5s", "20s"), ("10%", "5s", "20s"), ("50%", "5s", "20s"), ("on", "1m", "1m"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------- the API


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        pytest.param("10%", "10%", id="a-percentage"),
        pytest.param("1%", "1%", id="the-smallest"),
        pytest.param("0%", "off", id="none-is-off"),
        pytest.param("100%", "on", id="everyone-is-on"),
        pytest.param("off", "off", id="off"),
        pytest.param("on", "on", id="on"),
    ],
)
def test_a_step_may_say_a_percentage_of_users(written: str, meant: str) -> None:
    steps = [{"weight": 100, "flags": written}]
    assert [s.flags for s in plan_for(spec(steps=steps, featureFlags=FLAGD))] == [meant]


@pytest.mark.parametrize("written", ["101%", "10", "5.5%", "-1%", "half", "010%"])
def test_anything_else_is_refused(written: str) -> None:
    with pytest.raises(ValidationError, match="flags"):
        spec(steps=[{"weight": 100, "flags": written}], featureFlags=FLAGD)


def test_a_percentage_in_a_plain_store_is_invalid_naming_the_field() -> None:
    steps = [{"weight": 100, "flags": "off"}, {"weight": 100, "flags": "10%"}]
    with pytest.raises(ValidationError) as refused:
        spec(steps=steps, featureFlags=PLAIN)
    assert "spec.steps[1].flags: 10%: a percentage of users needs flagd flags" in str(refused.value)
    # Off and on it can hold; so can flagd and a FeatureFlag hold a percentage.
    spec(steps=[{"weight": 100, "flags": "on"}, {"weight": 100, "flags": "100%"}], featureFlags=PLAIN)
    for store in (FLAGD, OPENFEATURE):
        spec(steps=steps, featureFlags=store)


def test_the_api_server_refuses_it_too() -> None:
    schema = rollout_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = schema["properties"]["spec"]["x-kubernetes-validations"]
    rule = next(r for r in rules if "a percentage of users needs flagd flags" in r["message"])
    assert rule["fieldPath"] == ".steps" and "featureFlagRef" in rule["rule"] and "'flagd'" in rule["rule"]


def test_exposures_in_words() -> None:
    assert [describe_exposure(e) for e in ("off", "on", "10%")] == ["off", "on", "on for 10% of users"]
    assert [flag_percent(e) for e in ("off", "on", "10%", "99%")] == [None, None, 10, 99]


def test_a_rollout_spec_round_trips_its_percentages() -> None:
    given = spec(steps=[{"weight": 100, "flags": "25%"}], featureFlags=FLAGD)
    again = RolloutSpec.model_validate(given.model_dump(by_alias=True, mode="json", exclude_none=True))
    assert again.steps and again.steps[0].flags == "25%"


# ---------------------------------------------------------------------------- stories


def release(**fields: Any) -> Story:
    """A flagd flag-gated release of rev-2, waits of a minute, the flag off to begin with."""
    story = Story(spec(featureFlags=FLAGD, analysis=ANALYSIS, waits={"min": "1m", "max": "1m"}, **fields),
                  World(flags="off"))  # fmt: skip
    story.tick()
    story.world.revision = "rev-2"
    return story


def watched(story: Story, stage: str) -> None:
    """Follow the planner's own wake-ups until `stage` is reached and watched."""
    for _ in range(100):
        decision = story.tick()
        if story.status.stage == stage and "watching" in (story.status.message or ""):
            return
        story.now = max(story.now + SECOND, decision.next_check_at or story.now)
    raise AssertionError(f"never reached stage {stage}: {story.status.message}")


def test_the_flag_goes_to_10_then_50_percent_then_everyone_each_stage_reached_once_read_back() -> None:
    story = release()
    watched(story, "3/5")
    assert story.world.flags == "10%" and story.world.running == "rev-2"
    assert story.status.flags and story.status.flags.state == "10%" and story.status.flags.in_place_at
    assert story.status.message and story.status.message.startswith(
        "stage 3/5 (canary) at 100%, flags on for 10% of users: watching until"
    )
    watched(story, "4/5")
    assert story.world.flags == "50%" and story.status.flags and story.status.flags.state == "50%"
    watched(story, "5/5")
    assert story.world.flags == "on"
    story.run_until_quiet()
    assert story.status.phase == Phase.healthy and story.world.flags == "on"
    assert [e.message for e in story.events if e.reason == "FlagsSet"] == [
        "flags new-checkout off in ConfigMap checkout-flags (stage 1/5 (infrastructure))",
        "flags new-checkout off in ConfigMap checkout-flags (stage 2/5 (integration))",
        "flags new-checkout on for 10% of users in ConfigMap checkout-flags (stage 3/5 (canary))",
        "flags new-checkout on for 50% of users in ConfigMap checkout-flags (stage 4/5 (partial))",
        "flags new-checkout on in ConfigMap checkout-flags (stage 5/5 (full))",
    ]
    assert story.world.canary is None  # the code went to everyone at once: the flag is the canary


def test_a_percentage_not_yet_read_back_holds_the_stage() -> None:
    story = release()
    watched(story, "2/5")
    story.world.cannot_switch_on = "new-checkout without a true or on variant"
    story.tick(MINUTE)
    story.tick(SECOND)
    assert story.status.stage == "3/5" and story.world.flags == "off"
    message = story.status.message or ""
    assert (
        "waiting for flags new-checkout to be on for 10% of users: new-checkout without a true or on variant"
        in message
    )
    story.tick(5 * MINUTE)  # held, whatever its wait says
    assert story.status.stage == "3/5" and story.status.flags and story.status.flags.in_place_at is None
    story.world.cannot_switch_on = ""  # fixed: written, then read back
    decision = story.tick(SECOND)
    assert decision.flags == "10%" and story.world.flags == "10%"
    story.tick(SECOND)
    assert "flags new-checkout on for 10% of users in ConfigMap checkout-flags (stage 3/5 (canary))" in [
        e.message for e in story.events if e.reason == "FlagsSet"
    ]


def test_a_flag_with_no_off_variant_cannot_be_split_and_the_stage_says_so() -> None:
    story = release()
    watched(story, "2/5")
    story.world.cannot_split = "new-checkout without a false or off variant"
    story.tick(MINUTE)
    story.tick(SECOND)
    assert "to be on for 10% of users: new-checkout without a false or off variant" in (
        story.status.message or ""
    )


def test_a_bad_variant_at_10_percent_is_recovered_by_the_flag_level_off_for_everyone() -> None:
    story = release()
    watched(story, "3/5")
    story.judge(Verdict.failed)
    decision = story.tick(SECOND)
    assert story.status.phase == Phase.rolling_back and decision.flags == "off"
    incident = (story.status.incidents or [])[-1]
    assert incident.level == RecoveryLevel.flag and incident.new_code_in_target
    assert incident.reason.startswith("stage 3/5 (canary) at 100%, flags on for 10% of users:")
    assert story.world.flags == "off"
    story.tick(SECOND)
    story.now += 11 * SECOND
    story.judge(Verdict.successful)
    story.tick()
    assert story.status.phase == Phase.rolled_back
    assert "with flags new-checkout off" in (story.status.message or "")
    assert incident.started_at and (story.status.incidents or [])[-1].recovery_seconds is not None
