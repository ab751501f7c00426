"""Metrics as data: the built-in templates with the playbook's thresholds (spec §3), and the
resolution of a Rollout's metric entries into complete definitions. Pure.

The built-ins are kinds, not fixed PromQL: `error-rate` and `success-rate` are rates of bad
requests counted by outcome, `latency-p95` a quantile of a latency histogram, each written for
whichever source counts the requests (`plan.sources`). `database-errors` and `security-alerts`
are queries. `user-reports` counts what support tooling reports (`parachute.reports`), per issue
key in a window, and its thresholds are reached, not passed: 1 report is a Warning, 10 of the
same key are critical. Thresholds are read in the template's unit: `0.5%` is a ratio of 0.005, `400ms` is
0.4 seconds, `10/min` is ten per minute.

A query (a template's or an inline one) is sent once for the version it judges and, when
compared, once more for stable, with the same placeholders in both: `{{pods}}`, `{{workload}}`
and `{{service}}` name the version it is sent for, `{{canary_pods}}` and `{{stable_pods}}` the
judged version's and stable's pods whichever it is sent for. See `plan.versions` for which
version a stage judges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from parachute.api import (
    DEFAULT_REPORTS_WINDOW,
    RATE_TEMPLATES,
    USER_REPORTS,
    Direction,
    Judge,
    Metric,
    MetricLabels,
    MetricsSource,
    MetricTemplateSpec,
    NoData,
    Risk,
    RolloutSpec,
    format_duration,
    parse_duration,
)
from parachute.plan.sources import routed_service, source_kind


class Kind(StrEnum):
    """What a metric measures, and so which queries it needs."""

    requests = "requests"  # a rate of bad requests, from the requests counted by outcome
    latency = "latency"  # a quantile of the latency histogram
    query = "query"  # a PromQL query of its own
    reports = "reports"  # user reports counted per issue key in a window (`parachute.reports`)


@dataclass(frozen=True)
class Builtin:
    kind: Kind
    spec: MetricTemplateSpec  # thresholds and unit; the query only for kind `query`
    quantile: float = 0.0


_BY_SOURCE = "(built from the metrics source)"
_COUNTED = "(user reports counted per issue key)"

BUILTIN: dict[str, Builtin] = {
    "error-rate": Builtin(Kind.requests, MetricTemplateSpec(
        query=_BY_SOURCE, unit="ratio", warning="0.2%", critical="0.5%", sustain_for="10m", rollback_at="5%",
    )),
    "latency-p95": Builtin(Kind.latency, MetricTemplateSpec(
        query=_BY_SOURCE, unit="seconds", warning="300ms", critical="500ms", sustain_for="10m",
        compare_with_stable=True, tolerance="10%",
    ), quantile=0.95),
    "success-rate": Builtin(Kind.requests, MetricTemplateSpec(
        query=_BY_SOURCE, unit="ratio", direction=Direction.below, warning="99.8%", critical="99.5%",
        sustain_for="10m",
    )),
    "database-errors": Builtin(Kind.query, MetricTemplateSpec(
        query='sum(rate(db_errors_total{{{ns}="{{{{namespace}}}}",{pod}=~"{{{{pods}}}}"}}[{{{{window}}}}])) * 60',
        unit="perMinute", warning="10/min", critical="50/min", sustain_for="10m", no_data_is_zero=True,
    )),
    "security-alerts": Builtin(Kind.query, MetricTemplateSpec(
        query='count(ALERTS{{alertstate="firing",category="security",{ns}="{{{{namespace}}}}"}})',
        unit="count", rollback_at="0", no_data_is_zero=True,
    )),
    # The playbook: a single report is watched, 10+ reports of the same issue are evaluated now.
    USER_REPORTS: Builtin(Kind.reports, MetricTemplateSpec(
        query=_COUNTED, unit="count", warning="1", critical="10", sustain_for="0s", no_data_is_zero=True,
    )),
}  # fmt: skip

DEFAULT_MIN_REQUESTS = 10
DEFAULT_CONFIDENCE = "95%"

# What each risk watches by default (spec §2's "watched" column).
WATCHED: dict[Risk, tuple[str, ...]] = {
    Risk.zero: (),
    Risk.low: ("error-rate",),
    Risk.medium: ("error-rate", "latency-p95", "success-rate"),
    Risk.high: ("error-rate", "latency-p95", "success-rate", "database-errors", "security-alerts"),
}

# The placeholders a query may use. The retired ones named label values Parachute assumed.
PLACEHOLDERS = frozenset({"namespace", "target", "window", "pods", "workload", "service",
                          "canary_pods", "stable_pods"})  # fmt: skip
RETIRED = {
    "canary": "{{canary}} was a version label value no cluster carries: select the judged version's "
    'pods with pod=~"{{pods}}" (or {{canary_pods}})',
    "stable": "{{stable}} was a version label value no cluster carries: select stable's pods with "
    'pod=~"{{stable_pods}}"',
    "version": "{{version}} was a version label value no cluster carries: select the pods of the "
    'version a query is sent for with pod=~"{{pods}}"',
}
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# What a user-reports metric asks its provider: the reports of each key in the window.
_REPORTS_QUERY = re.compile(r"^user-reports\[(?P<window>[0-9a-z.]+)\]$")
_THRESHOLD = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(%|ms|s|/s|/min)?$")


@dataclass(frozen=True)
class MetricDefinition:
    """One watched metric, complete: everything a verdict needs."""

    name: str
    query: str  # kind `query` only
    direction: Direction
    unit: str
    warning: float | None
    critical: float | None
    rollback_at: float | None
    sustain_for: timedelta
    compare_with_stable: bool
    tolerance: float  # a fraction: 0.1 for 10%
    no_data_is_zero: bool
    needs_traffic: bool  # too few requests in the window make it Inconclusive
    kind: Kind = Kind.query
    on_no_data: NoData = NoData.hold
    judge: Judge = Judge.threshold
    confidence: float = 0.95  # with judge compare
    quantile: float = 0.0  # kind latency
    at_least: bool = False  # a threshold is reached at its value, not only past it (counts of reports)


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


class MetricSpecError(ValueError):
    """A metric cannot work as written; the message names the field."""


class UnknownTemplateError(MetricSpecError):
    """A metric names a template that does not exist."""


def check_query(query: str, field: str, routed: bool) -> None:
    """Refuse placeholders no round can fill, naming the field and what to write instead."""
    for name in _PLACEHOLDER.findall(query):
        if name in RETIRED:
            raise MetricSpecError(f"{field}: {RETIRED[name]}")
        if name not in PLACEHOLDERS:
            known = ", ".join("{{" + p + "}}" for p in sorted(PLACEHOLDERS))
            raise MetricSpecError(f"{field}: unknown placeholder {{{{{name}}}}} (known: {known})")
        if name == "service" and not routed:
            raise MetricSpecError(
                f"{field}: {{{{service}}}} names the Service a router sends a version's share to, and "
                "spec.trafficRouting names no router"
            )


def resolve(
    metric: Metric,
    templates: dict[str, MetricTemplateSpec],
    labels: MetricLabels | None = None,
    field: str = "spec.analysis.metrics[]",
    routed: bool = False,
) -> MetricDefinition:
    """Merge a Rollout's metric entry over its template (built-in or a template resource)."""
    labels = labels or MetricLabels()
    kind, quantile = Kind.query, 0.0
    if metric.query is not None:
        base = MetricTemplateSpec(query=metric.query)
        name = metric.name or "query"
        check_query(metric.query, f"{field}.query", routed)
    elif metric.template is not None:
        builtin = BUILTIN[metric.template]
        kind, quantile = builtin.kind, builtin.quantile
        query = builtin.spec.query.format(ns=labels.namespace, pod=labels.pod)
        if kind == Kind.reports:
            query = reports_query(parse_duration(metric.window or DEFAULT_REPORTS_WINDOW))
        base = builtin.spec.model_copy(update={"query": query})
        name = metric.name or metric.template
    else:
        ref = metric.template_ref
        assert ref is not None  # the CRD's rule: exactly one of template, templateRef, query
        found = templates.get(f"{ref.kind.value}/{ref.name}")
        if found is None:
            raise UnknownTemplateError(
                f"{field}.templateRef.name: no template named {ref.name!r} ({ref.kind.value} in the "
                "Rollout's namespace)"
            )
        base = found
        name = metric.name or ref.name
        check_query(found.query, f"{ref.kind.value} {ref.name}: spec.query", routed)
    unit = base.unit

    def threshold(own: str | None, inherited: str | None) -> float | None:
        text = own if own is not None else inherited
        return None if text is None else parse_threshold(text, unit)

    tolerance = metric.tolerance or base.tolerance or "10%"
    compare = base.compare_with_stable if metric.compare_with_stable is None else metric.compare_with_stable
    rates = metric.template in RATE_TEMPLATES
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
        needs_traffic=kind in (Kind.requests, Kind.latency),
        kind=kind,
        on_no_data=metric.on_no_data or base.on_no_data,
        judge=(metric.judge or Judge.compare) if rates else Judge.threshold,
        confidence=parse_threshold(metric.confidence or DEFAULT_CONFIDENCE, "ratio"),
        quantile=quantile,
        at_least=kind == Kind.reports,
    )


