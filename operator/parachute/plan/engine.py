"""The release state machine: `decide(spec, status, observed, now) -> Decision`.

Pure and level-triggered: given what the status says and what the cluster looks like, it
says what the status and the workload should be now. It never sleeps; waits are timestamps
in status, compared with `now`. Running it twice on the same input gives the same answer,
and running it after a restart resumes where the status says the release was.

Phases: Healthy (nothing to release, or released) → Progressing (stage by stage) → Healthy,
with Paused (spec.paused), Aborted (by a person or a deadline), and RollingBack → RolledBack
(by health, level by level: see `plan.recovery`) on the way. A new pod template starts a
release; another one during it supersedes it. A rolled-back revision stays blocked until
someone marks its root cause fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from parachute import conditions
from parachute.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    RESOLVED_ANNOTATION,
    RETRY_ANNOTATION,
    Condition,
    ConditionStatus,
    ConfigSnapshot,
    GateStatus,
    HandledCommands,
    Incident,
    LevelRecord,
    Phase,
    PlannedStage,
    Recovery,
    RecoveryLevel,
    ReleaseStatus,
    RolloutSpec,
    RolloutStatus,
    WindowStatus,
    format_duration,
    parse_duration,
)
from parachute.conditions import timestamp
from parachute.plan import recovery
from parachute.plan.model import Decision, Event, EventType, Observed, RecoveryIntent, WorkloadIntent
from parachute.plan.stages import effective_risk, flag_gated_plan, plan_for
from parachute.plan.workload import canary_replicas, template_revision

# How soon to look again while waiting for the cluster (pods becoming ready, a rollout).
CLUSTER_TICK = timedelta(seconds=2)
# How often unmet gates are checked again (a new annotation wakes the Rollout at once anyway).
GATE_RECHECK = timedelta(seconds=10)
ACTIVE = (Phase.progressing, Phase.paused, Phase.waiting)
STOPPED = (Phase.aborted, Phase.rolled_back)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def stages_for(spec: RolloutSpec) -> list[PlannedStage]:
    """The user's steps, the five-stage flag-gated sequence, or the risk plan."""
    if not spec.steps and spec.feature_flags is not None and effective_risk(spec).value in ("medium", "high"):
        return flag_gated_plan(spec)
    return plan_for(spec)


@dataclass
class _Work:
    """The decision being built: a mutable copy of status plus what else comes out."""

    status: RolloutStatus
    now: datetime
    events: list[Event] = field(default_factory=list)
    next_check_at: datetime | None = None
    intent: WorkloadIntent | None = None
    recovery: RecoveryIntent = field(default_factory=RecoveryIntent)
    snapshots: list[tuple[str, str]] = field(default_factory=list)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event(EventType.warning if warning else EventType.normal, reason, message))

    def check_at(self, moment: datetime) -> None:
        if self.next_check_at is None or moment < self.next_check_at:
            self.next_check_at = moment


def decide(
    spec: RolloutSpec, status: RolloutStatus, observed: Observed, now: datetime, generation: int | None = None
) -> Decision:
    work = _Work(status.model_copy(deep=True), now)
    st = work.status
    st.risk = effective_risk(spec)
    st.risk_reason = observed.risk_reason or ("spec.risk" if spec.risk else f"default ({st.risk})")
    st.plan = stages_for(spec)
    st.observed_generation = generation
    st.commands = st.commands or HandledCommands()

    if st.phase != Phase.rolling_back:  # a new template waits until recovery is over
        _follow_template(work, observed)
    _recover_from_invalid(work)
    _apply_commands(work, spec, observed)
    _open_window(work, observed)
    _pause_or_resume(work, spec)

    revision = observed.target.revision
    if st.phase == Phase.progressing:
        _progress(work, spec, observed)
    elif st.phase == Phase.paused and observed.health.failed:
        # Paused holds a release where it is; it never holds a rollback.
        _begin_recovery(work, spec, observed, f"paused at stage {st.stage}")
    elif st.phase == Phase.paused:
        work.intent = _stage_intent(st, observed, revision)
    elif st.phase == Phase.rolling_back:
        _recover(work, spec, observed)
    else:  # Healthy, Aborted, RolledBack: stable serves everything
        work.intent = WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=None)
        if st.phase in STOPPED:
            st.canary_weight = 0
        if st.phase == Phase.rolled_back:
            _watch_after_rollback(work, observed)
    if not analysing(st, now):
        st.next_analysis_at = None  # nothing is measured in this phase: no round is due
    elif st.phase == Phase.rolled_back and st.next_analysis_at is None:
        work.check_at(now)  # the watch after a rollback starts with a round now

    _stale_promote_is_dropped(work, observed)
    if observed.gates:
        checked = timestamp(work.now)
        st.gates = [
            GateStatus(name=n, met=m, message=msg, checked_at=checked) for n, m, msg in observed.gates
        ]
    window = observed.window
    st.window = WindowStatus(
        policy=window.policy, open=window.open, reason=window.reason or None,
        next_open_at=timestamp(window.next_open) if window.next_open else None,
    )  # fmt: skip
    st.conditions = _conditions(st, now, generation)
    _snapshot_configs(work, spec, observed)
    st.next_check_at = timestamp(work.next_check_at) if work.next_check_at else None
    assert work.intent is not None
    return Decision(st, work.intent, tuple(work.events), work.next_check_at, work.recovery,
                    tuple(work.snapshots))  # fmt: skip


