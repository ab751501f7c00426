"""What an observation says about a release, in the engine's words: shared by the phase
handlers, the strategies and the rollback. Pure reads; nothing here decides."""

from __future__ import annotations

from parachute.api import RolloutStatus

# Re-exported: the engine's modules read times through `facts`.
from parachute.conditions import at as at  # noqa: PLC0414
from parachute.conditions import parse_time as parse_time  # noqa: PLC0414
from parachute.plan.desired_workload import template_revision
from parachute.plan.model import Observed


def same_template(revision: str, other: str | None) -> bool:
    return other is not None and template_revision(revision) == template_revision(other)


def applied(observed: Observed) -> int | None:
    """The canary's share the router read back; None when it could not."""
    return observed.traffic.applied.weight if observed.traffic is not None else None


def traffic_back(observed: Observed, routed: bool) -> bool:
    """All traffic is on stable, as seen: the route at 0% for the canary and no audience sent
    to it (or no route left to read), or with replica ratio no canary pod ready."""
    if routed:
        traffic = observed.traffic
        if traffic is not None and traffic.broken:
            return True
        return applied(observed) == 0 and (traffic is None or traffic.applied.audience is None)
    canary = observed.canary
    return observed.serving.in_canary() == 0 and (canary is None or canary.ready == 0)


def new_in_target(observed: Observed, revision: str, stable: str | None) -> int:
    """Ready pods of a release's new pod template in the target (none when it has none of its own)."""
    if same_template(revision, stable):
        return 0
    return observed.serving.in_target(template_revision(revision))


def target_runs(st: RolloutStatus, observed: Observed, revision: str) -> bool:
    """Ready pods of `revision`'s template serve from the target, and it is not stable's."""
    stable = st.release.stable_revision if st.release else None
    return new_in_target(observed, revision, stable) > 0


def promotion_restart(st: RolloutStatus) -> str | None:
    """A release of configuration alone changes no pod template: promoting it restarts the
    target's pods (stamped with the stage's start), so they all read the new configuration."""
    release = st.release
    if release is None or not release.revision or not release.stable_revision:
        return None
    if release.revision == release.stable_revision:
        return None
    same = template_revision(release.revision) == template_revision(release.stable_revision)
    return st.stage_started_at if same else None


def promoted(st: RolloutStatus, observed: Observed) -> bool:
    """At 100%: the target runs the new version everywhere (restarted, for configuration)."""
    stamp = promotion_restart(st)
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


def ticket_note(st: RolloutStatus) -> str:
    ticket = st.release.change_ticket if st.release else None
    return f" (change ticket {ticket})" if ticket else ""


def blocked(st: RolloutStatus) -> bool:
    return st.release is not None and st.release.revision in (st.blocked_revisions or [])
