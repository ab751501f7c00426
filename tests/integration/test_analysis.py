"""Analysis against a real Prometheus that discovers the release's pods, with traffic that
follows the Service's ready endpoints and the operator running under its own ServiceAccount:
healthy promotes, 6% errors roll back at once, 0.3% warns and proceeds, no traffic holds,
Prometheus away holds (never rolls back) and the release goes on when it returns, and a bad
query is named."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch

from testbed.demoapp import Behaviour
from tests.integration.analysed import GROUP, INTERVAL, NEW, PLURAL, VERSION, Analysed
from tests.integration.conftest import Cluster, RunningOperator, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]


def test_a_healthy_canary_is_promoted(analysed: Analysed, operator: RunningOperator) -> None:
    analysed.release()
    eventually(analysed.released, timeout=120, what="released")
    status = analysed.status()
    assert {m["name"] for m in status["metrics"]} == {"error-rate", "latency-p95", "success-rate"}
    assert all(m["failed"] == 0 for m in status["metrics"])
    assert status["lastVerdict"] in ("Successful", "Warning")


def first_counted(analysed: Analysed) -> datetime:
    """When Prometheus first counted a request served by the canary's pods (to its 1 s resolution)."""
    served = f'sum(http_requests_total{{namespace="{analysed.namespace}",parachute_dev_canary="true"}}) > 0'
    first = analysed.prometheus.wait_for_value(f"min_over_time(timestamp({served})[10m:1s])")
    return datetime.fromtimestamp(first, UTC)


class StatusHistory:
    """Every status of the Rollout the API server stores, in order, from a watch."""

    def __init__(self, analysed: Analysed) -> None:
        self.statuses: list[dict[str, Any]] = []
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._follow, args=(analysed,), daemon=True)
        self._thread.start()

    def _follow(self, analysed: Analysed) -> None:
        custom = analysed.cluster.custom
        with contextlib.suppress(Exception):  # the cluster going away ends it: what was seen is kept
            for event in self._watch.stream(custom.list_namespaced_custom_object, GROUP, VERSION,
                                            analysed.namespace, PLURAL, timeout_seconds=300):  # fmt: skip
                self.statuses.append(event["object"].get("status") or {})

    def stop(self) -> None:
        self._watch.stop()
        self._thread.join(timeout=10)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_stage_is_judged_from_when_it_is_in_place(analysed: Analysed, operator: RunningOperator) -> None:
    """A round in the look that finds the stage in place (unless one ran within half an interval,
    once a canary pod was ready), and the stage's wait counted from there."""
    history = StatusHistory(analysed)
    try:
        analysed.release(min="6s", max="15s")
        eventually(analysed.released, timeout=120, what="released")
    finally:
        history.stop()
    first_stage = [s for s in history.statuses if s.get("phase") == "Progressing" and s.get("stage") == "1/3"]
    assert first_stage, history.statuses
    assert not first_stage[0].get("metrics")  # the release's start: nothing to judge yet
    reached = next(s for s in first_stage if s.get("stageReachedAt"))
    rounds = {at(m["lastEvaluatedAt"]) for m in reached["metrics"] if not m.get("fastLane")}
    half = timedelta(seconds=int(INTERVAL.removesuffix("s")) / 2)
    assert all(at(reached["stageReachedAt"]) - half <= moment <= at(reached["stageReachedAt"])
               for moment in rounds), reached  # fmt: skip
    ended = next(s for s in history.statuses if s.get("stage") == "2/3")
    assert at(ended["stageStartedAt"]) >= at(reached["stageReachedAt"]) + timedelta(seconds=6)


def test_six_percent_errors_are_rolled_back_within_two_intervals(
    analysed: Analysed, operator: RunningOperator
) -> None:
    analysed.set_app(NEW, Behaviour(error_rate=0.06))
    # Half the traffic on the new version: enough requests in one interval's window that 6%
    # reads as 6%, not as 5% one round and 6.7% the next.
    analysed.release(spec={"steps": [{"name": "canary", "weight": 50, "minWait": "5m"}]})
    incident = eventually(lambda: (analysed.status().get("incidents") or [{}])[-1].get("recoveredAt")
                          and analysed.status()["incidents"][-1], timeout=60, what="rolled back")  # fmt: skip
    assert (
        "error-rate" in incident["reason"]
        and "roll back at once" in incident["reason"]
        and incident["immediate"]
    )
    # The first critical verdict came within two analysis intervals of the canary's first
    # requests (to the second): as soon as there is something to measure, it is judged.
    counted = first_counted(analysed)
    first = datetime.fromisoformat(incident["startedAt"].replace("Z", "+00:00"))
    interval = int(INTERVAL.removesuffix("s"))
    assert first - counted <= timedelta(seconds=2 * interval + 1), (counted, first)
    assert analysed.status()["canaryWeight"] == 0
    eventually(lambda: "MetricFailed" in analysed.reasons() and "RolledBack" in analysed.reasons())


@pytest.fixture
def one_pod(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Analysed]:
    """`checkout` with a single pod, so that every stage's canary (one pod) gets half the
    requests: enough in one interval's window for 0.4% (one in 250) to show."""
    world = Analysed(crds, namespace, tmp_path, replicas=1)
    yield world
    world.stop()


def test_a_warning_rate_of_errors_is_watched_but_the_release_proceeds(
    one_pod: Analysed, operator: RunningOperator
) -> None:
    analysed = one_pod
    # One request in 250 fails, evenly spaced, so a window of 250 requests or more reads about
    # 0.2% or more, past the warning line in all but a few: at one in 333 a window of 500-666
    # requests read 0.15-0.2%, and a release on a slow machine passed every stage without a
    # Warning shown. A short window that catches two errors reads past 0.5%, but a few errors
    # prove nothing with 95% confidence, and a critical reading is a Warning for `sustainFor`
    # (10 minutes): it holds, it does not fail.
    analysed.set_app(NEW, Behaviour(error_rate=0.004))
    warned: list[str] = []

    def progress() -> bool:
        metric = analysed.metric("error-rate")  # read once: a round may land between two reads
        if metric.get("verdict") == "Warning":
            warned.append(metric["message"])
        return analysed.released()

    analysed.release(min="6s", max="12s")
    eventually(progress, timeout=150, interval=0.5, what="released despite warnings")
    assert warned, "a 0.4% error rate is in the warning band"
    assert "watching" in warned[0] or "critical" in warned[0]
    assert analysed.metric("error-rate")["failed"] == 0


def test_no_traffic_holds_the_release_as_inconclusive_and_says_so(
    analysed: Analysed, operator: RunningOperator
) -> None:
    analysed.quiet()  # nobody calls checkout
    # No request is left in the analysis window.
    analysed.prometheus.wait_for_value(analysed.requests(), timeout=30, accept=lambda served: served == 0)
    analysed.release(min="4s", max="8s")
    status = eventually(lambda: "held" in (analysed.status().get("message") or "") and analysed.status(),
                        timeout=60, what="held")  # fmt: skip
    assert "no traffic" in status["message"] and "Inconclusive" in status["message"]
    time.sleep(9)  # past the maximum wait: still held, never promoted, never rolled back
    status = analysed.status()
    assert (status["phase"], status["stage"]) == ("Progressing", "1/3")
    assert status["lastVerdict"] == "Inconclusive"

    analysed.busy()  # traffic returns: the release goes on by itself
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
