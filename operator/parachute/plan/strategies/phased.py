"""Phased: the new version goes to one audience after another (internal, beta), then to everyone.

An audience is the requests that carry a header (or a cookie) of an exact value. At its stage
the router sends them to the canary while everyone else stays on stable (the share is 0): a
rule of Parachute's own beside the user's, which the router reads back. The stage is reached
once the canary's pods are ready and the route holds that audience, and it is judged like a
canary's stage, by the Rollout's analysis on the canary's pods, which serve only the audience.
The canary runs one pod for an audience (the target's size with `canaryScale: full`).

The last stage is everyone: the canary strategy's 100%. The canary grows to full size while the
route keeps the audience it had, then all traffic goes to it and the audience's rule goes in the
same write; the target rolls, and the route goes back to stable, now the new version.

A rollback or an abort routes as every router's does (`plan.traffic`): share 0 and no audience,
so the rule is removed before the canary's pods go.
"""

from __future__ import annotations

from dataclasses import replace

from parachute.api import Audience, PlannedStage, RolloutSpec, RolloutStatus
from parachute.plan import facts
from parachute.plan.model import AudienceMatch, Observed, TrafficIntent, WorkloadIntent
from parachute.plan.strategies.base import StageIntent
from parachute.plan.strategies.canary import CANARY
from parachute.plan.tick import Tick


def audience_match(audience: Audience) -> AudienceMatch | None:
    """What a router writes for an audience; None for everyone."""
    if audience.header is not None:
        return AudienceMatch("header", audience.header.name.lower(), audience.header.value)
    if audience.cookie is not None:
        return AudienceMatch("cookie", audience.cookie.name, audience.cookie.value)
    return None


class Phased:
    def plan(self, spec: RolloutSpec) -> list[PlannedStage]:
        """One stage per audience, at share 0 with its match; the last, everyone, at 100%."""
        settings = spec.phased
        assert settings is not None
        stages = []
        for audience in settings.audiences:
            match = audience_match(audience)
            stages.append(PlannedStage(
                name=audience.name, weight=0 if match is not None else 100,
                min_wait=audience.min_wait or "0s", max_wait=audience.max_wait or audience.min_wait or "0s",
                audience=str(match) if match is not None else None,
            ))  # fmt: skip
        return stages

    def stage_intent(self, tick: Tick, st: RolloutStatus, revision: str) -> StageIntent:
        assert st.plan is not None and st.stage_index is not None
        index = min(st.stage_index, len(st.plan) - 1)
        match = _match(tick.spec, index)
        observed = tick.observed
        if match is None:
            # Everyone: the canary's 100%. While the canary grows to full size the route keeps
            # the audience it holds; once it sends everyone, the rule goes in the same write.
            intent = CANARY.stage_intent(tick, st, revision)
            traffic = intent.traffic
            if traffic is not None and traffic.share == 100 and not traffic.open:
                traffic = replace(traffic, held_audience=_held(observed, revision))
            return replace(intent, traffic=traffic)
        if facts.target_runs(st, observed, revision):
            # The target's own pods serve it already (a retry after promotion): nothing to expose.
            return StageIntent(WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=revision),
                               TrafficIntent(share=0))  # fmt: skip
        want = max(1, observed.target.replicas) if tick.full_canary else 1
        canary = observed.canary
        ready = canary is not None and canary.revision == revision and canary.ready >= want
        return StageIntent(
            WorkloadIntent(target_paused=True, canary_replicas=want, canary_revision=revision),
            TrafficIntent(share=0, open=ready, audience=match, held_audience=_held(observed, revision)),
        )

    def not_reached(
        self, tick: Tick, st: RolloutStatus, stage: PlannedStage, intent: StageIntent, revision: str
    ) -> str:
        observed = tick.observed
        applied = observed.traffic.applied if observed.traffic is not None else None
        traffic = intent.traffic
        if traffic is None or traffic.audience is None:
            waiting = CANARY.not_reached(tick, st, stage, intent, revision)
            if waiting or applied is None or applied.audience is None:
                return waiting
            return f"the route to stop sending {applied.audience} to the canary"
        want = intent.workload.canary_replicas
        canary = observed.canary
        if canary is None or canary.revision != revision or canary.ready < want:
            return "the new version to become ready"
        if applied is not None and applied.holds(0, traffic.audience):
            return ""
        return (
            f"the route to send {traffic.audience} to the new version and everyone else to stable "
            f"({_holds(observed)})"
        )

    def waits_for_promote(self, spec: RolloutSpec, stage: PlannedStage) -> bool:
        return False  # an audience's wait ends by its own timing; a promote only shortens it


PHASED = Phased()


def _match(spec: RolloutSpec, index: int) -> AudienceMatch | None:
    audiences = spec.phased.audiences if spec.phased is not None else []
    return audience_match(audiences[index]) if index < len(audiences) else None


def _held(observed: Observed, revision: str) -> AudienceMatch | None:
    """While the canary's pods for a stage are not all ready: the audience the route keeps, the
    one it holds, and none for a canary with no ready pod of this release."""
    canary, traffic = observed.canary, observed.traffic
    if canary is None or canary.revision != revision or traffic is None:
        return None
    if max(canary.ready, observed.serving.in_canary_of(revision)) == 0:
        return None
    return traffic.applied.audience


def _holds(observed: Observed) -> str:
    """What the route holds, as a person reads it in a message."""
    traffic = observed.traffic
    if traffic is None:
        return "not read yet"
    applied = traffic.applied
    if traffic.broken or applied.weight is None:
        return traffic.broken or applied.unverified or "unknown"
    who = f"{applied.audience} to the canary" if applied.audience is not None else "no audience"
    return f"it holds {who} and {applied.weight}% of everyone"
