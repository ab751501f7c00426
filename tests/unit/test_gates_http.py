"""An HTTP gate passes on a whole 2xx answer within its timeout. One that hangs (silent, or
answering a byte at a time) is unmet at its timeout, naming the URL, and holds only the gates'
own threads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from parachute import gating
from parachute.api import HTTPGate
from testbed.hanging_receiver import HangingReceiver, Mode


@pytest.fixture(params=["silent", "trickle"])
def hanging(request: pytest.FixtureRequest) -> Iterator[HangingReceiver]:
    mode: Mode = request.param
    receiver = HangingReceiver(mode)
    yield receiver
    receiver.stop()


def asked(url: str, timeout: str = "1s") -> tuple[bool, str]:
    return asyncio.run(gating._http(HTTPGate(url=url, timeout=timeout)))


def test_a_gate_that_hangs_is_unmet_at_its_timeout(hanging: HangingReceiver) -> None:
    url = hanging.url("/ready")
    assert asked(url) == (False, f"GET {url} failed: no answer within 1s")


def test_a_gate_that_answers_2xx_is_met_and_another_status_is_not(hanging: HangingReceiver) -> None:
    hanging.answer()
    url = hanging.url("/ready")
    assert asked(url) == (True, f"GET {url} answered 200")
    hanging.stop()
    met, message = asked(url)
    assert not met and message.startswith(f"GET {url} failed: ")


def test_gates_that_hang_leave_the_loops_own_threads_free() -> None:
    receiver = HangingReceiver("trickle")

    async def story() -> tuple[list[tuple[bool, str]], bool]:
        gates = [
            HTTPGate(url=receiver.url(f"/{i}"), timeout="2s") for i in range(gating.GATE_THREADS.count * 2)
        ]
        checked = asyncio.gather(*(gating._http(g) for g in gates))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(lambda: None)  # what a Kubernetes call needs: a default thread
        first = not checked.done()
        return list(await checked), first

    try:
        results, first = asyncio.run(story())
    finally:
        receiver.stop()
    assert first
    assert all(not met for met, _ in results)