# ---------------------------------------------------------------------------- transitions


def _follow_template(work: _Work, observed: Observed) -> None:
    """Adopt the target on first sight; a new pod template starts (or supersedes) a release."""
    st, target = work.status, observed.target
    release = st.release or ReleaseStatus()
    if release.stable_revision is None:
        st.release = ReleaseStatus(
            stable_revision=target.revision,
            revision=target.revision,
            stable_images=list(target.images) or None,
        )
        st.phase = Phase.healthy
        st.message = f"serving revision {target.revision}"
        st.canary_weight = 0
        work.event(
            "Adopted",
            f"Deployment adopted at revision {target.revision}; new templates are released in stages",
        )
        return
    if target.revision == release.revision:
        return
    if target.revision == release.stable_revision:
        st.release = ReleaseStatus(
            stable_revision=release.stable_revision,
            revision=target.revision,
            stable_images=release.stable_images,
        )
        after_rollback = st.phase == Phase.rolled_back
        st.phase, st.stage_index, st.stage, st.stage_started_at, st.paused_at = (
            Phase.healthy,
            None,
            None,
            None,
            None,
        )
        st.canary_weight = 0
        if after_rollback:
            st.message = f"template is back at the stable revision {target.revision} after the rollback"
            work.event("RevertedToStable", st.message)
        else:
            st.message = f"template is back at the stable revision {target.revision}; release cancelled"
            work.event("ReleaseCancelled", st.message)
        return
    superseding = release.revision != release.stable_revision and st.phase in ACTIVE
    st.release = ReleaseStatus(
        revision=target.revision,
        stable_revision=release.stable_revision,
        images=list(target.images) or None,
        stable_images=release.stable_images,
        started_at=timestamp(work.now),
    )
    if not _may_start(work, observed):
        st.phase, st.stage_index, st.stage, st.stage_started_at, st.paused_at = (
            Phase.waiting,
            None,
            None,
            None,
            None,
        )
        st.canary_weight = 0
        st.metrics, st.next_analysis_at, st.last_verdict = None, None, None
        _say_why_waiting(work, observed, f"revision {target.revision}")
        work.event("ReleaseWaiting", st.message or "")
        return
    _start(work)
    _announce_hotfix(work, observed)
    if superseding:
        work.event(
            "ReleaseSuperseded", f"revision {target.revision} replaces {release.revision}; starting over"
        )
    else:
        work.event("ReleaseStarted", f"releasing revision {target.revision} over {release.stable_revision}")


def _may_progress(work: _Work, observed: Observed) -> bool:
    return observed.window.open or observed.hotfix


def _unmet_gates(observed: Observed) -> str:
    return "; ".join(f"gate {name}: {message}" for name, met, message in observed.gates if not met)


def _blocked(work: _Work) -> bool:
    st = work.status
    return st.release is not None and st.release.revision in (st.blocked_revisions or [])


def _may_start(work: _Work, observed: Observed) -> bool:
    return _may_progress(work, observed) and not _unmet_gates(observed) and not _blocked(work)


def _say_why_waiting(work: _Work, observed: Observed, what: str) -> None:
    if _blocked(work):
        revision = work.status.release.revision if work.status.release else ""
        work.status.message = (
            f"{what} was rolled back and is blocked until its root cause is marked fixed: "
            f"set {RESOLVED_ANNOTATION}={revision}"
        )
    elif not _may_progress(work, observed):
        _say_waiting(work, observed, f"{what} waits for the release window")
    else:
        work.status.message = f"{what} waits for its checklist: {_unmet_gates(observed)}"
        work.check_at(work.now + GATE_RECHECK)


