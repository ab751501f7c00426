"""The status page on the real cluster: a customer-facing Rollout rolls back, and a local server
speaking Statuspage's REST API is told — incident opened with the component degraded, updated on
recovery, resolved when the watch ends — with the page's incident id kept in the incident record.
A page that is down holds nothing up: the failure is recorded, and delivery is tried again."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.analysed import NEW, Analysed
from tests.integration.conftest import Cluster, RunningOperator, eventually, free_port
from tests.integration.test_recovery import BAD, ONE_STAGE

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

PAGE, TOKEN, COMPONENT = "pg-123", "sp-token-9f", "cmp-checkout"
INCIDENT_PATH = re.compile(r"^/v1/pages/(?P<page>[^/]+)/incidents(/(?P<incident>[^/]+))?$")
STATUSES = {"investigating", "identified", "monitoring", "resolved"}
COMPONENT_STATES = {"degraded_performance", "partial_outage", "major_outage", "operational"}


class StatusPage:
    """A local Statuspage: refuses what Statuspage would (path, auth, body shape), records the rest."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        self.refused: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                problem = owner.problem(self.command, self.path, dict(self.headers), body)
                if problem:
                    owner.refused.append(problem)
                    self.send_response(401 if "Authorization" in problem else 422)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                owner.received.append((self.command, self.path, body["incident"]))
                opened = INCIDENT_PATH.match(self.path)
                assert opened is not None
                answer = json.dumps({"id": opened["incident"] or "inc-1", **body["incident"]}).encode()
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_POST(self) -> None:
                self._answer()

            def do_PATCH(self) -> None:
                self._answer()

            def log_message(self, *_: Any) -> None: ...

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def problem(method: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> str:
        found = INCIDENT_PATH.match(path)
        if found is None or found["page"] != PAGE:
            return f"{method} {path}: no such page"
        if (method == "POST") != (found["incident"] is None) or method not in ("POST", "PATCH"):
            return f"{method} {path}: POST opens an incident, PATCH updates one"
        if headers.get("Authorization") != f"OAuth {TOKEN}":
            return f"Authorization is {headers.get('Authorization')!r}"
        incident = body.get("incident") or {}
        if not incident.get("name") or incident.get("status") not in STATUSES or not incident.get("body"):
            return f"incident lacks name, status or body: {incident}"
        components = incident.get("components") or {}
        if (
            set(components) != set(incident.get("component_ids") or [])
            or not set(components.values()) <= COMPONENT_STATES
        ):
            return f"components do not match component_ids: {incident}"
        return ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def statuses(self) -> list[tuple[str, str, str]]:
        """(method, status, component state) of each request, in order."""
        return [(m, i["status"], i["components"][COMPONENT]) for m, _, i in self.received]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Analysed]:
    running = Analysed(crds, namespace, tmp_path)
    yield running
    running.stop()


def customer_facing(world: Analysed, api_url: str, watch: str) -> dict[str, Any]:
    """The spec of a customer-facing Rollout with a statusPage target; page id and token in a Secret."""
    world.cluster.core.create_namespaced_secret(
        world.namespace, {"metadata": {"name": "statuspage"}, "stringData": {"page": PAGE, "token": TOKEN}}
    )
    target = {
        "pageIdSecretRef": {"name": "statuspage", "key": "page"},
        "tokenSecretRef": {"name": "statuspage", "key": "token"},
        "componentIds": [COMPONENT],
        "apiURL": api_url,
    }
    return {"steps": ONE_STAGE, "customerFacing": True, "notifications": [{"statusPage": target}],
            "recovery": {"watchAfterRollback": watch}}  # fmt: skip


def page_record(world: Analysed) -> dict[str, Any]:
    incident = (world.status().get("incidents") or [{}])[-1]
    return dict(incident.get("statusPage") or {})


def test_a_customer_facing_rollback_opens_updates_and_resolves_a_status_page_incident(
    world: Analysed, operator: RunningOperator
) -> None:
    page = StatusPage()
    try:
        world.set_app(NEW, BAD)
        world.release(spec=customer_facing(world, page.url, watch="25s"))
        opened = eventually(
            lambda: page_record(world).get("incidentId"), timeout=120, what="page incident opened"
        )
        assert opened == "inc-1"
        eventually(
            lambda: page_record(world).get("status") == "resolved", timeout=90, what="page incident resolved"
        )
        assert not page.refused, page.refused
        said = page.statuses()
        assert said[0] == ("POST", "identified", "degraded_performance"), said
        assert ("PATCH", "monitoring", "operational") in said and said[-1] == (
            "PATCH",
            "resolved",
            "operational",
        )
        assert all(path.endswith("/incidents/inc-1") for m, path, _ in page.received if m == "PATCH")
        incident = world.status()["incidents"][-1]
        assert incident["recoveredAt"] and page_record(world).get("failures", 0) == 0
    finally:
        page.stop()


def test_a_status_page_that_is_down_holds_nothing_up_and_is_told_once_it_is_back(
    world: Analysed, operator: RunningOperator
) -> None:
    port = free_port()  # nothing listens there yet
    world.set_app(NEW, BAD)
    world.release(spec=customer_facing(world, f"http://127.0.0.1:{port}", watch="60s"))
    failed = eventually(lambda: page_record(world).get("lastError") and page_record(world), timeout=120,
                        what="failed delivery recorded")  # fmt: skip
    assert failed["failures"] >= 1 and failed["retryAt"] and "incidentId" not in failed
    assert f"127.0.0.1:{port}" in failed["lastError"] and PAGE not in failed["lastError"], failed
    incident = eventually(lambda: world.status()["incidents"][-1].get("recoveredAt") and world.status()["incidents"][-1],
                          timeout=120, what="recovered")  # fmt: skip
    assert incident["recoverySeconds"] < 30  # the page being down did not slow the rollback
    page = StatusPage(port)
    try:
        eventually(
            lambda: page_record(world).get("incidentId") == "inc-1", timeout=60, what="opened once back"
        )
        assert page.received[0][0] == "POST" and not page.refused, (page.received, page.refused)
        eventually(lambda: page_record(world).get("status") == "resolved", timeout=120, what="resolved")
        record = page_record(world)
        assert record.get("failures", 0) == 0 and "lastError" not in record
        assert [m for m, _, _ in page.received].count("POST") == 1
    finally:
        page.stop()
