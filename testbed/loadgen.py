"""A load generator for the demo application: real HTTP requests at a steady rate.

Where each request goes is a picker's answer, asked per request. The testbed's data plane
(testbed/dataplane.py) has pickers that follow the cluster: a Service's ready endpoints, or an
HTTPRoute's weights. Without a picker, traffic is split between two URLs (the demo app's stable
and canary versions) by a percentage that may change while it runs. Requests are sent from a
small thread pool so that a slow endpoint does not slow the rate. It stops by itself after
`duration` seconds at most.

With `users`, each request comes from a user drawn at random from a population of that many
(`user-0` ... `user-<users - 1>`), named in the `X-User-Id` header: the targeting key an app's
flag evaluation buckets (flagd's `fractional`), as a real caller's session would carry it.

A `mix` of header sets makes the requests differ, as a phased release's audiences do: each set
takes its weight's share of the requests, in turn, and the picker is asked with the request's
headers (a data plane picker honours a route's header and cookie matches). Each set may name
its group in `x-testbed-audience`, which the data plane's apps count.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from testbed.demoapp import USER_HEADER


def split(stable_url: str, canary_url: str, canary_percent: Callable[[], float]) -> Callable[[], str]:
    """A picker that sends `canary_percent()` % of requests to `canary_url`, the rest to `stable_url`."""
    return lambda: canary_url if random.uniform(0, 100) < canary_percent() else stable_url


class LoadGenerator:
    def __init__(
        self,
        stable_url: str | None = None,
        canary_url: str | None = None,
        rate: float = 40.0,
        canary_percent: Callable[[], float] = lambda: 50.0,
        duration: float = 1800.0,
        *,
        picker: Callable[..., str | None] | None = None,
        users: int | None = None,
        mix: Sequence[tuple[Mapping[str, str], int]] = (),
    ) -> None:
        if picker is None:
            if stable_url is None or canary_url is None:
                raise ValueError("a load generator needs a picker, or a stable and a canary URL")
            picker = split(stable_url, canary_url, canary_percent)
        self.picker: Callable[..., str | None] = picker
        # Each header set repeated by its weight, taken in turn: its share is exact over a cycle.
        self.cycle = [dict(headers) for headers, weight in mix for _ in range(weight)]
        self.rate = rate
        self.duration = duration
        self.users = users
        self._rng = random.Random()
        self.sent = 0
        self.unrouted = 0  # requests the picker had nowhere to send (they fail, as at a proxy)
        self.misses: list[tuple[float, str]] = []  # when each of those was (monotonic), and why
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="loadgen")
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        period = 1.0 / self.rate
        deadline = time.monotonic() + self.duration
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            why = "no backend with a ready endpoint"
            headers = self.cycle[(self.sent + self.unrouted) % len(self.cycle)] if self.cycle else None
            try:
                url = self.picker(headers) if headers is not None else self.picker()
            except Exception as error:  # a picker reading the cluster mid-blip: this request goes nowhere
                url, why = None, repr(error)
            if url is None:
                self.unrouted += 1
                self.misses.append((time.monotonic(), why))
            else:
                if self.users:
                    headers = {**(headers or {}), USER_HEADER: f"user-{self._rng.randrange(self.users)}"}
                self._pool.submit(_get, url, headers or {})
                self.sent += 1
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def _get(url: str, headers: Mapping[str, str]) -> None:
    # A 500 is an answer, not a failure of the generator.
    request = urllib.request.Request(url, headers=dict(headers))
    with (
        contextlib.suppress(urllib.error.URLError, OSError),
        urllib.request.urlopen(request, timeout=5) as response,
    ):
        response.read()
