"""Series shaped like each data plane's, for testing the built-in templates of every metrics
source against a real Prometheus where the data plane itself is not running.

These are hand-made: their names and labels are copied from what each project documents and
exports (Istio's `istio_requests_total` reported by the destination's sidecar, ingress-nginx's
`nginx_ingress_controller_requests` with its `canary` label, Envoy's per-cluster
`envoy_cluster_upstream_rq_xx` under Envoy Gateway's backend stat names, Linkerd's proxy
`response_total`), not produced by those projects' code. A `Stream` is one version's traffic as
that source counts it: requests per second, the share that fail, and a latency; the exporter
adds them up in the background and serves them in Prometheus's text format, with a series of
the other reporter or direction beside each, as the real ones have, so a query that forgets to
select them counts double.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Labels = tuple[tuple[str, str], ...]
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


@dataclass
class Stream:
    """One version's traffic as a source counts it."""

    labels: dict[str, str]  # what identifies the version in this source's series
    rate: float = 50.0  # requests per second
    error_rate: float = 0.0
    latency_ms: float = 20.0


@dataclass(frozen=True)
class Shape:
    """How a source names its series: the counter, its outcome label and values, the latency
    histogram and its unit, and labels every series carries."""

    requests: str
    outcome_label: str
    ok: str
    failed: str
    latency: str
    in_seconds: bool
    common: dict[str, str] = field(default_factory=dict)
    # A series beside each stream that a query must not count (another reporter or direction).
    decoy: dict[str, str] = field(default_factory=dict)


SHAPES: dict[str, Shape] = {
    "istio": Shape("istio_requests_total", "response_code", "200", "503", "istio_request_duration_milliseconds",
                   in_seconds=False, common={"reporter": "destination", "request_protocol": "http"},
                   decoy={"reporter": "source"}),
    "nginx": Shape("nginx_ingress_controller_requests", "status", "200", "502",
                   "nginx_ingress_controller_request_duration_seconds", in_seconds=True,
                   common={"method": "GET", "path": "/", "host": "shop.example"}),
    "envoyGateway": Shape("envoy_cluster_upstream_rq_xx", "envoy_response_code_class", "2", "5",
                          "envoy_cluster_upstream_rq_time", in_seconds=False),
    "linkerd": Shape("response_total", "classification", "success", "failure", "response_latency_ms",
                     in_seconds=False, common={"direction": "inbound", "tls": "true"},
                     decoy={"direction": "outbound"}),
}  # fmt: skip


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _render(name: str, labels: Labels) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}}"


class SourceExporter:
    """Serves a source's series for some streams, counting as time passes."""

    def __init__(self, shape: Shape, streams: list[Stream], tick: float = 0.1) -> None:
        self.shape, self.streams, self.tick = shape, streams, tick
        self._counters: dict[tuple[str, Labels], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._served = [0.0 for _ in streams]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), exposition_handler(self.exposition))
        self.server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self.server.serve_forever, name="source-exporter", daemon=True),
            threading.Thread(target=self._count, name="source-counter", daemon=True),
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> SourceExporter:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _add(self, name: str, labels: dict[str, str], amount: float) -> None:
        key = (name, _key(labels))
        self._counters[key] = self._counters.get(key, 0.0) + amount

    def _count(self) -> None:
        shape = self.shape
        last = time.monotonic()
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            elapsed, last = now - last, now
            with self._lock:
                for i, stream in enumerate(self.streams):
                    before = self._served[i]
                    self._served[i] += stream.rate * elapsed
                    new = int(self._served[i]) - int(before)
                    if new <= 0:
                        continue
                    # Failures spaced evenly, so a window measures the rate that was set.
                    failed = int(self._served[i] * stream.error_rate) - int(before * stream.error_rate)
                    base = {**shape.common, **stream.labels}
                    for extra in ({}, shape.decoy) if shape.decoy else ({},):
                        labels = {**base, **extra}
                        self._add(shape.requests, {**labels, shape.outcome_label: shape.ok}, new - failed)
                        if failed:
                            self._add(shape.requests, {**labels, shape.outcome_label: shape.failed}, failed)
                        self._observe(labels, stream.latency_ms, new)

    def _observe(self, labels: dict[str, str], latency_ms: float, count: int) -> None:
        shape = self.shape
        value = latency_ms / 1000 if shape.in_seconds else latency_ms
        for bound in LATENCY_BUCKETS_MS:
            edge = bound / 1000 if shape.in_seconds else float(bound)
            if latency_ms <= bound:
                self._add(f"{shape.latency}_bucket", {**labels, "le": f"{edge:g}"}, count)
        self._add(f"{shape.latency}_bucket", {**labels, "le": "+Inf"}, count)
        self._add(f"{shape.latency}_count", labels, count)
        self._add(f"{shape.latency}_sum", labels, value * count)

    def exposition(self) -> bytes:
        with self._lock:
            lines = [
                f"{_render(name, labels)} {value:g}"
                for (name, labels), value in sorted(self._counters.items())
            ]
        return ("\n".join(lines) + "\n").encode()


def exposition_handler(render: Callable[[], bytes]) -> type[BaseHTTPRequestHandler]:
    """A handler that serves what `render` gives, in Prometheus's text format, at any path."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: Prometheus scrapes every second."""

    return Handler