def reports_query(window: timedelta) -> str:
    """What a user-reports metric asks: `user-reports[30m]`, the reports of each key in the window."""
    return f"user-reports[{format_duration(window)}]"


def reports_window(query: str) -> timedelta | None:
    """The window a user-reports query asks about; None for any other query."""
    found = _REPORTS_QUERY.fullmatch(query)
    if found is None:
        return None
    try:
        return parse_duration(found["window"])
    except ValueError:
        return None


def default_metrics(risk: Risk) -> list[Metric]:
    return [Metric(template=name) for name in WATCHED[risk]]


def definitions(
    spec: RolloutSpec, templates: dict[str, MetricTemplateSpec], risk: Risk
) -> list[MetricDefinition]:
    """The Rollout's metrics, or the built-ins `risk` watches. Raises MetricSpecError."""
    assert spec.analysis is not None
    kind = source_kind(spec)
    routed = routed_service(spec) is not None
    routing = spec.traffic_routing
    if kind == MetricsSource.nginx and (routing is None or routing.nginx is None):
        raise MetricSpecError(
            "spec.analysis.source: nginx tells the versions apart by the canary Ingress's upstream "
            "and needs spec.trafficRouting.nginx"
        )
    if kind == MetricsSource.envoy_gateway and not routed:
        raise MetricSpecError(
            "spec.analysis.source: envoyGateway tells the versions apart by the backend Services a "
            "router splits and needs spec.trafficRouting.gatewayAPI"
        )
    entries = spec.analysis.metrics or default_metrics(risk)
    return [
        resolve(m, templates, spec.analysis.labels, f"spec.analysis.metrics[{i}]", routed)
        for i, m in enumerate(entries)
    ]


def render(query: str, variables: dict[str, str]) -> str:
    """Fill `{{name}}` placeholders (`check_query` has refused the unknown ones)."""
    return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), query)


def placeholders(query: str) -> set[str]:
    return set(_PLACEHOLDER.findall(query))
