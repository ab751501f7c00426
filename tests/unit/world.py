"""A tiny simulated cluster for planner stories: it does what the planner's intent says,
the way Deployments would (a canary becomes ready after a delay, an unpaused target rolls
out), on a virtual clock. No I/O; time moves only when a story says so."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from parachute.api import RolloutSpec, RolloutStatus
from parachute.plan.engine import decide
from parachute.plan.model import (
    CanaryState,
    Decision,
    Event,
    Health,
    Observed,
    RecoveryView,
    TargetState,
    WindowView,
)
from parachute.plan.workload import with_config

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday morning


def spec(**fields: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, **fields})


@dataclass
class World:
    replicas: int = 10
    revision: str = "rev-1"  # the target's current template
    running: str = "rev-1"  # what the target's pods run
    paused: bool = False
    canary: CanaryState | None = None
    canary_delay: timedelta = timedelta(0)  # how long canary pods take to become ready
    annotations: dict[str, str] = field(default_factory=dict)
    health: Health = field(default_factory=Health)
    window: WindowView = field(default_factory=WindowView)
    hotfix: bool = False
    gates: tuple[tuple[str, bool, str], ...] = ()
    # The flag store and the tracked ConfigMaps, as the rollback levels find them.
    flags_off: bool | None = None
    flags_problem: str = ""
    configs: dict[str, str] = field(default_factory=dict)  # ConfigMap -> content hash
    restarted_at: str | None = None
    target_restarted_at: str | None = None
    # Pods restart (and flags reload) at once unless a story says otherwise.
    restarts: bool = True
    _canary_ready_at: datetime | None = None

    def observe(self, now: datetime) -> Observed:
        canary = self.canary
        if canary is not None and self._canary_ready_at is not None and now >= self._canary_ready_at:
            canary = replace(canary, ready=canary.replicas)
            self.canary = canary
        # As the reconcile does: tracked configuration is part of the revision.
        target = TargetState(
            revision=with_config(self.revision, self.configs),
            replicas=self.replicas,
            paused=self.paused,
            rolled_out=self.running == self.revision,
            restarted_at=self.target_restarted_at,
        )
        return Observed(target=target, canary=canary, commands=dict(self.annotations), health=self.health,
                        window=self.window, hotfix=self.hotfix, gates=self.gates,
                        recovery=RecoveryView(flags_off=self.flags_off, flags_problem=self.flags_problem,
                                              config_hashes=dict(self.configs),
                                              restarted_at=self.restarted_at))  # fmt: skip

    def apply(self, decision: Decision, now: datetime) -> None:
        self._recover(decision)
        intent = decision.workload
        if intent.target_restart and not intent.target_paused:
            self.target_restarted_at = intent.target_restart  # rolls at once, here
        self.paused = intent.target_paused
        if not self.paused:
            self.running = self.revision  # the Deployment controller rolls it (instantly, here)
        want = intent.canary_replicas
        if want == 0:
            if self.canary is not None:
                self.canary = replace(self.canary, replicas=0, ready=0)
            return
        current = self.canary
        if current is None or current.revision != intent.canary_revision or current.replicas != want:
            ready = current.ready if current and current.revision == intent.canary_revision else 0
            self.canary = CanaryState(revision=intent.canary_revision, replicas=want, ready=min(ready, want))
            self._canary_ready_at = now + self.canary_delay

    def _recover(self, decision: Decision) -> None:
        wanted = decision.recovery
        if wanted.flags_off and self.flags_off is not None and not self.flags_problem:
            self.flags_off = True
        snapshots = {s.snapshot: s.hash for s in decision.status.config_snapshots or []}
        for name, snapshot in wanted.restore_configs:
            self.configs[name] = snapshots[snapshot]
        if wanted.restart_stamp and self.restarts:
            self.restarted_at = wanted.restart_stamp
        if wanted.restore_template:
            self.revision = wanted.restore_template


@dataclass
class Story:
    """Tick the planner forward on a virtual clock, carrying status as the API server would."""

    spec: RolloutSpec
    world: World = field(default_factory=World)
    now: datetime = T0
    status: RolloutStatus = field(default_factory=RolloutStatus)
    events: list[Event] = field(default_factory=list)
    last: Decision | None = None

    def tick(self, after: timedelta = timedelta(0)) -> Decision:
        self.now += after
        decision = decide(self.spec, self.status, self.world.observe(self.now), self.now, generation=1)
        # Status goes through JSON, as it does through the API server.
        self.status = RolloutStatus.model_validate(decision.status.model_dump(by_alias=True, mode="json"))
        self.world.apply(decision, self.now)
        self.events.extend(decision.events)
        self.last = decision
        return decision

    def run_until_quiet(self, limit: int = 200) -> None:
        """Follow `next_check_at` until the planner has nothing left to wait for."""
        for _ in range(limit):
            decision = self.tick()
            if decision.next_check_at is None:
                return
            self.now = max(self.now, decision.next_check_at)
        raise AssertionError("the story did not settle")

    @property
    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]
