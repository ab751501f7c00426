"""Recovery in three levels (spec §4), told as stories on a virtual clock: the flag level
first, then configuration, then code; escalation when a level's budget runs out; the
incident record with its recovery time; and the latch on a rolled-back revision."""

from __future__ import annotations

from datetime import timedelta

import pytest

from parachute.api import (
    RESOLVED_ANNOTATION,
    RETRY_ANNOTATION,
    FlagState,
    Incident,
    MetricStatus,
    Phase,
    RecoveryLevel,
    RolloutSpec,
    Verdict,
    format_duration,
)
from parachute.conditions import parse_time, timestamp
from parachute.plan import engine, flags, rollback
from parachute.plan.model import Health
from tests.unit.world import T0, Story, World, spec

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
ANALYSIS = {"prometheus": {"address": "http://prometheus:9090"}, "interval": "10s"}
FLAGS = {"configMapRef": {"name": "checkout-flags"}, "flags": ["new-checkout"]}
STEPS = [
    {"name": "canary", "weight": 10, "minWait": "10m", "maxWait": "20m"},
    {"name": "full", "weight": 100},
]


def rollout(**fields: object) -> RolloutSpec:
    return spec(steps=STEPS, analysis=ANALYSIS, **fields)


def started(story: Story) -> Story:
    """Adopted at rev-1, then rev-2 applied: the first stage is running."""
    story.tick()
    story.world.revision = "rev-2"
    story.tick(SECOND)
    story.tick(SECOND)
    assert story.status.phase == Phase.progressing
    return story


def judged(story: Story, verdict: Verdict, immediate: bool = False) -> None:
    """An analysis round at the story's current time, as the reconcile writes it to status."""
    story.judge(verdict, immediate)


def breach(story: Story, immediate: bool = False) -> Incident:
    judged(story, Verdict.failed, immediate)
    story.tick(SECOND)
    assert story.status.phase == Phase.rolling_back
    return incident(story)


def incident(story: Story) -> Incident:
    assert story.status.incidents
    return story.status.incidents[-1]


def levels(story: Story) -> list[RecoveryLevel]:
    return [r.level for r in incident(story).levels or []]


# ---------------------------------------------------------------------------- which levels


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ["code"]),
        ({"featureFlags": FLAGS}, ["flag", "code"]),
        ({"configRefs": [{"name": "checkout-config"}]}, ["config", "code"]),
        ({"featureFlags": FLAGS, "configRefs": [{"name": "c"}]}, ["flag", "config", "code"]),
        ({"featureFlags": FLAGS, "recovery": {"levels": ["code"]}}, ["code"]),
        # Code is always the last resort, even when not listed.
        ({"featureFlags": FLAGS, "recovery": {"levels": ["flag"]}}, ["flag", "code"]),
    ],
)
def test_the_levels_are_those_the_rollout_has_the_means_for(
    fields: dict[str, object], expected: list[str]
) -> None:
    assert [str(level) for level in rollback.levels_for(spec(**fields))] == expected


def test_budgets_default_to_5_10_15_minutes_and_an_immediate_trigger_gets_the_shortest() -> None:
    plain = spec()
    assert [rollback.budget_for(plain, level, False) for level in rollback.LEVEL_ORDER] == [
        timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=15),
    ]  # fmt: skip
    assert {rollback.budget_for(plain, level, True) for level in rollback.LEVEL_ORDER} == {
        timedelta(minutes=5)
    }
    custom = spec(recovery={"budgets": {"flag": "1m", "config": "2m", "code": "3m"}})
    assert rollback.budget_for(custom, RecoveryLevel.code, True) == timedelta(minutes=1)


# ---------------------------------------------------------------------------- level 1: flag


def test_a_bad_release_behind_a_flag_is_recovered_by_switching_the_flag_off() -> None:
    story = started(Story(rollout(featureFlags=FLAGS), World(flags=FlagState.on)))
    first = breach(story)
    assert first.level == RecoveryLevel.flag and first.revision == "rev-2"
    assert story.last is not None and story.last.flags == FlagState.off
    # Traffic stays where it was: health is judged on the same split.
    assert story.last.workload.canary_replicas > 0
    story.tick(SECOND)  # the flag is off in the store: the level is applied
    assert incident(story).levels[0].applied_at == timestamp(story.now)  # type: ignore[index]
    judged(story, Verdict.failed)  # the window still holds the bad minutes
    story.tick(5 * SECOND)
    assert story.status.phase == Phase.rolling_back
    story.now += 10 * SECOND
    judged(story, Verdict.successful)  # a whole window after the flag went off
    story.tick()
    done = incident(story)
    assert story.status.phase == Phase.rolled_back and done.level == RecoveryLevel.flag
    assert done.recovery_seconds == pytest.approx(17, abs=1) and done.objective_met
    assert story.last is not None and story.last.workload.canary_replicas == 0
    assert (
        "RollingBack" in story.reasons
        and "RecoveryApplied" in story.reasons
        and "RolledBack" in story.reasons
    )
    assert "RecoveryEscalated" not in story.reasons


