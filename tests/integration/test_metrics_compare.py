"""The comparison judge on the real cluster, at low traffic: stable fails 1% of its requests, and a
canary failing 1.5% is held as Inconclusive (too few requests to tell it from noise), where a
fixed 0.5% line would roll it back; a canary failing a clearly worse 20% is rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.dataplane import App
from testbed.demoapp import Behaviour
from tests.integration.conftest import Cluster, RunningOperator, eventually
from tests.integration.measured import Measured

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

APPS = {
    "checkout:1.0": App(Behaviour(error_rate=0.01, latency_ms=15)),
    # Every 40th request fails: after its first failure the stage's count never dips back
    # within the 10% tolerance of stable's 1% ("like stable"), so no round can pass it by
    # where its window happens to end (with every 67th, one between two failures did).
    "checkout:2.0": App(Behaviour(error_rate=0.025, latency_ms=15)),
    "checkout:3.0": App(Behaviour(error_rate=0.2, latency_ms=15)),
}
# Held critical for a few seconds is enough here: the fixed line would have failed long before.
ANALYSIS: dict[str, Any] = {"metrics": [{"template": "error-rate", "sustainFor": "6s"}]}
# The canary's first error comes with its 40th request (about 10 s in): the stage must not pass
# on the clean start, so it waits longer than that before it may pass.
STEPS = [{"name": "canary", "weight": 25, "minWait": "45s", "maxWait": "60s"},
         {"name": "full", "weight": 100, "minWait": "3s", "maxWait": "20s"}]  # fmt: skip


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Measured]:
    # 20 requests a second: the canary's one pod of five gets about 4.
    running = Measured(crds, namespace, tmp_path, APPS, rate=20)
    yield running
    running.stop()


def test_a_canary_slightly_worse_on_low_traffic_is_held_as_inconclusive(
    world: Measured, operator: RunningOperator
) -> None:
    world.adopt(ANALYSIS, steps=STEPS)
    world.apply_image("checkout:2.0")

    def cannot_tell() -> dict[str, Any] | None:
        metric = world.metric("error-rate")
        return metric if "cannot tell yet" in (metric.get("message") or "") else None

    metric = eventually(cannot_tell, timeout=90, what="error-rate: cannot tell yet")
    assert metric["verdict"] == "Inconclusive"
    comparison = metric["comparison"]
    assert 0 < comparison["requests"] < comparison["stableRequests"]
    assert 0.0 <= comparison["confidence"] < 0.95
    # Held past its maximum wait, never rolled back.
    eventually(lambda: "held" in (world.status().get("message") or ""), timeout=90, what="held at max wait")
    status = world.status()
    assert status["phase"] == "Progressing" and status["stage"] == "1/2"
    assert "RollingBack" not in world.reasons() and not status.get("incidents")


def test_a_canary_clearly_worse_is_rolled_back(world: Measured, operator: RunningOperator) -> None:
    world.adopt(ANALYSIS, steps=STEPS)
    world.apply_image("checkout:3.0")
    # The status that starts the rollback, read once: a later round judges what serves after it.
    status = eventually(lambda: (s := world.status()).get("phase") in ("RollingBack", "RolledBack") and s,
                        timeout=90, interval=0.1, what="rolled back")  # fmt: skip
    metric = next(m for m in status["metrics"] if m["name"] == "error-rate")
    assert metric["verdict"] == "Failed", metric
    comparison = metric["comparison"]
    assert comparison["errors"] / comparison["requests"] == pytest.approx(0.2, abs=0.08)
    assert comparison["confidence"] >= 0.95
    eventually(lambda: world.status().get("phase") == "RolledBack", timeout=90, what="RolledBack")
