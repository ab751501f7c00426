"""One synthetic exporter for many pods: the request counter and latency histogram of every pod
in some namespaces, served from one HTTP endpoint, for a Prometheus that scrapes it with
`honor_labels` (the series carry their own `namespace` and `pod`, as a pod's would after a
cluster's relabelling).

The scale bench runs thousands of kwok pods: one data-plane server per pod would cost a thread
and a port each, and Prometheus a target each. The series are what the built-in templates of
source `app` read (`http_requests_total` by `code`, `http_request_duration_seconds_bucket`),
growing at a steady rate for every pod the API server lists; pods whose name starts with a
failing prefix answer a share of their requests with 500.

The pods are listed as metadata only (a PartialObjectMetadataList), so a listing of thousands
costs the API server and this process little.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from testbed.prometheus import LocalPrometheus
from testbed.sources import exposition_handler

METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")


@dataclass
class _Pod:
    ok: float = 0.0
    failed: float = 0.0


class PodExporter:
    """Series for every pod of `namespaces`: `rate` requests a second each, all fast."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespaces: tuple[str, ...],
        rate: float = 2.0,
        relist: float = 2.0,
    ) -> None:
        self._api = api_client
        self.namespaces = namespaces
        self.rate = rate
        self.relist = relist
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._failing: dict[str, float] = {}  # pod name prefix: share of requests failing
        self.first_failure: dict[str, float] = {}  # prefix: wall time its first 500 was counted
        self._advanced = time.monotonic()
        self._stop = threading.Event()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), exposition_handler(self.render)
        )
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fail(self, prefix: str, share: float) -> None:
        """Pods named `prefix`... answer `share` of their requests with 500 from now on."""
        with self._lock:
            self._advance()
            self._failing[prefix] = share

    def pods(self) -> int:
        with self._lock:
            return len(self._pods)

    def start(self) -> PodExporter:
        self._list()
        for target in (self._server.serve_forever, self._relist):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._threads:  # shutdown() waits for a serve_forever() that must have started
            self._server.shutdown()
        self._server.server_close()

    def _relist(self) -> None:
        while not self._stop.wait(self.relist):
            try:
                self._list()
            except Exception:  # the API server is busy or going away: the next listing catches up
                continue

    def _list(self) -> None:
        seen: set[tuple[str, str]] = set()
        for namespace in self.namespaces:
            # resourceVersion 0: from the API server's watch cache, as an informer's listing is;
            # a quorum read of thousands of pods every few seconds loads etcd the operator shares.
            response = self._api.call_api(
                f"/api/v1/namespaces/{namespace}/pods", "GET", query_params=[("resourceVersion", "0")],
                header_params={"Accept": METADATA_ONLY}, _preload_content=False, _request_timeout=30,
                auth_settings=["BearerToken"],
            )  # fmt: skip
            for item in json.loads(response.data).get("items") or []:
                metadata = item["metadata"]
                if not metadata.get("deletionTimestamp"):
                    seen.add((namespace, metadata["name"]))
        with self._lock:
            self._advance()
            for key in seen - self._pods.keys():
                self._pods[key] = _Pod()
            for key in self._pods.keys() - seen:
                del self._pods[key]

    def _advance(self) -> None:
        """Count the requests served since the last look (under the lock)."""
        now = time.monotonic()
        served, self._advanced = self.rate * (now - self._advanced), now
        for (_, name), pod in self._pods.items():
            share = next((s for p, s in self._failing.items() if name.startswith(p)), 0.0)
            pod.ok += served * (1 - share)
            pod.failed += served * share
            if pod.failed >= 1:  # a 500 the next scrape shows
                prefix = next((p for p in self._failing if name.startswith(p)), "")
                self.first_failure.setdefault(prefix, time.time())

    def render(self) -> bytes:
        with self._lock:
            self._advance()
            pods = [(ns, name, pod.ok, pod.failed) for (ns, name), pod in self._pods.items()]
        lines = [
            "# TYPE http_requests_total counter",
            *(
                f'http_requests_total{{namespace="{ns}",pod="{name}",code="{code}"}} {int(count)}'
                for ns, name, ok, failed in pods
                for code, count in (("200", ok), ("500", failed))
            ),
            "# TYPE http_request_duration_seconds histogram",
        ]
        for ns, name, ok, failed in pods:
            total = int(ok + failed)
            labels = f'namespace="{ns}",pod="{name}"'
            # Nine in ten answer within 50 ms, the rest within 100 ms: p95 is well under any threshold.
            for le in BUCKETS:
                count = int(total * 0.9) if le == "0.05" else total
                lines.append(f'http_request_duration_seconds_bucket{{{labels},le="{le}"}} {count}')
            lines.append(f"http_request_duration_seconds_sum{{{labels}}} {total * 0.03:.3f}")
            lines.append(f"http_request_duration_seconds_count{{{labels}}} {total}")
        return ("\n".join(lines) + "\n").encode()


class ExporterPrometheus(LocalPrometheus):
    """A Prometheus scraping one `PodExporter`, keeping the labels it serves."""

    def __init__(self, workdir: Path, exporter: PodExporter, **options: Any) -> None:
        super().__init__(workdir, [], **options)
        self.exporter = exporter

    def _discovery_scrape_configs(self) -> list[dict[str, Any]]:
        return [{"job_name": "pods", "honor_labels": True,
                 "static_configs": [{"targets": [self.exporter.address]}]}]  # fmt: skip
