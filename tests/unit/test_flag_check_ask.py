"""Asking the app, over real HTTP on loopback: the demo app's `/health` says its flags as it serves
them, the operator's GET is bounded in time and size, it reaches pods through the proxy it is told
of (the testbed's pod network) and never through the environment's, and the whole look, from the
pods listed to the answers summed up, gives the planner one view."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from parachute import kube
from parachute.api import Incident, RolloutSpec, RolloutStatus
from parachute.kube_api import KubeClient
from parachute.plan.model import AppAnswer, Observed, Serving, TargetState
from parachute.recovery import verify
from testbed.demoapp import FlagSource, Version
from testbed.podnet import PodNetwork

VERIFY = {"path": "/health", "jsonPath": "features.new-checkout", "expect": False, "port": 8080}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Version, Path]]:
    """A demo app version following the flag file `new-checkout` (on)."""
    flag = tmp_path / "new-checkout"
    flag.write_text("true")
    version = Version("canary")
    version.follow_flag(FlagSource(flag, "new-checkout"))
    version.start()
    yield version, flag
    version.stop()


def ask(url: str) -> tuple[int | None, bytes | None, str]:
    return asyncio.run(verify._get(url))


class Odd:
    """A server that answers too slowly, or too much."""

    def __init__(self, delay: float = 0.0, size: int = 0) -> None:
        delay_, size_ = delay, size

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay_)
                body = b"{" + b" " * size_ + b"}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/health"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_demo_app_says_its_flags_as_it_serves_them(app: tuple[Version, Path]) -> None:
    version, flag = app
    assert json.loads(ask(f"{version.url}/health")[1] or b"") == {
        "status": "ok",
        "features": {"new-checkout": True},
    }
    flag.write_text("false")  # a flag it follows is served as the file says now
    assert json.loads(ask(f"{version.url}/health")[1] or b"")["features"] == {"new-checkout": False}


def test_a_flag_read_once_is_served_as_read_whatever_the_store_says_since() -> None:
    version = Version("canary").start()
    try:
        version.report_features({"new-checkout": True})  # read at start-up; cached since
        assert json.loads(ask(f"{version.url}/health")[1] or b"")["features"] == {"new-checkout": True}
    finally:
        version.stop()


def test_an_answer_is_bounded_in_time_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "TIMEOUT_SECONDS", 0.2)
    slow, big = Odd(delay=1.0), Odd(size=verify.MAX_BODY)
    try:
        code, body, error = ask(slow.url)
        assert (code, body) == (None, None) and error.endswith(
            ("no answer within 0.2s", "all flag check threads busy")
        ), error
        code, body, error = ask(big.url)
        assert (code, body, error) == (200, None, "the answer is longer than 64 KiB")
    finally:
        slow.stop()
        big.stop()


def test_a_refused_connection_is_an_error_not_an_exception() -> None:
    odd = Odd()
    url = odd.url
    odd.stop()
    code, body, error = ask(url)
    assert code is None and body is None and "refused" in error.lower(), error


def test_pods_are_reached_through_the_proxy_the_operator_is_told_of(
    app: tuple[Version, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    version, _ = app
    network = PodNetwork({"10.1.2.3": version.url}.get).start()
    try:
        monkeypatch.setenv(verify.PROXY_ENV, network.url)
        code, body, _ = ask("http://10.1.2.3:8080/health")
        assert code == 200 and json.loads(body or b"")["features"] == {"new-checkout": True}
        assert network.requests == ["http://10.1.2.3:8080/health"]
        assert ask("http://10.9.9.9:8080/health")[0] == 502  # no pod has that IP
    finally:
        network.stop()


def test_without_the_setting_pods_are_dialled_directly_whatever_proxy_the_environment_names(
    app: tuple[Version, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    version, _ = app
    network = PodNetwork(lambda ip: None).start()
    try:
        monkeypatch.delenv(verify.PROXY_ENV, raising=False)
        monkeypatch.setenv("http_proxy", network.url)
        monkeypatch.setenv("HTTP_PROXY", network.url)
        assert ask(f"{version.url}/health")[0] == 200
        assert network.requests == []
    finally:
        network.stop()


def pod(name: str, ip: str, digest: str, canary: bool = False) -> dict[str, Any]:
    labels = {
        "app": "checkout",
        "pod-template-hash": digest,
        **({"parachute.dev/canary": "true"} if canary else {}),
    }
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app"}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_a_look_asks_every_pod_serving_the_release_and_sums_up_their_answers(
    app: tuple[Version, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two canary pods, one whose app follows the flag and one that read it once at start-up,
    and a stable pod that is not asked."""
    following, flag = app
    cached = Version("canary").start()
    cached.report_features({"new-checkout": True})
    stable = Version("stable").start()
    addresses = {"10.0.0.1": following.url, "10.0.0.2": cached.url, "10.0.0.3": stable.url}
    network = PodNetwork(addresses.get).start()
    pods = [pod("checkout-canary-a", "10.0.0.1", "ccc", True), pod("checkout-canary-b", "10.0.0.2", "ccc", True),
            pod("checkout-s", "10.0.0.3", "aaa")]  # fmt: skip
    listed: list[tuple[str, str]] = []

    async def list_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
        listed.append((namespace, selector))
        return pods

    monkeypatch.setattr(kube, "list_pods", list_pods)
    monkeypatch.setenv(verify.PROXY_ENV, network.url)
    spec = RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"},
        "featureFlags": {"configMapRef": {"name": "checkout-flags"}, "flags": ["new-checkout"], "verify": VERIFY},
    })  # fmt: skip
    incident = Incident(
        id="i", revision="rev-2", stable_revision="rev-1", reason="r", started_at="2026-11-24T10:00:00Z"
    )
    status = RolloutStatus(incidents=[incident])
    observed = Observed(target=TargetState(revision="rev-2", replicas=1, paused=True),
                        serving=Serving(target_sets={"aaa": ("rev-1", 1)}))  # fmt: skip
    target = {"metadata": {"name": "checkout"}, "spec": {"selector": {"matchLabels": {"app": "checkout"}}}}
    try:
        flag.write_text("false")
        seen = asyncio.run(
            verify.observe(KubeClient(), "shop", spec, target, status=status, observed=observed)
        )
        assert listed == [("shop", "app=checkout")]
        assert seen.answer == AppAnswer.mismatch
        assert seen.said == (
            "pod checkout-canary-b: GET /health says features.new-checkout is true, not false (1 of 2 pods)"
        )
        cached.report_features({"new-checkout": False})  # restarted: it read the store again
        seen = asyncio.run(
            verify.observe(KubeClient(), "shop", spec, target, status=status, observed=observed)
        )
        assert seen.answer == AppAnswer.match, seen
        assert sorted(network.requests) == sorted(
            ["http://10.0.0.1:8080/health", "http://10.0.0.2:8080/health"] * 2
        ), "the stable pod is never asked"
    finally:
        network.stop()
        for version in (cached, stable):
            version.stop()