def _say_waiting(work: _Work, observed: Observed, what: str) -> None:
    window = observed.window
    until = (
        f"; next open {timestamp(window.next_open)}"
        if window.next_open
        else "; it never opens: check the policy"
    )
    work.status.message = f"{what}: {window.reason} (policy {window.policy}){until}"
    if window.next_open is not None:
        work.check_at(window.next_open)


def _announce_hotfix(work: _Work, observed: Observed) -> None:
    if observed.hotfix and not observed.window.open:
        work.event("HotfixIgnoresWindow", f"security hotfix: released although {observed.window.reason}")


def _open_window(work: _Work, observed: Observed) -> None:
    """A release waiting for its window starts when the window opens (or for a hotfix)."""
    st = work.status
    if st.phase != Phase.waiting:
        return
    if not _may_start(work, observed):
        _say_why_waiting(work, observed, f"revision {st.release.revision if st.release else ''}")
        return
    _start(work)
    _announce_hotfix(work, observed)
    work.event(
        "ReleaseStarted",
        f"window open, gates met; releasing revision {st.release.revision if st.release else ''}",
    )


def _recover_from_invalid(work: _Work) -> None:
    """A Rollout that was Invalid (say its target was briefly missing) resumes its release."""
    st = work.status
    assert st.release is not None
    if st.phase not in (None, Phase.invalid):
        return
    incident = recovery.current_incident(st.incidents)
    if incident is not None and incident.recovered_at is None and not incident.resolved:
        st.phase = Phase.rolling_back  # a rollback interrupted by a bad spec goes on where it was
    elif st.release.revision != st.release.stable_revision and st.stage_index is not None:
        st.phase = Phase.progressing
    else:
        st.phase = Phase.healthy
        st.message = f"serving revision {st.release.stable_revision}"


def _start(work: _Work) -> None:
    st = work.status
    st.phase = Phase.progressing
    st.paused_at = None
    # Each release is judged on its own measurements.
    st.metrics, st.next_analysis_at, st.last_verdict = None, None, None
    _enter_stage(work, 0)


def _enter_stage(work: _Work, index: int) -> None:
    st = work.status
    assert st.plan is not None
    st.stage_index = index
    st.stage = f"{index + 1}/{len(st.plan)}"
    st.stage_started_at = timestamp(work.now)
    st.canary_weight = st.plan[index].weight


def _apply_commands(work: _Work, spec: RolloutSpec, observed: Observed) -> None:
    st = work.status
    assert st.commands is not None and st.release is not None
    abort = observed.commands.get(ABORT_ANNOTATION)
    if abort and abort != st.commands.abort:
        st.commands.abort = abort
        if st.phase in ACTIVE:
            _stop(work, Phase.aborted, "Aborted", f"aborted by {ABORT_ANNOTATION}")
    resolved = observed.commands.get(RESOLVED_ANNOTATION)
    if resolved and resolved != st.commands.resolved:
        st.commands.resolved = resolved
        _resolve(work, resolved)
    retry = observed.commands.get(RETRY_ANNOTATION)
    if retry and retry != st.commands.retry:
        st.commands.retry = retry
        if st.phase in STOPPED and _blocked(work):
            work.event(
                "RetryRefused",
                f"revision {st.release.revision} is blocked until {RESOLVED_ANNOTATION}={st.release.revision}",
                warning=True,
            )
        elif st.phase in STOPPED and st.release.revision != st.release.stable_revision:
            st.release = st.release.model_copy(update={"started_at": timestamp(work.now)})
            _start(work)
            work.event("ReleaseRetried", f"retrying revision {st.release.revision} from the first stage")


def _resolve(work: _Work, value: str) -> None:
    """The root cause of a rolled-back revision (or of all, for "all") is marked fixed."""
    st = work.status
    blocked = st.blocked_revisions or []
    freed = [r for r in blocked if value in (r, "all")]
    if not freed:
        work.event("ResolveIgnored", f"{RESOLVED_ANNOTATION}={value}: no such blocked revision", warning=True)
        return
    st.blocked_revisions = [r for r in blocked if r not in freed] or None
    st.incidents = [
        i.model_copy(update={"resolved": True}) if i.revision in freed else i for i in st.incidents or []
    ] or None
    work.event("RootCauseFixed", f"revision {', '.join(freed)} may be released again")