def test_pods_that_cannot_reload_are_restarted_before_the_flag_level_counts() -> None:
    story = started(
        Story(rollout(featureFlags={**FLAGS, "reloads": False}), World(flags=FlagState.on, restarts=False))
    )
    breach(story)
    assert (
        story.last is not None and story.last.recovery.restart_stamp == incident(story).levels[0].started_at
    )  # type: ignore[index]
    story.tick(SECOND)
    assert incident(story).levels[0].applied_at is None  # type: ignore[index]
    story.world.restarted_at = story.last.recovery.restart_stamp  # the pods came back
    story.tick(SECOND)
    assert incident(story).levels[0].applied_at is not None  # type: ignore[index]


def test_a_missing_flag_store_moves_on_to_the_next_level_at_once() -> None:
    story = started(
        Story(rollout(featureFlags=FLAGS), World(flags_problem="ConfigMap checkout-flags not found"))
    )
    breach(story)
    assert levels(story) == [RecoveryLevel.flag, RecoveryLevel.code]
    assert "ConfigMap checkout-flags not found" in (incident(story).levels[0].changed or [])  # type: ignore[index]


# ---------------------------------------------------------------------------- level 2: config


def test_tracked_configuration_is_snapshot_while_healthy_and_restored_on_the_config_level() -> None:
    story = Story(
        rollout(configRefs=[{"name": "checkout-config"}]), World(configs={"checkout-config": "good"})
    )
    story.tick()
    assert story.last is not None and story.last.snapshots == (("checkout-config", "good"),)
    snapshot = (story.status.config_snapshots or [])[0]
    assert snapshot.hash == "good" and snapshot.snapshot == rollback.snapshot_name("checkout-config", "good")
    # The release brings a bad configuration with it: the snapshot is not refreshed during it.
    story.world.configs["checkout-config"] = "bad"
    started(story)
    assert (story.status.config_snapshots or [])[0].hash == "good"
    breach(story)
    assert story.last is not None and story.last.recovery.restore_configs == (
        ("checkout-config", snapshot.snapshot),
    )
    assert story.last.recovery.restart_stamp is not None  # pods that use it are rolled
    story.tick(SECOND)
    assert story.world.configs["checkout-config"] == "good"
    story.now += 11 * SECOND
    judged(story, Verdict.successful)
    story.tick()
    assert story.status.phase == Phase.rolled_back and incident(story).level == RecoveryLevel.config


def test_a_completed_release_makes_its_configuration_the_snapshot() -> None:
    story = Story(spec(risk="zero", configRefs=[{"name": "c"}]), World(configs={"c": "v1"}))
    story.tick()
    story.world.configs["c"] = "v2"
    story.world.revision = "rev-2"
    story.run_until_quiet()
    assert story.status.phase == Phase.healthy
    assert [s.hash for s in story.status.config_snapshots or []] == ["v2"]


# ---------------------------------------------------------------------------- level 3: code


def test_without_flags_or_config_the_code_level_sends_everything_to_stable_and_then_judges_it() -> None:
    story = started(Story(rollout()))
    breach(story)
    assert levels(story) == [RecoveryLevel.code]
    assert story.last is not None and story.last.workload.canary_replicas == 0
    story.tick(SECOND)  # the canary is gone: the level is applied, and not yet proven
    assert story.status.phase == Phase.rolling_back
    assert incident(story).levels[0].applied_at == timestamp(story.now)  # type: ignore[index]
    assert "level code waits for health to return" in (story.status.message or "")
    story.now += 11 * SECOND
    judged(story, Verdict.successful)  # a whole window after the canary went
    story.tick()
    done = incident(story)
    assert story.status.phase == Phase.rolled_back and done.recovery_seconds == pytest.approx(13, abs=1)
    assert done.revert_in_git and "rev-1" in done.revert_in_git
    assert "all traffic on stable revision rev-1" in (story.status.message or "")


