"""The Grafana dashboard the chart ships, read as a test reads it: its panels, their PromQL,
and the metric names each query reads (for the unit test and the one against a real scrape)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "helm" / "parachute" / "dashboards" / "parachute.json"

# Grafana's own variables, as Grafana would fill them in for a query sent to Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}

FUNCTIONS = {
    "abs", "absent", "avg_over_time", "ceil", "changes", "clamp_min", "clamp_max", "count_over_time",
    "delta", "deriv", "floor", "histogram_quantile", "idelta", "increase", "irate", "label_replace",
    "max_over_time", "min_over_time", "rate", "resets", "round", "scalar", "sort", "sort_desc",
    "sum_over_time", "time", "timestamp", "vector",
}  # fmt: skip
AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
                "count_values", "group"}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset"}  # fmt: skip


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show data (rows only group them)."""
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target."""
    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])]


def as_prometheus_gets_it(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a query reads: what is left once strings, label matchers, ranges,
    grouping labels, numbers, functions and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return words - FUNCTIONS - AGGREGATIONS - KEYWORDS