def _stop(work: _Work, phase: Phase, reason: str, why: str) -> None:
    st = work.status
    assert st.release is not None
    st.phase = phase
    st.paused_at = None
    st.canary_weight = 0
    st.message = (
        f"{why}; all traffic on stable revision {st.release.stable_revision}; "
        f"set {RETRY_ANNOTATION} to start again, or apply a new template"
    )
    work.event(reason, st.message, warning=True)


def _pause_or_resume(work: _Work, spec: RolloutSpec) -> None:
    st = work.status
    if st.phase == Phase.progressing and spec.paused:
        st.phase = Phase.paused
        st.paused_at = timestamp(work.now)
        st.message = f"paused at stage {st.stage} by spec.paused"
        work.event("Paused", st.message)
    elif st.phase == Phase.paused and not spec.paused:
        paused_at = parse_time(st.paused_at) or work.now
        started = parse_time(st.stage_started_at) or work.now
        # The wait clock stops while paused: the stage still gets its whole wait.
        st.stage_started_at = timestamp(started + (work.now - paused_at))
        st.phase = Phase.progressing
        st.paused_at = None
        work.event("Resumed", f"resumed at stage {st.stage}")


def _stage_intent(st: RolloutStatus, observed: Observed, revision: str) -> WorkloadIntent:
    """The workload of the current stage: the canary sized to its weight, the target held."""
    assert st.plan is not None and st.stage_index is not None
    stage = st.plan[min(st.stage_index, len(st.plan) - 1)]
    if stage.weight == 100:
        done = _promoted(st, observed)
        keep = _previous_canary(st, observed)
        return WorkloadIntent(target_paused=done, canary_replicas=0 if done else keep, canary_revision=revision,
                              target_restart=_promotion_restart(st))  # fmt: skip
    return WorkloadIntent(
        target_paused=True,
        canary_replicas=canary_replicas(observed.target.replicas, stage.weight),
        canary_revision=revision,
    )


def _promotion_restart(st: RolloutStatus) -> str | None:
    """A release of configuration alone changes no pod template: promoting it restarts the
    target's pods (stamped with the stage's start), so they all read the new configuration."""
    release = st.release
    if release is None or not release.revision or not release.stable_revision:
        return None
    if release.revision == release.stable_revision:
        return None
    same_template = template_revision(release.revision) == template_revision(release.stable_revision)
    return st.stage_started_at if same_template else None


def _promoted(st: RolloutStatus, observed: Observed) -> bool:
    """At 100%: the target runs the new version everywhere (restarted, for configuration)."""
    stamp = _promotion_restart(st)
    return observed.target.rolled_out and (stamp is None or observed.target.restarted_at == stamp)


def _previous_canary(st: RolloutStatus, observed: Observed) -> int:
    """While the target rolls to the new version, the canary keeps the capacity it had."""
    assert st.plan is not None and st.stage_index is not None
    earlier = [s.weight for s in st.plan[: st.stage_index] if s.weight < 100]
    return canary_replicas(observed.target.replicas, earlier[-1]) if earlier else 0


