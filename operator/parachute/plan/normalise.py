"""The first step of every decision: bring the status up to date with what happened since.

Before the phase's handler runs, the status follows the target's pod template (adopt it, start,
supersede or cancel a release), leaves `Invalid` for where it was, takes in the commands
(abort, resolved, retry), starts a release whose window has opened, and pauses or resumes as
`spec.paused` says. The transitions it shares with the stage handler (start, enter a stage,
abort) are here too.
"""

from __future__ import annotations

from parachute.api import (
    ABORT_ANNOTATION,
    RESOLVED_ANNOTATION,
    RETRY_ANNOTATION,
    HandledCommands,
    Phase,
    PlannedStage,
    ReleaseStatus,
    RolloutStatus,
    parse_duration,
)
from parachute.conditions import timestamp
from parachute.plan import facts, flag_requests, rollback, rounds
from parachute.plan.model import Observed
from parachute.plan.stages import effective_risk
from parachute.plan.tick import ACTIVE, GATE_RECHECK, STOPPED, Log, Tick


def normalise(tick: Tick, status: RolloutStatus, generation: int | None) -> tuple[RolloutStatus, Log]:
    """The status brought up to date (a copy), and the Events and due time that took."""
    spec, observed = tick.spec, tick.observed
    st, log = status.model_copy(deep=True), Log()
    st.risk = effective_risk(spec)
    st.risk_reason = observed.risk_reason or ("spec.risk" if spec.risk else f"default ({st.risk})")
    st.plan = tick.exposure.plan(spec)
    st.observed_generation = generation
    st.commands = st.commands or HandledCommands()
    if st.phase != Phase.rolling_back:  # a new template waits until recovery is over
        _follow_template(tick, st, log)
    _recover_from_invalid(tick, st)
    _apply_commands(tick, st, log)
    _open_window(tick, st, log)
    _pause_or_resume(tick, st, log)
    return st, log


# ---------------------------------------------------------------------------- shared transitions


def start(tick: Tick, st: RolloutStatus) -> None:
    st.phase = Phase.progressing
    st.paused_at = None
    # Each release is judged on its own measurements.
    st.metrics, st.next_analysis_at, st.last_verdict = None, None, None
    enter_stage(tick, st, 0)


def enter_stage(tick: Tick, st: RolloutStatus, index: int) -> None:
    assert st.plan is not None
    st.stage_index = index
    st.stage = f"{index + 1}/{len(st.plan)}"
    st.stage_started_at = timestamp(tick.now)
    st.stage_reached_at = None  # its wait counts once it is in place (`progress`)
    st.canary_weight = st.plan[index].weight
    analysis = tick.spec.analysis
    if index > 0 and analysis is not None:  # a release's first round comes at once (`start`)
        due = rounds.entering_stage(st, parse_duration(analysis.interval), tick.now)
        st.next_analysis_at = timestamp(due) if due else None
    wanted = st.plan[index].flags
    if wanted is not None:  # each stage that names a state puts it in place anew
        flag_requests.ask(st, wanted, stage_label(st, st.plan[index]), tick.now)


def stage_label(st: RolloutStatus, stage: PlannedStage) -> str:
    return f"stage {st.stage} ({stage.name})"


def abort(tick: Tick, st: RolloutStatus, log: Log, reason: str, why: str) -> None:
    """Stop the release where it is: the canary goes, stable takes all traffic back."""
    observed = tick.observed
    assert st.release is not None and st.release.revision is not None
    st.phase = Phase.aborted
    st.paused_at = None
    st.canary_weight = 0
    revision, stable = st.release.revision, st.release.stable_revision
    in_target = facts.new_in_target(observed, revision, stable)
    where = (
        f"revision {revision} still serves from the target ({rollback.ready_pods(in_target)})"
        if in_target
        else f"all traffic {'going ' if tick.routed and not _route_on_stable(observed) else ''}back to stable "
        f"revision {stable}"
    )
    st.message = f"{why}; {where}; set {RETRY_ANNOTATION} to start again, or apply a new template"
    log.event(reason, st.message, warning=True)


def _route_on_stable(observed: Observed) -> bool:
    """The route reads back nothing for the canary: 0% and no audience (phased)."""
    return observed.traffic is not None and observed.traffic.applied.holds(0)


def may_progress(tick: Tick) -> bool:
    return tick.observed.window.open or tick.observed.hotfix


