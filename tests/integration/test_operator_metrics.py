"""The operator's own /metrics, scraped by the test Prometheus while it releases a bad version
and recovers it: every family the dashboard reads carries what happened, and every query of the
chart's Grafana dashboard runs against that Prometheus."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.demoapp import Behaviour
from testbed.prometheus import ScrapeTarget
from tests import dashboards
from tests.integration.analysed import NEW, Analysed
from tests.integration.conftest import Cluster, RunningOperator, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

BAD = Behaviour(error_rate=0.06)  # over the 5% that rolls back at once
ONE_STAGE = [{"name": "canary", "weight": 50, "minWait": "5m"}]


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path, metrics_port: int) -> Iterator[Analysed]:
    operator = ScrapeTarget("parachute", f"127.0.0.1:{metrics_port}", {"replica": "only"})
    world = Analysed(crds, namespace, tmp_path, scraped=[operator])
    yield world
    world.stop()


def test_the_test_prometheus_scrapes_what_a_bad_release_and_its_recovery_did(
    world: Analysed, operator_with_metrics: RunningOperator, metrics_port: int
) -> None:
    world.set_app(NEW, BAD)
    world.release(spec={"steps": ONE_STAGE})
    eventually(lambda: ((world.status().get("incidents") or [{}])[-1]).get("recoveredAt"), timeout=120,
               what="recovered")  # fmt: skip
    served = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert "parachute_reconcile_duration_seconds_bucket" in served

    prometheus, ns = world.prometheus, world.namespace
    expected = {
        f'parachute_rollouts{{namespace="{ns}"}}': lambda v: v == 1,
        "parachute_leader": lambda v: v == 1,  # no election: the one replica acts
        f'parachute_stage_transitions_total{{namespace="{ns}",stage="canary"}}': lambda v: v >= 1,
        f'parachute_verdicts_total{{namespace="{ns}",verdict="Failed"}}': lambda v: v >= 1,
        f'parachute_rollback_levels_total{{namespace="{ns}",level="code"}}': lambda v: v == 1,
        f'parachute_rollbacks_total{{namespace="{ns}"}}': lambda v: v == 1,
        f'parachute_recovery_seconds_count{{namespace="{ns}",level="code"}}': lambda v: v == 1,
        'parachute_reconcile_duration_seconds_count{outcome="ok"}': lambda v: v >= 3,
        "parachute_scheduler_lag_seconds_count": lambda v: v >= 3,
        "parachute_reconciles_in_vain_total": lambda v: v >= 0,  # served; a story may have none
        'parachute_promql_queries_total{outcome="ok"}': lambda v: v >= 1,
        'parachute_api_requests_total{method="PATCH",code="200"}': lambda v: v >= 1,
    }
    for series, accept in expected.items():
        prometheus.wait_for_value(f"sum({series})", timeout=20, accept=accept)

    # Every query of the dashboard runs; those of what happened here show it.
    answered = {}
    for title, expr in dashboards.queries(dashboards.load()):
        query = dashboards.as_prometheus_gets_it(expr)
        answered[(title, expr)] = prometheus.query(query)  # raises on a query Prometheus refuses
    empty = sorted(title for (title, _), result in answered.items() if not result)
    # Nothing breached its objective, and the operator's API requests all succeeded.
    assert set(empty) <= {"Recoveries over their objective", "Kubernetes API errors"}, empty
