"""The fast lane's decisions, pure: what it watches, how it asks, and what it found.

Between analysis rounds the fast lane looks at the critical conditions of every Rollout under
release, at the scrape's cadence, so that a critical breach rolls back within seconds whatever
`analysis.interval` says. Its cost must not grow with the number of Rollouts: all Rollouts that
read the same request counter on the same Prometheus are asked in one query, grouped by the
labels that tell them and their versions apart (the namespace and the pod, whose names say the
version: `plan.versions`), and the answer is split back per Rollout, judged version and stable.

Each Rollout's counts are then judged by the routine rounds' own judge (`plan.verdicts.judge`),
with the same guards: minimum requests, no data, the comparison judge with its confidence, and
the sustain rule (the lane keeps its own previous status, so `sustainFor` is held across its
looks). Only a Failed verdict on a measured sample is a breach; Inconclusive, Error and a
failure on no data are left to the routine rounds.

Looking every second must not wear the confidence down, nor may a long stage make a failure
slow to prove. So the lane counts (`plan.compare.adjusted`) only the looks that could have found
the canary worse than stable: those whose totals (requests of each version, errors of both)
leave Fisher's test a p-value small enough for the confidence asked at that count
(`plan.compare.testable`). Under "alike" which version an error falls on does not depend on the
totals, so the counted looks' error probabilities still add up to at most 1 - confidence over
the stage, and a look that could not find anything spends nothing. A background of rare errors
spends (almost) nothing in hours; versions that both fail often spend a look each time, as every
look is a chance to find a difference by chance. Without stable traffic to compare with, the
test against the line is not conditional on totals: those looks count one per window elapsed.

When it looks: once per cadence, just after the judged pods' samples land in Prometheus
(`look_phase`, from their targets' last scrapes), so a sample that completes the evidence is
seen within moments rather than up to a cadence later.

What it covers: rates of bad requests (`error-rate`, `success-rate`) from sources that label
series with the namespace and the pod (the app's own metrics, Linkerd). Latency and queries of
the user's own are judged by the routine rounds alone.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from parachute.api import Direction, Judge, MetricsSource, MetricStatus, Verdict, format_duration
from parachute.plan.compare import Counts, testable
from parachute.plan.metrics import Kind, MetricDefinition
from parachute.plan.model import Event, EventType
from parachute.plan.sources import Source
from parachute.plan.verdicts import Sample, Series, Traffic, judge, worst
from parachute.plan.versions import GENERATED_BASE, Versions, Where

# Sources whose series carry the namespace and the pod, so one query can serve every Rollout.
GROUPABLE = (MetricsSource.app, MetricsSource.linkerd)
# Beyond this the pods' patterns are left out of the query (the namespaces still select, and
# the split matches pods itself): a URL that long is refused by many proxies in front of Prometheus.
MAX_QUERY = 6000
LANE_SHARE = 1 / 3  # of the operator's event loop's time, at most, for the lane's looks (`next_look`)
FAST_LANE_PREFIX = "fast lane: "

Key = tuple[str, str]  # namespace, name
# What one enrolment covers: the release's revision and its stage's start. The lane's memory of
# its looks lasts as long as this does.
Epoch = tuple[str, datetime]


def watchable(metric: MetricDefinition) -> bool:
    """A critical condition the lane can judge: a rate of bad requests with a critical line or
    an immediate trigger."""
    return metric.kind == Kind.requests and (metric.critical is not None or metric.rollback_at is not None)


@dataclass(frozen=True)
class Watched:
    """One Rollout under release as the fast lane watches it."""

    namespace: str
    name: str
    server: Hashable  # which Prometheus (and with which credentials)
    revision: str  # the release judged: a breach found for another is stale
    source: Source
    metrics: tuple[MetricDefinition, ...]  # only what `watchable` accepts
    versions: Versions
    min_requests: int
    since: datetime  # the stage's start: the lane's looks at it are counted from here
    previous: tuple[MetricStatus, ...] = ()  # the routine's last statuses, to start the sustain from

    @property
    def key(self) -> Key:
        return self.namespace, self.name

    @property
    def epoch(self) -> Epoch:
        return self.revision, self.since


def epoch_of(revision: str | None, since: datetime | None) -> Epoch | None:
    """The stage a Rollout is at, as the lane counts stages (None: not at one)."""
    return None if revision is None or since is None else (revision, since)


def next_stage(w: Watched, since: datetime, previous: Iterable[MetricStatus]) -> Watched:
    """The same release watched at its next stage, from the stage's start: what it judges and
    where its versions' pods are do not change with the stage (a round finds them again), so
    the lane need not wait for one to watch the new stage."""
    return replace(w, since=since, previous=tuple(previous))


def enrolment(
    *,
    namespace: str,
    name: str,
    server: Hashable,
    revision: str | None,
    source: Source,
    metrics: Iterable[MetricDefinition],
    versions: Versions,
    min_requests: int,
    since: datetime | None,
    previous: Iterable[MetricStatus] = (),
) -> Watched | None:
    """The Rollout as the lane watches it, or None when the lane has nothing to judge of it."""
    kept = tuple(m for m in metrics if watchable(m))
    if not kept or source.kind not in GROUPABLE or revision is None or since is None:
        return None
    return Watched(namespace, name, server, revision, source, kept, versions, min_requests, since,
                   tuple(previous))  # fmt: skip


@dataclass(frozen=True)
class Query:
    """One query for every Rollout that reads one request counter on one Prometheus."""

    server: Hashable
    text: str
    members: tuple[Watched, ...]


def _counter(w: Watched) -> tuple[Hashable, ...]:
    s = w.source
    return (w.server, s.kind, s.requests, s.labels.namespace, s.labels.pod, s.outcome_label, s.bad_outcomes)


def queries(watched: Iterable[Watched], window: timedelta) -> list[Query]:
    """One query per Prometheus and request counter, whatever the number of Rollouts."""
    groups: dict[tuple[Hashable, ...], list[Watched]] = {}
    for w in watched:
        groups.setdefault(_counter(w), []).append(w)
    out = []
    for members in groups.values():
        members.sort(key=lambda w: w.key)
        out.append(Query(members[0].server, _query(members, format_duration(window)), tuple(members)))
    return out


def _query(members: list[Watched], window: str) -> str:
    source = members[0].source
    ns, pod, outcome = source.labels.namespace, source.labels.pod, source.outcome_label
    namespaces = "|".join(sorted({w.namespace for w in members}))
    patterns = sorted({p for w in members for p in _patterns(w)})
    inbound = 'direction="inbound",' if source.kind == MetricsSource.linkerd else ""

    def text(pods: str) -> str:
        return (f"sum by ({ns}, {pod}, {outcome}) "
                f'(increase({source.requests}{{{inbound}{ns}=~"{namespaces}"{pods}}}[{window}]))')  # fmt: skip

    full = text(f',{pod}=~"{"|".join(patterns)}"')
    return full if len(full) <= MAX_QUERY else text("")


def _patterns(w: Watched) -> tuple[str, ...]:
    if w.versions.judges_target:
        return (w.versions.judged.pods,)
    return w.versions.judged.pods, w.versions.stable.pods


@dataclass(frozen=True)
class Split:
    """One Rollout's requests by outcome in the window: the judged version's and stable's
    (None: no series for those pods)."""

    judged: Counts | None = None
    stable: Counts | None = None


@dataclass
class _Tally:
    requests: float = 0.0
    errors: float = 0.0
    seen: bool = False

    def counts(self) -> Counts | None:
        return Counts(self.requests, self.errors) if self.seen else None


def split(query: Query, answer: Series) -> dict[Key, Split]:
    """The answer's series, each added to the Rollout and version whose pods it is of.

    A series is tried only against the Rollouts whose versions' Deployments its pod's name could
    be of (a pod is named `<deployment>-<hash>-<random>`, cut at 58 characters before the random
    part): with 5,000 Rollouts releasing, trying every Rollout of the namespace on each of 15,000
    series took most of the operator's time."""
    source = query.members[0].source
    ns_label, pod_label, outcome_label = source.labels.namespace, source.labels.pod, source.outcome_label
    bad = _compiled(source.bad_outcomes)
    members: list[tuple[Watched, re.Pattern[str], re.Pattern[str] | None]] = []
    by_prefix: dict[tuple[str, str], list[int]] = {}
    for index, w in enumerate(query.members):
        stable = None if w.versions.judges_target else _compiled(w.versions.stable.pods)
        members.append((w, _compiled(w.versions.judged.pods), stable))
        sides = (w.versions.judged,) if stable is None else (w.versions.judged, w.versions.stable)
        for where in sides:
            by_prefix.setdefault((w.namespace, _pods_prefix(where)), []).append(index)
    tallies: dict[tuple[Key, str], _Tally] = {}
    for labels, value in answer.found:
        found = dict(labels)
        pod, namespace = found.get(pod_label, ""), found.get(ns_label, "")
        candidates = sorted({i for prefix in _prefixes(pod) for i in by_prefix.get((namespace, prefix), ())})
        for i in candidates:
            w, judged, stable = members[i]
            if judged.fullmatch(pod):
                side = "judged"
            elif stable is not None and stable.fullmatch(pod):
                side = "stable"
            else:
                continue
            tally = tallies.setdefault((w.key, side), _Tally())
            tally.seen = True
            if not math.isfinite(value):
                continue
            tally.requests += value
            if bad.fullmatch(found.get(outcome_label, "")):
                tally.errors += value
            break
    empty = _Tally()
    return {
        w.key: Split(
            tallies.get((w.key, "judged"), empty).counts(), tallies.get((w.key, "stable"), empty).counts()
        )
        for w in query.members
    }


