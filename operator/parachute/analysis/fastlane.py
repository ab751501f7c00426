"""The fast lane's watcher: one task per Prometheus, on the leader only, asking at the scrape's
cadence about every Rollout under release, and waking a Rollout at once on a critical breach.

Reconciles enrol a Rollout (what it judges, where its versions' pods are, which Prometheus)
from its stage's start (`enrol_stage`: the reconcile that starts a release or a stage, or the
first one this process's lane has not seen at that stage), and again after each analysis round
with what the round found, so a canary is watched before its first round, which may wait
behind many others' work. They take the lane's breaches into the Rollout's verdict history
when they run (`merge`), so the normal rollback path decides: the same incident, levels and
record. The decisions are pure (`parachute.plan.fastlane`); this module only asks and wakes.

The cadence is a setting, or the scrape interval Prometheus reports for the watched pods'
targets (`/api/v1/targets`), never under one second. Each look comes just after the judged
pods' samples land (their targets' last scrape, from the same API), not at a moment of the
scrape's cycle unrelated to them: that is up to a cadence sooner. The lane's queries go
through the provider, so they are counted with every other PromQL query, and also on their own.

Its looks hold the operator's event loop at most about a third of the time, all its Prometheus
servers' together (`plan.fastlane.next_look`; the parsing of its answers on the providers'
threads is not counted): with thousands of canaries a look comes less often than the cadence,
and the reconciles, a rollback's among them, keep the rest. A look's time is wall-clock time,
not CPU time: on a machine whose cores are all busy, the loop waits for a core and for Python's
lock inside a look as well, and every reconcile due meanwhile waits with it. A look's Rollouts
are judged a chunk at a time, between the others' work (matching the answer's series to them is
still one piece).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from parachute import clock, kube, telemetry
from parachute.analysis.connect import provider_for, templates_for
from parachute.analysis.provider import MetricProvider
from parachute.api import (
    MetricStatus,
    MetricTemplateSpec,
    Phase,
    RolloutSpec,
    RolloutStatus,
    format_duration,
)
from parachute.plan import fastlane as core
from parachute.plan.engine import judges_target, parse_time
from parachute.plan.metrics import DEFAULT_MIN_REQUESTS, definitions
from parachute.plan.model import Event, Observed
from parachute.plan.sources import routed_service, source_for
from parachute.plan.stages import effective_risk
from parachute.plan.versions import Versions, locate

logger = logging.getLogger("parachute.fastlane")

ENV = "PARACHUTE_FAST_LANE"  # "off" turns the lane off; also --no-fast-lane
FLOOR = 1.0  # seconds: no cadence is shorter
# When Prometheus does not say its scrape interval (an old version, a proxy in front).
FALLBACK_CADENCE = 10.0
# The scrape interval is asked again this often: a changed scrape configuration is followed.
REDETECT = 300.0
# The lane's window: this many cadences, and at least MIN_WINDOW (increase() needs samples).
WINDOW_CADENCES = 3
MIN_WINDOW = 3.0
RELEASING = (Phase.progressing, Phase.paused)
CHUNK = 100  # Rollouts judged in one turn on the event loop (about 50 ms at 5,000 watched)

Key = core.Key
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """What the operator was told: on or off, and the cadence and window (None: derived)."""

    enabled: bool = True
    cadence: float | None = None  # seconds; None: the scrape interval Prometheus reports
    window: float | None = None  # seconds; None: WINDOW_CADENCES cadences, at least MIN_WINDOW

    @classmethod
    def from_env(
        cls, enabled: bool = True, cadence: float | None = None, window: float | None = None
    ) -> Settings:
        off = os.environ.get(ENV, "").strip().lower() in ("off", "false", "0", "no")
        return cls(enabled and not off, cadence, window)


def window_for(cadence: float, setting: float | None) -> timedelta:
    seconds = setting if setting is not None else max(WINDOW_CADENCES * cadence, MIN_WINDOW)
    return timedelta(seconds=max(seconds, 2 * cadence))


# The judged pods' scrape times are asked again when they change (a new stage, new pods), at
# most this often, and once more after this long while some judged pods had no target yet
# (Prometheus discovers new pods within seconds); else every REDETECT.
REALIGN = 10.0


@dataclass(frozen=True)
class Alignment:
    """The lane's phase for one Prometheus and what it was found for."""

    phase: float | None = None
    pods: frozenset[tuple[str, str]] = frozenset()
    cadence: float = 0.0
    at: float = -REDETECT  # monotonic seconds
    complete: bool = True

    def due(self, members: list[core.Watched], cadence: float, now: float) -> bool:
        if now - self.at >= REDETECT:
            return True
        if now - self.at < REALIGN:
            return False
        return not self.complete or cadence != self.cadence or core.judged_pods(members) != self.pods


