"""A Prometheus that never finishes its answer holds up no one: each query gets an Error at its
deadline (so the Rollout holds, as for any failed query), and the queries wait on Parachute's
own Prometheus threads, never on the threads every Kubernetes call runs on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from parachute.analysis import prometheus
from parachute.analysis.prometheus import PrometheusProvider


class Hanging:
    """A client whose every request waits until released, as one stuck on a trickling answer."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.started = 0

    def custom_query(self, query: str, params: Any = None) -> list[Any]:
        self.started += 1
        self.released.wait(30)
        return []

    def get_targets(self, state: str) -> dict[str, Any]:
        self.released.wait(30)
        return {"activeTargets": []}


@pytest.fixture
def hanging() -> Iterator[PrometheusProvider]:
    provider = PrometheusProvider("http://prometheus:9090", timeout=0.1)
    client = Hanging()
    provider._client = client  # type: ignore[assignment]
    yield provider
    client.released.set()


def test_a_query_not_answered_by_its_deadline_is_an_error_naming_the_server(
    hanging: PrometheusProvider,
) -> None:
    sample = asyncio.run(hanging.sample("up"))
    series = asyncio.run(hanging.vector("up"))
    assert sample.error == series.error == "Prometheus at http://prometheus:9090 did not answer within 0.2s"


def test_what_it_cannot_say_about_its_targets_falls_back(hanging: PrometheusProvider) -> None:
    assert asyncio.run(hanging.scrape_interval({"shop"})) is None
    assert asyncio.run(hanging.scrape_landings({"shop"})) == []


def test_more_hanging_queries_than_its_threads_leave_the_loops_own_threads_free(
    hanging: PrometheusProvider,
) -> None:
    hanging.timeout = 2.0

    async def meanwhile() -> tuple[list[str | None], bool]:
        queries = [hanging.sample(f"q{i}") for i in range(prometheus.THREADS * 2)]
        asked = asyncio.gather(*queries)
        await asyncio.sleep(0.05)
        await asyncio.to_thread(lambda: None)  # what a Kubernetes call needs: a default thread
        first = not asked.done()  # it was not behind the hanging queries
        return [s.error for s in await asked], first

    errors, first = asyncio.run(meanwhile())
    assert first
    assert all(e and "did not answer within 4s" in e for e in errors)
    # Those still waiting for a thread at their deadline were never sent.
    assert hanging._client.started <= prometheus.THREADS  # type: ignore[attr-defined]


def test_each_thread_of_an_address_keeps_a_connection_of_its_own() -> None:
    """Past requests' default pool of 10, each query of the 16 threads would open a connection."""
    provider = PrometheusProvider("http://prometheus.monitoring:9090")
    adapter = provider._client._session.get_adapter("http://prometheus.monitoring:9090/api/v1/query")
    assert adapter._pool_maxsize == prometheus.THREADS