def _progress(work: _Work, spec: RolloutSpec, observed: Observed) -> None:
    st = work.status
    assert st.plan is not None and st.release is not None
    if st.stage_index is None or st.stage_index >= len(st.plan):
        # The plan got shorter under a running release (a spec edit): continue from its end.
        _enter_stage(work, min(st.stage_index or 0, len(st.plan) - 1))
    index = st.stage_index
    assert index is not None
    stage = st.plan[index]
    st.stage = f"{index + 1}/{len(st.plan)}"
    revision = observed.target.revision
    work.intent = _stage_intent(st, observed, revision)
    started = parse_time(st.stage_started_at) or work.now
    label = f"stage {st.stage} ({stage.name}) at {stage.weight}%"

    if observed.health.failed:
        _begin_recovery(work, spec, observed, label)
        return

    if not _stage_ready(work, observed, stage.weight, revision):
        deadline = started + parse_duration(spec.progress_deadline)
        if work.now >= deadline:
            _stop(work, Phase.aborted, "ProgressDeadlineExceeded",
                  f"{label}: the new version was not ready within {spec.progress_deadline}")  # fmt: skip
            work.intent = WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=None)
            return
        st.message = f"{label}: waiting for the new version to become ready"
        work.check_at(min(work.now + CLUSTER_TICK, deadline))
        return

    if observed.health.hold_reason:
        st.message = f"{label}: held, {observed.health.hold_reason}"
        work.check_at(work.now + CLUSTER_TICK)
        return

    elapsed = work.now - started
    min_wait = parse_duration(stage.min_wait or "0s")
    max_wait = parse_duration(stage.max_wait or stage.min_wait or "0s")
    healthy_since = observed.health.healthy_since
    healthy_whole_wait = observed.health.fresh and (healthy_since is None or healthy_since <= started)
    promote = observed.commands.get(PROMOTE_ANNOTATION)
    promoted_by_hand = bool(promote) and promote != (st.commands.promote if st.commands else None)

    if elapsed >= max_wait and not promoted_by_hand and observed.health.undecided_reason:
        # "No data" is never a pass: past the maximum, wait for a round that can judge.
        st.message = f"{label}: held, cannot decide on {observed.health.undecided_reason}"
        work.check_at(work.now + CLUSTER_TICK)
        return
    if promoted_by_hand or elapsed >= max_wait or (elapsed >= min_wait and healthy_whole_wait):
        if promoted_by_hand:
            assert st.commands is not None
            st.commands.promote = promote
            work.event("Promoted", f"{label}: wait ended by {PROMOTE_ANNOTATION}")
        _advance(work, observed)
        return
    until = started + (min_wait if healthy_whole_wait else max_wait)
    st.message = f"{label}: watching until {timestamp(until)}"
    work.check_at(until)


def _stage_ready(work: _Work, observed: Observed, weight: int, revision: str) -> bool:
    if weight == 100:
        return _promoted(work.status, observed)
    want = work.intent.canary_replicas if work.intent else 0
    canary = observed.canary
    return canary is not None and canary.revision == revision and canary.ready >= want


def _advance(work: _Work, observed: Observed) -> None:
    st = work.status
    assert st.plan is not None and st.stage_index is not None and st.release is not None
    following = st.stage_index + 1
    if following < len(st.plan) and not _may_progress(work, observed):
        _say_waiting(work, observed, f"stage {st.stage} done; the next waits for the release window")
        return
    if following < len(st.plan):
        _enter_stage(work, following)
        stage = st.plan[following]
        reason = (
            "Promoting" if stage.weight == 100 and st.plan[following - 1].weight < 100 else "StageAdvanced"
        )
        st.message = f"stage {st.stage} ({stage.name}) at {stage.weight}%"
        work.event(reason, st.message)
        work.intent = _stage_intent(st, observed, observed.target.revision)
        work.check_at(work.now)
        return
    revision = st.release.revision
    st.release = st.release.model_copy(
        update={"stable_revision": revision, "stable_images": st.release.images}
    )
    # The configuration this release ran with is now the one known to be good.
    st.config_snapshots = None
    st.phase = Phase.healthy
    st.message = f"revision {revision} released"
    work.intent = WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=None)
    work.event("ReleaseCompleted", st.message)


def _stale_promote_is_dropped(work: _Work, observed: Observed) -> None:
    """A promote given when nothing is waiting must not skip a later release's wait."""
    st = work.status
    promote = observed.commands.get(PROMOTE_ANNOTATION)
    if promote and st.commands is not None and st.phase not in (Phase.progressing, Phase.paused):
        st.commands.promote = promote


# ---------------------------------------------------------------------------- conditions


def _conditions(st: RolloutStatus, now: datetime, generation: int | None) -> list[Condition]:
    phase = st.phase
    message = st.message or ""
    table = [
        (conditions.READY, phase == Phase.healthy, str(phase)),
        (conditions.PROGRESSING, phase == Phase.progressing, str(phase)),
        (conditions.DEGRADED, phase in (*STOPPED, Phase.rolling_back), str(phase)),
        (conditions.STALLED, phase in STOPPED, str(phase)),
        (conditions.PAUSED, phase == Phase.paused, "PausedBySpec" if phase == Phase.paused else str(phase)),
        (conditions.INVALID, False, "SpecValid"),
    ]
    out: list[Condition] = list(st.conditions or [])
    for type_, on, reason in table:
        out = conditions.set_condition(
            out,
            type_=type_,
            status=ConditionStatus.true if on else ConditionStatus.false,
            reason=reason,
            message=message if on else "",
            now=now,
            generation=generation,
        )
    return out


