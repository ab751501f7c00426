"""No Secret value reaches the operator's log, an Event or the Rollout's status, at any log
level: a Rollout using every field that names a Secret (Prometheus basic auth and CA, a
Slack webhook URL, a CloudEvents URL and token) is released into a rollback whose
notifications fail, with the operator at `--verbose`; then all of it is searched for each
value, its base64 form (as a Secret's body carries it) and each URL's path and query."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from testbed.demoapp import Behaviour
from testbed.prometheus import WebConfig, mint_tls
from tests.integration.analysed import GROUP, NEW, PLURAL, VERSION, Analysed
from tests.integration.conftest import Cluster, RunningOperator, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

USER = "reader-u53r-7c1e"
PASSWORD = "pw-Zq8v3kL0s9wX"
# No scheme: urllib refuses it with "unknown url type: '<the whole URL>'".
SLACK_URL = "hooks.slack.example/T0SECRET/B0SECRET/slackpath9x8y7z"
SLACK_PATH = "/T0SECRET/B0SECRET/slackpath9x8y7z"
CE_PATH, CE_QUERY = "/ce-path-5ecr3t", "sig=ce-query-5ecr3t"
CE_TOKEN = "ce-t0ken-4b2f9e1d"


class FailingReceiver:
    """Answers every POST with 500, and remembers the Authorization headers it was sent."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.authorizations.append(self.headers.get("Authorization", ""))
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{CE_PATH}?{CE_QUERY}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[FailingReceiver]:
    running = FailingReceiver()
    yield running
    running.stop()


def test_no_secret_value_reaches_the_log_an_event_or_the_status(
    crds: Cluster, namespace: str, tmp_path: Path, receiver: FailingReceiver, operator: RunningOperator
) -> None:
    tls = mint_tls(tmp_path / "pki")
    world = Analysed(crds, namespace, tmp_path, web=WebConfig(tls=tls, users={USER: PASSWORD}))
    try:
        secrets = {
            "prom": {"user": USER, "password": PASSWORD},
            "prom-ca": {"ca.crt": tls.ca_pem},
            "slack": {"url": SLACK_URL},
            "bus": {"url": receiver.url(), "token": CE_TOKEN},
        }
        for name, data in secrets.items():
            crds.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data})
        world.prometheus_access = {
            "auth": {"type": "basic", "secretRef": {"name": "prom", "key": "password"},
                     "usernameSecretRef": {"name": "prom", "key": "user"}},
            "tls": {"caSecretRef": {"name": "prom-ca", "key": "ca.crt"}},
        }  # fmt: skip
        notifications = [
            {"slack": {"webhookSecretRef": {"name": "slack", "key": "url"}}},
            {"cloudEvents": {"urlSecretRef": {"name": "bus", "key": "url"},
                             "tokenSecretRef": {"name": "bus", "key": "token"}}},
        ]  # fmt: skip
        world.set_app(NEW, Behaviour(error_rate=0.06))  # over the 5% that rolls back at once
        world.release(spec={"steps": [{"name": "canary", "weight": 50, "minWait": "5m"}],
                            "notifications": notifications})  # fmt: skip
        eventually(lambda: world.status().get("phase") == "RolledBack", timeout=120, what="rolled back")

        # The failure path ran: every attempt failed, and was logged.
        def failed_to_the_end() -> bool:
            out = operator.output
            return "notification to Slack webhook failed (attempt 3 of 3)" in out and (
                "notification to CloudEvents receiver failed (attempt 3 of 3)" in out
            )

        eventually(failed_to_the_end, timeout=60, what="every notification attempt failed")
        assert "unknown url type" in operator.output
        assert f"Bearer {CE_TOKEN}" in receiver.authorizations  # the token was used, so it was read
        assert world.metric("error-rate").get("value") is not None  # Prometheus answered through auth and TLS

        rollout = crds.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "checkout")
        events = crds.core.list_namespaced_event(namespace).items
        seen = {
            "the operator's log": operator.output,
            "the Events": json.dumps([crds.api.sanitize_for_serialization(e) for e in events]),
            "the Rollout's status": json.dumps(rollout.get("status") or {}),
        }
    finally:
        world.stop()

    ca_body = tls.ca_pem.splitlines()[1:-1]  # the certificate's base64 lines
    values = [USER, PASSWORD, SLACK_URL, receiver.url(), CE_TOKEN, *ca_body]
    needles = {
        *values,
        *(base64.b64encode(v.encode()).decode() for v in (USER, PASSWORD, SLACK_URL, receiver.url(), CE_TOKEN)),
        SLACK_PATH, CE_PATH, CE_QUERY,
    }  # fmt: skip
    for where, text in seen.items():
        leaked = sorted(needle for needle in needles if needle in text)
        assert not leaked, f"{where} shows {leaked}"
