"""The built-in templates, unchanged, against an application nobody here wrote, found by
Kubernetes discovery as a cluster's Prometheus finds it: one app labels its status code `code`,
the other `status` (named in spec.analysis.app). No version label anywhere: each version is told
apart by its pods. Each goes through a good release, then a bad one rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.dataplane import App
from testbed.demoapp import Behaviour
from tests.integration.conftest import Cluster, RunningOperator, eventually, told
from tests.integration.measured import Measured

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

HEALTHY = Behaviour(latency_ms=15)  # a p95 well inside one histogram bucket
FAILING = Behaviour(error_rate=0.3, latency_ms=15)


def apps(label: str) -> dict[str, App]:
    return {
        "checkout:1.0": App(HEALTHY, code_label=label),
        "checkout:2.0": App(HEALTHY, code_label=label),
        "checkout:3.0": App(FAILING, code_label=label),
    }


@pytest.fixture(params=["code", "status"])
def world(
    request: pytest.FixtureRequest, crds: Cluster, namespace: str, tmp_path: Path
) -> Iterator[Measured]:
    running = Measured(crds, namespace, tmp_path, apps(request.param))
    running.label = request.param  # type: ignore[attr-defined]
    yield running
    running.stop()


STEPS = [
    {"name": "canary", "weight": 25, "minWait": "9s", "maxWait": "30s"},
    {"name": "full", "weight": 100, "minWait": "3s", "maxWait": "30s"},
]


def test_a_release_and_a_rollback_judged_by_the_builtins(world: Measured, operator: RunningOperator) -> None:
    label: str = world.label  # type: ignore[attr-defined]
    analysis: dict[str, Any] = {} if label == "code" else {"app": {"statusLabel": label}}
    world.adopt(analysis, steps=STEPS)
    eventually(lambda: world.condition("MetricsAvailable").get("status") == "True", timeout=30,
               what="MetricsAvailable")  # fmt: skip

    before = (world.status().get("release") or {}).get("stableRevision")
    world.apply_image("checkout:2.0")
    eventually(lambda: world.released(before), timeout=150, what="checkout:2.0 released")
    # Judged by requests it really served: at the canary stage, its own pods' requests.
    assert "RollingBack" not in told(world.reasons, "ReleaseCompleted", "MetricSuccessful")

    world.apply_image("checkout:3.0")

    def failed() -> bool:
        return world.status().get("phase") in ("RollingBack", "RolledBack")

    eventually(failed, timeout=60, what="checkout:3.0 rolled back")
    error_rate = world.metric("error-rate")
    assert error_rate.get("verdict") == "Failed" and error_rate.get("immediate"), error_rate
    comparison = error_rate["comparison"]
    # 30% of the canary's requests failed, none of stable's: counted per pod, told apart by name.
    assert comparison["errors"] / comparison["requests"] == pytest.approx(0.3, abs=0.08)
    assert comparison["stableErrors"] == 0 and comparison["stableRequests"] > comparison["requests"]
    assert "roll back at once" in error_rate["message"]
    eventually(lambda: world.status().get("phase") == "RolledBack", timeout=90, what="RolledBack")
