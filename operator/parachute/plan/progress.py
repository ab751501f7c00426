"""The Progressing and Paused phases: a release stage by stage.

A stage is reached once the strategy says its workload (and traffic) is in place and its flags
are seen in their state; its wait counts from then (`status.stageReachedAt`), so pods that take
long to become ready take nothing of the time the new version is watched under traffic. It ends
at its minimum wait when health held the whole time, at its maximum otherwise, or by a promote
command; a failed verdict hands over to the rollback; a stage never reached by the progress
deadline (counted from its start) aborts the release.
"""

from __future__ import annotations

from parachute.api import PROMOTE_ANNOTATION, Phase, PlannedStage, RolloutStatus, flag_percent, parse_duration
from parachute.conditions import timestamp
from parachute.plan import facts, flag_requests, rollback, rounds
from parachute.plan.normalise import abort, enter_stage, may_progress, say_waiting, stage_label
from parachute.plan.strategies.base import StageIntent
from parachute.plan.tick import AT_REST, CLUSTER_TICK, Log, Outcome, Tick, waiting_tick


def paused(tick: Tick, st: RolloutStatus) -> Outcome:
    """Paused holds a release where it is; it never holds a rollback."""
    log = Log()
    if tick.observed.health.failed:
        return rollback.begin(tick, st, log, f"paused at stage {st.stage}")
    held = tick.exposure.stage_intent(tick, st, tick.observed.target.revision)
    return log.outcome(st, held.workload, held.traffic)


def progressing(tick: Tick, st: RolloutStatus) -> Outcome:
    """One look at the current stage: roll back on a failed verdict, wait until it is reached,
    then judge its wait."""
    spec, observed, now = tick.spec, tick.observed, tick.now
    log = Log()
    assert st.plan is not None and st.release is not None
    if st.stage_index is None or st.stage_index >= len(st.plan):
        # The plan got shorter under a running release (a spec edit): continue from its end.
        enter_stage(tick, st, min(st.stage_index or 0, len(st.plan) - 1))
    index = st.stage_index
    assert index is not None
    stage = st.plan[index]
    st.stage = f"{index + 1}/{len(st.plan)}"
    intent = tick.exposure.stage_intent(tick, st, observed.target.revision)
    label = _label(st, stage)

    if observed.health.failed:
        return rollback.begin(tick, st, log, label)

    not_ready = _not_reached(tick, st, log, stage, intent)
    if not_ready:
        started = facts.parse_time(st.stage_started_at) or now
        deadline = started + parse_duration(spec.progress_deadline)
        if now >= deadline:
            abort(tick, st, log, "ProgressDeadlineExceeded",
                  f"{label}: still waiting for {not_ready} after {spec.progress_deadline}")  # fmt: skip
            return log.outcome(st, AT_REST)
        st.message = f"{label}: waiting for {not_ready}"
        log.check_at(min(now + waiting_tick(tick, now - started), deadline))
        return log.outcome(st, intent.workload, intent.traffic)
    if mark_reached(tick, st, label) and _round_due(tick, st):
        # Found in place by this decision, after the look's analysis (a resume, a retry): its
        # first round runs before anything is judged on the rounds of before it was in place.
        st.message = f"{label}: in place; its first round is next"
        log.check_at(now)
        return log.outcome(st, intent.workload, intent.traffic)
    after = _judge_wait(tick, st, log, stage, intent)
    return log.outcome(st, after.workload, after.traffic)


def _round_due(tick: Tick, st: RolloutStatus) -> bool:
    return tick.spec.analysis is not None and rounds.due(st, tick.now)


def reached(tick: Tick, st: RolloutStatus) -> bool:
    """Whether the current stage is in place now, asked without changing `st` (the reconcile
    asks before its analysis round, so that the round due at the reach runs in that look)."""
    if st.phase != Phase.progressing or st.stage_index is None:
        return False
    trial = st.model_copy(deep=True)  # asking for a stage's flags writes a request
    trial.plan = tick.exposure.plan(tick.spec)  # as the decision will see it (a step edited)
    if st.stage_index >= len(trial.plan):
        return False
    stage = trial.plan[st.stage_index]
    intent = tick.exposure.stage_intent(tick, trial, tick.observed.target.revision)
    return not _not_reached(tick, trial, Log(), stage, intent)


def mark_reached(tick: Tick, st: RolloutStatus, label: str) -> bool:
    """The first look that finds the stage in place stamps it: its wait counts from then, and
    its rounds fall on it, the first at once unless one ran since within half an interval.
    True when this look stamped it now.

    A status whose message already judged this stage's wait was written without the stamp: by
    an operator from before it, or through a CRD from before it, which drops the field. Its
    wait counted from the stage's start and goes on so, unstamped (`rounds.anchor` and
    `_judge_wait` fall back to the start): restamped at every look, it would never end, and
    stamped, every look would be a write the old CRD throws away."""
    if st.stage_reached_at is not None:
        return False
    if _judged_before(tick, st, label):
        return False
    st.stage_reached_at = timestamp(tick.now)
    analysis = tick.spec.analysis
    if analysis is not None:
        due = rounds.at_reach(st, parse_duration(analysis.interval), tick.now)
        current = facts.parse_time(st.next_analysis_at)
        if current is None or current > tick.now:  # (one due already stands)
            st.next_analysis_at = timestamp(due)
    return True