# ---------------------------------------------------------------------------- recovery


def analysing(st: RolloutStatus, now: datetime) -> bool:
    """Whether metrics are evaluated in this state: during a release, during the flag and config
    levels (traffic is where it was), and while watching after a rollback (what serves now)."""
    incident = recovery.current_incident(st.incidents)
    if st.phase in (Phase.progressing, Phase.paused):
        return True
    if st.phase == Phase.rolling_back:
        return incident is not None and incident.level != RecoveryLevel.code  # the canary is gone
    if st.phase == Phase.rolled_back and incident is not None and incident.watch_until:
        return now < _at(incident.watch_until)
    return False


def _watch_after_rollback(work: _Work, observed: Observed) -> None:
    """A failure while watching after a rollback means the release was not the only cause."""
    incident = recovery.current_incident(work.status.incidents)
    if incident is None or not observed.health.failed or incident.regressed_at is not None:
        return
    incident.regressed_at = timestamp(work.now)
    incident.regression = observed.health.reason or "health check failed"
    work.event(
        "RegressedAfterRollback",
        f"after rolling back revision {incident.revision}, what serves now fails too: {incident.regression}",
        warning=True,
    )


def _begin_recovery(work: _Work, spec: RolloutSpec, observed: Observed, label: str) -> None:
    """A verdict demands a rollback: open an incident and start at the lowest level there is."""
    st = work.status
    assert st.release is not None and st.release.revision is not None
    metrics = st.metrics or []
    started = recovery.first_critical(metrics, work.now)
    immediate = recovery.is_immediate(metrics)
    stage = st.plan[st.stage_index] if st.plan and st.stage_index is not None else None
    revision, stable = st.release.revision, st.release.stable_revision
    settings = spec.recovery or Recovery()
    images = ", ".join(st.release.stable_images or []) or "unknown images"
    incident = Incident(
        id=recovery.incident_id(revision, started),
        revision=revision,
        stable_revision=stable,
        reason=f"{label}: {observed.health.reason or 'health check failed'}",
        started_at=timestamp(started),
        immediate=immediate,
        new_code_in_target=stage is not None and stage.weight == 100,
        levels=[],
        postmortem_due_at=timestamp(started + parse_duration(settings.postmortem_due)),
        revert_in_git=None if settings.restore_template else f"revision {stable} ({images})",
    )
    st.incidents = [*(st.incidents or [])[-(recovery.INCIDENTS_KEPT - 1) :], incident]
    st.blocked_revisions = sorted({*(st.blocked_revisions or []), revision})
    st.phase, st.paused_at = Phase.rolling_back, None
    work.event("RollingBack", f"{incident.reason}; rolling back revision {revision}", warning=True)
    _enter_level(work, spec, recovery.levels_for(spec)[0])
    _recover(work, spec, observed)


def _enter_level(work: _Work, spec: RolloutSpec, level: RecoveryLevel) -> None:
    incident = _incident(work)
    budget = recovery.budget_for(spec, level, incident.immediate)
    record = LevelRecord(
        level=level, started_at=timestamp(work.now), budget=format_duration(budget),
        changed=_level_changes(work, spec, level),
    )  # fmt: skip
    incident.levels = [*(incident.levels or []), record]
    incident.level = level


def _incident(work: _Work) -> Incident:
    incident = recovery.current_incident(work.status.incidents)
    assert incident is not None
    return incident


def _level_changes(work: _Work, spec: RolloutSpec, level: RecoveryLevel) -> list[str]:
    st = work.status
    if level == RecoveryLevel.flag:
        flags = spec.feature_flags
        assert flags is not None
        store = flags.config_map_ref or flags.feature_flag_ref
        kind = "ConfigMap" if flags.config_map_ref else "FeatureFlag"
        out = [
            f"flags {', '.join(flags.flags)} off in {kind} {store.name if store else ''} (before: a snapshot copy)"
        ]
        if not flags.reloads:
            out.append("pods that read the flags restarted")
        return out
    if level == RecoveryLevel.config:
        names = [s.name for s in st.config_snapshots or []]
        missing = [r.name for r in spec.config_refs or [] if r.name not in names]
        out = [f"ConfigMap {s.name} restored to snapshot {s.snapshot}" for s in st.config_snapshots or []]
        out += [f"ConfigMap {name}: no snapshot to restore" for name in missing]
        return [*out, "pods that use them restarted"]
    incident = _incident(work)
    out = ["canary scaled to 0; all traffic on stable"]
    if incident.new_code_in_target:
        settings = spec.recovery or Recovery()
        out.append(
            f"target's pod template restored to revision {incident.stable_revision}"
            if settings.restore_template
            else f"target runs the new code: revert it in git to {incident.revert_in_git}"
        )
    return out


