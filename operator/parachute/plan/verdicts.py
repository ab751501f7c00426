"""Verdicts from samples: pure, and honest about what was not measured.

Four outcomes, never conflated (spec §3, and the vocabulary Argo Rollouts taught users):
Successful; Failed (measured and bad); Inconclusive (no data, no traffic, too few requests —
never a pass and never by itself a rollback); Error (could not measure: Prometheus away, a
bad query). Warning is Successful's cautious sibling: in the warning band, or critical but
not yet for `sustainFor` — watch, don't roll back. A metric compared with stable is critical
past its tolerance, as past its `critical` threshold; without a stable value to compare with,
only the absolute thresholds judge it, and the message says so.

A rate of bad requests with judge `compare` is judged from both versions' counts instead
(`plan.compare`): critical only when the canary is worse with the stated confidence and past its
floor. "No data" and "no traffic" are told apart for every metric: too little traffic is always
Inconclusive; no data while there was traffic is what the metric's `onNoData` says (Inconclusive
unless told otherwise).

NaN never reaches a comparison: a sample is a number, no data, or an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from parachute.api import (
    AnalysisLimits,
    Comparison,
    Direction,
    Judge,
    MetricStatus,
    NoData,
    Verdict,
    format_duration,
)
from parachute.conditions import at, timestamp
from parachute.plan.compare import Counts, Finding, Limits, Severity, compare
from parachute.plan.metrics import Kind, MetricDefinition, format_value
from parachute.plan.model import Health


@dataclass(frozen=True)
class Sample:
    """One measurement: a value, no data (empty, NaN), or an error. Exactly one kind."""

    value: float | None = None
    error: str | None = None

    @classmethod
    def of(cls, value: float | None) -> Sample:
        if value is None or math.isnan(value) or math.isinf(value):
            return cls()
        return cls(value=value)

    @property
    def has_value(self) -> bool:
        return self.value is not None and self.error is None


@dataclass(frozen=True)
class Series:
    """What a query returned as series, each with its labels: none, some, or an error."""

    found: tuple[tuple[tuple[tuple[str, str], ...], float], ...] = ()
    error: str | None = None

    @classmethod
    def of(cls, *series: tuple[dict[str, str], float]) -> Series:
        return cls(tuple((tuple(sorted(labels.items())), value) for labels, value in series))

    def by(self, label: str) -> dict[str, float]:
        """The values summed by one label's value ("" where a series lacks it); NaN is left out."""
        out: dict[str, float] = {}
        for labels, value in self.found:
            if math.isnan(value) or math.isinf(value):
                continue
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out


def _bad(value: float, threshold: float | None, direction: Direction, at_least: bool = False) -> bool:
    """Past the threshold (or, for a count such as user reports, at it)."""
    if threshold is None:
        return False
    if at_least:
        return value >= threshold if direction == Direction.above else value <= threshold
    return value > threshold if direction == Direction.above else value < threshold


@dataclass(frozen=True)
class Traffic:
    """The requests the judged version served in the window (None: there is no request counter
    for it, so whether there was traffic is unknown), and stable's counts when they were asked."""

    requests: float | None = None
    counts: Counts | None = None  # the judged version's, by outcome: for rates of bad requests
    stable: Counts | None = None
    window: str = ""  # what the counts cover
    look: int = 0  # which look at accumulating counts this is (0: a window of its own)
    unknown_because: str = ""  # why `requests` is None


