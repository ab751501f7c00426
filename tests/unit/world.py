"""A tiny simulated cluster for planner stories: it does what the planner's intent says,
the way Deployments would (a canary becomes ready after a delay, an unpaused target rolls
out, through a moment with pods of both templates when rolling takes time), on a virtual
clock. What serves is kept per pod template, as ReplicaSets count it; the flag store holds
the flags' state. With a router, the route holds the canary's share the last decision wrote
(a story may make it stick, or edit it by hand) and the stable backend the ReplicaSet it was
pinned to. No I/O; time moves only when a story says so."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from parachute.api import FlagState, MetricStatus, RolloutSpec, RolloutStatus, Verdict
from parachute.conditions import timestamp
from parachute.plan.desired_workload import template_revision, with_config
from parachute.plan.engine import decide
from parachute.plan.model import (
    Applied,
    AudienceMatch,
    CanaryState,
    Decision,
    Event,
    FlagsView,
    Health,
    Observed,
    RecoveryView,
    Serving,
    TargetState,
    TrafficView,
    WindowView,
)

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday morning


def spec(**fields: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, **fields})


@dataclass
class World:
    replicas: int = 10
    revision: str = "rev-1"  # the target's current template
    running: str = "rev-1"  # what the target's pods run (all ready), once any roll is over
    paused: bool = False
    roll_delay: timedelta = timedelta(0)  # how long the target takes to roll, once let go
    canary: CanaryState | None = None
    canary_delay: timedelta = timedelta(0)  # how long canary pods take to become ready
    # The canary Deployment's status lags a scale by one look (its controller has not observed the
    # new size): it reads 0 ready, as the reconcile counts it, while its ReplicaSet's pods serve on.
    canary_status_lags: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    health: Health = field(default_factory=Health)
    window: WindowView = field(default_factory=WindowView)
    hotfix: bool = False
    gates: tuple[tuple[str, bool, str], ...] = ()
    # The flag store (off, on or a percentage such as "10%"; None: not readable as one state)
    # and the tracked ConfigMaps.
    flags: str | None = None
    flags_problem: str = ""
    cannot_switch_on: str = ""
    cannot_split: str = ""  # why a percentage cannot be written (no off variant)
    configs: dict[str, str] = field(default_factory=dict)  # ConfigMap -> content hash
    restarted_at: str | None = None
    target_restarted_at: str | None = None
    # Pods restart (and flags reload) at once unless a story says otherwise.
    restarts: bool = True
    # With a router: the canary's share the route holds (None: not set up yet), whether writes
    # reach it, the pod-template-hash the stable backend selects, and the weights written.
    route: int | None = None
    route_audience: AudienceMatch | None = None  # phased: whose requests the route sends the canary
    route_stuck: bool = False
    stable_pin: str | None = None
    route_writes: list[int] = field(default_factory=list)
    # The Deployment controller one look behind: right after the target's spec is written (a
    # pause, an unpause, a template), its status still describes the spec before, so it does
    # not read as rolled out. Every pause and unpause written, in order.
    status_lags: bool = False
    pauses: list[bool] = field(default_factory=list)
    _status_behind: bool = False
    _canary_ready_at: datetime | None = None
    _canary_lagging: bool = False
    _rolling_to: str | None = None  # the template the target is rolling to, while it does
    _rolled_at: datetime | None = None  # when that roll is over

    def observe(self, now: datetime) -> Observed:
        canary = self.canary
        if canary is not None and self._canary_ready_at is not None and now >= self._canary_ready_at:
            canary = replace(canary, ready=canary.replicas)
            self.canary = canary
        seen_canary = canary
        if canary is not None and self._canary_lagging:
            seen_canary, self._canary_lagging = replace(canary, ready=0), False
        if (
            self._rolling_to is not None
            and self._rolled_at is not None
            and now >= self._rolled_at
            and not self.paused
        ):
            self.running, self._rolling_to, self._rolled_at = self._rolling_to, None, None
        # As the reconcile does: tracked configuration is part of the revision.
        behind, self._status_behind = self._status_behind, False  # caught up by the next look
        target = TargetState(
            revision=with_config(self.revision, self.configs),
            replicas=self.replicas,
            paused=self.paused,
            rolled_out=self.running == self.revision and self._rolling_to is None and not behind,
            restarted_at=self.target_restarted_at,
            status_current=not behind,
        )
        return Observed(target=target, canary=seen_canary, commands=dict(self.annotations), health=self.health,
                        window=self.window, hotfix=self.hotfix, gates=self.gates,
                        recovery=RecoveryView(config_hashes=dict(self.configs), restarted_at=self.restarted_at),
                        serving=self.serving(),
                        flags=FlagsView(self.flags, self.flags_problem, self.cannot_switch_on, self.cannot_split),
                        traffic=TrafficView(Applied(self.route, None if self.route is not None else "not set up",
                                                    audience=self.route_audience)))  # fmt: skip

    def serving(self) -> Serving:
        """Ready pods per template, as the ReplicaSets count them: half and half mid-roll."""
        target: dict[str, int] = {}
        if self._rolling_to is not None:
            target[self._rolling_to] = self.replicas // 2
            target[self.running] = target.get(self.running, 0) + self.replicas - self.replicas // 2
        elif self.replicas:
            target[self.running] = self.replicas
        canary = self.canary
        in_canary = {template_revision(canary.revision): canary.ready} if canary and canary.revision else {}
        sets = {pin_of(revision): (revision, target.get(revision, 0)) for revision in {self.running, *target}}
        return Serving(target={k: v for k, v in target.items() if v},
                       canary={k: v for k, v in in_canary.items() if v},
                       target_sets=sets)  # fmt: skip

    def bad_pods(self, revision: str) -> int:
        """Ready pods of `revision`'s template anywhere, canary pods always counted."""
        serving = self.serving()
        return serving.in_target(template_revision(revision)) + serving.in_canary()

    def apply(self, decision: Decision, now: datetime) -> None:
        self._recover(decision)
        traffic = decision.traffic
        if traffic is not None and not self.route_stuck:
            self.stable_pin = traffic.stable
            if self.route != traffic.weight:
                self.route_writes.append(traffic.weight)
            self.route = traffic.weight
            self.route_audience = traffic.rule
        intent = decision.workload
        if intent.target_restart and not intent.target_paused:
            self.target_restarted_at = intent.target_restart  # rolls at once, here
        if intent.target_paused != self.paused:
            self.pauses.append(intent.target_paused)
            self._status_behind = self.status_lags
        self.paused = intent.target_paused
        if not self.paused and self.revision != (self._rolling_to or self.running):
            if self.roll_delay:  # the Deployment controller rolls it, through both templates
                self._rolling_to, self._rolled_at = self.revision, now + self.roll_delay
            else:
                self.running, self._rolling_to = self.revision, None  # instantly, here
        want = intent.canary_replicas
        if want == 0:
            if self.canary is not None:
                self.canary = replace(self.canary, replicas=0, ready=0)
            return
        current = self.canary
        if current is None or current.revision != intent.canary_revision or current.replicas != want:
            ready = current.ready if current and current.revision == intent.canary_revision else 0
            self.canary = CanaryState(revision=intent.canary_revision, replicas=want, ready=min(ready, want))
            self._canary_lagging = self.canary_status_lags and current is not None and ready > 0
            self._canary_ready_at = now + self.canary_delay

    def _recover(self, decision: Decision) -> None:
        wanted = decision.recovery
        split = decision.flags not in (None, FlagState.off, FlagState.on)
        switchable = decision.flags == FlagState.off or not (
            self.cannot_switch_on or (split and self.cannot_split)
        )
        if decision.flags is not None and not self.flags_problem and switchable:
            self.flags = decision.flags
        snapshots = {s.snapshot: s.hash for s in decision.status.config_snapshots or []}
        for name, snapshot in wanted.restore_configs:
            self.configs[name] = snapshots[snapshot]
        if wanted.restart_stamp and self.restarts:
            self.restarted_at = wanted.restart_stamp
        if wanted.restore_template:
            if self.revision != wanted.restore_template:
                self._status_behind = self.status_lags
            self.revision = wanted.restore_template  # rolled to once the target is let go


