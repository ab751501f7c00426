"""Ways to expose a release, one module each behind the `Strategy` seam (`base`): canary (by
share), blue/green (by copy) and phased (by audience). Each supplies its plan of stages, the
workload and traffic each stage needs, and when a stage is reached. Commands, windows, pause,
flags and the rollback are shared and live outside them."""

from __future__ import annotations

from parachute.api import RolloutSpec
from parachute.api import Strategy as StrategyName
from parachute.plan.strategies.base import StageIntent, Strategy
from parachute.plan.strategies.blue_green import BLUE_GREEN
from parachute.plan.strategies.canary import CANARY
from parachute.plan.strategies.phased import PHASED

__all__ = ["StageIntent", "Strategy", "strategy_for"]


def strategy_for(spec: RolloutSpec) -> Strategy:
    """The strategy a Rollout names."""
    if spec.strategy == StrategyName.blue_green:
        return BLUE_GREEN
    return PHASED if spec.strategy == StrategyName.phased else CANARY
