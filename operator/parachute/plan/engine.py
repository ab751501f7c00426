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

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from parachute import conditions
from parachute.api import (
    ABORT_ANNOTATION,
    DEFAULT_SCALE_DOWN_DELAY,
    PROMOTE_ANNOTATION,
    RESOLVED_ANNOTATION,
    RETRY_ANNOTATION,
    CanaryScale,
    Condition,
    ConditionStatus,
    ConfigSnapshot,
    FlagsStatus,
    FlagState,
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
    TrafficStatus,
    WindowStatus,
    format_duration,
    parse_duration,
)
from parachute.conditions import timestamp
from parachute.plan import recovery
from parachute.plan.model import (
    Decision,
    Event,
    EventType,
    Observed,
    RecoveryIntent,
    TrafficIntent,
    WorkloadIntent,
)
from parachute.plan.stages import effective_risk, flag_gated_plan, plan_for
from parachute.plan.workload import canary_replicas, routed_canary_replicas, template_revision

# How soon to look again while waiting for the cluster (pods becoming ready, a rollout).
CLUSTER_TICK = timedelta(seconds=2)
# How often unmet gates are checked again (a new annotation wakes the Rollout at once anyway).
GATE_RECHECK = timedelta(seconds=10)
ACTIVE = (Phase.progressing, Phase.paused, Phase.waiting)
STOPPED = (Phase.aborted, Phase.rolled_back)
# Phases in which what serves is watched after a rollback: no canary, the target held.
WATCHED = (Phase.rolled_back, Phase.waiting)


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
    flags: FlagState | None = None  # the state the release's flags must be put in now
    router: str | None = None  # the traffic router in use; None: replica ratio
    full_canary: bool = False  # with a router: the canary at the target's size (canaryScale full)
    traffic: TrafficIntent | None = None  # with a router: what its backend should hold now
    drain: timedelta = timedelta(0)  # with a router: how long a canary sent nothing keeps its pods

    @property
    def routed(self) -> bool:
        return self.router is not None

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event(EventType.warning if warning else EventType.normal, reason, message))

    def check_at(self, moment: datetime) -> None:
        if self.next_check_at is None or moment < self.next_check_at:
            self.next_check_at = moment


def decide(
    spec: RolloutSpec, status: RolloutStatus, observed: Observed, now: datetime, generation: int | None = None
) -> Decision:
    work = _Work(status.model_copy(deep=True), now)
    _choose_router(work, spec)
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
        work.intent = _stage_intent(work, observed, revision)
    elif st.phase == Phase.rolling_back:
        _recover(work, spec, observed)
    elif st.phase == Phase.rolled_back:
        _rolled_back(work, spec, observed)
    else:  # Healthy, Aborted, Waiting: no canary; the target is held
        work.intent = WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=None)
        if st.phase in STOPPED:
            st.canary_weight = 0
        if st.phase == Phase.waiting and _watching(st, now):
            _watch_after_rollback(work, observed)
    _let_go_only_on_a_current_status(work, observed)
    if not analysing(st, now):
        st.next_analysis_at = None  # nothing is measured in this phase: no round is due
    elif spec.analysis is not None and st.phase in WATCHED and st.next_analysis_at is None:
        work.check_at(now)  # the watch after a rollback starts with a round now

    _route(work, observed)
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
                    tuple(work.snapshots), work.flags, work.traffic)  # fmt: skip


def _choose_router(work: _Work, spec: RolloutSpec) -> None:
    routing = spec.traffic_routing
    if routing is not None and routing.router() is not None:
        work.router, work.full_canary = routing.router(), routing.canary_scale == CanaryScale.full
        delay = routing.scale_down_delay
        work.drain = parse_duration(delay) if delay else DEFAULT_SCALE_DOWN_DELAY


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
    if (
        target.revision == release.stable_revision
        and st.phase == Phase.rolled_back
        and _watching(st, work.now)
    ):
        # Back at stable (restored, or reverted in git): the rolled-back state, its watch and its
        # latch stay in view until the watch ends.
        st.release = ReleaseStatus(stable_revision=release.stable_revision, revision=target.revision,
                                   stable_images=release.stable_images)  # fmt: skip
        work.event("RevertedToStable", f"template is back at the stable revision {target.revision}; "
                   f"what serves is watched until {_incident(work).watch_until}")  # fmt: skip
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
        change_ticket=observed.change_ticket or None,
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
        work.event("ReleaseStarted", f"releasing revision {target.revision} over {release.stable_revision}"
                   f"{_ticket_note(st)}")  # fmt: skip


def _ticket_note(st: RolloutStatus) -> str:
    ticket = st.release.change_ticket if st.release else None
    return f" (change ticket {ticket})" if ticket else ""


