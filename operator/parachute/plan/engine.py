"""The release state machine: `decide(spec, status, observed, now) -> Decision`.

Pure and level-triggered: given what the status says and what the cluster looks like, it
says what the status and the workload should be now. It never sleeps; waits are timestamps
in status, compared with `now`. Running it twice on the same input gives the same answer,
and running it after a restart resumes where the status says the release was.

A decision has three steps. `normalise` brings the status up to date (the template, the
commands, the window, the pause). The handler of the phase that leaves decides, and returns
its status, intents, Events and next check (`plan.tick.Outcome`): `plan.progress` for
Progressing and Paused, `plan.rollback` for RollingBack and RolledBack, and `_at_rest` here for
the phases with no canary. The finish routes the traffic (`plan.traffic`) and writes what every
phase reports: gates, window, conditions, snapshots. How a stage exposes the new version is the
strategy's (`plan.strategies`).

Phases: Healthy (nothing to release, or released) → Progressing (stage by stage) → Healthy,
with Paused (spec.paused), Aborted (by a person or a deadline), and RollingBack → RolledBack
(by health, level by level) on the way. A new pod template starts a release; another one
during it supersedes it. A rolled-back revision stays blocked until someone marks its root
cause fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from parachute import conditions
from parachute.api import (
    PROMOTE_ANNOTATION,
    Condition,
    ConditionStatus,
    ConfigSnapshot,
    GateStatus,
    Phase,
    PlannedStage,
    RecoveryLevel,
    RolloutSpec,
    RolloutStatus,
    WindowStatus,
)
from parachute.conditions import timestamp
from parachute.plan import progress, rollback
from parachute.plan.facts import parse_time
from parachute.plan.model import Decision, Observed, WorkloadIntent
from parachute.plan.normalise import normalise
from parachute.plan.strategies import strategy_for
from parachute.plan.tick import AT_REST, CLUSTER_TICK, STOPPED, WATCHED, Log, Outcome, Tick, tick_for
from parachute.plan.traffic import route

__all__ = ["analysing", "decide", "judges_target", "note_reach", "parse_time", "stages_for"]


def stages_for(spec: RolloutSpec) -> list[PlannedStage]:
    """The stages a release of this Rollout goes through, as its strategy plans them."""
    return strategy_for(spec).plan(spec)


def decide(
    spec: RolloutSpec, status: RolloutStatus, observed: Observed, now: datetime, generation: int | None = None
) -> Decision:
    tick = tick_for(spec, observed, now, strategy_for(spec))
    st, before = normalise(tick, status, generation)
    handler = _HANDLERS.get(st.phase, _at_rest) if st.phase is not None else _at_rest
    return _finish(tick, before, handler(tick, st), generation)


def note_reach(spec: RolloutSpec, status: RolloutStatus, observed: Observed, now: datetime) -> RolloutStatus:
    """The status with the current stage's reach stamped, if this look is the first to find it
    in place: asked before an analysis round, so that the round due at the reach runs in the
    look that finds it (`decide` stamps it too, for a look without analysis)."""
    if status.phase != Phase.progressing or status.stage_reached_at is not None:
        return status
    tick = tick_for(spec, observed, now, strategy_for(spec))
    if not progress.reached(tick, status):
        return status
    plan, index = status.plan or [], status.stage_index
    if index is None or index >= len(plan):  # a plan the decision will make anew: it stamps then
        return status
    stamped = status.model_copy(deep=True)
    progress.mark_reached(tick, stamped, progress.stage_label_of(stamped))
    return stamped


def _at_rest(tick: Tick, st: RolloutStatus) -> Outcome:
    """Healthy, Aborted, Waiting: no canary; the target is held."""
    log = Log()
    if st.phase in STOPPED:
        st.canary_weight = 0
    if st.phase == Phase.waiting and rollback.watching(st, tick.now):
        rollback.watch_after_rollback(tick, st, log)
    return log.outcome(st, AT_REST)


_HANDLERS: dict[Phase, Callable[[Tick, RolloutStatus], Outcome]] = {
    Phase.progressing: progress.progressing,
    Phase.paused: progress.paused,
    Phase.rolling_back: rollback.rolling_back,
    Phase.rolled_back: rollback.rolled_back,
}


def _finish(tick: Tick, before: Log, out: Outcome, generation: int | None) -> Decision:
    """What every phase reports, whatever its handler decided: the route, gates, window,
    conditions and snapshots; and the Decision, with the earliest due time of all steps."""
    spec, observed, now = tick.spec, tick.observed, tick.now
    st, log = out.status, Log()
    if not analysing(st, now):
        st.next_analysis_at = None  # nothing is measured in this phase: no round is due
    elif (
        spec.analysis is not None and st.phase in WATCHED and (parse_time(st.next_analysis_at) or now) <= now
    ):
        log.check_at(now)  # the watch after a rollback starts with a round now
    workload = _let_go_only_on_a_current_status(tick, log, out.workload)
    workload, traffic = route(tick, st, log, workload, out.traffic)
    _stale_promote_is_dropped(tick, st)
    if observed.gates:
        checked = timestamp(now)
        st.gates = [
            GateStatus(name=n, met=m, message=msg, checked_at=checked) for n, m, msg in observed.gates
        ]
    window = observed.window
    st.window = WindowStatus(
        policy=window.policy, open=window.open, reason=window.reason or None,
        next_open_at=timestamp(window.next_open) if window.next_open else None,
    )  # fmt: skip
    st.conditions = _conditions(st, now, generation)
    snapshots = _snapshot_configs(tick, st)
    due = [moment for moment in (before.next_check, out.next_check, log.next_check) if moment is not None]
    next_check = min(due, default=None)
    st.next_check_at = timestamp(next_check) if next_check else None
    return Decision(st, workload, (*before.events, *out.events, *log.events), next_check, out.recovery,
                    snapshots, out.flags, traffic)  # fmt: skip


def _let_go_only_on_a_current_status(tick: Tick, log: Log, workload: WorkloadIntent) -> WorkloadIntent:
    """A paused target is let go (unpaused) only on a status that describes its latest spec: a
    status behind it (the Deployment controller has not seen a pause or a template written just
    now) cannot tell that the target has not rolled out already. Held, it is looked at again
    soon: the controller's word that it has seen the spec changes no count, so it wakes
    nothing (`desired_workload.as_news`). Holding is always safe."""
    target = tick.observed.target
    if workload.target_paused or not target.paused or target.status_current:
        return workload
    log.check_at(tick.now + CLUSTER_TICK)
    return replace(workload, target_paused=True, target_restart=None)


def _stale_promote_is_dropped(tick: Tick, st: RolloutStatus) -> None:
    """A promote given when nothing is waiting must not skip a later release's wait."""
    promote = tick.observed.commands.get(PROMOTE_ANNOTATION)
    if promote and st.commands is not None and st.phase not in (Phase.progressing, Phase.paused):
        st.commands.promote = promote


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