@functools.lru_cache(maxsize=32_768)
def _compiled(pattern: str) -> re.Pattern[str]:
    """re's own cache holds 512 patterns: at 5,000 Rollouts each look compiled them all again."""
    return re.compile(pattern)


def _pods_prefix(where: Where) -> str:
    """How every pod of the version's Deployment begins."""
    return f"{where.workload}-"[:GENERATED_BASE]


@functools.lru_cache(maxsize=65_536)
def _prefixes(pod: str) -> frozenset[str]:
    """Every way the pod's name could begin with `_pods_prefix` of its Deployment (a pod's
    series come back every look: at 5,000 canaries this was a quarter of matching them)."""
    found = {pod[: i + 1] for i, char in enumerate(pod[:GENERATED_BASE]) if char == "-"}
    if len(pod) >= GENERATED_BASE:
        found.add(pod[:GENERATED_BASE])
    return frozenset(found)


def observed(counts: Split, window: timedelta, cadence: float) -> Split:
    """The requests the window's samples really saw. `increase()` extrapolates the counter's
    growth between the first and last sample in the window to the window's edges: with a sample
    every cadence that is (window - cadence) of requests reported as a whole window, half as many
    again in a window of three scrapes. Judged as they come, they would lend the comparison
    confidence no request gave it."""
    seconds = window.total_seconds()
    if cadence <= 0 or seconds <= cadence:
        return counts
    seen = (seconds - cadence) / seconds

    def scaled(c: Counts | None) -> Counts | None:
        return None if c is None else Counts(c.requests * seen, c.errors * seen)

    return Split(scaled(counts.judged), scaled(counts.stable))


