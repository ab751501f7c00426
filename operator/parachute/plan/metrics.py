"""Metrics as data: the built-in templates with the playbook's thresholds (spec §3), and the
resolution of a Rollout's metric entries into complete definitions. Pure.

A query is evaluated once per version it judges: `{{version}}` becomes the canary's label
value (and, for comparisons, the stable one's). Thresholds are read in the template's unit:
`0.5%` is a ratio of 0.005, `400ms` is 0.4 seconds, `10/min` is ten per minute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from parachute.api import Direction, Metric, MetricTemplateSpec, Risk, parse_duration

_HTTP = 'namespace="{{namespace}}",app="{{target}}",version="{{version}}"'

BUILTIN: dict[str, MetricTemplateSpec] = {
    "error-rate": MetricTemplateSpec(
        query=(
            f'sum(rate(http_requests_total{{{_HTTP},code=~"5.."}}[{{{{window}}}}]))'
            f" / sum(rate(http_requests_total{{{_HTTP}}}[{{{{window}}}}]))"
        ),
        unit="ratio", warning="0.2%", critical="0.5%", sustain_for="10m", rollback_at="5%",
    ),
    "latency-p95": MetricTemplateSpec(
        query=(
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(http_request_duration_seconds_bucket{{{_HTTP}}}[{{{{window}}}}])))"
        ),
        unit="seconds", warning="300ms", critical="500ms", sustain_for="10m",
        compare_with_stable=True, tolerance="10%",
    ),
    "success-rate": MetricTemplateSpec(
        query=(
            f'sum(rate(http_requests_total{{{_HTTP},code!~"5.."}}[{{{{window}}}}]))'
            f" / sum(rate(http_requests_total{{{_HTTP}}}[{{{{window}}}}]))"
        ),
        unit="ratio", direction=Direction.below, warning="99.8%", critical="99.5%", sustain_for="10m",
    ),
    "database-errors": MetricTemplateSpec(
        query=f"sum(rate(db_errors_total{{{_HTTP}}}[{{{{window}}}}])) * 60",
        unit="perMinute", warning="10/min", critical="50/min", sustain_for="10m", no_data_is_zero=True,
    ),
    "security-alerts": MetricTemplateSpec(
        query='count(ALERTS{alertstate="firing",category="security",namespace="{{namespace}}"})',
        unit="count", rollback_at="0", no_data_is_zero=True,
    ),
}  # fmt: skip

# Requests each version served in the window: too few makes request metrics Inconclusive.
TRAFFIC_QUERY = f"sum(increase(http_requests_total{{{_HTTP}}}[{{{{window}}}}]))"
REQUEST_METRICS = frozenset({"error-rate", "latency-p95", "success-rate"})
DEFAULT_MIN_REQUESTS = 10

# What each risk watches by default (spec §2's "watched" column).
WATCHED: dict[Risk, tuple[str, ...]] = {
    Risk.zero: (),
    Risk.low: ("error-rate",),
    Risk.medium: ("error-rate", "latency-p95", "success-rate"),
    Risk.high: ("error-rate", "latency-p95", "success-rate", "database-errors", "security-alerts"),
}

_THRESHOLD = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(%|ms|s|/s|/min)?$")


@dataclass(frozen=True)
class MetricDefinition:
    """One watched metric, complete: everything a verdict needs."""

    name: str
    query: str
    direction: Direction
    unit: str
    warning: float | None
    critical: float | None
    rollback_at: float | None
    sustain_for: timedelta
    compare_with_stable: bool
    tolerance: float  # a fraction: 0.1 for 10%
    no_data_is_zero: bool
    needs_traffic: bool


def parse_threshold(text: str, unit: str) -> float:
    """`0.5%` → 0.005; `400ms` → 0.4 (seconds); `2/s` → 120 (per minute); a bare number as is."""
    match = _THRESHOLD.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a threshold: {text!r}")
    number, suffix = float(match.group(1)), match.group(2)
    if suffix == "%":
        return number / 100
    if suffix == "ms":
        return number / 1000
    if suffix == "/s":
        return number * 60 if unit == "perMinute" else number
    return number  # s, /min, or none


def format_value(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value * 100:.3g}%"
    if unit == "seconds":
        return f"{value * 1000:.0f}ms"
    if unit == "perMinute":
        return f"{value:.3g}/min"
    return f"{value:.4g}"


class UnknownTemplateError(ValueError):
    """A metric names a template that does not exist."""


def resolve(metric: Metric, templates: dict[str, MetricTemplateSpec]) -> MetricDefinition:
    """Merge a Rollout's metric entry over its template (built-in or a template resource)."""
    if metric.query is not None:
        base = MetricTemplateSpec(query=metric.query)
        name = metric.name or "query"
        needs_traffic = False
    else:
        ref = metric.template_ref
        key = metric.template or (f"{ref.kind.value}/{ref.name}" if ref else "")
        found = BUILTIN.get(key) if metric.template else templates.get(key)
        if found is None:
            shown = ref.name if ref and not metric.template else key
            raise UnknownTemplateError(f"metric {metric.name or shown}: no template named {shown!r}")
        base = found
        name = metric.name or (ref.name if ref and not metric.template else key)
        needs_traffic = metric.template in REQUEST_METRICS
    unit = base.unit

    def threshold(own: str | None, inherited: str | None) -> float | None:
        text = own if own is not None else inherited
        return None if text is None else parse_threshold(text, unit)

    tolerance = metric.tolerance or base.tolerance or "10%"
    compare = base.compare_with_stable if metric.compare_with_stable is None else metric.compare_with_stable
    return MetricDefinition(
        name=name,
        query=base.query,
        direction=metric.direction or base.direction,
        unit=unit,
        warning=threshold(metric.warning, base.warning),
        critical=threshold(metric.critical, base.critical),
        rollback_at=threshold(metric.rollback_at, base.rollback_at),
        sustain_for=parse_duration(metric.sustain_for or base.sustain_for or "0s"),
        compare_with_stable=compare,
        tolerance=parse_threshold(tolerance, "ratio"),
        no_data_is_zero=metric.no_data_is_zero
        if metric.no_data_is_zero is not None
        else base.no_data_is_zero,
        needs_traffic=needs_traffic,
    )


def default_metrics(risk: Risk) -> list[Metric]:
    return [Metric(template=name) for name in WATCHED[risk]]


def render(query: str, variables: dict[str, str]) -> str:
    """Fill `{{name}}` placeholders; unknown ones are left for Prometheus to reject, visibly."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: variables.get(m.group(1), m.group(0)), query)