def _judged_before(tick: Tick, st: RolloutStatus, label: str) -> bool:
    """Whether an earlier look of this stage (not one of a stage of the same name before it: a
    retry, a superseded release) left a message only a reached stage says."""
    started = facts.parse_time(st.stage_started_at)
    if started is None or started >= tick.now:
        return False
    said = st.message or ""
    if said.startswith(f"stage {st.stage} done; "):  # the next stage waits for the window
        return True
    waiting_for_promote = f"{label}: waiting for {PROMOTE_ANNOTATION}"
    return said.startswith(f"{label}: ") and (
        not said.startswith(f"{label}: waiting for ") or said.startswith(waiting_for_promote)
    )


def stage_label_of(st: RolloutStatus) -> str:
    """The current stage as its messages name it."""
    assert st.plan is not None and st.stage_index is not None
    return _label(st, st.plan[st.stage_index])


def _label(st: RolloutStatus, stage: PlannedStage) -> str:
    # A phased stage opens to an audience, not to a share.
    exposure = f"for {stage.audience}" if stage.audience else f"at {stage.weight}%"
    percent = flag_percent(stage.flags) if stage.flags else None
    flags = f", flags on for {percent}% of users" if percent is not None else ""
    return f"stage {st.stage} ({stage.name}) {exposure}{flags}"


def _judge_wait(
    tick: Tick, st: RolloutStatus, log: Log, stage: PlannedStage, intent: StageIntent
) -> StageIntent:
    """A reached stage: held while health cannot be judged, ended by its waits or a promote (the
    next stage's intent returned), else watched until its wait is over."""
    observed, now = tick.observed, tick.now
    label = _label(st, stage)
    if observed.health.hold_reason:
        st.message = f"{label}: held, {observed.health.hold_reason}"
        log.check_at(now + CLUSTER_TICK)
        return intent
    started = rounds.anchor(st) or now
    elapsed = now - started
    min_wait = parse_duration(stage.min_wait or "0s")
    max_wait = parse_duration(stage.max_wait or stage.min_wait or "0s")
    healthy_since = observed.health.healthy_since
    healthy_whole_wait = observed.health.fresh and (healthy_since is None or healthy_since <= started)
    promote = observed.commands.get(PROMOTE_ANNOTATION)
    promoted_by_hand = bool(promote) and promote != (st.commands.promote if st.commands else None)

    if tick.exposure.waits_for_promote(tick.spec, stage) and not promoted_by_hand:
        # A manual promotion: analysis goes on (a failure still rolls back), time alone ends nothing.
        st.message = f"{label}: waiting for {PROMOTE_ANNOTATION} (kubectl parachute promote)"
        return intent
    if elapsed >= max_wait and not promoted_by_hand and observed.health.undecided_reason:
        # "No data" is never a pass: past the maximum, wait for a round that can judge.
        st.message = f"{label}: held, cannot decide on {observed.health.undecided_reason}"
        log.check_at(now + CLUSTER_TICK)
        return intent
    if promoted_by_hand or elapsed >= max_wait or (elapsed >= min_wait and healthy_whole_wait):
        if promoted_by_hand:
            assert st.commands is not None
            st.commands.promote = promote
            log.event("Promoted", f"{label}: wait ended by {PROMOTE_ANNOTATION}")
        return _advance(tick, st, log, intent)
    until = started + (min_wait if healthy_whole_wait else max_wait)
    st.message = f"{label}: watching until {timestamp(until)}"
    log.check_at(until)
    return intent


def _not_reached(tick: Tick, st: RolloutStatus, log: Log, stage: PlannedStage, intent: StageIntent) -> str:
    """What the stage still waits for before its wait counts: what the strategy needs in place,
    and its flags seen in their state (asked for at once: new pods start with the stage's flags).
    Empty when the stage is reached."""
    flags = _stage_flags(tick, st, log, stage)
    revision = tick.observed.target.revision
    return tick.exposure.not_reached(tick, st, stage, intent, revision) or flags


def _stage_flags(tick: Tick, st: RolloutStatus, log: Log, stage: PlannedStage) -> str:
    """The stage's flags: asked for when it begins, in place once the store is seen so."""
    if stage.flags is None or tick.spec.feature_flags is None:
        return ""
    if st.flags is None or st.flags.state != stage.flags:  # the plan changed under the stage
        flag_requests.ask(st, stage.flags, stage_label(st, stage), tick.now)
    return flag_requests.wait(tick, st, log)


def _advance(tick: Tick, st: RolloutStatus, log: Log, current: StageIntent) -> StageIntent:
    """The stage is done: the next one begins (its intent returned), or the release completes."""
    assert st.plan is not None and st.stage_index is not None and st.release is not None
    following = st.stage_index + 1
    if following < len(st.plan) and not may_progress(tick):
        say_waiting(tick, st, log, f"stage {st.stage} done; the next waits for the release window")
        return current
    if following < len(st.plan):
        enter_stage(tick, st, following)
        stage = st.plan[following]
        reason = (
            "Promoting" if stage.weight == 100 and st.plan[following - 1].weight < 100 else "StageAdvanced"
        )
        st.message = _label(st, stage)
        log.event(reason, st.message)
        intent = tick.exposure.stage_intent(tick, st, tick.observed.target.revision)
        not_ready = _not_reached(tick, st, log, stage, intent)
        if not_ready:
            # Said now, as the next look would say it: this look's write is the only one the
            # stage's start needs (the next comes when the stage is reached).
            st.message = f"{st.message}: waiting for {not_ready}"
            log.check_at(tick.now + waiting_tick(tick))
        else:
            log.check_at(tick.now)
        return intent
    revision = st.release.revision
    st.release = st.release.model_copy(
        update={"stable_revision": revision, "stable_images": st.release.images}
    )
    # The configuration this release ran with is now the one known to be good.
    st.config_snapshots = None
    st.phase = Phase.healthy
    st.message = f"revision {revision} released"
    log.event("ReleaseCompleted", st.message)
    return StageIntent(AT_REST)
