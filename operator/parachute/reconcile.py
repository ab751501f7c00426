"""One reconcile of one Rollout: observe, decide, write status, act, tell.

Independent of what triggered it (a change of the Rollout or its Deployment, or a wait
that ran out), so the scheduler calls it the same way for all of them. Status is written
before the workload is touched: if the process dies in between, the next reconcile finds
the decision in status and makes the workload match it. The Events and notifications a
decision owes are recorded in that same write (`status.outbox`) and delivered right after it:
a lost race never repeats them, a failed act or a restart never loses them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from parachute import conditions, faults, kube, switch, telemetry
from parachute.analysis import availability, fastlane
from parachute.analysis.connect import AnalysisSetupError, provider_for, templates_for
from parachute.analysis.evaluate import evaluate, judge_reports
from parachute.api import (
    CHANGE_ANNOTATION,
    CHANGE_TICKET_ANNOTATION,
    HOTFIX_ANNOTATION,
    AnalysisLimits,
    ConditionStatus,
    Phase,
    RolloutSpec,
    RolloutStatus,
    parse_duration,
)
from parachute.conditions import timestamp
from parachute.gating import check_all
from parachute.kube_api import KubeApi
from parachute.notify import outbox, statuspage
from parachute.plan import rounds
from parachute.plan.checklist import GateResult, gates_for
from parachute.plan.desired_workload import with_config
from parachute.plan.engine import analysing, decide, judges_target, note_reach, parse_time
from parachute.plan.metrics import MetricSpecError
from parachute.plan.model import (
    Applied,
    Event,
    EventType,
    Health,
    Observed,
    RecoveryView,
    TrafficIntent,
    TrafficView,
    WindowView,
)
from parachute.plan.risk import risk_of_change
from parachute.plan.rollback import asks_app, current_incident
from parachute.plan.rounds import STAGED, deferred, next_round_at
from parachute.plan.sources import routed_service
from parachute.plan.verdicts import health, worst
from parachute.plan.versions import locate
from parachute.policy import PolicyError, window_for
from parachute.recovery import apply as recovery
from parachute.recovery import restarts, snapshots, verify
from parachute.reports import counting as user_reports
from parachute.reports import tally
from parachute.routing import wiring
from parachute.routing.client import ApiServerClient
from parachute.routing.router import RoutingSetupError
from parachute.workload import ForeignObjectError, act, observe

logger = logging.getLogger("parachute.reconcile")


def describe_validation_error(error: ValidationError, root: str = "spec") -> str:
    """`spec.steps[1].weight: Input should be less than or equal to 100` — one line per problem."""
    lines = []
    for problem in error.errors():
        path = root
        for part in problem["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        lines.append(f"{path}: {problem['msg']}")
    return "; ".join(lines)


def invalid(status: RolloutStatus, message: str, now: datetime, generation: int | None) -> RolloutStatus:
    found = status.conditions
    # Invalid, and neither Ready nor still going: kstatus reads Stalled as Failed.
    for type_, on in ((conditions.INVALID, True), (conditions.STALLED, True), (conditions.READY, False)):
        found = conditions.set_condition(
            found,
            type_=type_,
            status=ConditionStatus.true if on else ConditionStatus.false,
            reason="InvalidSpec",
            message=message if on else "",
            now=now,
            generation=generation,
        )
    return status.model_copy(
        update={
            "observed_generation": generation,
            "phase": Phase.invalid,
            "message": message,
            "next_check_at": None,
            "conditions": found,
        }
    )


# Everything that means "this Rollout cannot work as written": its message names the field.
CANNOT_WORK = (ForeignObjectError, PolicyError, AnalysisSetupError, MetricSpecError, RoutingSetupError)
# A route or Service that is missing is fixed outside the Rollout, where no watch looks: an
# Invalid routing set-up is looked at again this often, so the Rollout recovers by itself.
ROUTING_RECHECK = timedelta(seconds=10)
# After the router wrote (or held a weight back while a Service's endpoints appear): read back soon.
ROUTE_SETTLE = timedelta(seconds=1)
# No watch on routes: while a release or a rollback routes traffic, the route is read again this
# often, so weights edited by hand are put back within it even during a long wait.
ROUTE_RECHECK = timedelta(seconds=10)
UNDER_WAY = (Phase.waiting, Phase.progressing, Phase.paused, Phase.rolling_back)


@functools.cache
def routing_client() -> ApiServerClient:
    """One client for every router: discovery is cached per group-version in it."""
    return ApiServerClient()


class MissingTargetError(ValueError):
    """The target Deployment does not exist (yet)."""


async def reconcile(namespace: str, name: str, now: datetime, cluster: KubeApi) -> datetime | None:
    """Bring one Rollout a step forward; returns when it wants to be looked at again.

    `cluster` is what the workload, recovery, gating and policy adapters read and write through.
    """
    body = await kube.latest_rollout(namespace, name)
    if body is None:
        fastlane.leave((namespace, name))
        outbox.forget((namespace, name))
        return None
    generation = body["metadata"].get("generation")
    old = dict(body.get("status") or {})
    status = RolloutStatus.model_validate(old)
    try:
        spec = RolloutSpec.model_validate(body.get("spec") or {})
        spec, target, canary, observed = await _observe(cluster, body, spec, status, now)
        analysis_events: list[Event] = []
        if spec.analysis is not None:
            # A stage found in place in this look has its round due now: run in this look.
            status = note_reach(spec, status, observed, now)
            try:
                status = await availability.refresh(
                    spec, status, namespace=namespace, target=target, now=now, generation=generation
                )
                status, health_now, analysis_events = await _analyse(
                    spec, status, observed, namespace, now, target=target, canary=canary, name=name,
                    uid=body["metadata"].get("uid") or "",
                )  # fmt: skip
            except (AnalysisSetupError, MetricSpecError) as problem:
                if status.phase != Phase.rolling_back:
                    raise
                # Nothing can prove health now: the level's budget runs out and recovery moves up.
                health_now = Health(undecided_reason=str(problem))
            observed = replace(
                observed, health=health_now, metrics_missing=availability.missing_reason(status)
            )
    except ValidationError as error:
        await _write_invalid(
            body, old, invalid(status, describe_validation_error(error), now, generation), now
        )
        return None
    except (MissingTargetError, *CANNOT_WORK) as problem:
        await _write_invalid(body, old, invalid(status, str(problem), now, generation), now)
        return now + ROUTING_RECHECK if isinstance(problem, RoutingSetupError) else None

    decision = decide(spec, status, observed, now, generation)
    if decision.status.phase not in fastlane.RELEASING:
        fastlane.leave((namespace, name))
    # Copies first: status may name a snapshot only once it exists.
    await snapshots.take(cluster, body, decision.snapshots)
    written, wrote = await _write(
        body, old, spec, decision.status, events=(*analysis_events, *decision.events), now=now
    )
    await fastlane.enrol_stage(
        (namespace, name), spec, written, target=target, canary=canary, observed=observed
    )
    _report(body, decision.status, decision.events)
    telemetry.decided(namespace, name, old, decision.status)
    statuspage.sync(body, spec, decision.status, now)
    changed = []
    if decision.flags is not None:  # the fastest lever first: flags, then config, then code
        changed += await recovery.set_flags(cluster, body, spec, decision.flags)
    # Traffic before capacity: the planner scales a canary down only once the route was seen
    # sending it nothing, and moves traffic to it only once its pods are ready.
    steered = await _steer(body, spec, decision.status.phase, decision.traffic, observed.traffic,
                           rollback=_rollback(decision.status, now))  # fmt: skip
    changed += steered.changed
    await _tell(body, tuple(steered.events))
    if decision.status.phase == Phase.rolling_back:
        changed += await recovery.act(cluster, body, target, canary, decision.recovery)
    changed += await act(cluster, body, target, canary, decision.workload)
    _log_acts(namespace, name, changed, wrote=wrote)
    settle = now + ROUTE_SETTLE if steered.again else None
    if settle is None and observed.traffic is not None and decision.status.phase in UNDER_WAY:
        settle = now + ROUTE_RECHECK
    return _next_look(spec, decision.status, written, observed, now, decision.next_check_at, settle)


def _log_acts(namespace: str, name: str, changed: list[str], *, wrote: bool) -> None:
    """Log what a reconcile changed; one that neither wrote nor changed anything is counted."""
    if changed:
        logger.info("%s/%s: %s", namespace, name, "; ".join(changed))
    elif not wrote:
        telemetry.looked_in_vain()


def _next_look(
    spec: RolloutSpec,
    status: RolloutStatus,
    written: RolloutStatus,
    observed: Observed,
    now: datetime,
    *dues: datetime | None,
) -> datetime | None:
    """The earliest of what the decision waits for and what else is due: the next round, a
    notification's next try, a recheck. A round that waits for the new version to serve is
    not due: the stage's own looks and the canary's watch events come first."""
    round_at = None if deferred(status, observed) else parse_time(status.next_analysis_at)
    return _earliest(*dues, round_at, statuspage.next_attempt_at(spec, status, now),
                     outbox.next_attempt_at(written, now),
                     availability.next_check_at(status, now) if spec.analysis else None,
                     tally.next_change(status.user_reports))  # fmt: skip


async def _steer(
    body: dict[str, Any],
    spec: RolloutSpec,
    phase: Phase | None,
    intent: TrafficIntent | None,
    seen: TrafficView | None,
    *,
    rollback: wiring.Rollback | None = None,
) -> wiring.Steered:
    """The router's part of acting. A broken route does not hold up a rollback or an abort:
    the workload still goes back to stable."""
    try:
        if spec.blue_green is not None:
            return await switch.act(body, spec, intent, routing_client())
        return await wiring.act(body, spec, intent, seen, routing_client(), rollback=rollback)
    except RoutingSetupError as problem:
        if phase not in (Phase.rolling_back, Phase.aborted, Phase.rolled_back):
            raise
        logger.warning("%s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], problem)
        return wiring.Steered()


def _rollback(status: RolloutStatus, now: datetime) -> wiring.Rollback | None:
    incident = current_incident(status.incidents)
    started = parse_time(incident.started_at) if incident is not None else None
    if status.phase != Phase.rolling_back or incident is None or started is None:
        return None
    return wiring.Rollback(incident.id, started, now)


async def _observe(
    cluster: KubeApi, body: dict[str, Any], spec: RolloutSpec, status: RolloutStatus, now: datetime
) -> tuple[RolloutSpec, dict[str, Any], dict[str, Any] | None, Observed]:
    """The spec with its risk decided, the target, the canary, and what the planner sees."""
    namespace = body["metadata"]["namespace"]
    target = await cluster.read_deployment(namespace, spec.target_ref.name)
    if target is None:
        raise MissingTargetError(
            f"spec.targetRef.name: Deployment {namespace}/{spec.target_ref.name} not found"
        )
    spec, risk_reason = risk_from_change(spec, body, target)
    observed, canary = await observe(cluster, body, target)
    annotations = body["metadata"].get("annotations") or {}
    hotfix = spec.hotfix or annotations.get(HOTFIX_ANNOTATION) == "true"
    try:
        window, policy = await window_for(cluster, spec, namespace, now)
    except PolicyError:
        if status.phase != Phase.rolling_back:
            raise
        window, policy = WindowView(), None  # a rollback is never held: a broken policy cannot stop it
    release = status.release
    pending = status.phase == Phase.waiting or (
        release is not None
        and release.stable_revision is not None
        and observed.target.revision != release.revision
    )
    results: list[GateResult] = []
    ticket = change_ticket(spec, body, target)
    if pending:
        gates = gates_for(spec, policy.checklist if policy else None)
        results = await check_all(cluster, gates, spec, namespace, annotations, change_ticket=ticket)
    gate_view = tuple((r.name, r.met, r.message) for r in results)
    view = await _observe_recovery(cluster, spec, status, namespace, target=target, canary=canary)
    if spec.config_refs:  # tracked configuration is part of what is released
        revision = with_config(observed.target.revision, view.config_hashes)
        observed = replace(observed, target=replace(observed.target, revision=revision))
    flags = await recovery.observe_flags(cluster, namespace, spec)
    try:
        traffic: TrafficView | None
        if spec.blue_green is not None:  # the active Service's selector is what switches
            traffic = await switch.observe(body, spec, routing_client())
        else:
            traffic = await wiring.observe(body, spec, routing_client())
    except RoutingSetupError as problem:
        if status.phase != Phase.rolling_back:
            raise
        # A rollback is never held by a broken route: it goes on as with replica ratio.
        traffic = TrafficView(Applied(None, str(problem)), broken=str(problem))
    observed = replace(observed, window=window, hotfix=hotfix, gates=gate_view, recovery=view,
                       risk_reason=risk_reason, flags=flags, traffic=traffic,
                       change_ticket=ticket)  # fmt: skip
    if asks_app(spec, status, observed):  # the flag level: does the app say what the store says?
        observed = replace(
            observed,
            flag_check=await verify.observe(
                cluster, namespace, spec, target, status=status, observed=observed
            ),
        )
    return spec, target, canary, observed


def risk_from_change(
    spec: RolloutSpec, body: dict[str, Any], target: dict[str, Any]
) -> tuple[RolloutSpec, str]:
    """Without `spec.risk`, the change annotation (on the Deployment, else the Rollout) decides it."""
    if spec.risk is not None:
        return spec, ""
    for holder in (target, body):
        declared = (holder["metadata"].get("annotations") or {}).get(CHANGE_ANNOTATION)
        if declared:
            judged = risk_of_change(declared)
            if judged is None:
                return spec, f"default (medium): {CHANGE_ANNOTATION} names nothing known ({declared[:200]})"
            risk, reason = judged
            return spec.model_copy(update={"risk": risk}), reason
    return spec, ""


def change_ticket(spec: RolloutSpec, body: dict[str, Any], target: dict[str, Any]) -> str:
    """spec.changeTicket, else the change-ticket annotation on the Deployment, else on the Rollout."""
    if spec.change_ticket:
        return spec.change_ticket
    for holder in (target, body):
        ticket = (holder["metadata"].get("annotations") or {}).get(CHANGE_TICKET_ANNOTATION, "").strip()
        if ticket:
            return str(ticket)[:253]
    return ""


async def _observe_recovery(
    cluster: KubeApi,
    spec: RolloutSpec,
    status: RolloutStatus,
    namespace: str,
    *,
    target: dict[str, Any],
    canary: dict[str, Any] | None,
) -> RecoveryView:
    """The tracked ConfigMaps always (snapshots need them); restarts while rolling back."""
    hashes = await snapshots.hashes(cluster, namespace, [r.name for r in spec.config_refs or []])
    if status.phase != Phase.rolling_back:
        return RecoveryView(config_hashes=hashes)
    incident = current_incident(status.incidents)
    include_target = incident is not None and incident.new_code_in_target
    return RecoveryView(
        config_hashes=hashes, restarted_at=restarts.restarted_at(canary, target, include_target)
    )


def _report(body: dict[str, Any], status: RolloutStatus, events: tuple[Event, ...]) -> None:
    """The operator's metrics for the rollback transitions."""
    meta = body["metadata"]
    incident = current_incident(status.incidents)
    for event in events:
        if event.reason == "RollingBack":
            telemetry.rollback_started(meta["namespace"], meta["name"])
        if event.reason == "RolledBack" and incident is not None and incident.recovery_seconds is not None:
            telemetry.recovered(meta["namespace"], meta["name"], str(incident.level),
                                incident.recovery_seconds, bool(incident.objective_met))  # fmt: skip


