"""The rollback: recovery in three levels, fastest first: feature flag, configuration, code.

Pure: the state machine of the RollingBack and RolledBack phases (open an incident, enter a
level, judge it, escalate when its budget is spent, watch what serves afterwards), and what it
rests on: which levels a Rollout has, each level's budget, when a level's change counts as in
place, when health has returned, and the incident record. The executor (`parachute.recovery`)
makes its `RecoveryIntent` real.

A level is *applied* when its change is seen in place (flags off in the store, and with
`featureFlags.verify` in the app too, as the pods serving the release report; ConfigMaps
back at their snapshot bytes, pods restarted where they cannot reload; for the code level,
no ready pod of the rolled-back revision serving from the target or a canary). Health has
*returned* when every metric was judged Successful, or Warning below its critical
threshold, on a window that began after the level was applied: a window still holding the
bad minutes proves nothing. That holds for the code level too: what serves then is what it
left, and nothing but a measurement says it is healthy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from parachute.api import (
    RESOLVED_ANNOTATION,
    FlagCheck,
    FlagCheckRecord,
    FlagState,
    Incident,
    LevelRecord,
    MetricStatus,
    Phase,
    Recovery,
    RecoveryBudgets,
    RecoveryLevel,
    RolloutSpec,
    RolloutStatus,
    Verdict,
    format_duration,
    parse_duration,
)
from parachute.conditions import at, timestamp
from parachute.plan import facts, flag_check, flag_requests, rounds
from parachute.plan.desired_workload import template_revision
from parachute.plan.model import Observed, RecoveryIntent, WorkloadIntent
from parachute.plan.strategies.base import StageIntent
from parachute.plan.tick import AT_REST, CLUSTER_TICK, Log, Outcome, Tick

LEVEL_ORDER = (RecoveryLevel.flag, RecoveryLevel.config, RecoveryLevel.code)
# How many incidents status keeps; older ones live on in Events and notifications.
INCIDENTS_KEPT = 10
GOOD = (Verdict.successful, Verdict.warning)


def levels_for(spec: RolloutSpec) -> list[RecoveryLevel]:
    """The levels this Rollout uses, fastest first. Code is always last: bad code never stays."""
    wanted = set(spec.recovery.levels) if spec.recovery and spec.recovery.levels else set(LEVEL_ORDER)
    means = {
        RecoveryLevel.flag: spec.feature_flags is not None,
        RecoveryLevel.config: bool(spec.config_refs),
        RecoveryLevel.code: True,
    }
    chosen = [level for level in LEVEL_ORDER if level in wanted and means[level]]
    if RecoveryLevel.code not in chosen:
        chosen.append(RecoveryLevel.code)
    return chosen


def budgets(spec: RolloutSpec) -> dict[RecoveryLevel, timedelta]:
    given = (spec.recovery.budgets if spec.recovery else None) or RecoveryBudgets()
    return {
        RecoveryLevel.flag: parse_duration(given.flag),
        RecoveryLevel.config: parse_duration(given.config),
        RecoveryLevel.code: parse_duration(given.code),
    }


def budget_for(spec: RolloutSpec, level: RecoveryLevel, immediate: bool) -> timedelta:
    """A level's time to bring health back; an immediate trigger gives every level the shortest."""
    table = budgets(spec)
    return min(table.values()) if immediate else table[level]


def next_level(spec: RolloutSpec, level: RecoveryLevel) -> RecoveryLevel | None:
    levels = levels_for(spec)
    index = levels.index(level) if level in levels else len(levels) - 1
    return levels[index + 1] if index + 1 < len(levels) else None


def failed_metrics(metrics: Iterable[MetricStatus]) -> list[MetricStatus]:
    return [m for m in metrics if m.verdict == Verdict.failed]


def first_critical(metrics: Iterable[MetricStatus], now: datetime) -> datetime:
    """When the failure began: the earliest breach (or failed evaluation) of a failed metric."""
    moments = [
        at(m.breached_since or m.last_evaluated_at or "")
        for m in failed_metrics(metrics)
        if m.breached_since or m.last_evaluated_at
    ]
    return min([*moments, now])


def is_immediate(metrics: Iterable[MetricStatus]) -> bool:
    return any(m.immediate for m in failed_metrics(metrics))