def look(since: datetime, now: datetime, window: timedelta) -> int:
    """Which look at this stage the lane's is, against the line alone (no stable traffic): one
    per window elapsed, as the rounds count one per interval."""
    if now <= since or window <= timedelta(0):
        return 1
    return int((now - since) / window) + 1


def counted(w: Watched, counts: Split, spent: int, now: datetime, window: timedelta) -> tuple[int, int]:
    """Which look this is for the comparison with stable, and how many have been counted after it.

    `spent` looks of this stage could have found the canary worse so far; this one is the next,
    and is counted only if its totals could (see the module's notes)."""
    compared = [m.confidence for m in w.metrics if m.judge == Judge.compare]
    mine, theirs = counts.judged, None if w.versions.judges_target else counts.stable
    least = max(1, w.min_requests)
    if mine is None or theirs is None or theirs.whole()[1] < least:
        return look(w.since, now, window), spent
    if not compared or mine.whole()[1] < least:
        return spent + 1, spent  # nothing is compared on this look
    return spent + 1, spent + 1 if testable(mine, theirs, min(compared), spent + 1) else spent


@dataclass(frozen=True)
class Breach:
    """A critical breach the lane found: the metric's Failed status, on the sample that decided."""

    namespace: str
    name: str
    revision: str
    status: MetricStatus


