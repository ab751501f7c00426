"""The demo application: a stable and a canary version of one small HTTP service.

Each version listens on loopback, answers `GET /` with a 200 or a 500 after some latency,
and exports what Parachute's built-in metric templates query:

    http_requests_total{code, version}
    http_request_duration_seconds_bucket{le, version}   (and _sum, _count)

The status code's label may be named otherwise (`status`), as some apps name it. The same
`Version` serves one pod's endpoint in the testbed's data plane (testbed/dataplane.py).

How each version behaves (its error rate and latency) is set at run time, by a test or by
`POST /behaviour` with `{"errorRate": 0.06, "latencyMs": 120}`. A version may also read a
feature flag from a file (a mounted flag ConfigMap): while the flag is on, the version
behaves as its `flagged` behaviour says, so its error rate follows the flag without a restart.
`GET /health` says which flags it serves as on or off, as it serves them: `{"status": "ok",
"features": {"new-code-path": true}}` (a flag it read once at start-up stays as it read it).

    python -m testbed.demoapp --stable-port 8081 --canary-port 8082
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Buckets fine enough around the playbook's thresholds (150 ms baseline, 300/500 ms alerts).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Behaviour:
    error_rate: float = 0.0  # fraction of requests answered 500
    latency_ms: float = 20.0  # mean latency; each request varies ±20 %
    # Errors spaced evenly (False) or each request failing by chance (True): real background
    # errors come in bunches, which is what a judge looking every second must not mistake.
    random_errors: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any], base: Behaviour | None = None) -> Behaviour:
        base = base or cls()
        return replace(
            base,
            error_rate=float(data.get("errorRate", base.error_rate)),
            latency_ms=float(data.get("latencyMs", base.latency_ms)),
            random_errors=bool(data.get("randomErrors", base.random_errors)),
        )


@dataclass(frozen=True)
class FlagSource:
    """A flag read from a file: plain `true`/`false`, `KEY=true` lines, or flagd JSON."""

    path: Path
    name: str

    def is_on(self) -> bool:
        try:
            text = self.path.read_text()
        except OSError:
            return False
        return flag_value(text, self.name)


def flag_value(text: str, name: str) -> bool:
    """Whether flag `name` is on in `text` (flagd JSON, KEY=value lines, or a bare boolean)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        flag = json.loads(stripped).get("flags", {}).get(name, {})
        if flag.get("state", "ENABLED") != "ENABLED":
            return False
        variants = flag.get("variants", {})
        return bool(variants.get(flag.get("defaultVariant"), False))
    for line in stripped.splitlines():
        key, _, value = line.partition("=")
        if value and key.strip() == name:
            return value.strip().lower() == "true"
    return stripped.lower() == "true"