def health_returned(metrics: Iterable[MetricStatus], since: datetime) -> datetime | None:
    """When every metric was judged good on a window that began at or after `since`; else None."""
    judged = list(metrics)
    if not judged:
        return None
    moments = []
    for m in judged:
        # A Warning still past its critical threshold (not yet sustained) is not health.
        if m.verdict not in GOOD or m.breached_since or not m.last_evaluated_at:
            return None
        moment = at(m.last_evaluated_at)
        if moment < since:
            return None
        moments.append(moment)
    return max(moments)


def incident_id(revision: str, started: datetime) -> str:
    return f"{revision}-{started.strftime('%Y%m%d%H%M%S')}"


def snapshot_name(config_map: str, content_hash: str) -> str:
    """The immutable copy's name: content-addressed, so taking it twice is harmless, and two
    Rollouts tracking one ConfigMap share the copy (each one an owner)."""
    return f"{config_map[: 253 - 20]}-snapshot-{content_hash[:10]}"


def content_hash(data: Mapping[str, str], binary: Mapping[str, str] | None = None) -> str:
    """A hash of a ConfigMap's exact content (data and binaryData, keys sorted)."""
    digest = hashlib.sha256()
    for section, values in (("data", data), ("binaryData", binary or {})):
        for key in sorted(values):
            digest.update(f"{section}\0{key}\0{values[key]}\0".encode())
    return digest.hexdigest()[:16]


def seconds(start: datetime, end: datetime) -> float:
    return round(max(0.0, (end - start).total_seconds()), 3)


def still_serving(observed: Observed, incident: Incident) -> tuple[int, int]:
    """Ready pods of the rolled-back revision: in the target, and in the canary (any canary pod
    serves a release, never stable)."""
    bad, stable = template_revision(incident.revision or ""), incident.stable_revision or ""
    if bad != template_revision(stable):
        in_target = observed.serving.in_target(bad)
    elif observed.target.revision != stable:
        # A release of configuration alone: the target's pods read the configuration it brought.
        in_target = sum(observed.serving.target.values())
    else:
        in_target = 0
    return in_target, observed.serving.in_canary()


def what_serves(observed: Observed, incident: Incident) -> str:
    """What serves now, as seen in the ReplicaSets, in words: never "stable" unless it is so."""
    in_target, in_canary = still_serving(observed, incident)
    if in_target or in_canary:
        where = [
            f"the {side} ({ready_pods(n)})" for side, n in (("target", in_target), ("canary", in_canary)) if n
        ]
        return f"revision {incident.revision} still serves from {' and '.join(where)}"
    stable = incident.stable_revision or ""
    total = sum(observed.serving.target.values())
    on_stable = (
        total if observed.target.revision == stable else observed.serving.in_target(template_revision(stable))
    )
    if total == 0:
        return f"no ready pods serve yet (stable revision {stable} is coming back)"
    if on_stable < total:
        return f"stable revision {stable} serves ({ready_pods(on_stable)}) beside {ready_pods(total - on_stable)} of other revisions"
    return f"all traffic on stable revision {stable}"


def ready_pods(count: int) -> str:
    return f"{count} ready pod{'' if count == 1 else 's'}"


def human_seconds(value: float) -> str:
    """A recovery time as a person reads it: 5s, 1m30s."""
    return format_duration(timedelta(seconds=round(value)))


def current_incident(incidents: list[Incident] | None) -> Incident | None:
    return incidents[-1] if incidents else None


# ---------------------------------------------------------------------------- the state machine


def rolling_back(tick: Tick, st: RolloutStatus) -> Outcome:
    """The RollingBack phase: one step of the current level."""
    return _recover(tick, st, Log())


