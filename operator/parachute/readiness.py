"""The readiness endpoint (`--readiness http://0.0.0.0:8081/readyz`), beside kopf's liveness one.

Ready means able to act at once: the scheduler's loop runs and the first listing of Rollouts is
in its heap. A standby is ready too, because its heap is as warm as the leader's, and the body
says whether it leads: `{"ready": true, "leading": false}`. A rolling update therefore waits
for the new replica's listing before it stops an old one, and the leader gives its Lease up
when it stops, so the ready standby takes over at once.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp.web

State = Callable[[], dict[str, Any]]  # must hold "ready": bool


async def serve(endpoint: str, state: State) -> aiohttp.web.AppRunner:
    """Serve `state()` as JSON at the endpoint's path: 200 when ready, 503 when not."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http" or not parts.port:
        raise ValueError(f"--readiness takes http://host:port/path, not {endpoint!r}")

    async def ready(_: aiohttp.web.Request) -> aiohttp.web.Response:
        now = state()
        return aiohttp.web.json_response(now, status=200 if now.get("ready") else 503)

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(parts.path or "/", ready)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, parts.hostname or "localhost", parts.port).start()
    return runner
