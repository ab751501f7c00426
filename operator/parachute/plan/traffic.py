"""The last word on a router's backend, after the phase's handler: what it holds now, and what
status says of it. Traffic moves first and capacity follows: a canary the plan retires or
replaces keeps its pods until the route is seen sending it nothing, and for scaleDownDelay after
(a proxy applies a route later than it reads back, and requests in flight finish)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from parachute.api import Phase, RecoveryLevel, RolloutStatus, TrafficStatus
from parachute.conditions import timestamp
from parachute.plan import facts, rollback
from parachute.plan.desired_workload import template_revision
from parachute.plan.model import Observed, TrafficIntent, WorkloadIntent
from parachute.plan.tick import CLUSTER_TICK, Log, Tick


def route(
    tick: Tick, st: RolloutStatus, log: Log, workload: WorkloadIntent, traffic: TrafficIntent | None
) -> tuple[WorkloadIntent, TrafficIntent | None]:
    """The workload and traffic to act on, given what the phase's handler asked for."""
    observed, now = tick.observed, tick.now
    if not tick.routed:
        st.traffic = None
        return workload, traffic
    draining_before = facts.parse_time(st.traffic.draining_since) if st.traffic is not None else None
    stable = st.release.stable_revision if st.release else None
    incident = rollback.current_incident(st.incidents)
    # A stage's share holds while it runs, and through the flag and config levels of a
    # rollback (judged on the same split); everywhere else the canary gets nothing.
    keeps_stage = st.phase in (Phase.progressing, Phase.paused) or (
        st.phase == Phase.rolling_back and incident is not None and incident.level != RecoveryLevel.code
    )
    wanted = traffic if keeps_stage and traffic is not None else TrafficIntent(share=0)
    wanted = replace(wanted, stable=_stable_set(observed, stable))
    canary = observed.canary
    shrinks = canary is not None and canary.replicas > 0 and (
        workload.canary_replicas < canary.replicas or workload.canary_revision != canary.revision
    )  # fmt: skip
    draining: datetime | None = None
    if shrinks and canary is not None and wanted.weight == 0 and wanted.rule is None:
        keep = not facts.traffic_back(observed, True)
        if keep:
            log.check_at(now + CLUSTER_TICK)
        else:
            draining = draining_before or now
            keep = now < draining + tick.drain
            if keep:
                log.check_at(draining + tick.drain)
        if keep:
            workload = replace(workload, canary_replicas=canary.replicas, canary_revision=canary.revision)
    applied = observed.traffic.applied if observed.traffic is not None else None
    if applied is not None and not applied.holds(wanted.weight, wanted.rule):
        log.check_at(now + CLUSTER_TICK)  # read the route back soon
    why = (observed.traffic.broken if observed.traffic is not None else "") or (
        applied.unverified if applied is not None else "not read yet"
    )
    st.traffic = TrafficStatus(
        router=str(tick.router), desired=wanted.weight,
        applied=applied.weight if applied is not None else None,
        verified=applied is not None and applied.weight is not None,
        message=why or None, draining_since=timestamp(draining) if draining and tick.drains else None,
        desired_audience=str(wanted.rule) if wanted.rule is not None else None,
        applied_audience=str(applied.audience) if applied is not None and applied.audience is not None else None,
    )  # fmt: skip
    if st.phase == Phase.aborted and st.message and applied is not None and applied.holds(0):
        st.message = st.message.replace("all traffic going back to stable", "all traffic back to stable")
    return workload, wanted


def _stable_set(observed: Observed, stable: str | None) -> str | None:
    """The pod-template-hash the stable backend selects: the target's ReplicaSet with the most
    ready pods (the stable revision's on a tie). It follows the target as it rolls."""
    sets = observed.serving.target_sets
    if not sets:
        return None
    stable_template = template_revision(stable) if stable else None
    return max(sets, key=lambda h: (sets[h][1], sets[h][0] == stable_template, h))