def begin(tick: Tick, st: RolloutStatus, log: Log, label: str) -> Outcome:
    """A verdict demands a rollback: open an incident and start at the lowest level there is."""
    spec, observed = tick.spec, tick.observed
    assert st.release is not None and st.release.revision is not None
    metrics = st.metrics or []
    started = first_critical(metrics, tick.now)
    immediate = is_immediate(metrics)
    revision, stable = st.release.revision, st.release.stable_revision
    settings = spec.recovery or Recovery()
    images = ", ".join(st.release.stable_images or []) or "unknown images"
    levels = levels_for(spec)
    incident = Incident(
        id=incident_id(revision, started),
        revision=revision,
        stable_revision=stable,
        reason=f"{label}: {observed.health.reason or 'health check failed'}",
        started_at=timestamp(started),
        immediate=immediate,
        new_code_in_target=_code_in_target(st, observed),
        levels=[],
        postmortem_due_at=timestamp(started + parse_duration(settings.postmortem_due)),
        revert_in_git=None if settings.restore_template else f"revision {stable} ({images})",
        change_ticket=st.release.change_ticket,
    )
    # Flags the rollback switches off: the flag level's, and any Parachute set for this release.
    set_here = (
        st.flags is not None and st.flags.revision == revision and _since_release(st, st.flags.requested_at)
    )
    if spec.feature_flags is not None and (RecoveryLevel.flag in levels or set_here):
        flag_requests.ask(st, FlagState.off, _rollback_reason(revision), tick.now)
    st.incidents = [*(st.incidents or [])[-(INCIDENTS_KEPT - 1) :], incident]
    st.blocked_revisions = sorted({*(st.blocked_revisions or []), revision})
    st.phase, st.paused_at = Phase.rolling_back, None
    if spec.analysis is not None:
        due = rounds.rolling_back(facts.parse_time(st.next_analysis_at), parse_duration(spec.analysis.interval),
                                  tick.now)  # fmt: skip
        st.next_analysis_at = timestamp(due) if due else None
    log.event("RollingBack", f"{incident.reason}; rolling back revision {revision}{facts.ticket_note(st)}",
              warning=True)  # fmt: skip
    _enter_level(tick, st, levels[0])
    return _recover(tick, st, log)


def rolled_back(tick: Tick, st: RolloutStatus) -> Outcome:
    """After a rollback: say what serves (as seen), watch it, and end when the watch does with
    the template back at stable. The canary is gone; a template back at stable may roll."""
    log, observed = Log(), tick.observed
    st.canary_weight = 0
    incident = current_incident(st.incidents)
    if incident is None or st.release is None:  # a status edited by hand: hold what is there
        return log.outcome(st, AT_REST)
    workload = WorkloadIntent(
        target_paused=_hold_target(observed, incident), canary_replicas=0, canary_revision=None
    )
    at_stable = st.release.revision == st.release.stable_revision
    if watching(st, tick.now):
        watch_after_rollback(tick, st, log)
        if at_stable:
            log.check_at(facts.at(incident.watch_until or timestamp(tick.now)))
    elif at_stable:
        st.phase, st.stage_index, st.stage, st.stage_started_at = Phase.healthy, None, None, None
        st.stage_reached_at = None
        st.message = f"serving revision {st.release.stable_revision}; the watch after rolling back revision {incident.revision} ended"
        log.event("WatchEnded", st.message)
        return log.outcome(st, workload)
    st.message = _rolled_back_message(tick, st, incident)
    if any(still_serving(observed, incident)) or (observed.canary and observed.canary.replicas):
        log.check_at(tick.now + CLUSTER_TICK)  # the canary is still going: say so once it is gone
    return log.outcome(st, workload)


def watching(st: RolloutStatus, now: datetime) -> bool:
    """Within the watch after the latest rollback, and stable is still what it went back to."""
    incident = current_incident(st.incidents)
    if incident is None or not incident.watch_until or st.release is None:
        return False
    return now < facts.at(incident.watch_until) and st.release.stable_revision == incident.stable_revision


def watch_after_rollback(tick: Tick, st: RolloutStatus, log: Log) -> None:
    """A failure while watching after a rollback means the release was not the only cause."""
    incident = current_incident(st.incidents)
    health = tick.observed.health
    if incident is None or not health.failed or incident.regressed_at is not None:
        return
    incident.regressed_at = timestamp(tick.now)
    incident.regression = health.reason or "health check failed"
    log.event(
        "RegressedAfterRollback",
        f"after rolling back revision {incident.revision}, what serves now fails too: {incident.regression}",
        warning=True,
    )


def incident_of(st: RolloutStatus) -> Incident:
    incident = current_incident(st.incidents)
    assert incident is not None
    return incident