def say_waiting(tick: Tick, st: RolloutStatus, log: Log, what: str) -> None:
    window = tick.observed.window
    until = (
        f"; next open {timestamp(window.next_open)}"
        if window.next_open
        else "; it never opens: check the policy"
    )
    st.message = f"{what}: {window.reason} (policy {window.policy}){until}"
    if window.next_open is not None:
        log.check_at(window.next_open)


# ---------------------------------------------------------------------------- the template


def _follow_template(tick: Tick, st: RolloutStatus, log: Log) -> None:
    """Adopt the target on first sight; a new pod template starts (or supersedes) a release."""
    observed, now = tick.observed, tick.now
    target = observed.target
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
        log.event(
            "Adopted",
            f"Deployment adopted at revision {target.revision}; new templates are released in stages",
        )
        return
    if target.revision == release.revision:
        return
    if (
        target.revision == release.stable_revision
        and st.phase == Phase.rolled_back
        and rollback.watching(st, now)
    ):
        # Back at stable (restored, or reverted in git): the rolled-back state, its watch and its
        # latch stay in view until the watch ends.
        st.release = ReleaseStatus(stable_revision=release.stable_revision, revision=target.revision,
                                   stable_images=release.stable_images)  # fmt: skip
        log.event("RevertedToStable", f"template is back at the stable revision {target.revision}; "
                  f"what serves is watched until {rollback.incident_of(st).watch_until}")  # fmt: skip
        return
    if target.revision == release.stable_revision:
        st.release = ReleaseStatus(
            stable_revision=release.stable_revision,
            revision=target.revision,
            stable_images=release.stable_images,
        )
        after_rollback = st.phase == Phase.rolled_back
        st.stage_reached_at = None
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
            log.event("RevertedToStable", st.message)
        else:
            st.message = f"template is back at the stable revision {target.revision}; release cancelled"
            log.event("ReleaseCancelled", st.message)
        return
    superseding = release.revision != release.stable_revision and st.phase in ACTIVE
    st.release = ReleaseStatus(
        revision=target.revision,
        stable_revision=release.stable_revision,
        images=list(target.images) or None,
        stable_images=release.stable_images,
        started_at=timestamp(now),
        change_ticket=observed.change_ticket or None,
    )
    if not _may_start(tick, st):
        st.stage_reached_at = None
        st.phase, st.stage_index, st.stage, st.stage_started_at, st.paused_at = (
            Phase.waiting,
            None,
            None,
            None,
            None,
        )
        st.canary_weight = 0
        st.metrics, st.next_analysis_at, st.last_verdict = None, None, None
        _say_why_waiting(tick, st, log, f"revision {target.revision}")
        log.event("ReleaseWaiting", st.message or "")
        return
    start(tick, st)
    _announce_hotfix(tick, log)
    if superseding:
        log.event(
            "ReleaseSuperseded", f"revision {target.revision} replaces {release.revision}; starting over"
        )
    else:
        log.event("ReleaseStarted", f"releasing revision {target.revision} over {release.stable_revision}"
                  f"{facts.ticket_note(st)}")  # fmt: skip


def _recover_from_invalid(tick: Tick, st: RolloutStatus) -> None:
    """A Rollout that was Invalid (say its target was briefly missing) resumes its release."""
    assert st.release is not None
    if st.phase not in (None, Phase.invalid):
        return
    incident = rollback.current_incident(st.incidents)
    if incident is not None and incident.recovered_at is None and not incident.resolved:
        st.phase = Phase.rolling_back  # a rollback interrupted by a bad spec goes on where it was
    elif (
        incident is not None
        and incident.recovered_at is not None
        and (
            (st.release.revision == incident.revision and not incident.resolved)
            or (st.release.revision == st.release.stable_revision and rollback.watching(st, tick.now))
        )
    ):
        st.phase = Phase.rolled_back  # never released again by way of a bad spec
    elif st.release.revision != st.release.stable_revision and st.stage_index is not None:
        st.phase = Phase.progressing
    else:
        st.phase = Phase.healthy
        st.message = f"serving revision {st.release.stable_revision}"


# ---------------------------------------------------------------------------- commands


