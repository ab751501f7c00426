"""Outgoing HTTP (notifications, HTTP gates, asking pods of their flags), where a peer that
hangs holds nothing else up.

urllib blocks, so each request runs on a thread: a few threads of its kind's own (`Threads`),
never asyncio's default executor, where every Kubernetes call of the operator runs: requests to
peers that hang would take those threads, and every reconcile, the rollbacks with them, would
wait. Each kind has threads of its own, so a receiver that hangs holds up no gate, and no gate a
notification.

Each request has one deadline for the whole exchange (connect, send, answer), not only per
socket operation: a receiver that answers a byte at a time is cut too, and so is a TLS handshake
that hangs. At the deadline the request's socket is shut, which ends the read blocked on it, and
the caller gets a TimeoutError. A request still waiting for a thread at its deadline is never
sent. A connect is bounded by what is left of the deadline (a dropped SYN has no socket to shut
yet). So at most a kind's count of requests are in flight, each holding its thread about its
deadline at most (a name lookup that hangs excepted: it has no socket either).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class _Exchange:
    """One request's connections, for its deadline to shut from the event loop's thread."""

    def __init__(self, timeout: float, kind: str) -> None:
        self.timeout = timeout
        self.kind = kind
        self._deadline = time.monotonic() + timeout
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.started = False
        self.cut = False

    def start(self) -> None:
        with self._lock:
            if self.cut or time.monotonic() >= self._deadline:
                raise self.unsent()
            self.started = True

    def unsent(self) -> TimeoutError:
        return TimeoutError(f"not sent within {self.timeout:g}s: all {self.kind} threads busy")

    def connect(
        self, address: tuple[str, int], timeout: float | None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        """What http.client connects with: the plain socket, known here before any TLS handshake,
        so that a cut ends a handshake that hangs too."""
        # A connect that hangs (a dropped SYN) cannot be cut before it has a socket: bound it by
        # what is left of the deadline instead.
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("cut at its deadline")
        sock = socket.create_connection(
            address, left if timeout is None else min(timeout, left), source_address
        )
        sock.settimeout(timeout)  # past the connect, each operation's own backstop again
        with self._lock:
            if self.cut:  # the deadline passed while connecting
                sock.close()
                raise TimeoutError("cut at its deadline")
            self._sockets.append(sock)
        return sock

    def shut(self) -> None:
        with self._lock:
            self.cut = True
            for sock in self._sockets:
                # Closed already (the exchange ended by itself) or not: the plain socket's shutdown,
                # also under TLS, wakes the read blocked on it at once.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Tracking(urllib.request.AbstractHTTPHandler):
    """Opens connections whose sockets the exchange knows (urllib's proxy, redirect and error
    handling stay as they are)."""

    def __init__(self, exchange: _Exchange) -> None:
        super().__init__()
        self._exchange = exchange

    def do_open(self, http_class: Any, req: urllib.request.Request, **http_conn_args: Any) -> Any:
        exchange = self._exchange

        def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            made: http.client.HTTPConnection = http_class(host, **kwargs)
            made._create_connection = exchange.connect  # type: ignore[attr-defined]  # http.client's own hook
            return made

        return super().do_open(connection, req, **http_conn_args)


class _HTTP(_Tracking, urllib.request.HTTPHandler):
    pass


class _HTTPS(_Tracking, urllib.request.HTTPSHandler):
    pass


def _run(
    exchange: _Exchange, request: urllib.request.Request, timeout: float,
    proxies: dict[str, str] | None, limit: int | None,
) -> tuple[int, bytes]:  # fmt: skip
    exchange.start()
    handlers: list[urllib.request.BaseHandler] = [_HTTP(exchange), _HTTPS(exchange)]
    if proxies is not None:  # these and no others (else urllib's: the environment's)
        handlers.append(urllib.request.ProxyHandler(proxies))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read() if limit is None else response.read(limit)
    except urllib.error.HTTPError as error:
        error.close()  # the answer's connection; the error still says its code
        raise


class Threads:
    """A few threads for one kind of request; they start as requests need them."""

    def __init__(self, kind: str, count: int) -> None:
        self.kind = kind
        self.count = count
        self._pool = ThreadPoolExecutor(
            max_workers=count, thread_name_prefix=f"parachute-{kind.replace(' ', '-')}"
        )

    async def send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], *, timeout: float,
        proxies: dict[str, str] | None = None, limit: int | None = None,
    ) -> tuple[int, bytes]:  # fmt: skip
        """The status and body of a 2xx answer (its first `limit` bytes when given); urllib's
        errors otherwise (HTTPError for an answer of 4xx or 5xx, URLError, OSError,
        http.client's), and TimeoutError when there was no whole answer within `timeout`
        seconds. `proxies`: the only proxies to go through ({} for none), else the
        environment's."""
        exchange = _Exchange(timeout, self.kind)
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        # Each socket operation's own timeout is only a backstop, past the deadline that cuts.
        work = self._pool.submit(_run, exchange, request, 2 * timeout, proxies, limit)
        answer = asyncio.wrap_future(work)
        try:
            done, _ = await asyncio.wait({answer}, timeout=timeout)
        except asyncio.CancelledError:
            answer.cancel()
            exchange.shut()
            raise
        if done:
            return answer.result()
        if work.done() and not work.cancelled() and work.exception() is None:
            return work.result()  # answered as the deadline came: delivered, not to be sent again
        answer.cancel()  # a request still queued never starts
        exchange.shut()
        if not exchange.started:
            raise exchange.unsent()
        raise TimeoutError(f"no answer within {timeout:g}s")
