"""A notification receiver that hangs, and later answers.

While hanging it accepts each connection and reads the request, then never gives a whole
answer: `silent` sends nothing at all, `trickle` starts a status line and then sends one byte
of it a second, so a client whose timeout covers only each read waits for ever. When the hang
ends, a held request's connection is closed with no answer (the status line never had a code). `answer()`
ends the hang: requests from then on get `200` with a small JSON body (`{"id": ...}`: a
status page's new incident id), and are recorded in `answered`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["silent", "trickle"]
LONGEST_HANG = 600.0  # seconds: a test that forgets `answer()` still ends


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class HangingReceiver:
    def __init__(self, mode: Mode = "silent") -> None:
        self.mode = mode
        self.held: list[Request] = []  # requests it never answered
        self.answered: list[Request] = []
        self._answering = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                request = Request(self.command, self.path, dict(self.headers), body)
                if not owner._answering.is_set():
                    with owner._lock:
                        owner.held.append(request)
                    owner._hang(self)
                    self.close_connection = True
                    return
                with owner._lock:
                    owner.answered.append(request)
                answer = json.dumps({"id": f"received-{len(owner.answered)}"}).encode()
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_POST(self) -> None:
                self._handle()

            def do_PATCH(self) -> None:
                self._handle()

            def do_GET(self) -> None:  # as an HTTP gate asks
                self._handle()

            def log_message(self, *_: Any) -> None: ...

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _hang(self, handler: BaseHTTPRequestHandler) -> None:
        deadline = time.monotonic() + LONGEST_HANG
        try:
            if self.mode == "trickle":
                handler.wfile.write(b"HTTP/1.1 ")
                handler.wfile.flush()
            while time.monotonic() < deadline and not self._answering.wait(1.0):
                if self.mode == "trickle":
                    handler.wfile.write(b".")
                    handler.wfile.flush()
        except OSError:  # the client gave up and closed: the hang is over for this request
            pass

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def answer(self) -> None:
        """Stop hanging: what is sent from now on is answered."""
        self._answering.set()

    def stop(self) -> None:
        self._answering.set()
        self.server.shutdown()
        self.server.server_close()