def _apply_commands(tick: Tick, st: RolloutStatus, log: Log) -> None:
    commands, now = tick.observed.commands, tick.now
    assert st.commands is not None and st.release is not None
    asked = commands.get(ABORT_ANNOTATION)
    if asked and asked != st.commands.abort:
        st.commands.abort = asked
        if st.phase in ACTIVE:
            abort(tick, st, log, "Aborted", f"aborted by {ABORT_ANNOTATION}")
    resolved = commands.get(RESOLVED_ANNOTATION)
    if resolved and resolved != st.commands.resolved:
        st.commands.resolved = resolved
        _resolve(st, log, resolved)
    retry = commands.get(RETRY_ANNOTATION)
    if retry and retry != st.commands.retry:
        st.commands.retry = retry
        if st.phase in STOPPED and facts.blocked(st):
            log.event(
                "RetryRefused",
                f"revision {st.release.revision} is blocked until {RESOLVED_ANNOTATION}={st.release.revision}",
                warning=True,
            )
        elif st.phase in STOPPED and st.release.revision != st.release.stable_revision:
            st.release = st.release.model_copy(update={"started_at": timestamp(now)})
            start(tick, st)
            log.event("ReleaseRetried", f"retrying revision {st.release.revision} from the first stage")


def _resolve(st: RolloutStatus, log: Log, value: str) -> None:
    """The root cause of a rolled-back revision (or of all, for "all") is marked fixed."""
    blocked = st.blocked_revisions or []
    freed = [r for r in blocked if value in (r, "all")]
    if not freed:
        log.event("ResolveIgnored", f"{RESOLVED_ANNOTATION}={value}: no such blocked revision", warning=True)
        return
    st.blocked_revisions = [r for r in blocked if r not in freed] or None
    st.incidents = [
        i.model_copy(update={"resolved": True}) if i.revision in freed else i for i in st.incidents or []
    ] or None
    log.event("RootCauseFixed", f"revision {', '.join(freed)} may be released again")


# ---------------------------------------------------------------------------- window, gates, pause


def _unmet_gates(tick: Tick) -> str:
    return "; ".join(f"gate {name}: {message}" for name, met, message in tick.observed.gates if not met)


def _may_start(tick: Tick, st: RolloutStatus) -> bool:
    return (
        may_progress(tick)
        and not _unmet_gates(tick)
        and not facts.blocked(st)
        and not tick.observed.metrics_missing
    )


def _say_why_waiting(tick: Tick, st: RolloutStatus, log: Log, what: str) -> None:
    observed = tick.observed
    if facts.blocked(st):
        revision = st.release.revision if st.release else ""
        st.message = (
            f"{what} was rolled back and is blocked until its root cause is marked fixed: "
            f"set {RESOLVED_ANNOTATION}={revision}"
        )
    elif not may_progress(tick):
        say_waiting(tick, st, log, f"{what} waits for the release window")
    elif observed.metrics_missing:
        # Its first stage would only ever read "no data": wait until the series exist.
        st.message = f"{what} waits for its metrics (MetricsAvailable): {observed.metrics_missing}"
        log.check_at(tick.now + GATE_RECHECK)
    else:
        st.message = f"{what} waits for its checklist: {_unmet_gates(tick)}"
        log.check_at(tick.now + GATE_RECHECK)


def _announce_hotfix(tick: Tick, log: Log) -> None:
    observed = tick.observed
    if observed.hotfix and not observed.window.open:
        log.event("HotfixIgnoresWindow", f"security hotfix: released although {observed.window.reason}")


def _open_window(tick: Tick, st: RolloutStatus, log: Log) -> None:
    """A release waiting for its window starts when the window opens (or for a hotfix)."""
    if st.phase != Phase.waiting:
        return
    if not _may_start(tick, st):
        _say_why_waiting(tick, st, log, f"revision {st.release.revision if st.release else ''}")
        return
    if st.release is not None:  # the ticket may have come while the release waited (a gate asks for it)
        st.release.change_ticket = tick.observed.change_ticket or None
    start(tick, st)
    _announce_hotfix(tick, log)
    log.event(
        "ReleaseStarted",
        f"window open, gates met; releasing revision {st.release.revision if st.release else ''}"
        f"{facts.ticket_note(st)}",
    )


def _pause_or_resume(tick: Tick, st: RolloutStatus, log: Log) -> None:
    now = tick.now
    if st.phase == Phase.progressing and tick.spec.paused:
        st.phase = Phase.paused
        st.paused_at = timestamp(now)
        st.message = f"paused at stage {st.stage} by spec.paused"
        log.event("Paused", st.message)
    elif st.phase == Phase.paused and not tick.spec.paused:
        paused_at = facts.parse_time(st.paused_at) or now
        started = facts.parse_time(st.stage_started_at) or now
        # The wait clock stops while paused: the stage still gets its whole wait.
        st.stage_started_at = timestamp(started + (now - paused_at))
        if (reached := facts.parse_time(st.stage_reached_at)) is not None:
            st.stage_reached_at = timestamp(reached + (now - paused_at))
        st.phase = Phase.progressing
        st.paused_at = None
        log.event("Resumed", f"resumed at stage {st.stage}")