def test_the_code_level_is_never_healthy_at_once() -> None:
    story = started(Story(rollout()))
    breach(story)
    story.tick(SECOND)
    judged(story, Verdict.successful)  # a round on a window that still holds the canary's minutes
    story.tick(5 * SECOND)
    assert story.status.phase == Phase.rolling_back and incident(story).levels[0].healthy_at is None  # type: ignore[index]


def promoted(story: Story) -> Story:
    """A zero-risk plan goes straight to 100%: the target itself runs the new code."""
    story.tick()
    story.world.revision = "rev-2"
    story.tick(SECOND)
    assert story.status.phase == Phase.progressing and story.status.canary_weight == 100
    return story


def test_code_in_the_target_is_restored_and_the_level_counts_once_none_of_its_pods_serve() -> None:
    world = World(roll_delay=30 * SECOND)
    restore = {"restoreTemplate": True}
    story = promoted(
        Story(spec(risk="zero", waits={"min": "1h", "max": "1h"}, analysis=ANALYSIS, recovery=restore), world)
    )
    story.tick(30 * SECOND)  # the target has rolled: its own pods run rev-2
    assert world.bad_pods("rev-2") == 10
    assert breach(story).new_code_in_target  # seen in its ReplicaSets, not guessed from the stage
    assert story.last is not None and story.last.recovery.restore_template == "rev-1"
    assert world.revision == "rev-1"
    assert story.tick(SECOND).workload.target_paused is False  # a paused Deployment would not roll
    story.tick(10 * SECOND)  # rolling: pods of both templates serve
    assert world.bad_pods("rev-2") == 5 and incident(story).levels[0].applied_at is None  # type: ignore[index]
    assert "revision rev-2 to stop serving: revision rev-2 still serves from the target (5 ready pods)" in (
        story.status.message or ""
    )
    story.tick(20 * SECOND)  # rolled back: no pod of rev-2 is left
    assert incident(story).levels[0].applied_at == timestamp(story.now)  # type: ignore[index]
    assert story.status.phase == Phase.rolling_back
    story.now += 11 * SECOND
    judged(story, Verdict.successful)
    story.tick()
    assert story.status.phase == Phase.rolled_back
    assert "all traffic on stable revision rev-1" in (story.status.message or "")
    assert story.status.blocked_revisions == ["rev-2"]


def test_a_restored_target_is_let_go_once_and_held_once_while_its_status_lags_each_write() -> None:
    world = World(roll_delay=30 * SECOND, status_lags=True)
    restore = {"restoreTemplate": True}
    story = promoted(
        Story(spec(risk="zero", waits={"min": "1h", "max": "1h"}, analysis=ANALYSIS, recovery=restore), world)
    )
    story.tick(30 * SECOND)  # rolled to rev-2, then held again
    story.tick(SECOND)
    breach(story)  # the template goes back to rev-1
    for _ in range(8):
        story.tick(10 * SECOND)
    assert world.running == "rev-1" and world.bad_pods("rev-2") == 0
    # adopted; promoted: let roll, held; restored: let roll, held. Nothing undone and done again.
    assert world.pauses == [True, False, True, False, True]


def test_a_template_back_at_stable_keeps_the_rolled_back_state_in_view_until_the_watch_ends() -> None:
    story = promoted(Story(spec(risk="zero", analysis=ANALYSIS, recovery={"restoreTemplate": True})))
    breach(story)
    story.tick(SECOND)
    story.tick(SECOND)
    story.now += 11 * SECOND
    judged(story, Verdict.successful)
    story.tick()
    assert story.status.phase == Phase.rolled_back
    story.tick(SECOND)  # the template is back at stable: nothing left to release, but a watch to keep
    assert story.status.phase == Phase.rolled_back and "RevertedToStable" in story.reasons
    assert engine.analysing(story.status, story.now) and story.status.blocked_revisions == ["rev-2"]
    assert "watched until" in (story.status.message or "")
    story.tick(timedelta(hours=24))
    assert story.status.phase == Phase.healthy and "WatchEnded" in story.reasons
    assert story.status.blocked_revisions == ["rev-2"]  # the latch outlives the watch


