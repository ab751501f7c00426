"""What a phase handler of the engine is given, and what it gives back.

`decide` normalises the status, then hands it to the handler of its phase together with a
`Tick`: the spec, what was observed, the time, the router and the strategy (`exposure`). The handler owns
the status it is given and returns an `Outcome`: that status, the intents (workload, traffic,
recovery, flags), its Events and when to look again. Helpers write Events and due times into
the handler's own `Log`, which nothing reads back: intents travel only as return values, so no
step depends on what another step left behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from parachute.api import (
    DEFAULT_SCALE_DOWN_DELAY,
    CanaryScale,
    Phase,
    RolloutSpec,
    RolloutStatus,
    parse_duration,
)
from parachute.plan.model import Event, EventType, Observed, RecoveryIntent, TrafficIntent, WorkloadIntent

if TYPE_CHECKING:
    from parachute.plan.strategies.base import Strategy

# How soon to look again while waiting for the cluster (pods becoming ready, a rollout).
CLUSTER_TICK = timedelta(seconds=2)
# The same while a stage waits for Deployments alone (no router to read back, no flag store):
# every change of their pods' counts or their spec wakes the Rollout, so the look is a safety
# net (for a status that changes nothing else as the controller catches up: `as_news`; for an
# event the watch missed). At 2 s a release
# waiting for pods was reconciled again as soon as its turn came, the queue full of looks that
# found nothing new (bench/results.md).
DEPLOYMENTS_TICK = timedelta(seconds=15)
# ... and a quarter of the time the stage has waited, up to this: at 10,000 Rollouts the testbed's
# controller made 5,000 canaries' pods over ten minutes, and their stages' looks every 15 s were
# 330 a second, two thirds of all reconciles found nothing new, the rounds of stages in place
# behind them. The progress deadline has a look of its own.
LONGEST_DEPLOYMENTS_TICK = timedelta(minutes=5)
# How often unmet gates are checked again (a new annotation wakes the Rollout at once anyway).
GATE_RECHECK = timedelta(seconds=10)
ACTIVE = (Phase.progressing, Phase.paused, Phase.waiting)
STOPPED = (Phase.aborted, Phase.rolled_back)
# Phases in which what serves is watched after a rollback: no canary, the target held.
WATCHED = (Phase.rolled_back, Phase.waiting)


def waiting_tick(tick: Tick, waited: timedelta = timedelta(0)) -> timedelta:
    """How soon a stage not yet reached, after `waited`, is looked at again."""
    watched = not tick.routed and tick.spec.feature_flags is None  # blue/green is routed too
    if not watched:
        return CLUSTER_TICK
    return min(LONGEST_DEPLOYMENTS_TICK, max(DEPLOYMENTS_TICK, waited / 4))


@dataclass(frozen=True)
class Tick:
    """One decision's inputs, read-only."""

    spec: RolloutSpec
    observed: Observed
    now: datetime
    exposure: Strategy  # the strategy: how a stage exposes the new version
    router: str | None = None  # the traffic router in use; None: replica ratio
    full_canary: bool = False  # with a router: the canary at the target's size (canaryScale full)
    # With a router: how long a canary the route sends nothing keeps its pods (scaleDownDelay).
    drain: timedelta = timedelta(0)

    @property
    def routed(self) -> bool:
        return self.router is not None

    @property
    def drains(self) -> bool:
        """A router's route read back at 0% takes the canary out of service: its pods only drain.
        Not so for blue/green, whose preview Service reaches the copy until it is retired."""
        return self.routed and self.router != BLUE_GREEN_ROUTER


def tick_for(spec: RolloutSpec, observed: Observed, now: datetime, exposure: Strategy) -> Tick:
    if spec.blue_green is not None:  # the switch of the active Service's selector is its route
        return Tick(spec, observed, now, exposure, BLUE_GREEN_ROUTER)
    routing = spec.traffic_routing
    if routing is not None and routing.router() is not None:
        delay = routing.scale_down_delay
        drain = parse_duration(delay) if delay else DEFAULT_SCALE_DOWN_DELAY
        full = routing.canary_scale == CanaryScale.full
        return Tick(spec, observed, now, exposure, routing.router(), full, drain)
    return Tick(spec, observed, now, exposure)


@dataclass
class Log:
    """What a handler tells beside its intents: Events, the earliest due time, and the state the
    release's flags must be put in now. Written while deciding, never read back."""

    events: list[Event] = field(default_factory=list)
    next_check: datetime | None = None
    flags: str | None = None  # the exposure to put the flags in: off, on, "10%"

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event(EventType.warning if warning else EventType.normal, reason, message))

    def check_at(self, moment: datetime) -> None:
        if self.next_check is None or moment < self.next_check:
            self.next_check = moment

    def outcome(
        self,
        status: RolloutStatus,
        workload: WorkloadIntent,
        traffic: TrafficIntent | None = None,
        recovery: RecoveryIntent | None = None,
    ) -> Outcome:
        return Outcome(status, workload, traffic, recovery or RecoveryIntent(), self.flags,
                       tuple(self.events), self.next_check)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What a phase handler decided."""

    status: RolloutStatus
    workload: WorkloadIntent
    traffic: TrafficIntent | None = None  # with a router: what its backend should hold
    recovery: RecoveryIntent = field(default_factory=RecoveryIntent)
    flags: str | None = None
    events: tuple[Event, ...] = ()
    next_check: datetime | None = None


# status.traffic.router of a blue/green Rollout: the active Service's selector is what switches.
BLUE_GREEN_ROUTER = "blueGreen"
# The workload when no release runs: no canary, the target held.
AT_REST = WorkloadIntent(target_paused=True, canary_replicas=0, canary_revision=None)
