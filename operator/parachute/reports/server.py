"""The reports endpoint: `POST /reports` on its own port, for support tooling.

Off unless the operator runs with `--reports-port` and `--reports-token-file` (the chart
mounts the token from a Secret). Every replica serves it, a standby too: a report is recorded
as an Event (`record`), a fact rather than an action, so it needs no leader, and refusing on
standbys would refuse the share of reports a Service sends them. The leader's watch of report
Events wakes the Rollout.

What is checked, in order, and what a refusal answers (nothing is recorded on any of them):
401 no bearer token, 403 a wrong one, 429 over the rate, 413 a body over 4 KiB, 400 a body
that is not a report (the message names the field), 404 a Rollout that does not exist or that
this operator does not serve, 409 a Rollout that does not watch `user-reports`, 503 the
token file is empty or the API server could not be reached. 202: recorded. The token is never
logged, and neither is a report's message.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp.web

from parachute import clock, kube, telemetry
from parachute.api import USER_REPORTS
from parachute.reports import record
from parachute.reports.request import (
    MAX_BODY,
    Limiter,
    Rates,
    RefusedError,
    Report,
    authenticate,
    check_size,
    parse,
)

logger = logging.getLogger("parachute.reports")

PATH = "/reports"


@dataclass(frozen=True)
class Settings:
    """What `parachute run` was told about the endpoint."""

    port: int
    token_file: Path
    host: str = "0.0.0.0"  # support tooling reaches it through a Service; the token guards it
    rates: Rates = field(default_factory=Rates)


class TokenFile:
    """The reports token, read again whenever its file changes: a Secret mounted as a volume is
    updated in place when the Secret changes, so a rotated token is used without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._token: bytes | None = None

    def __call__(self) -> bytes | None:
        try:
            stat = os.stat(self.path)
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen != self._seen:
                self._token = self.path.read_bytes().strip() or None
                self._seen = seen
        except OSError:
            self._token, self._seen = None, None
        return self._token


def watches_user_reports(rollout: dict[str, Any]) -> bool:
    analysis = (rollout.get("spec") or {}).get("analysis") or {}
    return any((m or {}).get("template") == USER_REPORTS for m in analysis.get("metrics") or [])


Served = Callable[[dict[str, Any]], bool]


class Endpoint:
    """The request handler, apart from the HTTP server so that tests can call it."""

    def __init__(
        self,
        token: Callable[[], bytes | None],
        served: Served,
        *,
        rates: Rates | None = None,
        now: Callable[[], datetime] = clock.now,
        monotonic: Callable[[], float] = time.monotonic,
        namespaces: tuple[str, ...] = (),
    ) -> None:
        self.token, self.served, self.now, self.monotonic = token, served, now, monotonic
        self.namespaces = namespaces
        self.limiter = Limiter(rates or Rates(), monotonic())

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            token = self.token()
            if token is None:
                raise RefusedError(
                    HTTPStatus.SERVICE_UNAVAILABLE, "the reports token file is empty or unreadable"
                )
            authenticate(request.headers.get("Authorization"), token)
            self.limiter.admit(request.remote or "", self.monotonic())
            check_size(request.content_length)
            report = parse(await _body(request))
            rollout = await self._rollout(report)
            event = await self._record(rollout, report, token)
        except RefusedError as refusal:
            telemetry.user_report(int(refusal.status))
            logger.debug("user report refused (%d): %s", refusal.status, refusal.message)
            return aiohttp.web.json_response({"error": refusal.message}, status=refusal.status)
        telemetry.user_report(int(HTTPStatus.ACCEPTED))
        logger.info(
            "%s/%s: user report %s recorded (Event %s)", report.namespace, report.rollout, report.key, event
        )
        return aiohttp.web.json_response(
            {"namespace": report.namespace, "rollout": report.rollout, "key": report.key, "event": event},
            status=HTTPStatus.ACCEPTED,
        )

    async def _rollout(self, report: Report) -> dict[str, Any]:
        where = f"Rollout {report.namespace}/{report.rollout}"
        if self.namespaces and report.namespace not in self.namespaces:
            raise RefusedError(
                HTTPStatus.NOT_FOUND, f"{where}: this operator serves no Rollout in that namespace"
            )
        try:
            found = await kube.read_rollout(report.namespace, report.rollout)
        except Exception as error:
            logger.warning("user report: could not read %s: %s", where, type(error).__name__)
            raise RefusedError(
                HTTPStatus.SERVICE_UNAVAILABLE, f"{where} could not be read: try again"
            ) from None
        if found is None:
            raise RefusedError(HTTPStatus.NOT_FOUND, f"{where} does not exist")
        if not self.served(found):
            raise RefusedError(HTTPStatus.NOT_FOUND, f"{where} is not served by this operator (its selector)")
        if not watches_user_reports(found):
            raise RefusedError(
                HTTPStatus.CONFLICT, f"{where} does not watch {USER_REPORTS} (spec.analysis.metrics)"
            )
        return found

    async def _record(self, rollout: dict[str, Any], report: Report, token: bytes) -> str:
        try:
            return await record.record(rollout, report, token, self.now())
        except Exception as error:
            logger.warning("user report: could not record it for %s/%s: %s", report.namespace, report.rollout,
                           type(error).__name__)  # fmt: skip
            raise RefusedError(
                HTTPStatus.SERVICE_UNAVAILABLE, "the report could not be recorded: try again"
            ) from None


async def _body(request: aiohttp.web.Request) -> bytes:
    """The body, read no further than one byte past what is accepted (a chunked body declares no
    length): that byte is enough to refuse it as too large."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY:
        chunk = await request.content.read(MAX_BODY + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def serve(endpoint: Endpoint, settings: Settings) -> aiohttp.web.AppRunner:
    """Serve `POST /reports` on the settings' port until the runner is cleaned up."""
    # aiohttp would read up to 1 MiB of a body itself; the endpoint reads no more than it accepts.
    app = aiohttp.web.Application(client_max_size=MAX_BODY + 1)
    app.add_routes([aiohttp.web.post(PATH, endpoint.handle)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, settings.host, settings.port).start()
    logger.info("user reports: serving POST %s on port %d", PATH, settings.port)
    return runner
