"""Verdicts from samples: pure, and honest about what was not measured.

Four outcomes, never conflated (spec §3, and the vocabulary Argo Rollouts taught users):
Successful; Failed (measured and bad); Inconclusive (no data, no traffic, too few requests —
never a pass and never by itself a rollback); Error (could not measure: Prometheus away, a
bad query). Warning is Successful's cautious sibling: in the warning band, or critical but
not yet for `sustainFor` — watch, don't roll back. A metric compared with stable is critical
past its tolerance, as past its `critical` threshold; without a stable value to compare with,
only the absolute thresholds judge it, and the message says so.

NaN never reaches a comparison: a sample is a number, no data, or an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from parachute.api import AnalysisLimits, Direction, MetricStatus, Verdict, format_duration
from parachute.conditions import timestamp
from parachute.plan.metrics import MetricDefinition, format_value
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


def _bad(value: float, threshold: float | None, direction: Direction) -> bool:
    if threshold is None:
        return False
    return value > threshold if direction == Direction.above else value < threshold


def judge(
    metric: MetricDefinition,
    canary: Sample,
    previous: MetricStatus | None,
    now: datetime,
    *,
    stable: Sample | None = None,
    requests: float | None = None,
    min_requests: int = 0,
) -> MetricStatus:
    """The metric's status after one more evaluation.

    `stable` is the stable version's sample when the metric is compared with it, None when not.
    """
    old = previous or MetricStatus(name=metric.name)
    counts = {
        "successful": old.successful, "failed": old.failed, "inconclusive": old.inconclusive, "errors": old.errors,
    }  # fmt: skip
    breached_since = old.breached_since
    consecutive_errors = consecutive_inconclusive = 0
    stable_value = stable.value if stable is not None and stable.has_value else None

    if canary.error is not None:
        verdict, message = Verdict.error, f"{metric.name}: {canary.error}"
        consecutive_errors = old.consecutive_errors + 1
    elif metric.needs_traffic and requests is not None and requests < min_requests:
        verdict, consecutive_inconclusive = Verdict.inconclusive, old.consecutive_inconclusive + 1
        message = f"{metric.name}: no traffic to judge ({math.floor(requests)} requests in the window, fewer than {min_requests})"
    elif not canary.has_value and not metric.no_data_is_zero:
        verdict, message = Verdict.inconclusive, f"{metric.name}: no data"
        consecutive_inconclusive = old.consecutive_inconclusive + 1
    else:
        value = canary.value if canary.value is not None else 0.0
        canary = Sample(value=value)
        verdict, message, breached_since = _measured(metric, value, stable, breached_since, now)

    key = {Verdict.successful: "successful", Verdict.warning: "successful", Verdict.failed: "failed",
           Verdict.inconclusive: "inconclusive", Verdict.error: "errors"}[verdict]  # fmt: skip
    counts[key] += 1
    # rollbackAt is the one failure with no sustain: an immediate trigger for recovery.
    immediate = verdict == Verdict.failed and _bad(canary.value or 0.0, metric.rollback_at, metric.direction)
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
        **counts,
    )


def _measured(
    metric: MetricDefinition, value: float, stable: Sample | None, breached_since: str | None, now: datetime
) -> tuple[Verdict, str, str | None]:
    """A measured value against the absolute thresholds and, where asked, against stable.

    Past `critical` or past the tolerance over stable is critical: either one is enough, and
    both are named. Critical holds the release as Warning until it has lasted `sustainFor`.
    """
    shown = format_value(value, metric.unit)
    side = "above" if metric.direction == Direction.above else "below"
    if _bad(value, metric.rollback_at, metric.direction):
        limit = format_value(metric.rollback_at or 0.0, metric.unit)
        return Verdict.failed, f"{metric.name} {shown} {side} {limit}: roll back at once", breached_since
    off_stable, note = _against_stable(metric, value, stable)
    critical = [off_stable] if off_stable else []
    if _bad(value, metric.critical, metric.direction):
        critical.insert(0, f"{side} critical {format_value(metric.critical or 0.0, metric.unit)}")
    if critical:
        since = breached_since or timestamp(now)
        held = now - _parse(since)
        what = f"{metric.name} {shown} {'; '.join(critical)}"
        if held >= metric.sustain_for:
            return Verdict.failed, f"{what}, for {human_duration(held)}{note}", since
        return Verdict.warning, f"{what}, for {human_duration(held)} so far{note}", since
    if _bad(value, metric.warning, metric.direction):
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


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def health(
    statuses: list[MetricStatus],
    limits: AnalysisLimits,
    stage_started: datetime | None,
    grace: timedelta = timedelta(0),
) -> Health:
    """The stage's health for the planner: failed, held (and why), or healthy since when.

    A stage's first round comes within one interval (`grace`) of its start: a metric healthy
    since that round counts as healthy for the whole stage.
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
    evaluated = [_parse(s.last_evaluated_at) for s in statuses if s.last_evaluated_at]
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
        moment = _parse(s.healthy_since)
        since = moment if since is None or moment > since else since
    if (
        since is not None
        and since != NOT_HEALTHY
        and stage_started is not None
        and since <= stage_started + grace
    ):
        since = stage_started
    undecided = [
        f"{s.message or s.name} ({s.verdict.value})"
        for s in statuses
        if s.verdict in (Verdict.inconclusive, Verdict.error)
    ]
    return Health(
        healthy_since=since, hold_reason="; ".join(holds), fresh=fresh or not statuses,
        undecided_reason="; ".join(undecided),
    )  # fmt: skip