class FastLane:
    def __init__(
        self,
        settings: Settings,
        wake: Callable[[Key], None],
        leading: Callable[[], bool] = lambda: True,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.settings = settings
        self._wake = wake
        self._leading = leading
        self._now = now
        self._watched: dict[Key, core.Watched] = {}
        # The stage each Rollout was last enrolled at, also when it had nothing to watch there.
        self._epochs: dict[Key, core.Epoch] = {}
        self._providers: dict[Hashable, MetricProvider] = {}
        self._breaches: dict[Key, dict[str, core.Breach]] = {}
        self._memory = core.Memory()  # its start: the first look this process makes as leader
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self.cadences: dict[Hashable, float] = {}
        self.phases: dict[Hashable, float | None] = {}
        self.busy: dict[Hashable, float] = {}  # how long each server's last look held the event loop
        self._off: dict[Hashable, float] = {}  # ... of it, the others' work while the look awaited

    # What reconciles call.

    def enrol(
        self, key: Key, watched: core.Watched | None, provider: MetricProvider, at: core.Epoch | None = None
    ) -> None:
        """Watch `key` as `watched` from now on; None: nothing to watch (at stage `at`, if one)."""
        if watched is None:
            self.leave(key)
            if at is not None:
                self._epochs[key] = at
            return
        if self._watched.get(key) is None or self._watched[key].server != watched.server:
            self._changed.set()
        self._watched[key] = watched
        self._epochs[key] = watched.epoch
        self._providers[watched.server] = provider

    def enrolled(self, key: Key) -> core.Epoch | None:
        """The stage `key` was last enrolled at, whether or not the lane watches anything of it."""
        return self._epochs.get(key)

    def restage(
        self, key: Key, at: core.Epoch, previous: Iterable[MetricStatus], judges_target: bool
    ) -> bool:
        """Move `key` to stage `at` of the release it is enrolled for, without asking anything;
        False when it is enrolled for no stage of that release or its judged pods change (the
        target's, from a 100% stage on): then what it watches must be found anew."""
        before = self._epochs.get(key)
        if before is None or before[0] != at[0]:
            return False
        watched = self._watched.get(key)
        if watched is None:
            self._epochs[key] = at  # nothing of this release to watch, at this stage either
            return True
        if watched.versions.judges_target != judges_target:
            return False
        self.enrol(key, core.next_stage(watched, at[1], previous), self._providers[watched.server])
        return True

    def leave(self, key: Key) -> None:
        if self._watched.pop(key, None) is not None:
            self._changed.set()
        self._epochs.pop(key, None)
        self._breaches.pop(key, None)
        self._memory.forget(key)

    def take(self, key: Key) -> list[core.Breach]:
        return list(self._breaches.pop(key, {}).values())

    def stand_down(self) -> None:
        """No longer leading: whoever leads next enrols the Rollouts from its own rounds."""
        for key in list(self._watched):
            self.leave(key)
        self.busy.clear()  # looks of what it no longer watches: the first look as leader again waits for none

    @property
    def watched(self) -> int:
        return len(self._watched)

    # The watcher.

    async def run(self) -> None:
        """Keep one task per Prometheus that some enrolled Rollout reads."""
        try:
            while True:
                servers = {w.server for w in self._watched.values()}
                for server in servers - set(self._tasks):
                    self._tasks[server] = asyncio.create_task(self._watch(server), name="parachute-fast-lane")
                for server in set(self._tasks) - servers:
                    self._tasks.pop(server).cancel()
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=5.0)
        finally:
            for task in self._tasks.values():
                task.cancel()

    async def _watch(self, server: Hashable) -> None:
        try:
            await self._looking(server)
        finally:  # no Rollout reads it now: its last look's time must not space the others' looks
            self.busy.pop(server, None)

    async def _looking(self, server: Hashable) -> None:
        detected_at = -REDETECT
        cadence = self.settings.cadence or FALLBACK_CADENCE
        aligned: Alignment = Alignment()
        while True:
            started, wall = time.monotonic(), time.time()
            if self.settings.cadence is None and started - detected_at >= REDETECT:
                cadence, detected_at = await self._detect(server), started
            members = [w for w in self._watched.values() if w.server == server]
            if aligned.due(members, cadence, started):
                aligned = await self._align(server, members, cadence, started)
            if not self._leading():
                self._memory = core.Memory()  # another process looks meanwhile: its counts are not known here
            else:
                if self._memory.started is None:
                    self._memory.started = self._now()
                try:
                    await self.tick(server, cadence)
                except Exception:  # the lane is an addition: the rounds go on whatever happens here
                    logger.exception("fast lane: a look at %s failed", server)
            # Every server's last look counts: the lane's share is the operator's, not each server's.
            following = core.next_look(wall, cadence, aligned.phase, sum(self.busy.values()))
            await asyncio.sleep(max(0.0, following - time.time()))

    async def _align(
        self, server: Hashable, members: list[core.Watched], cadence: float, now: float
    ) -> Alignment:
        """Where in the cadence the judged pods' samples land, from Prometheus's targets."""
        provider = self._providers.get(server)
        ask = getattr(provider, "scrape_landings", None)
        phase, complete = None, True
        if ask is not None and members:
            labels = {w.source.labels.namespace for w in members}
            landings = []
            for label in labels:
                landings += await ask({w.namespace for w in members}, label)
            phase = core.look_phase(members, landings, cadence)
            complete = all(core.look_phase([w], landings, cadence) is not None for w in members)
        if phase != self.phases.get(server):
            shown = f"{phase:.2f}s past each {cadence:g}s" if phase is not None else "on its own tick"
            logger.debug("fast lane: looking at %s %s (as the judged pods' samples land)", server, shown)
        self.phases[server] = phase
        return Alignment(phase, core.judged_pods(members), cadence, now, complete)

    async def _detect(self, server: Hashable) -> float:
        provider = self._providers.get(server)
        namespaces = {w.namespace for w in self._watched.values() if w.server == server}
        ask = getattr(provider, "scrape_interval", None)
        found = await ask(namespaces) if ask is not None else None
        cadence = max(FLOOR, found) if found is not None else FALLBACK_CADENCE
        if self.cadences.get(server) != cadence:
            how = "the scrape interval" if found is not None else "Prometheus did not say its scrape interval"
            logger.info("fast lane: looking every %gs at %s (%s)", cadence, server, how)
        self.cadences[server] = cadence
        return cadence

    async def tick(self, server: Hashable, cadence: float) -> int:
        """One look at every Rollout that reads this Prometheus; returns the breaches found.

        The Rollouts are judged CHUNK at a time, each chunk's turn on the event loop followed by
        the others' (at 5,000 canaries a look held the loop for 2.6 s, and every reconcile due
        meanwhile with it); how long the look held the loop is kept in `busy`, for when the next
        comes, and exported (the answer's parsing, on the provider's thread, is not in it)."""
        self._off[server] = 0.0
        began = time.perf_counter()
        try:
            return await self._look(server, cadence)
        finally:
            self.busy[server] = max(0.0, time.perf_counter() - began - self._off[server])
            telemetry.fast_lane_look(self.busy[server])

    async def _look(self, server: Hashable, cadence: float) -> int:
        provider = self._providers.get(server)
        members = [w for w in self._watched.values() if w.server == server]
        if provider is None or not members:
            return 0
        window = window_for(cadence, self.settings.window)
        memory = self._memory  # replaced when leadership lapses: its counts are then not this look's
        found = 0
        for query in core.queries(members, window):
            answer = await self._off_the_clock(server, provider.vector(query.text))
            telemetry.fast_lane_query(answer)
            if answer.error is not None:
                logger.debug("fast lane: %s", answer.error)
                continue  # an Error is the rounds' to report
            now = self._now()
            parts = core.split(query, answer)
            for done, w in enumerate(query.members):
                if done and done % CHUNK == 0:
                    await self._off_the_clock(server, asyncio.sleep(0))
                if self._memory is not memory:
                    return found
                if self._watched.get(w.key) is not w:
                    continue  # left, or enrolled afresh, while the query was out
                seen = core.observed(parts[w.key], window, cadence)
                judged = core.judge_split(
                    w,
                    seen,
                    memory.previous(w),
                    now,
                    window,
                    spent=memory.spent(w, timedelta(seconds=cadence)),
                )
                memory.keep(w, judged.statuses, judged.spent)
                if not judged.breaches:
                    continue
                mailbox = self._breaches.setdefault(w.key, {})
                for breach in judged.breaches:
                    if breach.status.name not in mailbox:
                        mailbox[breach.status.name] = breach
                        telemetry.fast_lane_breach(w.namespace)
                        logger.info("fast lane: %s/%s %s", w.namespace, w.name, breach.status.message)
                found += len(judged.breaches)
                self._wake(w.key)
        return found

    async def _off_the_clock(self, server: Hashable, awaited: Awaitable[T]) -> T:
        """Await `awaited` without counting the time meanwhile (the answer's wait, the others'
        turns) in the look's `busy`."""
        began = time.perf_counter()
        try:
            return await awaited
        finally:
            self._off[server] += time.perf_counter() - began


