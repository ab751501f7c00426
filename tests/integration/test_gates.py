"""Checklist gates on the real cluster: an unmet gate holds the release until a pipeline sets
its annotation, an HTTP gate passes and fails as a real local server answers, and a condition
gate waits for another object's condition."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    event_reasons,
    eventually,
    rollout_status,
    start_release,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION = "parachute.dev", "v1alpha1"


class Answering:
    """A local HTTP server whose answer a test changes while it runs."""

    def __init__(self) -> None:
        self.code = 503
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(owner.code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None: ...

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ready"


@pytest.fixture
def smoke() -> Iterator[Answering]:
    server = Answering()
    yield server
    server.server.shutdown()
    server.server.server_close()


def waiting_on(cluster: Cluster, namespace: str, text: str) -> dict[str, Any]:
    def held() -> dict[str, Any] | bool:
        status = rollout_status(cluster, namespace)
        return status.get("phase") == "Waiting" and text in (status.get("message") or "") and status

    return eventually(held, timeout=30, what=f"waiting on {text}")  # type: ignore[no-any-return]


def test_an_unmet_gate_holds_the_release_until_the_pipeline_sets_it(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    gate = {"name": "tests-passed", "annotation": {"key": "ci.example/tests", "value": "passed"}}
    start_release(crds, namespace, checklist={"gates": [gate]})
    status = waiting_on(crds, namespace, "gate tests-passed: annotation ci.example/tests is not set")
    assert status["gates"][0]["name"] == "tests-passed" and status["gates"][0]["met"] is False

    annotate = {"metadata": {"annotations": {"ci.example/tests": "passed"}}}
    crds.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "rollouts", "checkout", annotate)
    eventually(
        lambda: rollout_status(crds, namespace).get("phase") == "Progressing", timeout=30, what="started"
    )
    assert rollout_status(crds, namespace)["gates"][0]["met"] is True
    eventually(lambda: "ReleaseStarted" in event_reasons(crds, namespace))


def test_an_http_gate_follows_what_the_server_answers(
    crds: Cluster, namespace: str, operator: RunningOperator, smoke: Answering
) -> None:
    gate = {"name": "smoke", "http": {"url": smoke.url, "timeout": "2s"}}
    start_release(crds, namespace, checklist={"gates": [gate]})
    waiting_on(crds, namespace, f"gate smoke: GET {smoke.url} answered 503")
    smoke.code = 200
    eventually(
        lambda: rollout_status(crds, namespace).get("phase") == "Progressing", timeout=40, what="started"
    )
    assert "answered 200" in rollout_status(crds, namespace)["gates"][0]["message"]


def test_a_condition_gate_waits_for_another_object_s_condition(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    gate = {"name": "database-up",
            "condition": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-db", "type": "Available"}}  # fmt: skip
    start_release(crds, namespace, checklist={"gates": [gate]})
    waiting_on(crds, namespace, "gate database-up: Deployment payments-db not found")
    crds.apps.create_namespaced_deployment(namespace, deployment("payments-db", replicas=1))
    eventually(
        lambda: rollout_status(crds, namespace).get("phase") == "Progressing", timeout=40, what="started"
    )
    assert (
        rollout_status(crds, namespace)["gates"][0]["message"] == "Deployment payments-db is Available=True"
    )
