"""MetricsAvailable on the real cluster: a Rollout whose metrics do not exist is told which
metric, with the query as sent and what usually causes it, and its release waits rather than
judging "no data" forever; the fix the message names starts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from testbed.dataplane import App
from testbed.demoapp import Behaviour
from tests.integration.conftest import Cluster, RunningOperator, eventually
from tests.integration.measured import Measured

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

# An app that names its status code label `status`: the built-ins look for `code` by default.
APPS = {
    image: App(Behaviour(latency_ms=15), code_label="status") for image in ("checkout:1.0", "checkout:2.0")
}
STEPS = [{"name": "canary", "weight": 25, "minWait": "6s", "maxWait": "20s"},
         {"name": "full", "weight": 100, "minWait": "3s", "maxWait": "20s"}]  # fmt: skip


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Measured]:
    running = Measured(crds, namespace, tmp_path, APPS)
    yield running
    running.stop()


def test_metrics_that_do_not_exist_are_named_and_the_release_waits_until_they_do(
    world: Measured, operator: RunningOperator
) -> None:
    world.adopt({"metrics": [{"template": "error-rate"}, {"template": "latency-p95"}]}, steps=STEPS)
    condition = eventually(lambda: world.condition("MetricsAvailable") or None, timeout=30, what="checked")
    assert condition["status"] == "False" and condition["reason"] == "SeriesMissing"
    message = condition["message"]
    # The metric, the query as sent, and the cause, with the label the series do carry.
    assert message.startswith("error-rate: the pods' http_requests_total series have no code label (query: ")
    assert f'count(http_requests_total{{namespace="{world.namespace}",pod=~"checkout-' in message
    assert 'code!=""})' in message
    assert "set spec.analysis.app.statusLabel (they carry: status)" in message
    assert "latency-p95" not in message  # its histogram is there

    world.apply_image("checkout:2.0")
    eventually(lambda: world.status().get("phase") == "Waiting", timeout=30, what="release waits")
    status = world.status()
    assert "waits for its metrics (MetricsAvailable): error-rate:" in status["message"]
    eventually(
        lambda: "ReleaseWaiting" in world.reasons(), timeout=10, what="told"
    )  # Events follow the status
    with pytest.raises(ApiException) as missing:  # nothing was judged on "no data": no canary at all
        world.cluster.apps.read_namespaced_deployment("checkout-canary", world.namespace)
    assert missing.value.status == 404

    # The fix the message names.
    world.patch({"analysis": {"app": {"statusLabel": "status"}}})
    eventually(lambda: world.condition("MetricsAvailable").get("status") == "True", timeout=30,
               what="MetricsAvailable True")  # fmt: skip
    eventually(lambda: world.status().get("phase") == "Progressing", timeout=30, what="release started")
    eventually(lambda: world.status().get("phase") == "Healthy", timeout=120, what="released")
    assert world.metric("error-rate").get("verdict") == "Successful"