async def _write(
    body: dict[str, Any],
    old: dict[str, Any],
    spec: RolloutSpec,
    status: RolloutStatus,
    *,
    events: tuple[Event, ...],
    now: datetime,
) -> tuple[RolloutStatus, bool]:
    """Write the decision with what it owes (`status.outbox`), then deliver that: a restart or
    a failed act after the write finds it there. Returns what was decided, and whether the
    status was written."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    incident = current_incident(status.incidents)
    targets = spec.notifications or []
    written = outbox.prepare(key, targets, status, events, now, new_id=outbox.new_id,
                             incident=incident.id if incident else None)  # fmt: skip
    new = _dump(written)
    changed = new != old and not _only_looks_later(old, new)
    if changed:
        await kube.patch_rollout_status(*key, old, new, meta["resourceVersion"])
    await outbox.deliver(body, targets, written, now, written=changed)
    faults.point("after-delivery", key[0], written.phase)  # told, not yet cleared from the outbox
    return written, changed


def _only_looks_later(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The decision changes nothing but a later `nextCheckAt` (a poll while held, a look woken
    before its safety net): not worth a status write each time. The written time stays earlier
    than the due, so whoever reads it (a standby replica, a restart) looks too early, never too
    late, and the scheduler has the new due from the reconcile itself."""
    before, after = dict(old), dict(new)
    was, will = parse_time(before.pop("nextCheckAt", None)), parse_time(after.pop("nextCheckAt", None))
    return before == after and was is not None and (will is None or will >= was)