def _recover(tick: Tick, st: RolloutStatus, log: Log) -> Outcome:
    """One step of the current level: apply it, judge it, and escalate when its budget is spent."""
    spec, observed, now = tick.spec, tick.observed, tick.now
    incident = incident_of(st)
    assert incident.levels and st.release is not None
    record = incident.levels[-1]
    level = record.level
    stamp = _restart_stamp(spec, incident)
    wanted = _recovery_intent(spec, st, observed, incident, stamp)
    stage = _recovery_workload(tick, st, incident, wanted)
    if spec.feature_flags is not None and _rollback_flags(st, incident):
        flag_requests.wait(tick, st, log)
        if observed.flags.state != FlagState.off and not observed.flags.problem:
            log.flags = FlagState.off  # held off for the whole rollback
    started = facts.at(record.started_at)
    deadline = started + budget_for(spec, level, incident.immediate)

    problem = _cannot_apply(st, observed, level)
    if problem:
        if problem not in (record.changed or []):
            record.changed = [*(record.changed or []), problem]
        return _escalate(tick, st, log, problem, stage=stage, wanted=wanted)
    routed = tick.routed
    if (
        level == RecoveryLevel.code
        and record.traffic_back_at is None
        and facts.traffic_back(observed, routed)
    ):
        record.traffic_back_at = timestamp(now)
        log.event("TrafficBackOnStable", f"level {level}: all traffic is back on stable revision "
                  f"{incident.stable_revision}{', as the route reads back' if routed else ''}")  # fmt: skip
    grace_ends = None
    if record.applied_at is None and _level_applied(tick, st, incident, stamp, wanted):
        app = _app_says(tick, record)
        if app.escalate:
            return _escalate(tick, st, log, app.escalate, stage=stage, wanted=wanted)
        grace_ends = app.grace_ends
        if app.in_place:
            record.applied_at = timestamp(now)
            log.event("RecoveryApplied", f"level {level}: {'; '.join(record.changed or [])}")
    healthy = _health_back(spec, st, record)
    if healthy is not None:
        return _recovered(tick, st, log, healthy, wanted)
    if now >= deadline:
        late = "its change was not in place" if record.applied_at is None else "health did not return"
        said = record.flag_check.said if record.flag_check and record.applied_at is None else None
        why = f"{late} within {record.budget}" + (f" (the app: {said})" if said else "")
        return _escalate(tick, st, log, why, stage=stage, wanted=wanted)
    if level == RecoveryLevel.code:
        st.canary_weight = 0
    awaited = _awaited(tick, incident, record, wanted)
    st.message = f"rolling back revision {incident.revision}: level {level} waits for {awaited} (budget until {timestamp(deadline)})"
    log.check_at(min(deadline, now + CLUSTER_TICK, grace_ends or deadline))
    return log.outcome(st, stage.workload, stage.traffic, wanted)


def _awaited(tick: Tick, incident: Incident, record: LevelRecord, wanted: RecoveryIntent) -> str:
    """What the level waits for now, in words."""
    observed = tick.observed
    if record.applied_at is not None:
        return "health to return"
    check = _flag_check(tick.spec)
    if record.level == RecoveryLevel.flag and check is not None and record.flag_check is not None:
        return flag_check.awaited(check, record.flag_check)
    if record.level != RecoveryLevel.code:
        return "its change to be in place"
    in_target, in_canary = still_serving(observed, incident)
    template_bad = not facts.same_template(observed.target.revision, incident.stable_revision)
    if in_target and template_bad and wanted.restore_template is None:
        return (
            f"a revert in git, as revision {incident.revision} still serves from the target with "
            f"{ready_pods(in_target)}: revert it in git to {incident.revert_in_git}"
        )
    if in_target or in_canary:
        return f"revision {incident.revision} to stop serving: {what_serves(observed, incident)}"
    return "its change to be in place"


def _restart_stamp(spec: RolloutSpec, incident: Incident) -> str | None:
    """Pods that cannot reload are restarted once per level that needs it, with that level's start."""
    stamp = None
    for record in incident.levels or []:
        if record.level == RecoveryLevel.config or (
            record.level == RecoveryLevel.flag
            and spec.feature_flags is not None
            and not spec.feature_flags.reloads
        ):
            stamp = record.started_at
    return stamp


