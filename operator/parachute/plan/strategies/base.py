"""The seam a strategy plugs into: its plan, a stage's intents, a stage's readiness, and whether
a stage waits for a person's promote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from parachute.api import PlannedStage, RolloutSpec, RolloutStatus
from parachute.plan.model import TrafficIntent, WorkloadIntent

if TYPE_CHECKING:
    from parachute.plan.tick import Tick


@dataclass(frozen=True)
class StageIntent:
    """What the current stage needs: the workload, and with a router what its backend holds."""

    workload: WorkloadIntent
    traffic: TrafficIntent | None = None


class Strategy(Protocol):
    def plan(self, spec: RolloutSpec) -> list[PlannedStage]:
        """The stages of a release, in order."""
        ...

    def stage_intent(self, tick: Tick, st: RolloutStatus, revision: str) -> StageIntent:
        """The workload (and traffic) of the current stage, releasing `revision`."""
        ...

    def not_reached(
        self, tick: Tick, st: RolloutStatus, stage: PlannedStage, intent: StageIntent, revision: str
    ) -> str:
        """What the stage still waits for before its wait counts ("" once reached), given the
        intent `stage_intent` returned for it."""
        ...

    def waits_for_promote(self, spec: RolloutSpec, stage: PlannedStage) -> bool:
        """Whether the stage's wait ends only by a promote command (a manual promotion)."""
        ...