def judge(
    metric: MetricDefinition,
    canary: Sample,
    previous: MetricStatus | None,
    now: datetime,
    *,
    stable: Sample | None = None,
    requests: float | None = None,
    min_requests: int = 0,
    traffic: Traffic | None = None,
) -> MetricStatus:
    """The metric's status after one more evaluation.

    `stable` is the stable version's sample when the metric is compared with it, None when not.
    `traffic` (or just `requests`) is what the judged version served in the window.
    """
    traffic = traffic or Traffic(requests=requests)
    requests = traffic.requests
    old = previous or MetricStatus(name=metric.name)
    counts = {
        "successful": old.successful, "failed": old.failed, "inconclusive": old.inconclusive, "errors": old.errors,
    }  # fmt: skip
    breached_since = old.breached_since
    consecutive_errors = consecutive_inconclusive = 0
    stable_value = stable.value if stable is not None and stable.has_value else None
    immediate = False
    comparison: Comparison | None = None
    few = requests is not None and requests < min_requests

    if canary.error is not None:
        verdict, message = Verdict.error, f"{metric.name}: {canary.error}"
        consecutive_errors = old.consecutive_errors + 1
    elif few and (metric.needs_traffic or not canary.has_value):
        verdict, consecutive_inconclusive = Verdict.inconclusive, old.consecutive_inconclusive + 1
        served = math.floor(requests or 0)
        # Some traffic short of the minimum is not "no traffic": say which it is.
        what = "no traffic" if served == 0 else "too little traffic"
        message = (
            f"{metric.name}: {what} to judge ({served} requests in the window, fewer than {min_requests})"
        )
    elif metric.kind == Kind.requests and metric.judge == Judge.compare and traffic.counts is not None:
        finding = compare(traffic.counts, traffic.stable, _limits(metric, min_requests), traffic.look)
        canary = Sample(value=_shown_rate(metric, traffic.counts.rate))
        if traffic.stable is not None and traffic.stable.requests > 0:
            stable_value = _shown_rate(metric, traffic.stable.rate)
        comparison = Comparison(
            window=traffic.window, requests=traffic.counts.requests, errors=traffic.counts.errors,
            stable_requests=traffic.stable.requests if traffic.stable else None,
            stable_errors=traffic.stable.errors if traffic.stable else None, confidence=finding.confidence,
        )  # fmt: skip
        verdict, message, breached_since = _found(metric, finding, traffic, breached_since, now)
        immediate = finding.severity == Severity.immediate
        if verdict == Verdict.inconclusive:
            consecutive_inconclusive = old.consecutive_inconclusive + 1
    elif not canary.has_value and not metric.no_data_is_zero:
        verdict, message = _no_data(metric, traffic, min_requests)
        if verdict == Verdict.inconclusive:
            consecutive_inconclusive = old.consecutive_inconclusive + 1
    else:
        value = canary.value if canary.value is not None else 0.0
        canary = Sample(value=value)
        verdict, message, breached_since = _measured(metric, value, stable, breached_since, now)
        # rollbackAt is the one failure with no sustain: an immediate trigger for recovery.
        immediate = verdict == Verdict.failed and _bad(
            value, metric.rollback_at, metric.direction, metric.at_least
        )

    key = {Verdict.successful: "successful", Verdict.warning: "successful", Verdict.failed: "failed",
           Verdict.inconclusive: "inconclusive", Verdict.error: "errors"}[verdict]  # fmt: skip
    counts[key] += 1
    healthy_since = old.healthy_since if verdict == Verdict.successful else None
    if verdict == Verdict.successful and healthy_since is None:
        healthy_since = timestamp(now)
    return MetricStatus(
        name=metric.name,
        value=canary.value,
        stable_value=stable_value,
        verdict=verdict,
        message=message,
        consecutive_errors=consecutive_errors,
        consecutive_inconclusive=consecutive_inconclusive,
        last_evaluated_at=timestamp(now),
        breached_since=breached_since,
        immediate=immediate or None,
        healthy_since=healthy_since,
        requests=requests,
        comparison=comparison,
        **counts,
    )


def _shown_rate(metric: MetricDefinition, bad_rate: float) -> float:
    """A rate of bad requests as the metric shows it: success-rate is its complement."""
    return 1.0 - bad_rate if metric.direction == Direction.below else bad_rate