def _recovery_intent(
    spec: RolloutSpec, st: RolloutStatus, observed: Observed, incident: Incident, stamp: str | None
) -> RecoveryIntent:
    used = {r.level for r in incident.levels or []}
    settings = spec.recovery or Recovery()
    code = RecoveryLevel.code in used
    stable = incident.stable_revision
    # With restoreTemplate the code level leaves no bad template behind, even one that never
    # rolled (a paused target): unpaused later, it would.
    restore = (
        code
        and settings.restore_template
        and stable
        and not facts.same_template(observed.target.revision, stable)
    )
    return RecoveryIntent(
        restore_configs=tuple((s.name, s.snapshot) for s in st.config_snapshots or [])
        if RecoveryLevel.config in used
        else (),
        restart_stamp=None if code else stamp,
        restart_target=incident.new_code_in_target and not code,
        restore_template=template_revision(stable) if restore and stable else None,
    )


def _recovery_workload(
    tick: Tick, st: RolloutStatus, incident: Incident, wanted: RecoveryIntent
) -> StageIntent:
    observed = tick.observed
    assert st.release is not None and incident.levels
    level = incident.levels[-1].level
    if level == RecoveryLevel.code:
        return StageIntent(WorkloadIntent(
            target_paused=_hold_target(observed, incident), canary_replicas=0, canary_revision=None
        ))  # fmt: skip
    # Flag and config levels keep the traffic where it is: health is judged on the same split.
    stage = tick.exposure.stage_intent(tick, st, st.release.revision or observed.target.revision)
    if observed.target.revision != st.release.revision:
        # A template applied during the recovery waits for it to end: the target is held.
        return replace(stage, workload=replace(stage.workload, target_paused=True, target_restart=None))
    restarting_target = wanted.restart_target and wanted.restart_stamp is not None
    if restarting_target and observed.recovery.restarted_at != wanted.restart_stamp:
        held = stage.workload
        return replace(stage, workload=WorkloadIntent(False, held.canary_replicas, held.canary_revision))
    return stage


def _hold_target(observed: Observed, incident: Incident) -> bool:
    """A paused Deployment does not roll: once its template is stable again (restored, or reverted
    in git) it is let go until the stable pods are back, then held again. A bad template is held."""
    stable_template = facts.same_template(observed.target.revision, incident.stable_revision)
    return not (stable_template and not observed.target.rolled_out)


def _cannot_apply(st: RolloutStatus, observed: Observed, level: RecoveryLevel) -> str:
    if level == RecoveryLevel.flag and observed.flags.problem:
        return observed.flags.problem
    if level == RecoveryLevel.config and not st.config_snapshots:
        return "no configuration snapshot was taken before the release"
    return ""


def _level_applied(
    tick: Tick, st: RolloutStatus, incident: Incident, stamp: str | None, wanted: RecoveryIntent
) -> bool:
    """The level's change is in place: seen so, not assumed."""
    observed = tick.observed
    restarted = stamp is None or observed.recovery.restarted_at == stamp
    flags_off = observed.flags.state == FlagState.off
    level = (incident.levels or [])[-1].level
    if level == RecoveryLevel.flag:
        return flags_off and restarted
    # The flags this rollback switches off are off at every level (unless there is no store).
    if _rollback_flags(st, incident) and not (flags_off or observed.flags.problem):
        return False
    if level == RecoveryLevel.config:
        hashes = observed.recovery.config_hashes
        return all(hashes.get(s.name) == s.hash for s in st.config_snapshots or []) and restarted
    # Code: no ready pod of the revision serves anywhere, and no canary is left to serve it. With a
    # router the route reading 0% is what takes the canary out: its pods then only drain, and the
    # recovery is not made to wait for scaleDownDelay.
    in_target, in_canary = still_serving(observed, incident)
    canary = observed.canary
    canary_gone = tick.drains or canary is None or (canary.replicas == 0 and canary.ready == 0)
    off_canary = tick.drains or not in_canary
    restored = wanted.restore_template is None
    back = facts.traffic_back(observed, tick.routed)
    return canary_gone and off_canary and not in_target and restored and back


def asks_app(spec: RolloutSpec, st: RolloutStatus, observed: Observed) -> bool:
    """Whether the app is to be asked now (spec.featureFlags.verify): at the flag level, before it
    counts as in place, once the store shows the flags off and pods that had to restart have."""
    check = _flag_check(spec)
    incident = current_incident(st.incidents)
    if check is None or st.phase != Phase.rolling_back or incident is None or not incident.levels:
        return False
    record = incident.levels[-1]
    if record.level != RecoveryLevel.flag or record.applied_at is not None:
        return False
    stamp = _restart_stamp(spec, incident)
    restarted = stamp is None or observed.recovery.restarted_at == stamp
    return observed.flags.state == FlagState.off and restarted


