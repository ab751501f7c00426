"""The reconcile's part of user reports: read a Rollout's reports, count them, show the counts.

A Rollout whose metrics include `user-reports` has its reports counted when its analysis round
is due, when a report for it has just arrived (the operator's watch of report Events marks it,
`arrived`, and wakes it ahead of routine work), when a count shown is about to drop, and when
counting starts anew (a release or a rollback began). The
reconcile then judges the `user-reports` metric at once, between rounds if need be, so a
critical count rolls back without waiting for the next round.

The reports token is installed at start-up (`install`) when the endpoint is on. Without it the
metric cannot be measured: its verdict is Error, naming what to turn on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from parachute.api import DEFAULT_REPORTS_WINDOW, USER_REPORTS, RolloutSpec, RolloutStatus, parse_duration
from parachute.redaction import redact
from parachute.reports import record, tally

logger = logging.getLogger("parachute.reports")

Key = tuple[str, str]  # namespace, name
OFF = (
    "user reports are not received: the operator runs without its reports endpoint "
    "(--reports-port and --reports-token-file; the chart's reports.enabled)"
)

_token: Callable[[], bytes | None] | None = None
# When a report Event for each Rollout was last seen. Kept until status shows a count made since:
# a count whose status write lost a race is made again.
_arrived: dict[Key, datetime] = {}


def install(token: Callable[[], bytes | None] | None) -> None:
    """How the reconcile reads the reports token (None: the endpoint is off)."""
    global _token  # noqa: PLW0603  (one endpoint for the process, set once at start-up)
    _token = token


def arrived(key: Key, at: datetime) -> None:
    """A report Event for this Rollout was seen at `at`: count its reports at its next reconcile."""
    _arrived[key] = max(at, _arrived.get(key, at))


def forget(key: Key) -> None:
    _arrived.pop(key, None)


def _came(key: Key, status: RolloutStatus) -> bool:
    """A report arrived since the count status shows (to the second: at worst one count too many)."""
    arrival = _arrived.get(key)
    if arrival is None:
        return False
    counted = status.user_reports.counted_at if status.user_reports else None
    if counted is not None and arrival < datetime.fromisoformat(counted.replace("Z", "+00:00")):
        del _arrived[key]
        return False
    return True


def windows(spec: RolloutSpec) -> list[str]:
    """The windows of the Rollout's user-reports metrics (none: it does not watch user reports)."""
    metrics = spec.analysis.metrics if spec.analysis is not None else None
    return [m.window or DEFAULT_REPORTS_WINDOW for m in metrics or [] if m.template == USER_REPORTS]


def _moved(status: RolloutStatus) -> bool:
    """Counting starts later than status shows (a release or a rollback began): count again."""
    start = tally.origin(status)
    shown = status.user_reports
    return (
        shown is not None
        and start is not None
        and datetime.fromisoformat(shown.since.replace("Z", "+00:00")) < start
    )


async def refresh(
    spec: RolloutSpec, status: RolloutStatus, *, namespace: str, name: str, uid: str, now: datetime, due: bool
) -> tuple[RolloutStatus, tally.Counter | None]:
    """The status with its reports counted when that is due (`due`: an analysis round is), and the
    provider the `user-reports` metric is judged with then; None when nothing was counted."""
    watched = windows(spec)
    if not watched:
        forget((namespace, name))
        return (status.model_copy(update={"user_reports": None}) if status.user_reports else status), None
    change = tally.next_change(status.user_reports)
    if not (
        _came((namespace, name), status) or due or (change is not None and now >= change) or _moved(status)
    ):
        return status, None
    token = _token() if _token is not None else None
    if token is None:
        forget((namespace, name))
        return status.model_copy(update={"user_reports": None}), tally.Unavailable(OFF)
    try:
        reports = await record.received(namespace, name, uid, token)
    except Exception as error:  # counted again at the next round; meanwhile the metric says why
        why = redact(str(error).splitlines()[0] if str(error) else type(error).__name__)[:300]
        logger.warning("%s/%s: could not read user reports: %s", namespace, name, why)
        return status, tally.Unavailable(f"user reports could not be read: {why}")
    provider = tally.ReportsProvider(reports, now, tally.origin(status))
    window = max(parse_duration(w) for w in watched)
    return status.model_copy(update={"user_reports": provider.shown(window)}), provider