def _may_progress(work: _Work, observed: Observed) -> bool:
    return observed.window.open or observed.hotfix


def _unmet_gates(observed: Observed) -> str:
    return "; ".join(f"gate {name}: {message}" for name, met, message in observed.gates if not met)


def _blocked(work: _Work) -> bool:
    st = work.status
    return st.release is not None and st.release.revision in (st.blocked_revisions or [])


def _may_start(work: _Work, observed: Observed) -> bool:
    return (
        _may_progress(work, observed)
        and not _unmet_gates(observed)
        and not _blocked(work)
        and not observed.metrics_missing
    )


def _say_why_waiting(work: _Work, observed: Observed, what: str) -> None:
    if _blocked(work):
        revision = work.status.release.revision if work.status.release else ""
        work.status.message = (
            f"{what} was rolled back and is blocked until its root cause is marked fixed: "
            f"set {RESOLVED_ANNOTATION}={revision}"
        )
    elif not _may_progress(work, observed):
        _say_waiting(work, observed, f"{what} waits for the release window")
    elif observed.metrics_missing:
        # Its first stage would only ever read "no data": wait until the series exist.
        work.status.message = f"{what} waits for its metrics (MetricsAvailable): {observed.metrics_missing}"
        work.check_at(work.now + GATE_RECHECK)
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
    if st.release is not None:  # the ticket may have come while the release waited (a gate asks for it)
        st.release.change_ticket = observed.change_ticket or None
    _start(work)
    _announce_hotfix(work, observed)
    work.event(
        "ReleaseStarted",
        f"window open, gates met; releasing revision {st.release.revision if st.release else ''}"
        f"{_ticket_note(st)}",
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
    elif (
        incident is not None
        and incident.recovered_at is not None
        and (
            (st.release.revision == incident.revision and not incident.resolved)
            or (st.release.revision == st.release.stable_revision and _watching(st, work.now))
        )
    ):
        st.phase = Phase.rolled_back  # never released again by way of a bad spec
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
    wanted = st.plan[index].flags
    if wanted is not None:  # each stage that names a state puts it in place anew
        _ask_flags(work, wanted, _stage_label(st, st.plan[index]))


def _stage_label(st: RolloutStatus, stage: PlannedStage) -> str:
    return f"stage {st.stage} ({stage.name})"


def _apply_commands(work: _Work, spec: RolloutSpec, observed: Observed) -> None:
    st = work.status
    assert st.commands is not None and st.release is not None
    abort = observed.commands.get(ABORT_ANNOTATION)
    if abort and abort != st.commands.abort:
        st.commands.abort = abort
        if st.phase in ACTIVE:
            _stop(work, observed, Phase.aborted, "Aborted", f"aborted by {ABORT_ANNOTATION}")
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


def _stop(work: _Work, observed: Observed, phase: Phase, reason: str, why: str) -> None:
    st = work.status
    assert st.release is not None and st.release.revision is not None
    st.phase = phase
    st.paused_at = None
    st.canary_weight = 0
    revision, stable = st.release.revision, st.release.stable_revision
    in_target = _new_in_target(observed, revision, stable)
    where = (
        f"revision {revision} still serves from the target ({recovery.ready_pods(in_target)})"
        if in_target
        else f"all traffic {'going ' if work.routed and _applied(observed) != 0 else ''}back to stable "
        f"revision {stable}"
    )
    st.message = f"{why}; {where}; set {RETRY_ANNOTATION} to start again, or apply a new template"
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


def _stage_intent(work: _Work, observed: Observed, revision: str) -> WorkloadIntent:
    """The workload of the current stage: the canary sized to its weight, the target held; with
    a router, also what its backend should hold (`work.traffic`)."""
    st = work.status
    assert st.plan is not None and st.stage_index is not None
    stage = st.plan[min(st.stage_index, len(st.plan) - 1)]
    if work.routed:
        return _routed_stage_intent(work, observed, stage.weight, revision)
    if stage.weight == 100:
        done = _promoted(st, observed)
        # A canary that runs it keeps its capacity while the target rolls; none is made anew.
        canary = observed.canary
        running = canary is not None and canary.revision == revision and canary.replicas > 0
        keep = _previous_canary(st, observed) if running else 0
        return WorkloadIntent(target_paused=done, canary_replicas=0 if done else keep, canary_revision=revision,
                              target_restart=_promotion_restart(st))  # fmt: skip
    # The target's own pods already serve it (a retry after promotion, a plan that went to 100%
    # earlier): a canary of it beside them would only add pods, not a share.
    beside = (
        0 if _target_runs(st, observed, revision) else canary_replicas(observed.target.replicas, stage.weight)
    )
    return WorkloadIntent(target_paused=True, canary_replicas=beside, canary_revision=revision)


def _routed_stage_intent(work: _Work, observed: Observed, weight: int, revision: str) -> WorkloadIntent:
    """A stage with a router: capacity apart from traffic. The canary is sized for its share (or
    full), and the route moves only once its pods are ready. At 100% the canary takes all the
    traffic at full size, then the target is let go to roll; once it has, the stable backend
    follows it and the route goes back to stable, and the canary is retired after that."""
    st = work.status
    applied = _applied(observed)
    canary = observed.canary
    runs = canary is not None and canary.revision == revision
    restart = _promotion_restart(st)
    if weight == 100:
        if _promoted(st, observed):
            work.traffic = TrafficIntent(share=0)
            return WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=revision,
                                  target_restart=restart)  # fmt: skip
        full = max(1, observed.target.replicas)
        ready = runs and canary is not None and canary.ready >= full
        work.traffic = TrafficIntent(share=100, open=ready, held=_held(observed, runs, revision, 100))
        return WorkloadIntent(target_paused=applied != 100, canary_replicas=full, canary_revision=revision,
                              target_restart=restart)  # fmt: skip
    want = 0 if _target_runs(st, observed, revision) else (
        routed_canary_replicas(observed.target.replicas, weight, work.full_canary)
    )  # fmt: skip
    if want == 0:
        work.traffic = TrafficIntent(share=0)
        return WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=revision)
    ready = runs and canary is not None and canary.ready >= want
    work.traffic = TrafficIntent(share=weight, open=ready, held=_held(observed, runs, revision, weight))
    return WorkloadIntent(target_paused=True, canary_replicas=want, canary_revision=revision)


