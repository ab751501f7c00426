"""The testbed's pod network, as an HTTP proxy: a request for `http://<pod IP>:<port>/<path>`
reaches that pod's app on the data plane, as a cluster's pod network would take it there.

kwok's pods run nothing, and the IPs they are given lead nowhere from the host: the data plane
(testbed/dataplane.py) runs each pod's app on a loopback port. An operator outside the cluster
network reaches pods through an HTTP proxy (`parachute --app-proxy`); this is that proxy for the
testbed, so what runs is the operator's own path to a pod: list the pods, dial each one's IP and
port. Here every pod serves its one app whatever port is asked; an IP no running pod has is
answered 502, as a proxy answers a host it cannot reach.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from testbed.dataplane import DataPlane, pod_runs


def resolver(plane: DataPlane) -> Callable[[str], str | None]:
    """Pod IP -> the URL of that pod's app on the data plane (None: no running pod has it)."""

    def resolve(ip: str) -> str | None:
        for pod in plane.pods.objects():
            if pod_runs(pod) and (pod.get("status") or {}).get("podIP") == ip:
                endpoint = plane.endpoint(str(pod["metadata"]["name"]))
                return endpoint.url if endpoint is not None else None
        return None

    return resolve


class PodNetwork:
    """A forward HTTP proxy on loopback that takes each request to the pod whose IP it names."""

    def __init__(self, resolve: Callable[[str], str | None]) -> None:
        self.resolve = resolve
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="podnet", daemon=True)
        self.requests: list[str] = []  # every URL asked for, in order

    @classmethod
    def for_plane(cls, plane: DataPlane) -> PodNetwork:
        return cls(resolver(plane))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> PodNetwork:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_for(network: PodNetwork) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            network.requests.append(self.path)
            asked = urlsplit(self.path)  # a proxy is asked for an absolute URL
            base = network.resolve(asked.hostname or "") if asked.scheme == "http" else None
            if base is None:
                self._reply(502, f"no route to host {asked.hostname}\n".encode(), "text/plain")
                return
            path = asked.path + (f"?{asked.query}" if asked.query else "")
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with direct.open(base + path, timeout=10) as answer:
                    self._reply(answer.status, answer.read(), answer.headers.get("Content-Type", ""))
            except urllib.error.HTTPError as error:
                self._reply(error.code, error.read(), error.headers.get("Content-Type", ""))
            except OSError as error:
                self._reply(502, f"{error}\n".encode(), "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type or "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the operator asks every few seconds."""

    return Handler