@dataclass
class Story:
    """Tick the planner forward on a virtual clock, carrying status as the API server would."""

    spec: RolloutSpec
    world: World = field(default_factory=World)
    now: datetime = T0
    status: RolloutStatus = field(default_factory=RolloutStatus)
    events: list[Event] = field(default_factory=list)
    last: Decision | None = None
    seen: Observed | None = None  # what the last decision was made on

    def tick(self, after: timedelta = timedelta(0)) -> Decision:
        self.now += after
        self.seen = self.world.observe(self.now)
        decision = decide(self.spec, self.status, self.seen, self.now, generation=1)
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

    def judge(self, verdict: Verdict, immediate: bool = False) -> None:
        """An analysis round at the story's current time, as the reconcile writes it to status."""
        at = timestamp(self.now)
        metric = MetricStatus(name="error-rate", verdict=verdict, last_evaluated_at=at,
                              breached_since=at if verdict == Verdict.failed else None,
                              immediate=immediate or None)  # fmt: skip
        self.status = self.status.model_copy(update={"metrics": [metric]})
        self.world.health = Health(failed=verdict == Verdict.failed, reason="error-rate 6% above 5%")

    @property
    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


def pin_of(revision: str) -> str:
    """The pod-template-hash of the target's ReplicaSet of a template revision, in this world."""
    return f"hash-{template_revision(revision)}"