def test_code_in_the_target_waits_for_a_revert_in_git_and_says_which_revision() -> None:
    story = promoted(Story(spec(risk="zero", analysis=ANALYSIS)))
    breach(story)
    story.tick(16 * MINUTE)
    assert story.status.phase == Phase.rolling_back and "RecoveryStalled" in story.reasons
    assert "revert it in git to revision rev-1" in (story.status.message or "")
    assert "revision rev-2 still serves from the target with 10 ready pods" in (story.status.message or "")
    story.world.revision = "rev-1"  # GitOps reverted the template
    assert story.tick(SECOND).workload.target_paused is False  # a paused Deployment would not roll
    story.tick(SECOND)
    assert incident(story).levels[0].applied_at is not None  # type: ignore[index]
    story.now += 11 * SECOND
    judged(story, Verdict.successful)
    story.tick()
    assert story.status.phase == Phase.rolled_back
    assert incident(story).objective_met is False and "RecoveryObjectiveMissed" in story.reasons
    assert "over the 5m objective" in next(
        e.message for e in story.events if e.reason == "RecoveryObjectiveMissed"
    )


# ---------------------------------------------------------------------------- escalation


def test_a_level_that_does_not_bring_health_back_within_its_budget_escalates() -> None:
    story = started(Story(rollout(featureFlags=FLAGS), World(flags=FlagState.on)))
    breach(story)
    story.tick(SECOND)
    judged(story, Verdict.failed)  # the flag was not the cause
    story.tick(4 * MINUTE)
    assert levels(story) == [RecoveryLevel.flag]
    story.tick(MINUTE)
    assert levels(story) == [RecoveryLevel.flag, RecoveryLevel.code]
    assert "RecoveryEscalated" in story.reasons
    story.tick(SECOND)
    story.now += 11 * SECOND
    judged(story, Verdict.successful)
    story.tick()
    done = incident(story)
    assert story.status.phase == Phase.rolled_back and done.level == RecoveryLevel.code
    assert done.levels and done.levels[0].seconds == pytest.approx(300, abs=2)
    assert done.objective_met is False  # over five minutes is a reported failure


def test_an_immediate_trigger_gives_every_level_the_shortest_budget() -> None:
    story = started(Story(rollout(configRefs=[{"name": "c"}], featureFlags=FLAGS,
                                  recovery={"budgets": {"flag": "1m", "config": "10m", "code": "15m"}}),
                          World(flags=FlagState.on, configs={"c": "good"})))  # fmt: skip
    assert breach(story, immediate=True).immediate
    judged(story, Verdict.failed, immediate=True)
    story.tick(MINUTE)
    story.tick(MINUTE + SECOND)
    assert levels(story) == [RecoveryLevel.flag, RecoveryLevel.config, RecoveryLevel.code]
    assert [r.budget for r in incident(story).levels or []] == ["1m", "1m", "1m"]


def test_a_rollback_goes_ahead_while_paused() -> None:
    story = started(Story(rollout()))
    story.spec = story.spec.model_copy(update={"paused": True})
    story.tick(SECOND)
    assert story.status.phase == Phase.paused
    breach(story)


def test_a_new_template_during_recovery_waits_until_recovery_is_over() -> None:
    story = started(Story(rollout(featureFlags=FLAGS), World(flags=FlagState.on)))
    breach(story)
    story.world.revision = "rev-3"
    story.tick(SECOND)
    assert (
        story.status.phase == Phase.rolling_back
        and story.status.release
        and story.status.release.revision == "rev-2"
    )


def test_a_new_template_during_a_rollback_at_full_neither_rolls_the_target_nor_brings_a_canary_back() -> None:
    steps = [{"weight": 50, "minWait": "1m"}, {"weight": 100, "minWait": "1h"}]
    story = started(
        Story(spec(steps=steps, analysis=ANALYSIS, featureFlags=FLAGS), World(flags=FlagState.on))
    )
    story.tick(MINUTE)
    story.tick(SECOND)  # at 100%: the target runs rev-2 and the canary is retired
    assert story.world.running == "rev-2" and story.world.canary and story.world.canary.replicas == 0
    breach(story)
    assert incident(story).level == RecoveryLevel.flag
    story.world.revision = "rev-3"  # applied while the flag level is judged
    decision = story.tick(SECOND)
    assert decision.workload.target_paused and decision.workload.canary_replicas == 0
    assert story.world.running == "rev-2" and story.world.canary.replicas == 0


# ---------------------------------------------------------------------------- the latch


def rolled_back(story: Story) -> Story:
    """Started, failed, rolled back by the code level and judged healthy after it."""
    started(story)
    breach(story)
    story.tick(SECOND)
    story.now += 11 * SECOND
    judged(story, Verdict.successful)
    story.tick()
    assert story.status.phase == Phase.rolled_back
    return story