def _snapshot_configs(tick: Tick, st: RolloutStatus) -> tuple[tuple[str, str], ...]:
    """Copy tracked ConfigMaps while the Rollout is Healthy: the configuration known to be good.

    Taken on adoption and after each completed release, never during one: a snapshot taken
    after a bad change would restore the bad change.
    """
    spec, observed = tick.spec, tick.observed
    if st.phase != Phase.healthy:
        return ()
    taken: list[tuple[str, str]] = []
    have = {s.name: s for s in st.config_snapshots or []}
    hashes = observed.recovery.config_hashes
    kept = [have[r.name] for r in spec.config_refs or [] if r.name in have]
    for ref in spec.config_refs or []:
        if ref.name in have or ref.name not in hashes:
            continue
        digest = hashes[ref.name]
        kept.append(
            ConfigSnapshot(name=ref.name, snapshot=rollback.snapshot_name(ref.name, digest), hash=digest)
        )
        taken.append((ref.name, digest))
    st.config_snapshots = kept or None
    return tuple(taken)


# ---------------------------------------------------------------------------- what analysis reads


def analysing(st: RolloutStatus, now: datetime) -> bool:
    """Whether metrics are evaluated in this state: during a release, at every rollback level
    (the flag and config levels on the same split, the code level on what serves once the
    canary is gone), and while watching after a rollback (what serves now)."""
    if st.phase in (Phase.progressing, Phase.paused, Phase.rolling_back):
        return True
    return st.phase in WATCHED and rollback.watching(st, now)


def judges_target(st: RolloutStatus, observed: Observed) -> bool:
    """Whether analysis judges the target's pods (the stable label) rather than the canary's: at
    a 100% stage once the target has rolled, at the code level, and while watching after."""
    if st.phase in WATCHED:
        return True
    incident = rollback.current_incident(st.incidents)
    if st.phase == Phase.rolling_back and incident is not None and incident.level == RecoveryLevel.code:
        return True
    plan, index = st.plan or [], st.stage_index
    stage = plan[index] if index is not None and index < len(plan) else None
    return stage is not None and stage.weight == 100 and observed.target.rolled_out
