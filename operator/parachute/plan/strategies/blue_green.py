"""Blue/green: the new version as a full second copy behind a preview Service, then an instant
switch of the active Service.

Three stages. `preview`: the copy (the canary Deployment at the target's size) is reached by the
preview Service only, while the active Service selects the stable pods; the Rollout's analysis
and gates judge the copy's pods. It ends after `previewWait` of health, or by a promote when
`autoPromote` is false. `active`: the active Service selects the copy, in one write, and the
old pods stay as they are for `scaleDownDelay`, watched on active traffic: a rollback then is
one write back (the code level's switch, measured like every level). `released`: the target is
let go to roll to the new version while the copy carries the traffic; once it has, the active
Service selects the target's pods again and the copy is retired.

The switch is a traffic intent: share 0 is "the active Service selects the stable pods", 100
"it selects the copy". So the rollback, the abort and the order of traffic before capacity are
the ones every router has (`plan.traffic`).
"""

from __future__ import annotations

from parachute.api import PlannedStage, RolloutSpec, RolloutStatus
from parachute.plan import facts
from parachute.plan.model import TrafficIntent, WorkloadIntent
from parachute.plan.strategies.base import StageIntent
from parachute.plan.tick import Tick

PREVIEW, ACTIVE, RELEASED = "preview", "active", "released"


class BlueGreen:
    def plan(self, spec: RolloutSpec) -> list[PlannedStage]:
        """Preview for previewWait, active for scaleDownDelay, then the target rolls."""
        settings = spec.blue_green
        assert settings is not None
        preview, delay = settings.preview_wait, settings.scale_down_delay
        return [
            PlannedStage(name=PREVIEW, weight=0, min_wait=preview, max_wait=preview),
            PlannedStage(name=ACTIVE, weight=100, min_wait=delay, max_wait=delay),
            PlannedStage(name=RELEASED, weight=100, min_wait="0s", max_wait="0s"),
        ]

    def stage_intent(self, tick: Tick, st: RolloutStatus, revision: str) -> StageIntent:
        assert st.plan is not None and st.stage_index is not None
        stage = st.plan[min(st.stage_index, len(st.plan) - 1)]
        observed = tick.observed
        full = max(1, observed.target.replicas)
        canary = observed.canary
        ready = canary is not None and canary.revision == revision and canary.ready >= full
        if stage.name == PREVIEW:
            return StageIntent(WorkloadIntent(True, full, revision), TrafficIntent(share=0))
        if stage.name == ACTIVE:
            # Until the copy is ready at full size the active Service stays on stable (held 0).
            return StageIntent(WorkloadIntent(True, full, revision), TrafficIntent(share=100, open=ready))
        restart = facts.promotion_restart(st)
        if facts.promoted(st, observed):
            # The target runs the new version: the active Service selects its pods again, and the
            # copy keeps its pods until it is seen to (plan.traffic holds them).
            return StageIntent(WorkloadIntent(True, 0, revision, restart), TrafficIntent(share=0))
        # The target rolls only while every request goes to the copy: its old pods go as it does.
        switched = facts.applied(observed) == 100
        return StageIntent(
            WorkloadIntent(not switched, full, revision, restart), TrafficIntent(share=100, open=ready)
        )

    def not_reached(
        self, tick: Tick, st: RolloutStatus, stage: PlannedStage, intent: StageIntent, revision: str
    ) -> str:
        observed = tick.observed
        applied = facts.applied(observed)
        if stage.name == RELEASED:
            if not facts.promoted(st, observed):
                return "the target to roll to the new version while the active Service selects the new copy"
            if applied != 0:
                return "the active Service to select the target's pods, now running the new version"
            return ""
        canary, want = observed.canary, intent.workload.canary_replicas
        if canary is None or canary.revision != revision or canary.ready < want:
            ready = canary.ready if canary is not None and canary.revision == revision else 0
            return f"the new copy to become ready at full size ({ready}/{want} pods)"
        share = intent.traffic.share if intent.traffic is not None else 0
        if applied == share:
            return ""
        side = "the new copy" if share == 100 else "the stable pods"
        traffic = observed.traffic
        why = (traffic.broken or traffic.applied.unverified) if traffic is not None else "not read yet"
        return f"the active Service to select {side} only ({why or 'it selects the other side'})"

    def waits_for_promote(self, spec: RolloutSpec, stage: PlannedStage) -> bool:
        """The preview ends only by a promote when automatic promotion is off."""
        return spec.blue_green is not None and not spec.blue_green.auto_promote and stage.name == PREVIEW


BLUE_GREEN = BlueGreen()
