"""A load generator for the demo application: real HTTP requests at a steady rate.

Traffic is split between the stable and the canary version by a percentage that may
change while it runs (a test passes the Rollout's current weight), the way a Service or
a route would split it. Requests are sent from a small thread pool so that a slow
version does not slow the rate. It stops by itself after `duration` seconds at most.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class LoadGenerator:
    def __init__(
        self,
        stable_url: str,
        canary_url: str,
        rate: float = 40.0,
        canary_percent: Callable[[], float] = lambda: 50.0,
        duration: float = 1800.0,
    ) -> None:
        self.stable_url, self.canary_url = stable_url, canary_url
        self.rate = rate
        self.canary_percent = canary_percent
        self.duration = duration
        self.sent = 0
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
            url = self.canary_url if random.uniform(0, 100) < self.canary_percent() else self.stable_url
            self._pool.submit(_get, url)
            self.sent += 1
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def _get(url: str) -> None:
    # A 500 is an answer, not a failure of the generator.
    with (
        contextlib.suppress(urllib.error.URLError, OSError),
        urllib.request.urlopen(url, timeout=5) as response,
    ):
        response.read()