def _held(observed: Observed, runs: bool, revision: str, share: int) -> int:
    """While the canary's pods for a share are not all ready: what the route keeps. Never more than
    it holds or than the share, and nothing for a canary with no ready pod of this release.

    Ready pods are counted from the canary's ReplicaSets too: a canary Deployment just scaled up
    reads 0 ready until its controller observes the new size, while its pods go on serving."""
    canary = observed.canary
    if not runs or canary is None:
        return 0
    if max(canary.ready, observed.serving.canary.get(template_revision(revision), 0)) == 0:
        return 0
    return min(_applied(observed) or 0, share)


def _applied(observed: Observed) -> int | None:
    """The canary's share the router read back; None when it could not."""
    return observed.traffic.applied.weight if observed.traffic is not None else None


def _traffic_back(work: _Work, observed: Observed) -> bool:
    """All traffic is on stable, as seen: the route at 0% for the canary (or no route left to
    read), or with replica ratio no canary pod ready."""
    if work.routed:
        traffic = observed.traffic
        return _applied(observed) == 0 or (traffic is not None and bool(traffic.broken))
    canary = observed.canary
    return observed.serving.in_canary() == 0 and (canary is None or canary.ready == 0)


def _stable_set(observed: Observed, stable: str | None) -> str | None:
    """The pod-template-hash the stable backend selects: the target's ReplicaSet with the most
    ready pods (the stable revision's on a tie). It follows the target as it rolls."""
    sets = observed.serving.target_sets
    if not sets:
        return None
    stable_template = template_revision(stable) if stable else None
    return max(sets, key=lambda h: (sets[h][1], sets[h][0] == stable_template, h))


def _route(work: _Work, observed: Observed) -> None:
    """What the router's backend should hold now, and what status says of it. Traffic moves
    first and capacity follows: a canary the plan retires or replaces keeps its pods until the
    route is seen sending it nothing, and for scaleDownDelay after (a proxy applies a route
    later than it reads back, and requests in flight finish)."""
    st = work.status
    if not work.routed:
        st.traffic = None
        return
    draining_before = parse_time(st.traffic.draining_since) if st.traffic is not None else None
    assert work.intent is not None
    stable = st.release.stable_revision if st.release else None
    incident = recovery.current_incident(st.incidents)
    # A stage's share holds while it runs, and through the flag and config levels of a
    # rollback (judged on the same split); everywhere else the canary gets nothing.
    keeps_stage = st.phase in (Phase.progressing, Phase.paused) or (
        st.phase == Phase.rolling_back and incident is not None and incident.level != RecoveryLevel.code
    )
    traffic = work.traffic if keeps_stage and work.traffic is not None else TrafficIntent(share=0)
    work.traffic = replace(traffic, stable=_stable_set(observed, stable))
    canary = observed.canary
    shrinks = canary is not None and canary.replicas > 0 and (
        work.intent.canary_replicas < canary.replicas or work.intent.canary_revision != canary.revision
    )  # fmt: skip
    draining: datetime | None = None
    if shrinks and canary is not None and work.traffic.weight == 0:
        keep = not _traffic_back(work, observed)
        if keep:
            work.check_at(work.now + CLUSTER_TICK)
        else:
            draining = draining_before or work.now
            keep = work.now < draining + work.drain
            if keep:
                work.check_at(draining + work.drain)
        if keep:
            work.intent = replace(
                work.intent, canary_replicas=canary.replicas, canary_revision=canary.revision
            )
    applied = observed.traffic.applied if observed.traffic is not None else None
    if applied is not None and applied.weight != work.traffic.weight:
        work.check_at(work.now + CLUSTER_TICK)  # read the route back soon
    why = (observed.traffic.broken if observed.traffic is not None else "") or (
        applied.unverified if applied is not None else "not read yet"
    )
    st.traffic = TrafficStatus(
        router=str(work.router), desired=work.traffic.weight,
        applied=applied.weight if applied is not None else None,
        verified=applied is not None and applied.weight is not None,
        message=why or None, draining_since=timestamp(draining) if draining else None,
    )  # fmt: skip
    if st.phase == Phase.aborted and st.message and applied is not None and applied.weight == 0:
        st.message = st.message.replace("all traffic going back to stable", "all traffic back to stable")


