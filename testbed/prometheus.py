"""A real Prometheus scraping every second: the upstream release that `install-binaries.sh`
caches, one binary for every test and the demo (Debian's build lacks Kubernetes discovery).

`LocalPrometheus` scrapes static targets. `PodPrometheus` finds its targets as a cluster's
Prometheus does: Kubernetes service discovery (role `pod`) against the test cluster's API
server, so `namespace`, `pod` and the pod labels come from real discovery.

Either can be stopped and started again on the same port and data, so a test can take
Prometheus away in the middle of a stage and bring it back. With a `WebConfig` it serves HTTPS
with a certificate from its own CA and asks for basic auth (`--web.config.file`), as a
Prometheus exposed beyond its namespace does.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.cluster import ClusterError, wait_for
from testbed.dataplane import PORT_ANNOTATION


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TLSFiles:
    """A CA and a serving certificate it signed, for 127.0.0.1 and localhost (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    @property
    def ca_pem(self) -> str:
        return self.ca.read_text()


def mint_tls(directory: Path, subject: str = "prometheus") -> TLSFiles:
    """A new CA and a serving certificate from it, made with the `openssl` binary."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("genrsa", "-out", "ca.key", "2048")
    openssl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", f"/CN={subject}-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", "ca.crt")  # fmt: skip
    openssl("genrsa", "-out", "server.key", "2048")
    openssl("req", "-new", "-key", "server.key", "-subj", f"/CN={subject}", "-out", "server.csr")
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-sha256", "-days", "2", "-extfile", "server.ext", "-out", "server.crt")  # fmt: skip
    return TLSFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")


@dataclass
class WebConfig:
    """What Prometheus's `--web.config.file` says: serve TLS, and which basic-auth users it lets in."""

    tls: TLSFiles | None = None
    users: dict[str, str] = field(default_factory=dict)  # name: password (written bcrypt-hashed)

    def document(self) -> dict[str, Any]:
        import bcrypt  # a dev dependency: only tests serve Prometheus with auth

        document: dict[str, Any] = {}
        if self.tls is not None:
            document["tls_server_config"] = {"cert_file": str(self.tls.cert), "key_file": str(self.tls.key)}
        if self.users:
            document["basic_auth_users"] = {
                name: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
                for name, password in self.users.items()
            }
        return document


@functools.cache
def find_prometheus() -> str:
    """The upstream Prometheus that `install-binaries.sh` caches, at the version it pins."""
    from testbed.cluster import tool

    binary = tool("prometheus")
    if not binary.exists():
        raise ClusterError(f"{binary} is missing; `make setup` obtains it")
    return str(binary)


class LocalPrometheus:
    def __init__(
        self,
        workdir: Path,
        targets: list[ScrapeTarget],
        scrape_interval: str = "1s",
        web: WebConfig | None = None,
    ) -> None:
        self.dir = workdir
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.web = web
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.web is not None and self.web.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def write_web_config(self) -> Path:
        """Write the web config; a running Prometheus reads it again on every request."""
        path = self.dir / "web.yml"
        path.write_text(yaml.safe_dump(self.web.document() if self.web else {}))
        return path

    def _get(self, url: str, timeout: float) -> Any:
        """urlopen, trusting the server's CA and sending the first basic-auth user's credentials."""
        request = urllib.request.Request(url)
        context = None
        if self.web is not None:
            if self.web.tls is not None:
                context = ssl.create_default_context(cafile=str(self.web.tls.ca))
            for name, password in list(self.web.users.items())[:1]:
                token = base64.b64encode(f"{name}:{password}".encode()).decode()
                request.add_header("Authorization", f"Basic {token}")
        return urllib.request.urlopen(request, timeout=timeout, context=context)

    def _write_config(self) -> Path:
        jobs: dict[str, list[ScrapeTarget]] = {}
        for target in self.targets:
            jobs.setdefault(target.job, []).append(target)
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [t.address], "labels": t.labels} for t in targets],
                }
                for job, targets in jobs.items()
            ],
        }
        config["scrape_configs"].extend(self._discovery_scrape_configs())
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout: float = 30) -> LocalPrometheus:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        # The child keeps its own descriptor of the log; ours is closed as soon as it starts.
        with (self.dir / "prometheus.log").open("ab") as log:
            self._process = self._popen(config, log)
        wait_for("prometheus", self.ready, timeout, self.dir / "prometheus.log")
        return self

    def _popen(self, config: Path, log: Any) -> subprocess.Popen[bytes]:
        web = [f"--web.config.file={self.write_web_config()}"] if self.web is not None else []
        return subprocess.Popen(
            [
                self._binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=2h",
                "--web.enable-lifecycle",
                "--log.level=warn",
                # Targets wait for the discovery manager (every 5 s, fixed), then for the scrape
                # manager's reload (every 5 s by default): the second wait need not add to the first.
                "--scrape.discovery-reload-interval=1s",
                *web,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _binary(self) -> str:
        return find_prometheus()

    def _discovery_scrape_configs(self) -> list[dict[str, Any]]:
        return []

    def ready(self) -> bool:
        with self._get(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the `result` list of a vector (raises on an API error)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with self._get(url, timeout=5) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query failed: {body}")
        return list(body["data"]["result"])

    def wait_for_value(
        self, promql: str, timeout: float = 10, accept: Callable[[float], bool] = lambda _: True
    ) -> float:
        """Poll until the query returns a non-empty, non-NaN value that `accept`s, and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                result = self.query(promql)
                if result:
                    value = float(result[0]["value"][1])
                    if not math.isnan(value) and accept(value):
                        return value
            time.sleep(0.25)
        raise TimeoutError(f"no value for {promql!r} within {timeout}s")


# ---------------------------------------------------------------------------- pod discovery


@dataclass(frozen=True)
class PodDiscovery:
    """Which pods to scrape: those of `namespaces` that carry the testbed's port annotation
    (kwok's pods run nothing; the data plane serves each on a loopback port and names it)."""

    kubeconfig: Path  # the cluster's admin kubeconfig
    namespaces: tuple[str, ...]
    job: str = "pods"


def _meta_name(name: str) -> str:
    """A label or annotation name as Kubernetes discovery spells it in a meta label."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def pod_scrape_config(discovery: PodDiscovery) -> dict[str, Any]:
    """A scrape job as a cluster's Prometheus has it, with the address rewritten to the pod's
    loopback port: `namespace`, `pod` and every pod label (sanitised, as `labelmap` does)."""
    port = f"__meta_kubernetes_pod_annotation_{_meta_name(PORT_ANNOTATION)}"
    return {
        "job_name": discovery.job,
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "kubeconfig_file": str(discovery.kubeconfig),
                "namespaces": {"names": list(discovery.namespaces)},
            }
        ],
        "relabel_configs": [
            {"source_labels": [port], "regex": "[0-9]+", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Succeeded|Failed", "action": "drop"},
            {"source_labels": ["__meta_kubernetes_pod_container_init"], "regex": "true", "action": "drop"},
            {"source_labels": [port], "target_label": "__address__", "replacement": "127.0.0.1:$1"},
            {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }


class PodPrometheus(LocalPrometheus):
    """A Prometheus that discovers its targets from the cluster's pods (and scrapes any static
    `targets` too). Pods that come and go appear and vanish as they would in a cluster."""

    def __init__(
        self,
        workdir: Path,
        discovery: PodDiscovery,
        targets: list[ScrapeTarget] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(workdir, targets or [], **options)
        self.discovery = discovery

    def _discovery_scrape_configs(self) -> list[dict[str, Any]]:
        return [pod_scrape_config(self.discovery)]

    def active_targets(self) -> list[dict[str, Any]]:
        """The active targets, each with its `labels`, `health` and `scrapeUrl`."""
        with self._get(f"{self.url}/api/v1/targets?state=active", timeout=5) as response:
            body = json.loads(response.read())
        return list(body["data"]["activeTargets"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