# The process's lane, when it runs (`install`); reconciles reach it through the functions below.
LANE: FastLane | None = None


def install(lane: FastLane | None) -> None:
    global LANE  # noqa: PLW0603  (one lane for the process, set once at start-up)
    LANE = lane


def server_of(spec: RolloutSpec, namespace: str) -> Hashable:
    """Which Prometheus, and with whose credentials: Rollouts with none share one lane."""
    assert spec.analysis is not None
    prometheus = spec.analysis.prometheus
    tls = prometheus.tls
    own = prometheus.auth is not None or (tls is not None and tls.ca_secret_ref is not None)
    insecure = tls is not None and tls.insecure_skip_verify
    return (prometheus.address, namespace if own else "", insecure)


def enrol(
    key: Key,
    spec: RolloutSpec,
    status: RolloutStatus,
    *,
    provider: MetricProvider,
    templates: dict[str, MetricTemplateSpec],
    versions: Versions,
    since: datetime | None,
    previous: list[MetricStatus],
) -> None:
    """What the lane watches of a Rollout from now on (after a round, or from its stage's start)."""
    if LANE is None or spec.analysis is None:
        return
    analysis = spec.analysis
    revision = status.release.revision if status.release else None
    since = since if status.phase in RELEASING else None
    watched = core.enrolment(
        namespace=key[0], name=key[1], server=server_of(spec, key[0]),
        revision=revision, source=source_for(spec),
        metrics=definitions(spec, templates, effective_risk(spec)), versions=versions,
        min_requests=analysis.min_requests if analysis.min_requests is not None else DEFAULT_MIN_REQUESTS,
        since=since, previous=previous,
    )  # fmt: skip
    LANE.enrol(key, watched, provider, at=core.epoch_of(revision, since))