def _target_runs(st: RolloutStatus, observed: Observed, revision: str) -> bool:
    """Ready pods of `revision`'s template serve from the target, and it is not stable's."""
    stable = st.release.stable_revision if st.release else None
    return _new_in_target(observed, revision, stable) > 0


def _new_in_target(observed: Observed, revision: str, stable: str | None) -> int:
    """Ready pods of a release's new pod template in the target (none when it has none of its own)."""
    if _same_template(revision, stable):
        return 0
    return observed.serving.in_target(template_revision(revision))


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
    if stamp is not None:
        return observed.target.rolled_out and observed.target.restarted_at == stamp
    return observed.target.rolled_out or _rolled_out_before_pause(observed)


def _rolled_out_before_pause(observed: Observed) -> bool:
    """A paused target whose status is behind its spec, with every ready pod of its ReplicaSets
    on its current template, at full size: it rolled out, and the pause that held it again is
    what the Deployment controller has not seen yet (the pause raised the generation). Its
    status says nothing of the rollout until then; letting it go again would promote twice."""
    target = observed.target
    if not target.paused or target.status_current:
        return False
    ready = observed.serving.target
    template = template_revision(target.revision)
    return set(ready) == {template} and ready[template] >= target.replicas


def _let_go_only_on_a_current_status(work: _Work, observed: Observed) -> None:
    """A paused target is let go (unpaused) only on a status that describes its latest spec: a
    status behind it (the Deployment controller has not seen a pause or a template written just
    now) cannot tell that the target has not rolled out already. Held, it is looked at again
    soon (the controller's status write wakes the Rollout first). Holding is always safe."""
    intent, target = work.intent, observed.target
    if intent is None or intent.target_paused or not target.paused or target.status_current:
        return
    work.intent = replace(intent, target_paused=True, target_restart=None)
    work.check_at(work.now + CLUSTER_TICK)


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
    work.intent = _stage_intent(work, observed, revision)
    started = parse_time(st.stage_started_at) or work.now
    label = f"stage {st.stage} ({stage.name}) at {stage.weight}%"

    if observed.health.failed:
        _begin_recovery(work, spec, observed, label)
        return

    not_ready = _not_reached(work, spec, observed, stage, revision)
    if not_ready:
        deadline = started + parse_duration(spec.progress_deadline)
        if work.now >= deadline:
            _stop(work, observed, Phase.aborted, "ProgressDeadlineExceeded",
                  f"{label}: still waiting for {not_ready} after {spec.progress_deadline}")  # fmt: skip
            work.intent = WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=None)
            return
        st.message = f"{label}: waiting for {not_ready}"
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


def _not_reached(
    work: _Work, spec: RolloutSpec, observed: Observed, stage: PlannedStage, revision: str
) -> str:
    """What the stage still waits for before its wait counts: the new version's pods, and its
    flags seen in their state (asked for at once: new pods start with the stage's flags).
    Empty when the stage is reached."""
    flags = _stage_flags(work, spec, observed, stage)
    if not _stage_ready(work, observed, stage.weight, revision):
        return "the new version to become ready"
    traffic = _traffic_not_there(work, observed, stage.weight)
    return traffic or flags


def _traffic_not_there(work: _Work, observed: Observed, weight: int) -> str:
    """With a router: what the route still lacks for the stage to count as reached ("" when it holds
    the stage's share; at 100%, once the target has rolled, 0% for the canary: stable is new)."""
    if not work.routed or work.traffic is None:
        return ""
    share = work.traffic.share
    if weight == 100 and share == 100:
        return "the target to roll to the new version behind the route"
    traffic = observed.traffic
    applied = _applied(observed)
    if applied == share:
        return ""
    if weight == 100:
        held = f"{applied}%" if applied is not None else "an unknown share"
        return f"all traffic back on the stable backend, now running the new version (the route holds {held})"
    if applied is None:
        why = (traffic.broken or traffic.applied.unverified) if traffic is not None else "not read yet"
        return f"the route to send {share}% to the canary ({why})"
    return f"the route to send {share}% to the canary (it holds {applied}%)"


