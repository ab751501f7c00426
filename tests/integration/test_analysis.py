"""Analysis against a real Prometheus scraping the demo app, with the operator running under
its own ServiceAccount: healthy promotes, 6% errors roll back at once, 0.3% warns and
proceeds, no traffic holds, Prometheus away holds (never rolls back) and the release goes on
when it returns, and a bad query is named."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from testbed.demoapp import Behaviour
from tests.integration.analysed import Analysed
from tests.integration.conftest import RunningOperator, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]


def test_a_healthy_canary_is_promoted(analysed: Analysed, operator: RunningOperator) -> None:
    analysed.release()
    eventually(analysed.released, timeout=120, what="released")
    status = analysed.status()
    assert {m["name"] for m in status["metrics"]} == {"error-rate", "latency-p95", "success-rate"}
    assert all(m["failed"] == 0 for m in status["metrics"])
    assert status["lastVerdict"] in ("Successful", "Warning")


def test_six_percent_errors_are_rolled_back_within_two_intervals(
    analysed: Analysed, operator: RunningOperator
) -> None:
    analysed.app.canary.set_behaviour(Behaviour(error_rate=0.06))
    analysed.release(min="60s", max="120s")
    incident = eventually(lambda: (analysed.status().get("incidents") or [{}])[-1].get("recoveredAt")
                          and analysed.status()["incidents"][-1], timeout=60, what="rolled back")  # fmt: skip
    assert (
        "error-rate" in incident["reason"]
        and "roll back at once" in incident["reason"]
        and incident["immediate"]
    )
    # The first critical verdict came within two analysis intervals of the release (to the second).
    started = datetime.fromisoformat(analysed.status()["release"]["startedAt"].replace("Z", "+00:00"))
    first = datetime.fromisoformat(incident["startedAt"].replace("Z", "+00:00"))
    assert first - started <= timedelta(seconds=2 * 3 + 1), (started, first)
    assert analysed.status()["canaryWeight"] == 0
    eventually(lambda: "MetricFailed" in analysed.reasons() and "RolledBack" in analysed.reasons())


def test_a_warning_rate_of_errors_is_watched_but_the_release_proceeds(
    analysed: Analysed, operator: RunningOperator
) -> None:
    analysed.app.canary.set_behaviour(Behaviour(error_rate=0.003))
    warned: list[str] = []

    def progress() -> bool:
        if analysed.metric("error-rate").get("verdict") == "Warning":
            warned.append(analysed.metric("error-rate")["message"])
        return analysed.released()

    analysed.release(min="4s", max="12s")
    eventually(progress, timeout=150, interval=0.5, what="released despite warnings")
    assert warned, "a 0.3% error rate is in the warning band"
    assert "watching" in warned[0] or "critical" in warned[0]
    assert analysed.metric("error-rate")["failed"] == 0


def test_no_traffic_holds_the_release_as_inconclusive_and_says_so(
    analysed: Analysed, operator: RunningOperator
) -> None:
    analysed.canary_share = 0  # nobody calls the new version
    time.sleep(4)  # longer than the analysis window: no canary request is left in it
    analysed.release(min="4s", max="8s")
    status = eventually(lambda: "held" in (analysed.status().get("message") or "") and analysed.status(),
                        timeout=60, what="held")  # fmt: skip
    assert "no traffic" in status["message"] and "Inconclusive" in status["message"]
    time.sleep(9)  # past the maximum wait: still held, never promoted, never rolled back
    status = analysed.status()
    assert (status["phase"], status["stage"]) == ("Progressing", "1/3")
    assert status["lastVerdict"] == "Inconclusive"

    analysed.canary_share = 60  # traffic returns: the release goes on by itself
    eventually(lambda: analysed.status().get("stage") != "1/3", timeout=60, what="continued")


def test_prometheus_away_holds_the_release_and_never_rolls_back(
    analysed: Analysed, operator: RunningOperator
) -> None:
    analysed.release(min="20s", max="40s")
    eventually(lambda: analysed.metric("error-rate").get("verdict") in ("Successful", "Warning"), timeout=60)
    analysed.prometheus.stop()
    status = eventually(lambda: "held" in (analysed.status().get("message") or "") and analysed.status(),
                        timeout=60, what="held while Prometheus is away")  # fmt: skip
    assert "unreachable" in status["message"]
    assert status["lastVerdict"] == "Error" and status["phase"] == "Progressing"

    analysed.prometheus.start()
    eventually(analysed.released, timeout=150, what="released after Prometheus came back")
    assert "RolledBack" not in analysed.reasons()


def test_a_query_with_a_syntax_error_is_reported_naming_the_metric(
    analysed: Analysed, operator: RunningOperator
) -> None:
    broken = {
        "name": "payment-failures",
        "query": "sum(rate(payments_failed_total[{{window}}]",
        "critical": 1,
    }
    analysed.release(metrics=[{"template": "error-rate"}, broken], min="5s", max="10s")
    metric = eventually(lambda: analysed.metric("payment-failures").get("verdict") == "Error"
                        and analysed.metric("payment-failures"), timeout=60)  # fmt: skip
    assert metric["message"].startswith("payment-failures: bad query: ")
    assert "parse error" in metric["message"]
    eventually(lambda: "MetricError" in analysed.reasons())
    assert analysed.status()["phase"] == "Progressing"  # an unmeasurable metric never rolls back