async def enrol_stage(
    key: Key,
    spec: RolloutSpec,
    status: RolloutStatus,
    *,
    target: dict[str, Any],
    canary: dict[str, Any] | None,
    observed: Observed,
) -> None:
    """Watch a Rollout under release from its stage's start (`status` as written), not from the
    stage's first round: that round waits its turn behind every other Rollout's routine work,
    and a canary failing meanwhile would be seen only then. Nothing is done when the lane
    already watches this stage; a next stage of the same release is watched as the last one was,
    and a release the lane has not seen is found once here, as a round finds it (its canary's
    pods named before its ReplicaSet exists: `plan.versions.any_pod_of`)."""
    if LANE is None or spec.analysis is None or status.phase not in RELEASING:
        return
    release = status.release
    revision = release.revision if release else None
    at = core.epoch_of(revision, parse_time(status.stage_started_at))
    if at is None or LANE.enrolled(key) == at:
        return
    on_target = judges_target(status, observed)
    if LANE.restage(key, at, status.metrics or [], on_target):
        return
    namespace = key[0]
    try:
        provider = await provider_for(spec.analysis, namespace)
        templates = await templates_for(spec, namespace)
        versions = locate(
            await kube.replica_sets_of(target),
            target=target, canary=canary, revision=revision,
            stable_revision=release.stable_revision if release else None,
            judges_target=on_target, service=routed_service(spec),
        )  # fmt: skip
        enrol(key, spec, status, provider=provider, templates=templates, versions=versions, since=at[1],
              previous=status.metrics or [])  # fmt: skip
    except Exception:  # the lane is an addition: the stage's first round enrols it as before
        logger.debug("fast lane: %s/%s not enrolled at its stage's start", *key, exc_info=True)


def leave(key: Key) -> None:
    if LANE is not None:
        LANE.leave(key)


def merge(key: Key, status: RolloutStatus) -> tuple[RolloutStatus, list[Event]]:
    """The lane's breaches of this Rollout, into its verdict history (while it is under release)."""
    if LANE is None:
        return status, []
    breaches = LANE.take(key)
    if not breaches or status.phase not in RELEASING:
        return status, []
    revision = status.release.revision if status.release else None
    metrics, events = core.record(status.metrics or [], breaches, revision)
    if not events:
        return status, []
    # A verdict the lane recorded is a verdict: the counter would otherwise miss the one that
    # decided the rollback whenever the lane comes before the round.
    recorded = {m.name for m in metrics if m.fast_lane} - {
        m.name for m in status.metrics or [] if m.fast_lane
    }
    telemetry.judged(key[0], [m for m in metrics if m.name in recorded])
    return status.model_copy(update={"metrics": metrics, "last_verdict": core.last_verdict(metrics)}), events


def describe(settings: Settings) -> str:
    """How the lane runs, for the operator's log at start-up."""
    if not settings.enabled:
        return "fast lane off"
    cadence = f"every {settings.cadence:g}s" if settings.cadence else "at the scrape interval"
    window = (
        f"{format_duration(timedelta(seconds=settings.window))} window"
        if settings.window
        else "default window"
    )
    return f"fast lane on: {cadence}, {window}"