def _stage_ready(work: _Work, observed: Observed, weight: int, revision: str) -> bool:
    if weight == 100:
        return _promoted(work.status, observed)
    want = work.intent.canary_replicas if work.intent else 0
    if want == 0 and _target_runs(work.status, observed, revision):
        return True  # the target's own pods serve it already
    canary = observed.canary
    return canary is not None and canary.revision == revision and canary.ready >= want


# ---------------------------------------------------------------------------- flags


def _stage_flags(work: _Work, spec: RolloutSpec, observed: Observed, stage: PlannedStage) -> str:
    """The stage's flags: asked for when it begins, in place once the store is seen so."""
    st = work.status
    if stage.flags is None or spec.feature_flags is None:
        return ""
    if st.flags is None or st.flags.state != stage.flags:  # the plan changed under the stage
        _ask_flags(work, stage.flags, _stage_label(st, stage))
    return _flags_wait(work, spec, observed)


def _ask_flags(work: _Work, state: FlagState, reason: str) -> None:
    st = work.status
    revision = st.release.revision if st.release else None
    st.flags = FlagsStatus(state=state, reason=reason, revision=revision, requested_at=timestamp(work.now))


def _flags_wait(work: _Work, spec: RolloutSpec, observed: Observed) -> str:
    """Put the asked-for state in place; what is still awaited ("" once the store shows it)."""
    st, seen = work.status, observed.flags
    assert st.flags is not None and spec.feature_flags is not None
    names = ", ".join(spec.feature_flags.flags)
    if st.flags.in_place_at is not None:
        return ""
    if seen.state == st.flags.state:
        st.flags.in_place_at = timestamp(work.now)
        work.event("FlagsSet", f"flags {names} {seen.state} in {_store(spec)} ({st.flags.reason})")
        return ""
    problem = seen.problem or (seen.cannot_switch_on if st.flags.state == FlagState.on else "")
    if not problem:
        work.flags = st.flags.state
    return f"flags {names} to be {st.flags.state}" + (f": {problem}" if problem else "")


def _store(spec: RolloutSpec) -> str:
    flags = spec.feature_flags
    assert flags is not None
    if flags.config_map_ref is not None:
        return f"ConfigMap {flags.config_map_ref.name}"
    return f"FeatureFlag {flags.feature_flag_ref.name if flags.feature_flag_ref else ''}"


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
        work.intent = _stage_intent(work, observed, observed.target.revision)
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
    """Whether metrics are evaluated in this state: during a release, at every rollback level
    (the flag and config levels on the same split, the code level on what serves once the
    canary is gone), and while watching after a rollback (what serves now)."""
    if st.phase in (Phase.progressing, Phase.paused, Phase.rolling_back):
        return True
    return st.phase in WATCHED and _watching(st, now)


def judges_target(st: RolloutStatus, observed: Observed) -> bool:
    """Whether analysis judges the target's pods (the stable label) rather than the canary's: at
    a 100% stage once the target has rolled, at the code level, and while watching after."""
    if st.phase in WATCHED:
        return True
    incident = recovery.current_incident(st.incidents)
    if st.phase == Phase.rolling_back and incident is not None and incident.level == RecoveryLevel.code:
        return True
    plan, index = st.plan or [], st.stage_index
    stage = plan[index] if index is not None and index < len(plan) else None
    return stage is not None and stage.weight == 100 and observed.target.rolled_out