async def _write_invalid(
    body: dict[str, Any], old: dict[str, Any], status: RolloutStatus, now: datetime
) -> None:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    fastlane.leave(key)
    told = (
        (Event(EventType.warning, "Invalid", status.message or ""),)
        if old.get("message") != status.message
        else ()
    )
    status = outbox.prepare(key, [], status, told, now, new_id=outbox.new_id)
    new = _dump(status)
    if new != old:
        await kube.patch_rollout_status(meta["namespace"], meta["name"], old, new, meta["resourceVersion"])
    # Without a valid spec its notifications wait in the outbox; its Events go out.
    await outbox.deliver(body, None, status, now, written=new != old)


async def _tell(body: dict[str, Any], events: tuple[Event, ...]) -> None:
    """Reports of what the router just did, posted directly: no status change owes them (status
    says nothing of a route put back), so a restart between the act and its report loses the
    report, and the act is done and reported again whenever the route drifts again."""
    for event in events:
        try:
            await kube.post_event(body, event.type.value, event.reason, event.message)
        except kube.NamespaceTerminatingError:
            logger.debug("no Event %s: the namespace is being deleted", event.reason)
        except Exception:  # an Event is a courtesy: losing one must not stop a release
            logger.exception("could not post Event %s", event.reason)


async def _analyse(
    spec: RolloutSpec,
    status: RolloutStatus,
    observed: Observed,
    namespace: str,
    now: datetime,
    *,
    target: dict[str, Any],
    canary: dict[str, Any] | None,
    name: str = "",
    uid: str = "",
) -> tuple[RolloutStatus, Health, list[Event]]:
    """Evaluate the metrics when a round is due; summarise them for the planner either way.
    The fast lane's breaches found since are added to the verdict history, and user reports
    that arrived since are counted and judged at once."""
    assert spec.analysis is not None
    due = _round_due(status, now) and not deferred(status, observed)
    status, reports = await user_reports.refresh(spec, status, namespace=namespace, name=name, uid=uid, now=now,
                                                 due=due)  # fmt: skip
    if not analysing(status, now):
        return status, Health(), []
    events: list[Event] = []
    if due:
        provider = await provider_for(spec.analysis, namespace)
        templates = await templates_for(spec, namespace)
        # What the target's pods serve is judged at 100%, at the code level and after a rollback.
        release = status.release
        versions = locate(
            await kube.replica_sets_of(target),
            target=target, canary=canary, revision=release.revision if release else None,
            stable_revision=release.stable_revision if release else None,
            judges_target=judges_target(status, observed), service=routed_service(spec),
        )  # fmt: skip
        # A stage's rates are judged on its counts so far; recovery and watching on the last interval.
        since = (
            parse_time(status.stage_started_at) if status.phase in (Phase.progressing, Phase.paused) else None
        )
        round_ = await evaluate(spec, namespace=namespace, previous=status.metrics, provider=provider,
                                templates=templates, now=now, versions=versions, since=since,
                                reports=reports)  # fmt: skip
        interval = parse_duration(spec.analysis.interval)
        status = status.model_copy(update={
            "metrics": round_.metrics, "next_analysis_at": timestamp(next_round_at(status, interval, now)),
            "last_verdict": worst(m.verdict for m in round_.metrics),
        })  # fmt: skip
        events = round_.events
        fastlane.enrol((namespace, name), spec, status, provider=provider, templates=templates,
                       versions=versions, since=since, previous=round_.metrics)  # fmt: skip
    elif reports is not None:
        # A report arrived between rounds (or a count aged): judged now, not at the next round.
        judged = await judge_reports(
            spec, namespace=namespace, previous=status.metrics, reports=reports, now=now
        )
        fresh = {m.name: m for m in judged.metrics}
        metrics = [fresh.pop(m.name, m) for m in status.metrics or []] + list(fresh.values())
        status = status.model_copy(
            update={"metrics": metrics, "last_verdict": worst(m.verdict for m in metrics)}
        )
        events = judged.events
    status, fast = fastlane.merge((namespace, name), status)
    events += fast
    limits = spec.analysis.limits or AnalysisLimits()
    grace = parse_duration(spec.analysis.interval)
    reached = parse_time(status.stage_reached_at) if status.phase in STAGED else None
    summary = health(
        status.metrics or [], limits, parse_time(status.stage_started_at), grace, reached=reached
    )
    return status, summary, events


def _round_due(status: RolloutStatus, now: datetime) -> bool:
    """An analysis round is due: metrics are evaluated in this phase, and the interval is over."""
    return analysing(status, now) and rounds.due(status, now)


def _earliest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


def _dump(status: RolloutStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")