class Version:
    """One version of the service: its behaviour, its metrics, its HTTP server.

    `name` is the value of the `version` label on its series, unless `labelled` is False: an
    app that does not know which version it is, as most do not, whose series say only what
    their pod's scrape adds. `code_label` names the status code's label. With `every_code`,
    both codes' series exist from the start, as the demo's always have; without it a code's
    series appears with its first request, as in most apps (a healthy one has no 500 series).
    """

    def __init__(
        self,
        name: str,
        port: int = 0,
        behaviour: Behaviour | None = None,
        *,
        code_label: str = "code",
        labelled: bool = True,
        every_code: bool = True,
    ) -> None:
        self.name = name
        self.code_label = code_label
        self._behaviour = behaviour or Behaviour()
        self._flagged: Behaviour | None = None
        self._flag: FlagSource | None = None
        self._reported: dict[str, bool] = {}  # features it serves as read once, not from a file
        self._lock = threading.Lock()
        self._served = 0
        self._own = (name,) if labelled else ()  # the version label's value, if it has one
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests served.",
                                [code_label, *(["version"] if labelled else [])], registry=self.registry)  # fmt: skip
        self.duration = Histogram("http_request_duration_seconds", "Time to serve a request.",
                                  ["version"] if labelled else [], buckets=LATENCY_BUCKETS,
                                  registry=self.registry)  # fmt: skip
        if every_code:
            # Both codes exist from the start, so an error-rate query is 0, not an empty vector.
            for code in ("200", "500"):
                self.requests.labels(code, *self._own)
        if labelled:
            self.duration.labels(version=name)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"demoapp-{name}", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_behaviour(self, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviour = behaviour

    def follow_flag(self, flag: FlagSource | None, when_on: Behaviour | None = None) -> None:
        """While `flag` is on, behave as `when_on` (e.g. the new code path's error rate); None: no flag."""
        with self._lock:
            self._flag, self._flagged = flag, when_on

    def report_features(self, features: dict[str, bool]) -> None:
        """Flags it serves as it read them once (at start-up), for `/health`."""
        with self._lock:
            self._reported = dict(features)

    def features(self) -> dict[str, bool]:
        """Each flag as it serves it now: a followed file's as the file says, the others as read."""
        with self._lock:
            flag, reported = self._flag, dict(self._reported)
        return {**reported, **({flag.name: flag.is_on()} if flag is not None else {})}

    def behaviour(self) -> Behaviour:
        with self._lock:
            flag, flagged, base = self._flag, self._flagged, self._behaviour
        if flag is not None and flagged is not None and flag.is_on():
            return flagged
        return base

    def serve_one(self) -> int:
        """Simulate one request: sleep the latency, decide the status code, record both.

        Errors are spaced evenly unless the behaviour asks for them at random (6% is exactly
        6 in every 100 requests), so a short analysis window measures the rate that was set
        rather than a coin toss around it.
        """
        behaviour = self.behaviour()
        latency = max(0.0, random.gauss(behaviour.latency_ms, behaviour.latency_ms * 0.2)) / 1000
        time.sleep(latency)
        with self._lock:
            served = self._served
            self._served += 1
        if behaviour.random_errors:
            failing = random.random() < behaviour.error_rate
        else:
            failing = int((served + 1) * behaviour.error_rate) > int(served * behaviour.error_rate)
        code = 500 if failing else 200
        self.requests.labels(str(code), *self._own).inc()
        (self.duration.labels(*self._own) if self._own else self.duration).observe(latency)
        return code

    def start(self) -> Version:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_for(version: Version) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, generate_latest(version.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/health":
                self._reply(200, json.dumps({"status": "ok", "features": version.features()}).encode())
            elif self.path == "/behaviour":
                b = version.behaviour()
                self._reply(
                    200,
                    json.dumps(
                        {
                            "errorRate": b.error_rate,
                            "latencyMs": b.latency_ms,
                            "randomErrors": b.random_errors,
                        }
                    ).encode(),
                )
            else:
                code = version.serve_one()
                self._reply(code, b"ok\n" if code == 200 else b"simulated failure\n", "text/plain")

        def do_POST(self) -> None:
            if self.path != "/behaviour":
                self._reply(404, b"{}")
                return
            length = int(self.headers.get("Content-Length", "0"))
            data = json.loads(self.rfile.read(length) or b"{}")
            version.set_behaviour(Behaviour.from_json(data, version.behaviour()))
            self._reply(204, b"")

        def _reply(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the load generator sends many requests."""

    return Handler


class DemoApp:
    """Both versions of the service, started together."""

    def __init__(self, stable_port: int = 0, canary_port: int = 0) -> None:
        self.stable = Version("stable", stable_port)
        self.canary = Version("canary", canary_port)

    @property
    def versions(self) -> dict[str, Version]:
        return {"stable": self.stable, "canary": self.canary}

    def start(self) -> DemoApp:
        self.stable.start()
        self.canary.start()
        return self

    def stop(self) -> None:
        self.stable.stop()
        self.canary.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testbed.demoapp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stable-port", type=int, default=8081)
    parser.add_argument("--canary-port", type=int, default=8082)
    parser.add_argument("--canary-error-rate", type=float, default=0.0)
    parser.add_argument(
        "--flag-file", type=Path, help="canary follows this flag (a mounted flag ConfigMap key)"
    )
    parser.add_argument("--flag", default="new-code-path", help="flag name inside --flag-file")
    parser.add_argument(
        "--flagged-error-rate", type=float, default=0.06, help="canary error rate while flag is on"
    )
    args = parser.parse_args(argv)
    app = DemoApp(args.stable_port, args.canary_port)
    app.canary.set_behaviour(Behaviour(error_rate=args.canary_error_rate))
    if args.flag_file:
        app.canary.follow_flag(
            FlagSource(args.flag_file, args.flag), Behaviour(error_rate=args.flagged_error_rate)
        )
    app.start()
    print(f"demoapp: stable {app.stable.url}  canary {app.canary.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        app.stop()


if __name__ == "__main__":
    main()
