"""The canary: the new version beside stable, its share of traffic raised stage by stage.

With replica ratio the share is the canary's share of ready pods; with a router the canary is
sized for its share (or at full size) and the route moves once its pods are ready (capacity
apart from traffic). At 100% the target is let go to roll to the new version, and the canary
keeps its capacity until it has.
"""

from __future__ import annotations

from parachute.api import PlannedStage, RolloutSpec, RolloutStatus
from parachute.plan import facts
from parachute.plan.desired_workload import canary_replicas, routed_canary_replicas
from parachute.plan.model import Observed, TrafficIntent, WorkloadIntent
from parachute.plan.stages import effective_risk, flag_gated_plan, plan_for
from parachute.plan.strategies.base import StageIntent
from parachute.plan.tick import Tick


class Canary:
    def plan(self, spec: RolloutSpec) -> list[PlannedStage]:
        """The user's steps, the five-stage flag-gated sequence, or the risk plan."""
        if (
            not spec.steps
            and spec.feature_flags is not None
            and effective_risk(spec).value in ("medium", "high")
        ):
            return flag_gated_plan(spec)
        return plan_for(spec)

    def stage_intent(self, tick: Tick, st: RolloutStatus, revision: str) -> StageIntent:
        """The canary sized to the stage's weight, the target held; with a router, also what its
        backend should hold."""
        assert st.plan is not None and st.stage_index is not None
        stage = st.plan[min(st.stage_index, len(st.plan) - 1)]
        observed = tick.observed
        if tick.routed:
            return _routed(tick, st, stage.weight, revision)
        if stage.weight == 100:
            done = facts.promoted(st, observed)
            # A canary that runs it keeps its capacity while the target rolls; none is made anew.
            canary = observed.canary
            running = canary is not None and canary.revision == revision and canary.replicas > 0
            keep = _previous_canary(st, observed) if running else 0
            return StageIntent(WorkloadIntent(
                target_paused=done, canary_replicas=0 if done else keep, canary_revision=revision,
                target_restart=facts.promotion_restart(st),
            ))  # fmt: skip
        # The target's own pods already serve it (a retry after promotion, a plan that went to
        # 100% earlier): a canary of it beside them would only add pods, not a share.
        beside = (
            0
            if facts.target_runs(st, observed, revision)
            else canary_replicas(observed.target.replicas, stage.weight)
        )
        return StageIntent(
            WorkloadIntent(target_paused=True, canary_replicas=beside, canary_revision=revision)
        )

    def not_reached(
        self, tick: Tick, st: RolloutStatus, stage: PlannedStage, intent: StageIntent, revision: str
    ) -> str:
        if not _ready(tick, st, stage.weight, intent, revision):
            return "the new version to become ready"
        return _traffic_not_there(tick, stage.weight, intent)

    def waits_for_promote(self, spec: RolloutSpec, stage: PlannedStage) -> bool:
        return False  # a canary stage's wait ends by its own timing; a promote only shortens it


CANARY = Canary()


def _routed(tick: Tick, st: RolloutStatus, weight: int, revision: str) -> StageIntent:
    """A stage with a router: capacity apart from traffic. The canary is sized for its share (or
    full), and the route moves only once its pods are ready. At 100% the canary takes all the
    traffic at full size, then the target is let go to roll; once it has, the stable backend
    follows it and the route goes back to stable, and the canary is retired after that."""
    observed = tick.observed
    applied = facts.applied(observed)
    canary = observed.canary
    runs = canary is not None and canary.revision == revision
    restart = facts.promotion_restart(st)
    if weight == 100:
        if facts.promoted(st, observed):
            return StageIntent(WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=revision,
                                              target_restart=restart), TrafficIntent(share=0))  # fmt: skip
        full = max(1, observed.target.replicas)
        ready = runs and canary is not None and canary.ready >= full
        return StageIntent(
            WorkloadIntent(target_paused=applied != 100, canary_replicas=full, canary_revision=revision,
                           target_restart=restart),
            TrafficIntent(share=100, open=ready, held=_held(observed, runs, revision, 100)),
        )  # fmt: skip
    want = 0 if facts.target_runs(st, observed, revision) else (
        routed_canary_replicas(observed.target.replicas, weight, tick.full_canary)
    )  # fmt: skip
    if want == 0:
        return StageIntent(WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=revision),
                           TrafficIntent(share=0))  # fmt: skip
    ready = runs and canary is not None and canary.ready >= want
    return StageIntent(
        WorkloadIntent(target_paused=True, canary_replicas=want, canary_revision=revision),
        TrafficIntent(share=weight, open=ready, held=_held(observed, runs, revision, weight)),
    )


def _held(observed: Observed, runs: bool, revision: str, share: int) -> int:
    """While the canary's pods for a share are not all ready: what the route keeps. Never more than
    it holds or than the share, and nothing for a canary with no ready pod of this release.

    Ready pods are counted from the canary's ReplicaSets too: a canary Deployment just scaled up
    reads 0 ready until its controller observes the new size, while its pods go on serving."""
    canary = observed.canary
    if not runs or canary is None:
        return 0
    if max(canary.ready, observed.serving.in_canary_of(revision)) == 0:
        return 0
    return min(facts.applied(observed) or 0, share)


def _previous_canary(st: RolloutStatus, observed: Observed) -> int:
    """While the target rolls to the new version, the canary keeps the capacity it had."""
    assert st.plan is not None and st.stage_index is not None
    earlier = [s.weight for s in st.plan[: st.stage_index] if s.weight < 100]
    return canary_replicas(observed.target.replicas, earlier[-1]) if earlier else 0


def _ready(tick: Tick, st: RolloutStatus, weight: int, intent: StageIntent, revision: str) -> bool:
    observed = tick.observed
    if weight == 100:
        return facts.promoted(st, observed)
    want = intent.workload.canary_replicas
    if want == 0 and facts.target_runs(st, observed, revision):
        return True  # the target's own pods serve it already
    canary = observed.canary
    return canary is not None and canary.revision == revision and canary.ready >= want


def _traffic_not_there(tick: Tick, weight: int, intent: StageIntent) -> str:
    """With a router: what the route still lacks for the stage to count as reached ("" when it holds
    the stage's share; at 100%, once the target has rolled, 0% for the canary: stable is new)."""
    if not tick.routed or intent.traffic is None:
        return ""
    share = intent.traffic.share
    if weight == 100 and share == 100:
        return "the target to roll to the new version behind the route"
    traffic = tick.observed.traffic
    applied = facts.applied(tick.observed)
    if applied == share:
        return ""
    if weight == 100:
        held = f"{applied}%" if applied is not None else "an unknown share"
        return f"all traffic back on the stable backend, now running the new version (the route holds {held})"
    if applied is None:
        why = (traffic.broken or traffic.applied.unverified) if traffic is not None else "not read yet"
        return f"the route to send {share}% to the canary ({why})"
    return f"the route to send {share}% to the canary (it holds {applied}%)"
