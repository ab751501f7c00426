"""The fast lane on the real cluster and Prometheus (scraping every second): with analysis every
60 s, a canary that starts failing is rolled back within seconds, by the lane, and its verdict
history says so; a healthy canary with a background error rate is not rolled back by the lane's
looks every second. The operator runs with its defaults: the lane on, at the scrape interval it
reads from Prometheus."""

from __future__ import annotations

import time
from typing import Any

import pytest

from testbed.demoapp import Behaviour
from tests.integration.analysed import GROUP, NEW, PLURAL, STABLE, VERSION, Analysed
from tests.integration.conftest import RunningOperator, eventually, rollout, told, wait_adopted

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

INTERVAL = "60s"
# One stage, long enough that only a rollback ends it.
ONE_STAGE = [{"name": "canary", "weight": 50, "minWait": "10m"}]
METRICS = [{"template": "error-rate"}]  # the comparison judge: rolls back at once past 5%, when worse


def adopt(world: Analysed) -> None:
    """As `Analysed.adopt`, with analysis every minute."""
    analysis: dict[str, Any] = {"prometheus": {"address": world.prometheus.url}, "interval": INTERVAL,
                                "metrics": METRICS}  # fmt: skip
    body = rollout("checkout", targetRef={"name": "checkout"}, analysis=analysis, steps=ONE_STAGE)
    world.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, body)
    wait_adopted(world.cluster, world.namespace)


def rolled_back(world: Analysed) -> bool:
    return world.status().get("phase") in ("RollingBack", "RolledBack")


def test_a_canary_that_starts_failing_is_rolled_back_within_seconds_by_the_fast_lane(
    analysed: Analysed, operator: RunningOperator
) -> None:
    adopt(analysed)
    analysed.apply_image(NEW)
    # The stage's first round has judged the healthy canary; the next is a minute away.
    eventually(lambda: analysed.metric("error-rate").get("requests") or analysed.metric("error-rate").get("verdict"),
               timeout=60, what="the stage's first round")  # fmt: skip
    first_round = analysed.metric("error-rate")["lastEvaluatedAt"]
    time.sleep(5)  # the lane has looked at the healthy canary for a few seconds: nothing to do
    assert analysed.status()["phase"] == "Progressing"

    analysed.set_app(NEW, Behaviour(error_rate=0.1))
    failing = time.monotonic()
    eventually(lambda: rolled_back(analysed), timeout=40, interval=0.1, what="rolled back")
    took = time.monotonic() - failing
    print(f"FASTLANE took {took:.2f}s", analysed.metric("error-rate")["message"])
    assert took < 20, f"rolled back {took:.1f}s after the canary began failing"

    metric = analysed.metric("error-rate")
    assert metric["fastLane"] is True and metric["verdict"] == "Failed", metric
    assert metric["message"].startswith("fast lane: error-rate"), metric
    assert "roll back at once" in metric["message"]
    assert metric["comparison"]["errors"] > 0 and metric["comparison"]["confidence"] >= 0.95
    # Decided between rounds: the routine round that judged the healthy canary was the last one.
    assert metric["lastEvaluatedAt"] != first_round
    incident = analysed.status()["incidents"][-1]
    assert "fast lane" in incident["reason"], incident
    told(analysed.reasons, "MetricFailed", "RollingBack")
    assert "fast lane: looking every 1s" in operator.output


def test_a_healthy_canary_with_background_errors_is_not_rolled_back_by_the_lanes_looks(
    analysed: Analysed, operator: RunningOperator
) -> None:
    """A short version of issue #16's ten minutes: two minutes of looks every second at a canary
    and a stable that both fail 0.1% of their requests at random."""
    background = Behaviour(error_rate=0.001, random_errors=True)
    analysed.set_app(STABLE, background)
    analysed.set_app(NEW, background)
    adopt(analysed)
    analysed.apply_image(NEW)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = analysed.status()
        assert status["phase"] == "Progressing", status
        assert not any(m.get("fastLane") for m in status.get("metrics") or []), status["metrics"]
        time.sleep(2)
    assert "RollingBack" not in analysed.reasons()
    assert "fast lane: looking every 1s" in operator.output