def test_a_rolled_back_revision_stays_blocked_until_its_root_cause_is_marked_fixed() -> None:
    story = rolled_back(Story(rollout()))
    assert story.status.blocked_revisions == ["rev-2"]
    story.world.revision = "rev-1"  # reverted
    story.tick(SECOND)
    assert story.status.phase == Phase.rolled_back  # the watch goes on
    story.world.revision = "rev-2"  # and the same revision applied again
    story.tick(SECOND)
    assert story.status.phase == Phase.waiting
    assert f"{RESOLVED_ANNOTATION}=rev-2" in (story.status.message or "")
    story.world.health = Health()  # the fix is in
    story.world.annotations[RESOLVED_ANNOTATION] = "rev-2"
    story.tick(SECOND)
    assert story.status.phase == Phase.progressing and not story.status.blocked_revisions
    assert incident(story).resolved and "RootCauseFixed" in story.reasons


def test_retry_of_a_blocked_revision_is_refused() -> None:
    story = rolled_back(Story(rollout()))
    story.world.annotations[RETRY_ANNOTATION] = "1"
    story.tick(SECOND)
    assert story.status.phase == Phase.rolled_back and "RetryRefused" in story.reasons


def test_the_incident_records_what_when_why_and_the_postmortem_due_time() -> None:
    story = rolled_back(Story(rollout()))
    done = incident(story)
    assert done.reason.startswith("stage 1/") and "error-rate" in done.reason
    assert done.postmortem_due_at == timestamp(T0 + 2 * SECOND + timedelta(hours=48))
    assert done.watch_until is not None and done.recovered_at is not None
    assert done.levels and done.levels[0].changed == [
        "canary scaled to 0",
        "target's pod template left at revision rev-2: revert it in git to revision rev-1 (unknown images)",
    ]
    # The template still holds the revision: RolledBack says what is awaited.
    assert "the target's template still holds revision rev-2: revert it in git to revision rev-1" in (
        story.status.message or ""
    )


# ---------------------------------------------------------------------------- pure helpers


def test_health_has_returned_only_on_windows_after_the_change() -> None:
    at = T0 + MINUTE
    good = MetricStatus(name="a", verdict=Verdict.successful, last_evaluated_at=timestamp(at))
    warn = MetricStatus(name="b", verdict=Verdict.warning, last_evaluated_at=timestamp(at))
    assert rollback.health_returned([good, warn], T0) == at
    assert rollback.health_returned([good], at + SECOND) is None
    assert rollback.health_returned([good.model_copy(update={"verdict": Verdict.inconclusive})], T0) is None
    assert rollback.health_returned([], T0) is None
    critical_not_yet_sustained = warn.model_copy(update={"breached_since": timestamp(at)})
    assert rollback.health_returned([good, critical_not_yet_sustained], T0) is None


def test_content_hashes_see_every_byte_and_key() -> None:
    assert rollback.content_hash({"a": "1"}) != rollback.content_hash({"a": "1 "})
    assert rollback.content_hash({"a": "1"}) != rollback.content_hash({}, {"a": "1"})
    assert rollback.content_hash({"a": "1", "b": "2"}) == rollback.content_hash({"b": "2", "a": "1"})


def test_plain_flags_are_switched_off() -> None:
    data = {"new-checkout": "true", "other": "true"}
    off = flags.plain_off(data, ["new-checkout"])
    assert off == {"new-checkout": "false", "other": "true"}
    assert flags.plain_is_off(off, ["new-checkout"]) and not flags.plain_is_off(data, ["new-checkout"])


def test_flagd_flags_serve_their_off_variant_and_lose_their_targeting() -> None:
    document = {"flags": {
        "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on",
                         "targeting": {"if": [{"in": ["@beta", {"var": "email"}]}, "on", "off"]}},
        "colour": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red"},
    }}  # fmt: skip
    off, changed = flags.flagd_off(document, ["new-checkout", "colour", "missing"])
    assert (
        off["flags"]["new-checkout"]["defaultVariant"] == "off"
        and "targeting" not in off["flags"]["new-checkout"]
    )
    assert off["flags"]["colour"]["state"] == "DISABLED"
    assert document["flags"]["new-checkout"]["defaultVariant"] == "on"  # the input is untouched
    assert any("missing: not defined" in c for c in changed)
    assert flags.flagd_is_off(off, ["new-checkout", "colour"]) and not flags.flagd_is_off(
        document, ["new-checkout"]
    )