def _limits(metric: MetricDefinition, min_requests: int) -> Limits:
    """The metric's lines as rates of bad requests (success-rate's are complements)."""

    def bad(line: float | None) -> float | None:
        if line is None:
            return None
        return 1.0 - line if metric.direction == Direction.below else line

    return Limits(floor=bad(metric.critical), warning=bad(metric.warning), rollback_at=bad(metric.rollback_at),
                  confidence=metric.confidence, tolerance=metric.tolerance, min_requests=min_requests)  # fmt: skip


def _found(
    metric: MetricDefinition, finding: Finding, traffic: Traffic, breached_since: str | None, now: datetime
) -> tuple[Verdict, str, str | None]:
    """A comparison's finding as a verdict: critical holds as Warning until it lasted sustainFor."""
    assert traffic.counts is not None
    over = f" over {traffic.window}" if traffic.window else ""
    if metric.direction == Direction.below:
        shown = format_value(1.0 - traffic.counts.rate, metric.unit)
        what = f"{metric.name} {shown}, failed requests {finding.detail}{over}"
    else:
        what = f"{metric.name} {finding.detail}{over}"
    if finding.severity == Severity.immediate:
        return Verdict.failed, f"{what}: roll back at once", breached_since
    if finding.severity == Severity.critical:
        since = breached_since or timestamp(now)
        held = now - at(since)
        if held >= metric.sustain_for:
            return Verdict.failed, f"{what}, for {human_duration(held)}", since
        return Verdict.warning, f"{what}, for {human_duration(held)} so far", since
    if finding.severity == Severity.inconclusive:
        return Verdict.inconclusive, what, None
    return (Verdict.warning if finding.severity == Severity.warning else Verdict.successful), what, None


def _no_data(metric: MetricDefinition, traffic: Traffic, min_requests: int) -> tuple[Verdict, str]:
    """No data while there was traffic (or while nobody can tell): what `onNoData` says."""
    if traffic.requests is not None:
        why = f"no data while the version served {math.floor(traffic.requests)} requests in the window"
    elif traffic.unknown_because:
        why = f"no data ({traffic.unknown_because})"
    else:
        why = "no data"
    if metric.on_no_data == NoData.fail:
        return Verdict.failed, f"{metric.name}: {why}; onNoData: fail"
    if metric.on_no_data == NoData.ignore:
        return Verdict.successful, f"{metric.name}: {why}; onNoData: ignore"
    return Verdict.inconclusive, f"{metric.name}: {why}"


def _measured(
    metric: MetricDefinition, value: float, stable: Sample | None, breached_since: str | None, now: datetime
) -> tuple[Verdict, str, str | None]:
    """A measured value against the absolute thresholds and, where asked, against stable.

    Past `critical` or past the tolerance over stable is critical: either one is enough, and
    both are named. Critical holds the release as Warning until it has lasted `sustainFor`.
    """
    shown = format_value(value, metric.unit)
    side = "above" if metric.direction == Direction.above else "below"
    side = f"at or {side}" if metric.at_least else side
    if _bad(value, metric.rollback_at, metric.direction, metric.at_least):
        limit = format_value(metric.rollback_at or 0.0, metric.unit)
        return Verdict.failed, f"{metric.name} {shown} {side} {limit}: roll back at once", breached_since
    off_stable, note = _against_stable(metric, value, stable)
    critical = [off_stable] if off_stable else []
    if _bad(value, metric.critical, metric.direction, metric.at_least):
        critical.insert(0, f"{side} critical {format_value(metric.critical or 0.0, metric.unit)}")
    if critical:
        since = breached_since or timestamp(now)
        held = now - at(since)
        what = f"{metric.name} {shown} {'; '.join(critical)}"
        if held >= metric.sustain_for:
            return Verdict.failed, f"{what}, for {human_duration(held)}{note}", since
        return Verdict.warning, f"{what}, for {human_duration(held)} so far{note}", since
    if _bad(value, metric.warning, metric.direction, metric.at_least):
        limit = format_value(metric.warning or 0.0, metric.unit)
        return Verdict.warning, f"{metric.name} {shown} {side} warning {limit}: watching{note}", None
    return Verdict.successful, f"{metric.name} {shown}{note}", None