@dataclass(frozen=True)
class Judged:
    statuses: tuple[MetricStatus, ...] = ()  # the lane's own, for its next look
    breaches: tuple[Breach, ...] = ()
    spent: int = 0  # looks of the stage counted so far, this one included if it could find


def judge_split(
    w: Watched,
    counts: Split,
    previous: Mapping[str, MetricStatus],
    now: datetime,
    window: timedelta,
    *,
    spent: int = 0,
) -> Judged:
    """Every watched metric of one Rollout on the lane's window, by the rounds' judge.

    `previous` is the lane's last status of each metric (else the routine's is used), so a
    critical condition is Failed only once it has held for the metric's `sustainFor`; `spent`
    the looks of the stage counted so far (`counted`)."""
    routine = {m.name: m for m in w.previous}
    stable = None if w.versions.judges_target else counts.stable
    shown = format_duration(window)
    look_, spent = counted(w, counts, spent, now, window)
    statuses, breaches = [], []
    for metric in w.metrics:
        before = previous.get(metric.name) or routine.get(metric.name)
        canary, traffic = _sample(metric, counts.judged, stable, shown, look_)
        status = judge(metric, canary, before, now, min_requests=w.min_requests, traffic=traffic)
        statuses.append(status)
        if status.verdict == Verdict.failed and status.value is not None:
            breaches.append(
                Breach(w.namespace, w.name, w.revision, status.model_copy(update={"fast_lane": True}))
            )
    return Judged(tuple(statuses), tuple(breaches), spent)


def _sample(
    metric: MetricDefinition, mine: Counts | None, theirs: Counts | None, window: str, look_: int
) -> tuple[Sample, Traffic]:
    """The judged version's rate and the traffic behind it, as a round measures them."""
    if mine is None:
        # A labelled counter has no series before its first request: with stable's pods
        # counted, the judged pods have served nothing; otherwise nobody can tell.
        if theirs is not None:
            return Sample(), Traffic(requests=0, window=window, look=look_)
        return Sample(), Traffic(unknown_because="traffic unknown: no series for these pods")
    rate = Sample.of(1.0 - mine.rate if metric.direction == Direction.below else mine.rate)
    if mine.requests <= 0:
        rate = Sample()
    if metric.judge == Judge.compare:
        return rate, Traffic(requests=mine.requests, counts=mine, stable=theirs, window=window, look=look_)
    return rate, Traffic(requests=mine.requests)


def record(
    metrics: list[MetricStatus], breaches: Iterable[Breach], revision: str | None
) -> tuple[list[MetricStatus], list[Event]]:
    """The lane's breaches written into the verdict history: each replaces its metric's status,
    marked as the lane's, with the rounds' counts and one more failure. Breaches found for
    another release are stale and dropped, and so is a breach of a metric already failed (by the
    lane or by a round): the lane brings a failure forward, it does not tell or count it twice."""
    out = list(metrics)
    events = []
    for breach in breaches:
        if breach.revision != revision:
            continue
        index = next((i for i, m in enumerate(out) if m.name == breach.status.name), None)
        old = out[index] if index is not None else MetricStatus(name=breach.status.name)
        if old.verdict == Verdict.failed:
            continue
        message = f"{FAST_LANE_PREFIX}{breach.status.message or breach.status.name}"
        status = breach.status.model_copy(update={
            "message": message, "successful": old.successful, "failed": old.failed + 1,
            "inconclusive": old.inconclusive, "errors": old.errors, "healthy_since": None,
        })  # fmt: skip
        if index is None:
            out.append(status)
        else:
            out[index] = status
        events.append(Event(EventType.warning, "MetricFailed", message))
    return out, events


def last_verdict(metrics: list[MetricStatus]) -> Verdict | None:
    return worst(m.verdict for m in metrics)


@dataclass(frozen=True)
class Landing:
    """One scrape target's last sample as Prometheus reports it: the target's labels, and when
    the sample was in (the scrape's start plus its duration), in seconds since the epoch."""

    labels: Mapping[str, str]
    at: float