def _watching(st: RolloutStatus, now: datetime) -> bool:
    """Within the watch after the latest rollback, and stable is still what it went back to."""
    incident = recovery.current_incident(st.incidents)
    if incident is None or not incident.watch_until or st.release is None:
        return False
    return now < _at(incident.watch_until) and st.release.stable_revision == incident.stable_revision


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
    revision, stable = st.release.revision, st.release.stable_revision
    settings = spec.recovery or Recovery()
    images = ", ".join(st.release.stable_images or []) or "unknown images"
    levels = recovery.levels_for(spec)
    incident = Incident(
        id=recovery.incident_id(revision, started),
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
        _ask_flags(work, FlagState.off, _rollback_reason(revision))
    st.incidents = [*(st.incidents or [])[-(recovery.INCIDENTS_KEPT - 1) :], incident]
    st.blocked_revisions = sorted({*(st.blocked_revisions or []), revision})
    st.phase, st.paused_at = Phase.rolling_back, None
    work.event("RollingBack", f"{incident.reason}; rolling back revision {revision}{_ticket_note(st)}",
               warning=True)  # fmt: skip
    _enter_level(work, spec, observed, levels[0])
    _recover(work, spec, observed)


def _code_in_target(st: RolloutStatus, observed: Observed) -> bool:
    """Whether the target's own pods were seen serving the release (not guessed from the stage)."""
    assert st.release is not None and st.release.revision is not None
    if not _same_template(st.release.revision, st.release.stable_revision):
        return _new_in_target(observed, st.release.revision, st.release.stable_revision) > 0
    stamp = _promotion_restart(st)  # configuration alone reaches the target by a restart
    return stamp is not None and observed.target.restarted_at == stamp


def _since_release(st: RolloutStatus, moment: str) -> bool:
    started = parse_time(st.release.started_at if st.release else None)
    return started is None or _at(moment) >= started


def _rollback_reason(revision: str | None) -> str:
    return f"rollback of revision {revision}"


def _rollback_flags(st: RolloutStatus, incident: Incident) -> bool:
    """Whether this rollback switches the release's flags off (asked for when it began)."""
    flags = st.flags
    return (
        flags is not None
        and flags.reason == _rollback_reason(incident.revision)
        and _at(flags.requested_at) >= _at(incident.started_at)
    )


def _enter_level(work: _Work, spec: RolloutSpec, observed: Observed, level: RecoveryLevel) -> None:
    incident = _incident(work)
    budget = recovery.budget_for(spec, level, incident.immediate)
    record = LevelRecord(
        level=level, started_at=timestamp(work.now), budget=format_duration(budget),
        changed=_level_changes(work, spec, observed, level),
    )  # fmt: skip
    incident.levels = [*(incident.levels or []), record]
    incident.level = level


def _incident(work: _Work) -> Incident:
    incident = recovery.current_incident(work.status.incidents)
    assert incident is not None
    return incident


def _level_changes(work: _Work, spec: RolloutSpec, observed: Observed, level: RecoveryLevel) -> list[str]:
    st = work.status
    if level == RecoveryLevel.flag:
        flags = spec.feature_flags
        assert flags is not None
        out = [f"flags {', '.join(flags.flags)} off in {_store(spec)} (before: a snapshot copy)"]
        if not flags.reloads:
            out.append("pods that read the flags restarted")
        return out
    if level == RecoveryLevel.config:
        names = [s.name for s in st.config_snapshots or []]
        missing = [r.name for r in spec.config_refs or [] if r.name not in names]
        out = [f"ConfigMap {s.name} restored to snapshot {s.snapshot}" for s in st.config_snapshots or []]
        out += [f"ConfigMap {name}: no snapshot to restore" for name in missing]
        return [*out, "pods that use them restarted"]
    return _code_changes(work, spec, observed)


def _code_changes(work: _Work, spec: RolloutSpec, observed: Observed) -> list[str]:
    incident = _incident(work)
    out = ["canary scaled to 0"]
    flag_level = any(r.level == RecoveryLevel.flag for r in incident.levels or [])
    if spec.feature_flags is not None and _rollback_flags(work.status, incident) and not flag_level:
        names = ", ".join(spec.feature_flags.flags)
        out.append(f"flags {names} off in {_store(spec)}, as Parachute had set them for this release")
    if not _same_template(observed.target.revision, incident.stable_revision):
        settings = spec.recovery or Recovery()
        out.append(
            f"target's pod template restored to revision {incident.stable_revision}"
            if settings.restore_template
            else f"target's pod template left at revision {incident.revision}: revert it in git to "
            f"{incident.revert_in_git}"
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
    work.recovery = _recovery_intent(spec, st, observed, incident, stamp)
    work.intent = _recovery_workload(work, observed, incident)
    if spec.feature_flags is not None and _rollback_flags(st, incident):
        _flags_wait(work, spec, observed)
        if observed.flags.state != FlagState.off and not observed.flags.problem:
            work.flags = FlagState.off  # held off for the whole rollback
    started = _at(record.started_at)
    deadline = started + recovery.budget_for(spec, level, incident.immediate)

    problem = _cannot_apply(st, observed, level)
    if problem:
        if problem not in (record.changed or []):
            record.changed = [*(record.changed or []), problem]
        _escalate(work, spec, observed, problem)
        return
    if level == RecoveryLevel.code and record.traffic_back_at is None and _traffic_back(work, observed):
        record.traffic_back_at = timestamp(work.now)
        work.event("TrafficBackOnStable", f"level {level}: all traffic is back on stable revision "
                   f"{incident.stable_revision}{', as the route reads back' if work.routed else ''}")  # fmt: skip
    if record.applied_at is None and _level_applied(work, observed, incident, stamp):
        record.applied_at = timestamp(work.now)
        work.event("RecoveryApplied", f"level {level}: {'; '.join(record.changed or [])}")
    healthy = _health_back(spec, st, record)
    if healthy is not None:
        _recovered(work, spec, observed, healthy)
        return
    if work.now >= deadline:
        late = "its change was not in place" if record.applied_at is None else "health did not return"
        _escalate(work, spec, observed, f"{late} within {record.budget}")
        return
    if level == RecoveryLevel.code:
        st.canary_weight = 0
    awaited = _awaited(work, observed, incident, record)
    st.message = f"rolling back revision {incident.revision}: level {level} waits for {awaited} (budget until {timestamp(deadline)})"
    work.check_at(min(deadline, work.now + CLUSTER_TICK))


def _awaited(work: _Work, observed: Observed, incident: Incident, record: LevelRecord) -> str:
    """What the level waits for now, in words."""
    if record.applied_at is not None:
        return "health to return"
    if record.level != RecoveryLevel.code:
        return "its change to be in place"
    in_target, in_canary = recovery.still_serving(observed, incident)
    template_bad = not _same_template(observed.target.revision, incident.stable_revision)
    if in_target and template_bad and work.recovery.restore_template is None:
        return (
            f"a revert in git, as revision {incident.revision} still serves from the target with "
            f"{recovery.ready_pods(in_target)}: revert it in git to {incident.revert_in_git}"
        )
    if in_target or in_canary:
        return f"revision {incident.revision} to stop serving: {recovery.what_serves(observed, incident)}"
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
        code and settings.restore_template and stable and not _same_template(observed.target.revision, stable)
    )
    return RecoveryIntent(
        restore_configs=tuple((s.name, s.snapshot) for s in st.config_snapshots or [])
        if RecoveryLevel.config in used
        else (),
        restart_stamp=None if code else stamp,
        restart_target=incident.new_code_in_target and not code,
        restore_template=template_revision(stable) if restore and stable else None,
    )


def _recovery_workload(work: _Work, observed: Observed, incident: Incident) -> WorkloadIntent:
    st = work.status
    assert st.release is not None and incident.levels
    level = incident.levels[-1].level
    if level == RecoveryLevel.code:
        return WorkloadIntent(
            target_paused=_hold_target(observed, incident), canary_replicas=0, canary_revision=None
        )
    # Flag and config levels keep the traffic where it is: health is judged on the same split.
    stage_intent = _stage_intent(work, observed, st.release.revision or observed.target.revision)
    if observed.target.revision != st.release.revision:
        # A template applied during the recovery waits for it to end: the target is held.
        return replace(stage_intent, target_paused=True, target_restart=None)
    restarting_target = work.recovery.restart_target and work.recovery.restart_stamp is not None
    if restarting_target and observed.recovery.restarted_at != work.recovery.restart_stamp:
        return WorkloadIntent(False, stage_intent.canary_replicas, stage_intent.canary_revision)
    return stage_intent


def _hold_target(observed: Observed, incident: Incident) -> bool:
    """A paused Deployment does not roll: once its template is stable again (restored, or reverted
    in git) it is let go until the stable pods are back, then held again. A bad template is held."""
    stable_template = _same_template(observed.target.revision, incident.stable_revision)
    return not (stable_template and not observed.target.rolled_out)


def _cannot_apply(st: RolloutStatus, observed: Observed, level: RecoveryLevel) -> str:
    if level == RecoveryLevel.flag and observed.flags.problem:
        return observed.flags.problem
    if level == RecoveryLevel.config and not st.config_snapshots:
        return "no configuration snapshot was taken before the release"
    return ""


def _level_applied(work: _Work, observed: Observed, incident: Incident, stamp: str | None) -> bool:
    """The level's change is in place: seen so, not assumed."""
    st = work.status
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
    in_target, in_canary = recovery.still_serving(observed, incident)
    canary = observed.canary
    canary_gone = work.routed or canary is None or (canary.replicas == 0 and canary.ready == 0)
    off_canary = work.routed or not in_canary
    restored = work.recovery.restore_template is None
    return canary_gone and off_canary and not in_target and restored and _traffic_back(work, observed)


def _health_back(spec: RolloutSpec, st: RolloutStatus, record: LevelRecord) -> datetime | None:
    """Health judged good on a window that began after the level's change was in place, at every
    level: the code level too, since what serves then is only what the level left."""
    if record.applied_at is None:
        return None
    applied = _at(record.applied_at)
    if spec.analysis is None:
        return applied  # nothing measures: the change in place is all there is to know
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
            f"it waits for {_awaited(work, observed, incident, record)}"
        )
        if record.seconds is None:
            record.seconds = recovery.seconds(_at(record.started_at), work.now)
            work.event("RecoveryStalled", st.message, warning=True)
        work.check_at(work.now + CLUSTER_TICK)
        return
    record.seconds = recovery.seconds(_at(record.started_at), work.now)
    work.event("RecoveryEscalated", f"level {record.level}: {why}; moving to level {following}", warning=True)
    _enter_level(work, spec, observed, following)
    _recover(work, spec, observed)