def _against_stable(metric: MetricDefinition, value: float, stable: Sample | None) -> tuple[str, str]:
    """(how far past the tolerance over stable, or ""; a note when there was nothing to compare with).

    `stable` is None when no comparison was asked for (or the new version already is stable).
    """
    if not metric.compare_with_stable or stable is None:
        return "", ""
    if stable.error is not None:
        return "", f" (stable not measured: {stable.error}; absolute thresholds only)"
    if stable.value is None:
        return "", " (stable has no data: absolute thresholds only)"
    if stable.value <= 0:
        return "", " (stable measures 0: absolute thresholds only)"
    above = metric.direction == Direction.above
    allowed = stable.value * (1 + metric.tolerance if above else 1 - metric.tolerance)
    base = format_value(stable.value, metric.unit)
    if not _bad(value, allowed, metric.direction):
        return "", f" (stable {base})"
    off = abs(value / stable.value - 1)
    side = "above" if above else "below"
    return f"{off:.0%} {side} stable's {base} (tolerance {metric.tolerance:.0%})", ""


def human_duration(delta: timedelta) -> str:
    """A duration as a person reads it, to the second: `4m10s`, `2h0m5s`, `0s`."""
    return format_duration(timedelta(seconds=round(max(delta.total_seconds(), 0.0))))


_SEVERITY = [Verdict.failed, Verdict.error, Verdict.inconclusive, Verdict.warning, Verdict.successful]


def worst(verdicts: Iterable[Verdict | None]) -> Verdict | None:
    """The verdict that matters most for the release: Failed over Error over ... over Successful."""
    present = [v for v in verdicts if v is not None]
    return min(present, key=_SEVERITY.index) if present else None


# "Not healthy now": later than any stage start, so no wait can end early.
NOT_HEALTHY = datetime.max.replace(tzinfo=UTC)


def health(
    statuses: list[MetricStatus],
    limits: AnalysisLimits,
    stage_started: datetime | None,
    grace: timedelta = timedelta(0),
    reached: datetime | None = None,
) -> Health:
    """The stage's health for the planner: failed, held (and why), or healthy since when.

    Fresh once every metric was evaluated in this stage (since `stage_started`). A reached
    stage's first round comes within one interval (`grace`) of its reach (of its start, before
    it is reached): a metric healthy since that round counts as healthy for the whole wait.
    """
    failed = [s for s in statuses if s.verdict == Verdict.failed and s.failed > limits.failure]
    if failed:
        return Health(failed=True, reason="; ".join(s.message or s.name for s in failed))
    holds = []
    for s in statuses:
        if s.verdict == Verdict.error and s.consecutive_errors >= limits.consecutive_errors:
            holds.append(f"{s.message} ({s.consecutive_errors} times in a row)")
        elif s.verdict == Verdict.inconclusive and s.consecutive_inconclusive > limits.inconclusive:
            holds.append(f"{s.message} (Inconclusive {s.consecutive_inconclusive} times in a row)")
    evaluated = [at(s.last_evaluated_at) for s in statuses if s.last_evaluated_at]
    fresh = (
        bool(statuses)
        and len(evaluated) == len(statuses)
        and (stage_started is None or min(evaluated) >= stage_started)
    )
    since: datetime | None = None
    for s in statuses:
        if s.healthy_since is None:
            since = NOT_HEALTHY
            break
        moment = at(s.healthy_since)
        since = moment if since is None or moment > since else since
    counted_from = reached or stage_started
    if (
        since is not None
        and since != NOT_HEALTHY
        and counted_from is not None
        and since <= counted_from + grace
    ):
        since = counted_from
    undecided = [
        f"{s.message or s.name} ({s.verdict.value})"
        for s in statuses
        if s.verdict in (Verdict.inconclusive, Verdict.error)
    ]
    return Health(
        healthy_since=since, hold_reason="; ".join(holds), fresh=fresh or not statuses,
        undecided_reason="; ".join(undecided),
    )  # fmt: skip