def _flag_check(spec: RolloutSpec) -> FlagCheck | None:
    return spec.feature_flags.verify if spec.feature_flags is not None else None


def _app_says(tick: Tick, record: LevelRecord) -> flag_check.Judgement:
    """At the flag level with `verify`, the store in place is not enough: the app must say so."""
    check = _flag_check(tick.spec)
    if record.level != RecoveryLevel.flag or check is None:
        return flag_check.Judgement(True, record.flag_check or FlagCheckRecord())
    judged = flag_check.judge(check, tick.observed.flag_check, record.flag_check, tick.now)
    record.flag_check = judged.record
    return judged


def _health_back(spec: RolloutSpec, st: RolloutStatus, record: LevelRecord) -> datetime | None:
    """Health judged good on a window that began after the level's change was in place, at every
    level: the code level too, since what serves then is only what the level left."""
    if record.applied_at is None:
        return None
    applied = facts.at(record.applied_at)
    if spec.analysis is None:
        return applied  # nothing measures: the change in place is all there is to know
    window = parse_duration(spec.analysis.interval)
    return health_returned(st.metrics or [], applied + window)


def _escalate(
    tick: Tick, st: RolloutStatus, log: Log, why: str, *, stage: StageIntent, wanted: RecoveryIntent
) -> Outcome:
    incident = incident_of(st)
    record = (incident.levels or [])[-1]
    following = next_level(tick.spec, record.level)
    if following is None:
        st.message = (
            f"rolling back revision {incident.revision}: the code level has not finished ({why}); "
            f"it waits for {_awaited(tick, incident, record, wanted)}"
        )
        if record.seconds is None:
            record.seconds = seconds(facts.at(record.started_at), tick.now)
            log.event("RecoveryStalled", st.message, warning=True)
        log.check_at(tick.now + CLUSTER_TICK)
        return log.outcome(st, stage.workload, stage.traffic, wanted)
    record.seconds = seconds(facts.at(record.started_at), tick.now)
    log.event("RecoveryEscalated", f"level {record.level}: {why}; moving to level {following}", warning=True)
    _enter_level(tick, st, following)
    return _recover(tick, st, log)


def _recovered(tick: Tick, st: RolloutStatus, log: Log, healthy: datetime, wanted: RecoveryIntent) -> Outcome:
    incident = incident_of(st)
    record = (incident.levels or [])[-1]
    settings = tick.spec.recovery or Recovery()
    record.healthy_at = timestamp(healthy)
    record.seconds = seconds(facts.at(record.started_at), healthy)
    took = seconds(facts.at(incident.started_at), healthy)
    incident.recovered_at = timestamp(healthy)
    incident.recovery_seconds = took
    incident.objective_met = took <= parse_duration(settings.objective).total_seconds()
    incident.watch_until = timestamp(healthy + parse_duration(settings.watch_after_rollback))
    st.phase, st.canary_weight = Phase.rolled_back, 0
    st.message = _rolled_back_message(tick, st, incident)
    workload = WorkloadIntent(
        target_paused=_hold_target(tick.observed, incident), canary_replicas=0, canary_revision=None
    )
    log.event("RolledBack", st.message, warning=True)
    if not incident.objective_met:
        log.event(
            "RecoveryObjectiveMissed",
            f"recovery took {human_seconds(took)}, over the {settings.objective} objective",
            warning=True,
        )
    return log.outcome(st, workload, None, wanted)


def _rolled_back_message(tick: Tick, st: RolloutStatus, incident: Incident) -> str:
    """What a person reads after a rollback: what really serves, never what should."""
    observed = tick.observed
    took = human_seconds(incident.recovery_seconds or 0.0)
    parts = [
        f"recovered by the {incident.level} level in {took}",
        _what_serves(tick, incident) + _flags_note(tick.spec, observed),
    ]
    if not facts.same_template(observed.target.revision, incident.stable_revision):
        revert = f": revert it in git to {incident.revert_in_git}" if incident.revert_in_git else ""
        parts.append(f"the target's template still holds revision {incident.revision}{revert}")
    if incident.revision in (st.blocked_revisions or []):
        parts.append(
            f"revision {incident.revision} is blocked until {RESOLVED_ANNOTATION}={incident.revision}"
        )
    if watching(st, tick.now):
        parts.append(f"watched until {incident.watch_until}")
    return "; ".join(parts)