def _recovered(work: _Work, spec: RolloutSpec, observed: Observed, healthy: datetime) -> None:
    st = work.status
    incident = _incident(work)
    record = (incident.levels or [])[-1]
    settings = spec.recovery or Recovery()
    record.healthy_at = timestamp(healthy)
    record.seconds = recovery.seconds(_at(record.started_at), healthy)
    took = recovery.seconds(_at(incident.started_at), healthy)
    incident.recovered_at = timestamp(healthy)
    incident.recovery_seconds = took
    incident.objective_met = took <= parse_duration(settings.objective).total_seconds()
    incident.watch_until = timestamp(healthy + parse_duration(settings.watch_after_rollback))
    st.phase, st.canary_weight = Phase.rolled_back, 0
    st.message = _rolled_back_message(work, spec, observed, incident)
    work.intent = WorkloadIntent(
        target_paused=_hold_target(observed, incident), canary_replicas=0, canary_revision=None
    )
    work.event("RolledBack", st.message, warning=True)
    if not incident.objective_met:
        work.event(
            "RecoveryObjectiveMissed",
            f"recovery took {recovery.human_seconds(took)}, over the {settings.objective} objective",
            warning=True,
        )


def _rolled_back(work: _Work, spec: RolloutSpec, observed: Observed) -> None:
    """After a rollback: say what serves (as seen), watch it, and end when the watch does with
    the template back at stable. The canary is gone; a template back at stable may roll."""
    st = work.status
    st.canary_weight = 0
    incident = recovery.current_incident(st.incidents)
    if incident is None or st.release is None:  # a status edited by hand: hold what is there
        work.intent = WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=None)
        return
    work.intent = WorkloadIntent(
        target_paused=_hold_target(observed, incident), canary_replicas=0, canary_revision=None
    )
    at_stable = st.release.revision == st.release.stable_revision
    if _watching(st, work.now):
        _watch_after_rollback(work, observed)
        if at_stable:
            work.check_at(_at(incident.watch_until or timestamp(work.now)))
    elif at_stable:
        st.phase, st.stage_index, st.stage, st.stage_started_at = Phase.healthy, None, None, None
        st.message = f"serving revision {st.release.stable_revision}; the watch after rolling back revision {incident.revision} ended"
        work.event("WatchEnded", st.message)
        return
    st.message = _rolled_back_message(work, spec, observed, incident)
    if any(recovery.still_serving(observed, incident)) or (observed.canary and observed.canary.replicas):
        work.check_at(work.now + CLUSTER_TICK)  # the canary is still going: say so once it is gone