@pytest.mark.parametrize("seconds", [0.25, 1, 59, 60, 90, 3600, 5400, 86400])
def test_durations_print_as_they_parse(seconds: float) -> None:
    from parachute.api import parse_duration

    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


def test_a_rollback_interrupted_by_an_invalid_spec_goes_on_when_it_is_valid_again() -> None:
    story = started(Story(rollout(featureFlags=FLAGS), World(flags=FlagState.on)))
    breach(story)
    story.status = story.status.model_copy(update={"phase": Phase.invalid})
    story.tick(SECOND)
    assert story.status.phase == Phase.rolling_back and levels(story) == [RecoveryLevel.flag]


# ---------------------------------------------------------------------------- watching after


def test_after_a_rollback_what_serves_is_watched_and_a_new_failure_is_reported_once() -> None:
    story = started(Story(rollout(featureFlags=FLAGS), World(flags=FlagState.on)))
    breach(story)
    story.tick(SECOND)
    story.now += 11 * SECOND
    judged(story, Verdict.successful)
    story.tick()
    assert story.status.phase == Phase.rolled_back and engine.analysing(story.status, story.now)
    judged(story, Verdict.failed)  # stable fails too: the release was not the only cause
    story.tick(MINUTE)
    story.tick(MINUTE)
    assert story.reasons.count("RegressedAfterRollback") == 1
    assert incident(story).regression and incident(story).regressed_at == timestamp(T0 + MINUTE + 15 * SECOND)
    assert story.status.phase == Phase.rolled_back  # reported, not acted on: stable is all there is


def test_the_watch_ends_and_nothing_is_measured_after_it() -> None:
    story = rolled_back(Story(rollout(recovery={"watchAfterRollback": "1h"})))
    assert story.status.next_analysis_at is None or engine.analysing(story.status, story.now)
    story.tick(timedelta(hours=1))
    assert not engine.analysing(story.status, story.now) and story.status.next_analysis_at is None


def test_a_released_rollout_has_no_analysis_due() -> None:
    story = Story(spec(risk="zero", analysis=ANALYSIS))
    story.tick()
    story.status = story.status.model_copy(update={"next_analysis_at": timestamp(T0)})
    story.tick(SECOND)
    assert story.status.next_analysis_at is None


# ---------------------------------------------------------------------------- configuration as a release


def test_a_change_to_tracked_configuration_alone_is_a_release_promoted_by_a_restart() -> None:
    story = Story(spec(steps=STEPS, configRefs=[{"name": "c"}]), World(configs={"c": "v1"}))
    story.tick()
    stable = story.status.release.stable_revision if story.status.release else None
    story.world.configs["c"] = "v2"  # nobody touched the template
    story.tick(SECOND)
    assert story.status.phase == Phase.progressing and "ReleaseStarted" in story.reasons
    assert story.status.release and story.status.release.revision != stable
    assert stable and story.status.release.revision.startswith(stable.split(".")[0] + ".")
    story.run_until_quiet()
    assert story.status.phase == Phase.healthy
    assert story.world.target_restarted_at is not None  # the target's pods read the new configuration
    assert [s.hash for s in story.status.config_snapshots or []] == ["v2"]


def test_a_bad_configuration_alone_is_restored_and_the_rollout_is_healthy_after_the_watch() -> None:
    story = Story(rollout(configRefs=[{"name": "c"}]), World(configs={"c": "good"}))
    story.tick()
    story.world.configs["c"] = "bad"
    story.tick(SECOND)
    story.tick(SECOND)
    bad = story.status.release.revision if story.status.release else None
    breach(story)
    story.tick(SECOND)
    story.now += 11 * SECOND
    judged(story, Verdict.successful)
    story.tick()
    assert story.status.phase == Phase.rolled_back and incident(story).level == RecoveryLevel.config
    story.tick(SECOND)  # the configuration is the stable one again: nothing left to release
    assert story.status.phase == Phase.rolled_back
    assert story.status.release and story.status.release.revision == story.status.release.stable_revision
    story.tick(timedelta(hours=24))
    assert story.status.phase == Phase.healthy and story.status.blocked_revisions == [bad]


def test_the_watch_starts_at_once_even_when_nothing_else_would_wake_the_rollout() -> None:
    story = rolled_back(Story(rollout()))
    due = parse_time(story.status.next_analysis_at)
    assert due is None or due <= story.now  # a round due at once
    assert story.last is not None and story.last.next_check_at == story.now