# After a sample is in, this long before looking: Prometheus appends it as the scrape ends,
# and the operator's clock is not Prometheus's to the millisecond.
LANDING_MARGIN = 0.1


def look_phase(members: Iterable[Watched], landings: Iterable[Landing], cadence: float) -> float | None:
    """When in each cadence to look, in seconds past a multiple of the cadence since the epoch:
    just after the judged pods' samples land, not at a moment of the cycle unrelated to them.

    A failing canary's breach is decided by whichever of its pods' samples completes the
    evidence, any of them alike: the look is put just after the landing that leaves the least
    wait, summed over the judged pods, from each one's landing to the next look. None when
    no judged pod's target is known (the lane then looks on its own tick)."""
    if cadence <= 0:
        return None
    members = list(members)
    offsets = [round(landing.at % cadence, 3) for landing in landings if _judged(members, landing)]
    if not offsets:
        return None

    def wait(phase: float) -> float:
        return sum((phase - offset) % cadence for offset in offsets)

    return min(((offset + LANDING_MARGIN) % cadence for offset in offsets), key=wait)


def _judged(members: Iterable[Watched], landing: Landing) -> bool:
    for w in members:
        labels = w.source.labels
        if landing.labels.get(labels.namespace) == w.namespace and re.fullmatch(
            w.versions.judged.pods, landing.labels.get(labels.pod, "")
        ):
            return True
    return False


def judged_pods(members: Iterable[Watched]) -> frozenset[tuple[str, str]]:
    """Which pods the lane judges: when they change, so do the moments their samples land."""
    return frozenset((w.namespace, w.versions.judged.pods) for w in members)


def next_look(now: float, cadence: float, phase: float | None, busy: float = 0.0) -> float:
    """The moment of the next look after the one begun at `now` (seconds since the epoch): one
    cadence on when the lane has no phase, else the next moment at its phase, at least half a
    cadence away (a look that ran late does not make the next one come at once).

    `busy` is how long the look held the operator's event loop: the next comes no sooner than
    1 / LANE_SHARE times that after it began, so however many Rollouts the lane watches, the
    reconciles keep the rest (at 5,000 canaries a look took 2.6 s, every 5 s cadence, half the
    operator)."""
    rest = busy / LANE_SHARE
    if phase is None:
        return now + max(cadence, rest)
    at = now - (now % cadence) + phase
    while at - now < max(cadence / 2, rest):
        at += cadence
    return at


@dataclass
class Memory:
    """The lane's own previous statuses per Rollout, for the sustain rule across its looks, and
    the looks it counted at the stage; forgotten when the Rollout's release or stage changes.

    It lives in one process. A stage that began before this process's lane (`started`: after an
    operator restart, or a standby taking over) may have had looks counted by the one before,
    which are not known here: they are taken as one per cadence up to `started`, the most there
    can have been. Over-counting only asks more of the evidence; under-counting would let a
    restart wear the confidence down."""

    of: dict[Key, tuple[Epoch, dict[str, MetricStatus], int]] = field(default_factory=dict)
    started: datetime | None = None

    def previous(self, w: Watched) -> dict[str, MetricStatus]:
        epoch, statuses, _ = self.of.get(w.key, (("", w.since), {}, 0))
        return statuses if epoch == w.epoch else {}

    def spent(self, w: Watched, cadence: timedelta) -> int:
        epoch, _, spent = self.of.get(w.key, (("", w.since), {}, 0))
        if epoch == w.epoch:
            return spent
        return before(w.since, self.started, cadence)

    def keep(self, w: Watched, statuses: Iterable[MetricStatus], spent: int = 0) -> None:
        self.of[w.key] = (w.epoch, {s.name: s for s in statuses}, spent)

    def forget(self, key: Key) -> None:
        self.of.pop(key, None)


def before(since: datetime, started: datetime | None, cadence: timedelta) -> int:
    """The most looks a lane before this one can have counted at a stage that began at `since`."""
    if started is None or since >= started or cadence <= timedelta(0):
        return 0
    return math.ceil((started - since) / cadence)
