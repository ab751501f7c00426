"""What the planner sees and what it decides: plain data, no clients.

`Observed` is a snapshot of the cluster taken by the reconcile; `Decision` is what the
status, the workload and the Events should become. The planner never calls anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from parachute.api import RolloutStatus
from parachute.plan.desired_workload import template_revision


@dataclass(frozen=True)
class TargetState:
    """The user's Deployment as observed."""

    revision: str  # hash of its current pod template (what the user wants to run)
    replicas: int  # its desired size
    paused: bool
    images: tuple[str, ...] = ()
    # Whether every pod runs the current template and is available (after an unpause).
    rolled_out: bool = False
    restarted_at: str | None = None  # the template's restart stamp, if any
    # Whether the Deployment controller has seen its latest spec; until it has, its status
    # counts (and so `rolled_out`) describe an older one, such as the spec before a pause.
    status_current: bool = True


@dataclass(frozen=True)
class CanaryState:
    """The canary Deployment Parachute owns, as observed."""

    revision: str | None  # the template revision it runs
    replicas: int
    ready: int


@dataclass(frozen=True)
class Health:
    """The analysis summary for the current stage (filled in by the analysis module)."""

    # Since when every watched signal has been healthy without a break; None = always.
    healthy_since: datetime | None = None
    # A verdict that demands a rollback.
    failed: bool = False
    reason: str = ""
    # Why the release may not progress for now (no data, Prometheus away); never a rollback.
    hold_reason: str = ""
    # Every metric was evaluated since the stage began (needed to end a stage early).
    fresh: bool = True
    # Why the latest round could not judge (Inconclusive, Error): a stage is never decided on that.
    undecided_reason: str = ""


@dataclass(frozen=True)
class WindowView:
    """The release window as it stands now (computed by `plan.windows.state`)."""

    open: bool = True
    reason: str = ""
    next_open: datetime | None = None
    policy: str | None = None  # which policy applied; None: not held by time


@dataclass(frozen=True)
class Serving:
    """Ready pods of each pod-template revision, counted from the ReplicaSets of the target and
    of the canary: what really serves, whatever the templates say."""

    target: Mapping[str, int] = field(default_factory=dict)  # template revision -> ready pods
    # The same; pods marked with the configuration they started for under <template>.<config>.
    canary: Mapping[str, int] = field(default_factory=dict)
    # The target's ReplicaSets by pod-template-hash: (template revision, ready pods). A router's
    # stable backend selects one of them.
    target_sets: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def in_target(self, template: str) -> int:
        return self.target.get(template, 0)

    def in_canary(self) -> int:
        return sum(self.canary.values())

    def in_canary_of(self, revision: str) -> int:
        """Ready canary pods of the release `revision`: of its template, and started for its
        configuration (pods not marked, of a canary made before the mark, count by template)."""
        template = template_revision(revision)
        marked = self.canary.get(revision, 0) if revision != template else 0
        return self.canary.get(template, 0) + marked


@dataclass(frozen=True)
class FlagsView:
    """The release's flag store as observed."""

    # What every flag serves: off, on, or on for a percentage of users ("10%"); None: they
    # differ, the store holds something else, or there is no store.
    state: str | None = None
    problem: str = ""  # why the store cannot be read or written (missing, bad JSON)
    cannot_switch_on: str = ""  # why some flags have no "on" to switch to (flagd: no on variant)
    cannot_split: str = ""  # why some flags cannot be on for a percentage (flagd: no off variant)


class AppAnswer(StrEnum):
    """What the app's answer says of the flags (spec.featureFlags.verify)."""

    match = "match"  # every pod asked reports the expected value
    mismatch = "mismatch"  # some pod reports another value, or none
    unknown = "unknown"  # some pod could not be asked or gave no JSON: proof of nothing


@dataclass(frozen=True)
class FlagCheckView:
    """The pods serving the rolled-back revision, asked whether they serve the flags off."""

    answer: AppAnswer
    said: str  # in words: which pod, what it reports (or why it could not be asked)


@dataclass(frozen=True)
class RecoveryView:
    """What the rollback levels find in place: the tracked ConfigMaps and restarts."""

    config_hashes: dict[str, str] = field(default_factory=dict)  # tracked ConfigMap -> content hash
    restarted_at: str | None = None  # the restart stamp the canary (and target) pods finished with


@dataclass(frozen=True)
class AudienceMatch:
    """Who an audience is, as a router writes it: requests whose header (or cookie) `key` has
    exactly `value`. Header names are kept in lower case: they match without regard to case."""

    by: Literal["header", "cookie"]
    key: str
    value: str

    def __str__(self) -> str:
        return (
            f"{self.by} {self.key}: {self.value}"
            if self.by == "header"
            else f"cookie {self.key}={self.value}"
        )


