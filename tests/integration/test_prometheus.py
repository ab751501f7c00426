"""A real Prometheus scrapes the demo application's two versions every second."""

from __future__ import annotations

import time

import pytest

from testbed.demoapp import Behaviour, DemoApp
from testbed.loadgen import LoadGenerator
from testbed.prometheus import LocalPrometheus

pytestmark = pytest.mark.prometheus

ERROR_RATE = (
    'sum(rate(http_requests_total{{app="checkout",version="{v}",code=~"5.."}}[5s]))'
    ' / sum(rate(http_requests_total{{app="checkout",version="{v}"}}[5s]))'
)
P95 = (
    'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{version="{v}"}}[5s])))'
)


def test_error_rate_is_there_within_ten_seconds(
    demo_app: DemoApp, load: LoadGenerator, prometheus: LocalPrometheus
) -> None:
    demo_app.canary.set_behaviour(Behaviour(error_rate=0.06))
    started = time.monotonic()
    canary = prometheus.wait_for_value(ERROR_RATE.format(v="canary"), timeout=10, accept=lambda v: v > 0)
    stable = prometheus.wait_for_value(
        ERROR_RATE.format(v="stable"), timeout=10 - (time.monotonic() - started)
    )
    assert 0.0 < canary < 0.3
    assert stable == 0.0  # a number, not an empty vector: the 500 series exists from the start


def test_latency_follows_the_behaviour_set_at_run_time(
    demo_app: DemoApp, load: LoadGenerator, prometheus: LocalPrometheus
) -> None:
    demo_app.canary.set_behaviour(Behaviour(latency_ms=400))
    p95 = prometheus.wait_for_value(P95.format(v="canary"), timeout=15)
    assert p95 > 0.3
    assert prometheus.wait_for_value(P95.format(v="stable"), timeout=5) < 0.1


def test_a_stopped_prometheus_comes_back_on_the_same_address(
    demo_app: DemoApp, load: LoadGenerator, prometheus: LocalPrometheus
) -> None:
    url = prometheus.url
    prometheus.stop()
    with pytest.raises(OSError):
        prometheus.ready()
    prometheus.start()
    assert prometheus.url == url
    prometheus.wait_for_value(ERROR_RATE.format(v="stable"), timeout=10)
