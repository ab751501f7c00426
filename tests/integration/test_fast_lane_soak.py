"""The fast lane does not add false rollbacks (issue #16), on the real cluster and Prometheus
(scraping every second):

- a healthy canary with a realistic background error rate (0.1% of its requests and of
  stable's, each failing by chance) is watched by the lane for ten minutes, a look every
  second, and never rolled back;
- a canary at low traffic (fewer requests than `minRequests` arrive) that fails a fifth of them
  stays Inconclusive, rather than rolled back on a handful of requests.

In both the operator serves its own metrics, and its count of the lane's queries shows the lane
looked all along."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest

from testbed.demoapp import Behaviour
from testbed.loadgen import LoadGenerator
from tests.integration.analysed import GROUP, NEW, PLURAL, RATE, STABLE, VERSION, Analysed
from tests.integration.conftest import (
    RunningOperator,
    eventually,
    rollout,
    wait_adopted,
)

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

SOAK = 600.0  # seconds of the lane's looks at the healthy canary: issue #16's ten minutes
ONE_LONG_STAGE = [{"name": "canary", "weight": 50, "minWait": "30m"}]  # only a rollback ends it
METRICS = [{"template": "error-rate"}]  # the comparison judge; rolls back at once past 5%, when worse


def lane_queries(port: int) -> float:
    """The operator's count of the fast lane's PromQL queries, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("parachute_fast_lane_queries_total"))  # fmt: skip


def adopt(world: Analysed, interval: str, **analysis: Any) -> None:
    body = rollout("checkout", targetRef={"name": "checkout"}, steps=ONE_LONG_STAGE, analysis={
        "prometheus": {"address": world.prometheus.url}, "interval": interval, "metrics": METRICS, **analysis,
    })  # fmt: skip
    world.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, body)
    wait_adopted(world.cluster, world.namespace)


def callers(world: Analysed, rate: float, duration: float) -> None:
    """Callers of the Service at `rate` requests a second, for `duration` seconds, instead of the world's."""
    world.load.stop()
    world.load = LoadGenerator(
        rate=rate, duration=duration, picker=world.plane.service_picker("checkout")
    ).start()


def untouched(world: Analysed) -> dict[str, Any]:
    """The Rollout's status, asserting that nothing has rolled it back or found a breach."""
    status = world.status()
    assert status.get("phase") not in ("RollingBack", "RolledBack"), status
    assert not any(m.get("fastLane") for m in status.get("metrics") or []), status.get("metrics")
    return status


@pytest.mark.timeout(SOAK + 300)
def test_a_healthy_canary_with_random_background_errors_survives_ten_minutes_of_the_lanes_looks(
    analysed: Analysed, operator_with_metrics: RunningOperator, metrics_port: int
) -> None:
    background = Behaviour(error_rate=0.001, random_errors=True)
    analysed.set_app(STABLE, background)
    analysed.set_app(NEW, background)
    callers(analysed, RATE, SOAK + 120)  # the world's callers stop after ten minutes: these outlast the soak
    adopt(analysed, "60s")
    analysed.apply_image(NEW)
    eventually(lambda: lane_queries(metrics_port) > 0, timeout=30, what="the lane's first look")
    looked = lane_queries(metrics_port)
    deadline = time.monotonic() + SOAK
    while time.monotonic() < deadline:
        assert untouched(analysed)["phase"] == "Progressing"
        time.sleep(5)

    assert "RollingBack" not in analysed.reasons() and "MetricFailed" not in analysed.reasons()
    assert analysed.metric("error-rate").get("verdict") in ("Successful", "Warning"), analysed.metric(
        "error-rate"
    )
    # The lane looked about every second throughout: one query per look for this one Rollout.
    looks = lane_queries(metrics_port) - looked
    print(f"SOAK lane looks {looks:.0f} in {SOAK:.0f}s; requests sent {analysed.load.sent}")
    assert looks >= 0.8 * SOAK, looks
    assert "fast lane: looking every 1s" in operator_with_metrics.output


@pytest.mark.timeout(240)
def test_a_failing_canary_at_low_traffic_stays_inconclusive_rather_than_rolled_back(
    analysed: Analysed, operator_with_metrics: RunningOperator, metrics_port: int
) -> None:
    """Two requests a second through the Service, about one to the canary: the lane's window holds
    a handful, and the stage's rounds fewer than the 200 `minRequests` asks for, though a fifth
    of them fail (past the 5% that rolls back at once)."""
    callers(analysed, 2, 300)
    analysed.set_app(NEW, Behaviour(error_rate=0.2))
    adopt(analysed, "20s", minRequests=200)
    analysed.apply_image(NEW)
    eventually(lambda: lane_queries(metrics_port) > 0, timeout=30, what="the lane's first look")
    looked = lane_queries(metrics_port)
    eventually(
        lambda: analysed.metric("error-rate").get("verdict"), timeout=60, what="the stage's first round"
    )
    watching = time.monotonic() + 30
    while time.monotonic() < watching:
        untouched(analysed)
        time.sleep(1)

    metric = analysed.metric("error-rate")
    assert metric["verdict"] == "Inconclusive", metric
    assert "too little traffic to judge" in metric["message"] and "fewer than 200" in metric["message"], (
        metric
    )
    assert (metric.get("inconclusive") or 0) >= 1 and not metric.get("failed"), metric
    assert "RollingBack" not in analysed.reasons()
    # The lane looked at it all the while, and found too little to judge.
    assert lane_queries(metrics_port) - looked >= 25
