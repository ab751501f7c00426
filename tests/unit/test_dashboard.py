"""The chart's Grafana dashboard is valid JSON whose panels each show something, and every
query reads only metrics the operator exports. (The integration test runs each query against
a Prometheus that scraped a real operator.)"""

from __future__ import annotations

from prometheus_client import REGISTRY

from parachute import telemetry  # noqa: F401  (registers the operator's metrics)
from tests import dashboards

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}  # no _created


def exported() -> set[str]:
    """Every series name the operator's registry can export, from each family's name and type."""
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("parachute_")
        for suffix in SUFFIXES[family.type]
    }


def test_the_dashboard_has_panels_each_with_a_query_a_title_and_a_place() -> None:
    dashboard = dashboards.load()
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    shown = dashboards.panels(dashboard)
    assert len(shown) >= 10
    for panel in shown:
        assert panel["title"] and panel["type"] in {"timeseries", "stat", "bargauge", "gauge", "table"}
        assert (
            set(panel["gridPos"]) == {"h", "w", "x", "y"}
            and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        )
        assert panel["targets"], f"{panel['title']} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )


def test_every_query_reads_only_metrics_the_operator_exports() -> None:
    names = exported()
    for title, expr in dashboards.queries(dashboards.load()):
        read = dashboards.metric_names(expr)
        assert read, f"{title}: {expr} reads no metric"
        assert read <= names, f"{title}: {sorted(read - names)} are not exported"
        assert "$" not in dashboards.as_prometheus_gets_it(expr), f"{title}: an unknown variable in {expr}"


def test_the_dashboard_shows_releases_recovery_and_the_operator_itself() -> None:
    read = set().union(*(dashboards.metric_names(e) for _, e in dashboards.queries(dashboards.load())))
    for wanted in ("parachute_rollouts", "parachute_stage_transitions_total", "parachute_verdicts_total",
                   "parachute_rollback_levels_total", "parachute_recovery_seconds_bucket",
                   "parachute_reconcile_duration_seconds_bucket", "parachute_scheduler_lag_seconds_bucket",
                   "parachute_promql_queries_total", "parachute_api_requests_total", "parachute_leader"):  # fmt: skip
        assert wanted in read, wanted