def _recover(work: _Work, spec: RolloutSpec, observed: Observed) -> None:
    """One step of the current level: apply it, judge it, and escalate when its budget is spent."""
    st = work.status
    incident = _incident(work)
    assert incident.levels and st.release is not None
    record = incident.levels[-1]
    level = record.level
    stamp = _restart_stamp(spec, incident)
    work.recovery = _recovery_intent(spec, st, incident, stamp)
    work.intent = _recovery_workload(work, observed, incident)
    started = _at(record.started_at)
    deadline = started + recovery.budget_for(spec, level, incident.immediate)

    problem = _cannot_apply(st, observed, level)
    if problem:
        if problem not in (record.changed or []):
            record.changed = [*(record.changed or []), problem]
        _escalate(work, spec, observed, problem)
        return
    if record.applied_at is None and _applied(work, observed, incident, stamp):
        record.applied_at = timestamp(work.now)
        work.event("RecoveryApplied", f"level {level}: {'; '.join(record.changed or [])}")
    healthy = _health_back(spec, st, record)
    if healthy is not None:
        _recovered(work, spec, incident, record, healthy)
        return
    if work.now >= deadline:
        _escalate(work, spec, observed, f"health did not return within {record.budget}")
        return
    if level == RecoveryLevel.code:
        st.canary_weight = 0
    waiting_for = "its change to be in place" if record.applied_at is None else "health to return"
    st.message = f"rolling back revision {incident.revision}: level {level} waits for {waiting_for} (budget until {timestamp(deadline)})"
    work.check_at(min(deadline, work.now + CLUSTER_TICK))


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
    spec: RolloutSpec, st: RolloutStatus, incident: Incident, stamp: str | None
) -> RecoveryIntent:
    used = {r.level for r in incident.levels or []}
    settings = spec.recovery or Recovery()
    code = RecoveryLevel.code in used
    return RecoveryIntent(
        flags_off=RecoveryLevel.flag in used,
        restore_configs=tuple((s.name, s.snapshot) for s in st.config_snapshots or [])
        if RecoveryLevel.config in used
        else (),
        restart_stamp=None if code else stamp,
        restart_target=incident.new_code_in_target and not code,
        restore_template=template_revision(incident.stable_revision)
        if code and settings.restore_template and incident.new_code_in_target and incident.stable_revision
        else None,
    )


def _recovery_workload(work: _Work, observed: Observed, incident: Incident) -> WorkloadIntent:
    st = work.status
    assert st.release is not None and incident.levels
    level = incident.levels[-1].level
    if level == RecoveryLevel.code:
        restoring = work.recovery.restore_template is not None
        stable_template = _same_template(observed.target.revision, incident.stable_revision)
        # A paused Deployment does not roll: once its template is stable again (restored here,
        # or reverted in git) it is let go until the stable pods are back, then held again.
        back = stable_template and observed.target.rolled_out
        rolling = incident.new_code_in_target and (restoring or stable_template)
        return WorkloadIntent(target_paused=back or not rolling, canary_replicas=0, canary_revision=None)
    # Flag and config levels keep the traffic where it is: health is judged on the same split.
    stage_intent = _stage_intent(st, observed, st.release.revision or observed.target.revision)
    restarting_target = work.recovery.restart_target and work.recovery.restart_stamp is not None
    if restarting_target and observed.recovery.restarted_at != work.recovery.restart_stamp:
        return WorkloadIntent(False, stage_intent.canary_replicas, stage_intent.canary_revision)
    return stage_intent


def _cannot_apply(st: RolloutStatus, observed: Observed, level: RecoveryLevel) -> str:
    if level == RecoveryLevel.flag and observed.recovery.flags_problem:
        return observed.recovery.flags_problem
    if level == RecoveryLevel.config and not st.config_snapshots:
        return "no configuration snapshot was taken before the release"
    return ""