def _rolled_back_message(work: _Work, spec: RolloutSpec, observed: Observed, incident: Incident) -> str:
    """What a person reads after a rollback: what really serves, never what should."""
    st = work.status
    took = recovery.human_seconds(incident.recovery_seconds or 0.0)
    parts = [
        f"recovered by the {incident.level} level in {took}",
        _what_serves(work, observed, incident) + _flags_note(spec, observed),
    ]
    if not _same_template(observed.target.revision, incident.stable_revision):
        revert = f": revert it in git to {incident.revert_in_git}" if incident.revert_in_git else ""
        parts.append(f"the target's template still holds revision {incident.revision}{revert}")
    if incident.revision in (st.blocked_revisions or []):
        parts.append(
            f"revision {incident.revision} is blocked until {RESOLVED_ANNOTATION}={incident.revision}"
        )
    if _watching(st, work.now):
        parts.append(f"watched until {incident.watch_until}")
    return "; ".join(parts)


def _what_serves(work: _Work, observed: Observed, incident: Incident) -> str:
    """What serves, in words. With a router, a canary the route is read back sending nothing
    serves nothing: its pods only drain until scaleDownDelay has passed."""
    draining = observed.serving.in_canary()
    if not (work.routed and draining and _traffic_back(work, observed)):
        return recovery.what_serves(observed, incident)
    unrouted = replace(observed, serving=replace(observed.serving, canary={}))
    return (
        f"{recovery.what_serves(unrouted, incident)} (the canary's {recovery.ready_pods(draining)} "
        "are sent nothing and drain before they are scaled down)"
    )


def _flags_note(spec: RolloutSpec, observed: Observed) -> str:
    flags = spec.feature_flags
    if flags is None or observed.flags.state is None:
        return ""
    return f", with flags {', '.join(flags.flags)} {observed.flags.state}"


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
