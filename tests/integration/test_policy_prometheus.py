"""Release policy that reads a real Prometheus: peak traffic holds a release until the load
falls, and a Prometheus gate holds it until its query is within bounds."""

from __future__ import annotations

import pytest

from tests.integration.analysed import Analysed
from tests.integration.conftest import RunningOperator, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

REQUESTS = 'sum(rate(http_requests_total{app="checkout"}[5s]))'


def test_a_release_waits_out_peak_traffic(analysed: Analysed, operator: RunningOperator) -> None:
    window = {"timeZone": "UTC", "peakTraffic": {"query": REQUESTS, "threshold": 50, "recheck": "2s"}}
    analysed.release(spec={"window": window})
    status = eventually(
        lambda: analysed.status().get("phase") == "Waiting" and analysed.status(), what="held"
    )
    assert "peak traffic" in status["message"] and status["window"]["open"] is False
    analysed.quiet()  # the evening lull
    eventually(
        lambda: analysed.status().get("phase") == "Progressing", timeout=40, what="started after the peak"
    )


def test_a_prometheus_gate_holds_until_its_query_is_within_bounds(
    analysed: Analysed, operator: RunningOperator
) -> None:
    gate = {"name": "quiet", "prometheus": {"query": REQUESTS, "max": 50}}
    analysed.release(spec={"checklist": {"gates": [gate]}})
    status = eventually(
        lambda: analysed.status().get("phase") == "Waiting" and analysed.status(), what="held"
    )
    assert "gate quiet: value" in status["message"] and "is above 50" in status["message"]
    analysed.quiet()
    eventually(lambda: analysed.status().get("phase") == "Progressing", timeout=40, what="gate met")
    assert analysed.status()["gates"][0]["met"] is True
