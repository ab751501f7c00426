"""A notification's POST is cut at its deadline however the receiver hangs (silent, or a byte at
a time), runs on threads of its own so hung receivers never take the operator's other blocking
calls' threads, and gives a receiver that answers its answer."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from parachute.notify import transport
from testbed.hanging_receiver import HangingReceiver, Mode

DEADLINE = 0.5


@pytest.fixture(params=["silent", "trickle"])
def hanging(request: pytest.FixtureRequest) -> Iterator[HangingReceiver]:
    mode: Mode = request.param
    receiver = HangingReceiver(mode)
    yield receiver
    receiver.stop()


def post(url: str, timeout: float = DEADLINE) -> tuple[int, bytes]:
    return asyncio.run(
        transport.send("POST", url, b"{}", {"Content-Type": "application/json"}, timeout=timeout)
    )


def test_a_receiver_that_hangs_is_cut_at_the_deadline(hanging: HangingReceiver) -> None:
    with pytest.raises(TimeoutError, match=r"no answer within 0\.5s"):
        post(hanging.url("/events"))
    assert len(hanging.held) == 1 and not hanging.answered


def test_a_request_held_when_the_hang_ends_was_not_answered(hanging: HangingReceiver) -> None:
    async def story() -> None:
        sent = asyncio.create_task(transport.send("POST", hanging.url("/events"), b"{}", {}, timeout=5.0))
        while not hanging.held:
            await asyncio.sleep(0.02)
        hanging.answer()
        with pytest.raises((OSError, http.client.HTTPException)):  # closed with no status code
            await sent

    asyncio.run(story())
    assert not hanging.answered


def test_a_receiver_that_answers_again_is_heard(hanging: HangingReceiver) -> None:
    hanging.answer()
    status, body = post(hanging.url("/events"))
    assert status == 201 and body == b'{"id": "received-1"}'


def test_an_answer_of_an_error_is_an_http_error(hanging: HangingReceiver) -> None:
    hanging.answer()
    with pytest.raises(urllib.error.HTTPError):
        asyncio.run(transport.send("PUT", hanging.url("/"), b"{}", {}, timeout=DEADLINE))  # 501: no do_PUT


def test_hung_receivers_hold_only_the_notification_threads() -> None:
    receiver = HangingReceiver("trickle")

    async def story() -> tuple[list[BaseException | tuple[int, bytes]], int, str]:
        # asyncio's default executor, as small as it is on a small machine, stays free.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        hung = [
            asyncio.create_task(transport.send("POST", receiver.url(f"/{i}"), b"{}", {}, timeout=1.5))
            for i in range(transport.THREADS)
        ]
        while len(receiver.held) < transport.THREADS:
            await asyncio.sleep(0.02)
        with pytest.raises(TimeoutError, match=r"not sent within 0\.3s: all notification threads busy"):
            await transport.send("POST", receiver.url("/one-more"), b"{}", {}, timeout=0.3)
        other = await asyncio.to_thread(lambda: "done")
        held = len(receiver.held)
        return list(await asyncio.gather(*hung, return_exceptions=True)), held, other

    try:
        results, held, other = asyncio.run(story())
    finally:
        receiver.stop()
    assert other == "done"
    assert held == transport.THREADS  # the one more never reached the receiver
    assert all(isinstance(r, TimeoutError) and "no answer within 1.5s" in str(r) for r in results), results


def test_a_cut_request_frees_its_thread() -> None:
    receiver = HangingReceiver("trickle")
    try:
        for _ in range(transport.THREADS + 1):  # more than there are threads, one after another
            with pytest.raises(TimeoutError, match="no answer"):
                post(receiver.url("/events"), timeout=0.2)
        receiver.answer()
        assert post(receiver.url("/events"))[0] == 201  # a thread was free for it at once
    finally:
        receiver.stop()


def test_an_answer_in_chunks_or_from_a_server_that_keeps_the_connection_is_read_whole() -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            if self.path == "/chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in (b'{"id": ', b'"inc-1"}'):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:  # its length said, and the connection kept open whatever the client asked
                self.send_header("Content-Length", "13")
                self.end_headers()
                self.wfile.write(b'{"id": "ok"}\n')
                self.wfile.flush()
                time.sleep(3)

        def log_message(self, *_: object) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert post(f"{base}/chunked", timeout=2) == (200, b'{"id": "inc-1"}')
        assert post(f"{base}/kept", timeout=2) == (200, b'{"id": "ok"}\n')
    finally:
        server.shutdown()
        server.server_close()
