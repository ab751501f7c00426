"""Counting user reports: per issue key in a sliding window, from where the release's story
says counting starts. Pure.

A report counts while it is younger than the window, and only from the latest of: the
window's start, the release's start (a report made before it is about what served before),
and, during and after a rollback, the moment the rollback level's change was in place (health
after a rollback is judged on what serves since, as every metric's is). The counts answer the
`user-reports` metric through the `MetricProvider` seam: `vector` is the count of each key,
`sample` the highest (the playbook's rule is about reports of the *same* issue).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from parachute.api import (
    Phase,
    RolloutStatus,
    UserReportCount,
    UserReportsStatus,
    format_duration,
    parse_duration,
)
from parachute.conditions import timestamp
from parachute.plan.metrics import reports_window
from parachute.plan.verdicts import Sample, Series

# status.userReports shows this many keys at most, the most reported first.
SHOWN_KEYS = 10
# Where the origin may move to the current rollback level's change.
_RECOVERING = (Phase.rolling_back, Phase.rolled_back, Phase.waiting)


@dataclass(frozen=True)
class Received:
    """One accepted report: its issue key and when it was accepted."""

    key: str
    at: datetime


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def origin(status: RolloutStatus) -> datetime | None:
    """Where counting starts whatever the window: the release's start, or the current rollback
    level's change in place (its start, until it is in place).

    Status keeps those moments to the second, so a report made in that second may have come
    before or after. A release counts it (a report about the new version is not missed); health
    after a rollback does not (the report that set the rollback off, made in the second it began,
    is not held against what serves after it)."""
    moments = [_parse(status.release.started_at if status.release else None)]
    incident = status.incidents[-1] if status.incidents else None
    if status.phase in _RECOVERING and incident is not None and incident.levels:
        level = incident.levels[-1]
        changed = _parse(level.applied_at or level.started_at)
        moments.append(changed + timedelta(seconds=1) if changed is not None else None)
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def count(received: Iterable[Received], since: datetime, now: datetime) -> list[UserReportCount]:
    """The reports of each key made after `since` (and not after `now`), the most reported first."""
    by_key: dict[str, list[datetime]] = {}
    for report in received:
        if since < report.at <= now:
            by_key.setdefault(report.key, []).append(report.at)
    counts = [
        UserReportCount(
            key=key, count=len(times), first_at=timestamp(min(times)), last_at=timestamp(max(times))
        )
        for key, times in by_key.items()
    ]
    return sorted(counts, key=lambda c: (-c.count, _neg(c.last_at), c.key))


def _neg(moment: str) -> float:
    parsed = _parse(moment)
    return -parsed.timestamp() if parsed else 0.0


class ReportsProvider:
    """The `user-reports` metric's provider: the reports of a Rollout, as read once per reconcile.

    Queries name the window (`user-reports[30m]`, see `plan.metrics.reports_query`), so metrics
    with different windows share one reading.
    """

    def __init__(self, received: Sequence[Received], now: datetime, start: datetime | None) -> None:
        self.received = tuple(received)
        self.now = now
        self.start = start

    def since(self, window: timedelta) -> datetime:
        moment = self.now - window
        return max(moment, self.start) if self.start is not None else moment

    def counts(self, window: timedelta) -> list[UserReportCount]:
        return count(self.received, self.since(window), self.now)

    async def vector(self, query: str) -> Series:
        window = reports_window(query)
        if window is None:
            return Series(error=f"not a user-reports query: {query}")
        return Series.of(*(({"key": c.key}, float(c.count)) for c in self.counts(window)))

    async def sample(self, query: str) -> Sample:
        window = reports_window(query)
        if window is None:
            return Sample(error=f"not a user-reports query: {query}")
        counts = self.counts(window)
        return Sample.of(float(counts[0].count) if counts else 0.0)

    def shown(self, window: timedelta) -> UserReportsStatus:
        """What status.userReports says: the counts in `window`, bounded."""
        counts = self.counts(window)
        return UserReportsStatus(
            window=format_duration(window),
            since=timestamp(self.since(window)),
            counted_at=timestamp(self.now),
            total=sum(c.count for c in counts),
            keys=counts[:SHOWN_KEYS] or None,
        )


class Unavailable:
    """A provider that cannot count: the endpoint is off, or the reports could not be read.
    The metric's verdict is then Error (could not measure), which holds a release and never
    passes it."""

    def __init__(self, why: str) -> None:
        self.why = why

    async def vector(self, query: str) -> Series:
        return Series(error=self.why)

    async def sample(self, query: str) -> Sample:
        return Sample(error=self.why)


# What the `user-reports` metric is judged with (a `parachute.analysis.provider.MetricProvider`).
Counter = ReportsProvider | Unavailable


def next_change(shown: UserReportsStatus | None) -> datetime | None:
    """When a count shown will drop: its oldest report leaves the window then (a second later,
    as status keeps times to the second)."""
    if shown is None or not shown.keys:
        return None
    window = parse_duration(shown.window)
    firsts = [m for m in (_parse(k.first_at) for k in shown.keys) if m is not None]
    return min(firsts) + window + timedelta(seconds=1) if firsts else None