def _applied(work: _Work, observed: Observed, incident: Incident, stamp: str | None) -> bool:
    st = work.status
    restarted = stamp is None or observed.recovery.restarted_at == stamp
    level = (incident.levels or [])[-1].level
    if level == RecoveryLevel.flag:
        return observed.recovery.flags_off is True and restarted
    if level == RecoveryLevel.config:
        hashes = observed.recovery.config_hashes
        return all(hashes.get(s.name) == s.hash for s in st.config_snapshots or []) and restarted
    canary_gone = observed.canary is None or (observed.canary.replicas == 0 and observed.canary.ready == 0)
    target_back = not incident.new_code_in_target or (
        _same_template(observed.target.revision, incident.stable_revision) and observed.target.rolled_out
    )
    return canary_gone and target_back


def _health_back(spec: RolloutSpec, st: RolloutStatus, record: LevelRecord) -> datetime | None:
    if record.applied_at is None:
        return None
    applied = _at(record.applied_at)
    if record.level == RecoveryLevel.code or spec.analysis is None:
        return applied  # the stable version serves everything: it was healthy before the release
    window = parse_duration(spec.analysis.interval)
    return recovery.health_returned(st.metrics or [], applied + window)


def _escalate(work: _Work, spec: RolloutSpec, observed: Observed, why: str) -> None:
    st = work.status
    incident = _incident(work)
    record = (incident.levels or [])[-1]
    following = recovery.next_level(spec, record.level)
    if following is None:
        st.message = (
            f"rolling back revision {incident.revision}: the code level has not finished ({why}); "
            f"{'; '.join(record.changed or [])}"
        )
        if record.seconds is None:
            record.seconds = recovery.seconds(_at(record.started_at), work.now)
            work.event("RecoveryStalled", st.message, warning=True)
        work.check_at(work.now + CLUSTER_TICK)
        return
    record.seconds = recovery.seconds(_at(record.started_at), work.now)
    work.event("RecoveryEscalated", f"level {record.level}: {why}; moving to level {following}", warning=True)
    _enter_level(work, spec, following)
    _recover(work, spec, observed)


def _recovered(
    work: _Work, spec: RolloutSpec, incident: Incident, record: LevelRecord, healthy: datetime
) -> None:
    st = work.status
    settings = spec.recovery or Recovery()
    record.healthy_at = timestamp(healthy)
    record.seconds = recovery.seconds(_at(record.started_at), healthy)
    took = recovery.seconds(_at(incident.started_at), healthy)
    incident.recovered_at = timestamp(healthy)
    incident.recovery_seconds = took
    incident.objective_met = took <= parse_duration(settings.objective).total_seconds()
    incident.watch_until = timestamp(healthy + parse_duration(settings.watch_after_rollback))
    assert st.release is not None
    st.phase, st.canary_weight = Phase.rolled_back, 0
    st.message = (
        f"recovered by the {record.level} level in {took:g}s; all traffic on stable revision "
        f"{st.release.stable_revision}; revision {incident.revision} is blocked until "
        f"{RESOLVED_ANNOTATION}={incident.revision}"
    )
    work.intent = WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=None)
    work.event("RolledBack", st.message, warning=True)
    if not incident.objective_met:
        work.event(
            "RecoveryObjectiveMissed",
            f"recovery took {took:g}s, over the {settings.objective} objective",
            warning=True,
        )


def _snapshot_configs(work: _Work, spec: RolloutSpec, observed: Observed) -> None:
    """Copy tracked ConfigMaps while the Rollout is Healthy: the configuration known to be good.

    Taken on adoption and after each completed release, never during one: a snapshot taken
    after a bad change would restore the bad change.
    """
    st = work.status
    if st.phase != Phase.healthy:
        return
    have = {s.name: s for s in st.config_snapshots or []}
    hashes = observed.recovery.config_hashes
    kept = [have[r.name] for r in spec.config_refs or [] if r.name in have]
    for ref in spec.config_refs or []:
        if ref.name in have or ref.name not in hashes:
            continue
        digest = hashes[ref.name]
        kept.append(
            ConfigSnapshot(name=ref.name, snapshot=recovery.snapshot_name(ref.name, digest), hash=digest)
        )
        work.snapshots.append((ref.name, digest))
    st.config_snapshots = kept or None


def _same_template(revision: str, other: str | None) -> bool:
    return other is not None and template_revision(revision) == template_revision(other)


def _at(text: str) -> datetime:
    moment = parse_time(text)
    assert moment is not None
    return moment