def _what_serves(tick: Tick, incident: Incident) -> str:
    """What serves, in words. With a router, a canary the route is read back sending nothing
    serves nothing: its pods only drain until scaleDownDelay has passed."""
    observed = tick.observed
    draining = observed.serving.in_canary()
    if not (tick.drains and draining and facts.traffic_back(observed, True)):
        return what_serves(observed, incident)
    unrouted = replace(observed, serving=replace(observed.serving, canary={}))
    return (
        f"{what_serves(unrouted, incident)} (the canary's {ready_pods(draining)} "
        "are sent nothing and drain before they are scaled down)"
    )


def _flags_note(spec: RolloutSpec, observed: Observed) -> str:
    flags = spec.feature_flags
    if flags is None or observed.flags.state is None:
        return ""
    return f", with flags {', '.join(flags.flags)} {observed.flags.state}"


def _code_in_target(st: RolloutStatus, observed: Observed) -> bool:
    """Whether the target's own pods were seen serving the release (not guessed from the stage)."""
    assert st.release is not None and st.release.revision is not None
    if not facts.same_template(st.release.revision, st.release.stable_revision):
        return facts.new_in_target(observed, st.release.revision, st.release.stable_revision) > 0
    stamp = facts.promotion_restart(st)  # configuration alone reaches the target by a restart
    return stamp is not None and observed.target.restarted_at == stamp


def _since_release(st: RolloutStatus, moment: str) -> bool:
    started = facts.parse_time(st.release.started_at if st.release else None)
    return started is None or facts.at(moment) >= started


def _rollback_reason(revision: str | None) -> str:
    return f"rollback of revision {revision}"


def _rollback_flags(st: RolloutStatus, incident: Incident) -> bool:
    """Whether this rollback switches the release's flags off (asked for when it began)."""
    flags = st.flags
    return (
        flags is not None
        and flags.reason == _rollback_reason(incident.revision)
        and facts.at(flags.requested_at) >= facts.at(incident.started_at)
    )


def _enter_level(tick: Tick, st: RolloutStatus, level: RecoveryLevel) -> None:
    incident = incident_of(st)
    budget = budget_for(tick.spec, level, incident.immediate)
    record = LevelRecord(
        level=level, started_at=timestamp(tick.now), budget=format_duration(budget),
        changed=_level_changes(tick, st, level),
    )  # fmt: skip
    incident.levels = [*(incident.levels or []), record]
    incident.level = level


def _level_changes(tick: Tick, st: RolloutStatus, level: RecoveryLevel) -> list[str]:
    spec = tick.spec
    if level == RecoveryLevel.flag:
        flags = spec.feature_flags
        assert flags is not None
        out = [f"flags {', '.join(flags.flags)} off in {flag_requests.store(spec)} (before: a snapshot copy)"]
        if not flags.reloads:
            out.append("pods that read the flags restarted")
        return out
    if level == RecoveryLevel.config:
        names = [s.name for s in st.config_snapshots or []]
        missing = [r.name for r in spec.config_refs or [] if r.name not in names]
        out = [f"ConfigMap {s.name} restored to snapshot {s.snapshot}" for s in st.config_snapshots or []]
        out += [f"ConfigMap {name}: no snapshot to restore" for name in missing]
        return [*out, "pods that use them restarted"]
    return _code_changes(tick, st)


def _code_changes(tick: Tick, st: RolloutStatus) -> list[str]:
    spec, observed = tick.spec, tick.observed
    incident = incident_of(st)
    out = ["canary scaled to 0"]
    flag_level = any(r.level == RecoveryLevel.flag for r in incident.levels or [])
    if spec.feature_flags is not None and _rollback_flags(st, incident) and not flag_level:
        names = ", ".join(spec.feature_flags.flags)
        out.append(
            f"flags {names} off in {flag_requests.store(spec)}, as Parachute had set them for this release"
        )
    if not facts.same_template(observed.target.revision, incident.stable_revision):
        settings = spec.recovery or Recovery()
        out.append(
            f"target's pod template restored to revision {incident.stable_revision}"
            if settings.restore_template
            else f"target's pod template left at revision {incident.revision}: revert it in git to "
            f"{incident.revert_in_git}"
        )
    return out