@dataclass(frozen=True)
class Applied:
    """What a traffic router's backend holds now, as the router read it.

    `weight`: the canary's share in percent, or None when it cannot be verified, `unverified`
    then saying why. `audience`: whose requests go to the canary whatever the share (phased),
    as read back. `hand_edit`: weights found that Parachute did not write, what they
    were and (after a write) that they were put right: an Event's message. `wrote`: whether
    the call that answered changed the backend.
    """

    weight: int | None
    unverified: str | None = None
    hand_edit: str | None = None
    wrote: bool = False
    audience: AudienceMatch | None = None

    def holds(self, weight: int, audience: AudienceMatch | None = None) -> bool:
        """A stage is reached only when the backend verifiably holds its weight (and audience)."""
        return self.weight == weight and self.audience == audience


@dataclass(frozen=True)
class TrafficView:
    """The router's backend as the reconcile read it (only with a router)."""

    applied: Applied
    # The router's set-up cannot work now (its route was deleted, say). A release waits on it;
    # a rollback goes on without it, as with replica ratio: there is nothing to read back.
    broken: str = ""


@dataclass(frozen=True)
class Observed:
    target: TargetState
    canary: CanaryState | None = None
    commands: dict[str, str] = field(default_factory=dict)  # annotation -> value
    health: Health = Health()
    window: WindowView = WindowView()
    hotfix: bool = False  # spec.hotfix or the hotfix annotation
    # Gate results (name, met, message), checked while a release waits to start.
    gates: tuple[tuple[str, bool, str], ...] = ()
    recovery: RecoveryView = RecoveryView()
    risk_reason: str = ""  # why the risk is what it is, when the change annotation chose it
    serving: Serving = Serving()
    flags: FlagsView = FlagsView()
    traffic: TrafficView | None = None  # with a router: what it holds
    # Why the watched metrics cannot judge a release (their series never existed): it waits.
    metrics_missing: str = ""
    change_ticket: str = ""  # spec.changeTicket, else the change-ticket annotation
    # At the flag level with spec.featureFlags.verify: what the app said (None: not asked).
    flag_check: FlagCheckView | None = None


@dataclass(frozen=True)
class WorkloadIntent:
    """How the workload should be; the executor makes it so, idempotently."""

    target_paused: bool
    canary_replicas: int  # 0 retires the canary
    canary_revision: str | None  # the template revision the canary must run
    # Restart the target's pods with this stamp: promoting a release of configuration alone.
    target_restart: str | None = None


@dataclass(frozen=True)
class RecoveryIntent:
    """What the rollback levels must have in place; the executor makes it so, idempotently."""

    restore_configs: tuple[tuple[str, str], ...] = ()  # (tracked ConfigMap, snapshot copy)
    restart_stamp: str | None = None  # pods that cannot reload are restarted with this stamp
    restart_target: bool = False  # the target's pods run the new code too: restart them as well
    restore_template: str | None = None  # put the target's pod template back to this revision


@dataclass(frozen=True)
class TrafficIntent:
    """What a router's backend should hold now; the reconcile's router makes it so, idempotently.

    `share` is the canary's share the plan wants; `open` says whether the canary's pods for it
    are ready, so that traffic may move to it. Until they are, the route keeps `held` (what it
    holds, never more than `share`, and 0 when no canary pod is ready). `stable` is the
    pod-template-hash the stable backend selects: the target's ReplicaSet that serves.
    `audience` (phased): whose requests go to the canary whatever the share, once it is open;
    until then the route keeps `held_audience` (the one it holds, while the canary serves it).
    """

    share: int
    open: bool = True
    held: int = 0
    stable: str | None = None
    audience: AudienceMatch | None = None
    held_audience: AudienceMatch | None = None

    @property
    def weight(self) -> int:
        """The canary's share to write now."""
        return self.share if self.open else self.held

    @property
    def rule(self) -> AudienceMatch | None:
        """The audience to write now."""
        return self.audience if self.open else self.held_audience


class EventType(StrEnum):
    normal = "Normal"
    warning = "Warning"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str  # CamelCase, as Kubernetes Events are
    message: str


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus
    workload: WorkloadIntent
    events: tuple[Event, ...] = ()
    next_check_at: datetime | None = None  # when to look again without an outside change
    recovery: RecoveryIntent = RecoveryIntent()
    # Tracked ConfigMaps to copy now (name, content hash): the configuration known to be good.
    snapshots: tuple[tuple[str, str], ...] = ()
    # The exposure the release's flags must be put in now (off, on, "10%"; the store copied
    # first); None: leave them.
    flags: str | None = None
    # With a router: what its backend must hold now. None: replica ratio, nothing to write.
    traffic: TrafficIntent | None = None
