"""Prometheus behind TLS and auth, for real: Prometheus serving HTTPS with a certificate from
its own CA and asking for basic auth (`--web.config.file`), queried with the CA held in
memory; a bearer token through the kind of checking proxy that puts a token in front of
Prometheus (Prometheus itself checks none); and a Rollout measured through all of it by the
operator, which follows a rotated password and writes no file."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from parachute.analysis.prometheus import PrometheusProvider, trust
from parachute.plan.verdicts import Sample
from testbed.prometheus import LocalPrometheus, TLSFiles, WebConfig, mint_tls
from tests.integration.analysed import Analysed
from tests.integration.conftest import Cluster, RunningOperator, assert_never_refused, eventually

pytestmark = pytest.mark.prometheus

QUERY = "vector(1)"


def sample(address: str, **access: Any) -> Sample:
    return asyncio.run(PrometheusProvider(address, timeout=3, retries=0, **access).sample(QUERY))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return mint_tls(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def guarded(tls: TLSFiles, tmp_path: Path) -> Iterator[LocalPrometheus]:
    """A Prometheus that serves HTTPS only, and only to user `reader`."""
    server = LocalPrometheus(tmp_path / "prometheus", [], web=WebConfig(tls=tls, users={"reader": "pw-1"}))
    yield server.start()
    server.stop()


def test_basic_auth_over_tls_verified_with_a_ca_held_in_memory(
    guarded: LocalPrometheus, tls: TLSFiles, tmp_path: Path
) -> None:
    ca = trust(tls.ca_pem)
    assert sample(guarded.url, basic_auth=("reader", "pw-1"), ca=ca).value == 1.0
    assert sample(guarded.url, basic_auth=("reader", "wrong"), ca=ca).error == (
        f"Prometheus at {guarded.url} refused the credentials (HTTP 401)"
    )
    assert (
        sample(guarded.url, ca=ca).error == f"Prometheus at {guarded.url} refused the credentials (HTTP 401)"
    )


@pytest.mark.parametrize(
    ("trusted", "reason"),
    [
        ("other-ca", "unable to get local issuer certificate"),
        ("system", "unable to get local issuer certificate"),
    ],
    ids=["another-ca", "only-the-system-cas"],
)
def test_a_server_the_ca_did_not_sign_is_refused(
    guarded: LocalPrometheus, tmp_path: Path, trusted: str, reason: str
) -> None:
    ca = trust(mint_tls(tmp_path / "other").ca_pem) if trusted == "other-ca" else None
    error = sample(guarded.url, basic_auth=("reader", "pw-1"), ca=ca).error
    assert (
        error is not None
        and error.startswith(f"Prometheus at {guarded.url}: TLS failed (")
        and reason in error
    )


def test_insecure_skip_verify_skips_verification_only(guarded: LocalPrometheus) -> None:
    with pytest.warns(Warning, match="Unverified HTTPS request"):
        assert sample(guarded.url, basic_auth=("reader", "pw-1"), insecure_skip_verify=True).value == 1.0


class BearerProxy:
    """Forwards GETs to Prometheus only with `Authorization: Bearer <token>`, as kube-rbac-proxy
    or an OAuth proxy in front of Prometheus does; 401 otherwise."""

    def __init__(self, upstream: str, token: str) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.seen.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    with urllib.request.urlopen(upstream + self.path, timeout=5) as response:
                        code, body = response.status, response.read()
                except urllib.error.HTTPError as error:
                    code, body = error.code, error.read()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
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
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_bearer_token_reaches_prometheus_through_a_checking_proxy(tmp_path: Path) -> None:
    server = LocalPrometheus(tmp_path / "prometheus", []).start()
    proxy = BearerProxy(server.url, "tok-1")
    try:
        assert sample(proxy.url, bearer_token="tok-1").value == 1.0
        assert proxy.seen[-1] == "Bearer tok-1"
        assert sample(proxy.url, bearer_token="tok-2").error == (
            f"Prometheus at {proxy.url} refused the credentials (HTTP 401)"
        )
    finally:
        proxy.stop()
        server.stop()


# ---------------------------------------------------------------------------- through the operator


@pytest.mark.cluster
@pytest.mark.slow
def test_a_rollout_is_measured_through_basic_auth_and_tls_and_follows_a_rotated_password(
    crds: Cluster, namespace: str, operator_kubeconfig: Path, tls: TLSFiles, tmp_path: Path
) -> None:
    web = WebConfig(tls=tls, users={"reader": "pw-1"})
    world = Analysed(crds, namespace, tmp_path, web=web)
    temp = tmp_path / "operator-tmp"
    temp.mkdir()
    operator = RunningOperator(operator_kubeconfig, tmp_path / "operator.log", {"TMPDIR": str(temp)})
    try:
        for name, data in {
            "prom": {"user": "reader", "password": "pw-1"},
            "prom-ca": {"ca.crt": tls.ca_pem},
        }.items():
            crds.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data})
        world.prometheus_access = {
            "auth": {"type": "basic", "secretRef": {"name": "prom", "key": "password"},
                     "usernameSecretRef": {"name": "prom", "key": "user"}},
            "tls": {"caSecretRef": {"name": "prom-ca", "key": "ca.crt"}},
        }  # fmt: skip
        operator.start()
        # One long stage: the verdicts below are all judged in it.
        world.release(metrics=[{"template": "error-rate"}],
                      spec={"steps": [{"name": "canary", "weight": 50, "minWait": "5m"}]})  # fmt: skip

        def verdict(wanted: str) -> dict[str, Any]:
            return eventually(
                lambda: world.metric("error-rate").get("verdict") == wanted and world.metric("error-rate"),
                timeout=60, what=f"error-rate {wanted}",
            )  # fmt: skip

        assert verdict("Successful")["value"] == 0.0
        # (The kubernetes client keeps the test kubeconfig's CA in a temp file; in a Pod it has none.)
        before = set(temp.iterdir())
        # Prometheus's password changes (it reads its web config on every request)...
        web.users = {"reader": "pw-2"}
        world.prometheus.write_web_config()
        refused = verdict("Error")
        assert refused["message"].endswith(
            f"Prometheus at {world.prometheus.url} refused the credentials (HTTP 401)"
        )
        # ...and the Secret follows: the next round builds a provider with the new one.
        crds.core.patch_namespaced_secret("prom", namespace, {"stringData": {"password": "pw-2"}})
        verdict("Successful")
        assert world.status()["phase"] == "Progressing"
        # The Pod's root filesystem is read-only: nothing is written per round, and no CA at all.
        after = set(temp.iterdir())
        assert after <= before
        assert not any(tls.ca_pem in path.read_text(errors="replace") for path in after)
    finally:
        operator.stop()
        world.stop()
    assert_never_refused(operator)
    for secret in ("pw-1", "pw-2"):
        assert secret not in operator.output
