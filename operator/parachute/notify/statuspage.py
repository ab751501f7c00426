"""The status page: an incident on a page speaking Atlassian Statuspage's REST API (its incident
and component model is what Instatus and others accept too), kept in step with the rollback of a
customer-facing Rollout (`spec.customerFacing`).

Level-triggered, like the reconcile: what the page should say is read from the incident record
(rolling back: identified, components at the target's impact; failing again while watching:
investigating; recovered and watched: monitoring, components operational; the watch over or a
newer incident: resolved), and what it was last told is kept in that record
(`status.incidents[].statusPage`). So a restarted operator updates the same page incident, and
a delivery that failed is tried again at `retryAt`, however long the page was down.

Delivery runs in the background, each request cut at its timeout (`notify.transport`), with a few
retries per attempt: the rollback never waits for the page, however it hangs. Page id and token are read from Secrets at send time and masked in
logs and in the recorded error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from parachute import kube
from parachute.api import (
    Incident,
    Phase,
    RolloutSpec,
    RolloutStatus,
    SecretKeyRef,
    StatusPageNotification,
    StatusPageRecord,
)
from parachute.conditions import at
from parachute.notify import transport
from parachute.redaction import redact

logger = logging.getLogger("parachute.notify.statuspage")

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3  # within one delivery; then the record says when the next delivery is
FIRST_RETRY = timedelta(seconds=15)
LAST_RETRY = timedelta(minutes=10)
RECORD_CONFLICTS = 5

IDENTIFIED, INVESTIGATING, MONITORING, RESOLVED = "identified", "investigating", "monitoring", "resolved"
OPERATIONAL = "operational"
BODIES = {
    IDENTIFIED: "A new release of {name} caused errors; it is being rolled back.",
    INVESTIGATING: "{name} was rolled back, but errors came back; we are investigating.",
    MONITORING: "The release of {name} was rolled back and the service has recovered; we are monitoring it.",
    RESOLVED: "{name} has been healthy since the rollback. This incident is resolved.",
}

_in_flight: dict[tuple[str, str, str], asyncio.Task[None]] = {}
# What the page was told of each incident by this process: a reconcile that read the Rollout
# before the delivery's outcome was recorded must not tell the same thing again (a second
# incident on the page).
_told: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Wanted:
    """What the page should say of one of the Rollout's incidents, and how it was told so far."""

    incident: str  # Parachute's incident id
    status: str
    record: StatusPageRecord | None


def target_of(spec: RolloutSpec) -> StatusPageNotification | None:
    """The statusPage target, when the Rollout is customer-facing."""
    if not spec.customer_facing:
        return None
    return next((n.status_page for n in spec.notifications or [] if n.status_page is not None), None)


def page_status(incident: Incident, latest: bool, now: datetime) -> str:
    """What the page says of this incident now."""
    if not latest:
        return RESOLVED  # a newer incident has taken over
    if incident.recovered_at is None:
        return IDENTIFIED
    watching = incident.watch_until is not None and now < at(incident.watch_until)
    if not watching:
        return RESOLVED
    return INVESTIGATING if incident.regressed_at else MONITORING


def wanted(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> list[Wanted]:
    """Every incident whose page is not yet saying what it should (due now or later)."""
    if target_of(spec) is None or status.phase == Phase.invalid:
        return []
    incidents = status.incidents or []
    out = []
    for index, incident in enumerate(incidents):
        should = page_status(incident, index == len(incidents) - 1, now)
        record = incident.status_page
        if record is None and should == RESOLVED:
            continue  # never tried while it lasted: no page incident that opens resolved
        if record is not None and record.status == should and not record.failures:
            continue
        out.append(Wanted(incident.id, should, record))
    return out


def due(found: Wanted, now: datetime) -> bool:
    retry = found.record.retry_at if found.record else None
    return retry is None or now >= at(retry)


def next_attempt_at(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> datetime | None:
    """When the page must next be told something: a retry, or the end of the watch."""
    moments = [at(w.record.retry_at) for w in wanted(spec, status, now) if w.record and w.record.retry_at]
    incidents = status.incidents or []
    if target_of(spec) is not None and incidents:
        latest = incidents[-1]
        told = latest.status_page
        if (
            told is not None
            and told.status != RESOLVED
            and latest.watch_until
            and now < at(latest.watch_until)
        ):
            moments.append(at(latest.watch_until))
    later = [m for m in moments if m > now]
    return min(later) if later else None


def request(
    target: StatusPageNotification, page_id: str, rollout: str, found: Wanted
) -> tuple[str, str, dict[str, Any]]:
    """Method, URL and body: a new page incident (POST), or an update of the one opened (PATCH)."""
    impact = target.impact.value if found.status in (IDENTIFIED, INVESTIGATING) else OPERATIONAL
    components = list(target.component_ids or [])
    incident: dict[str, Any] = {
        "name": f"{rollout}: degraded after a release",
        "status": found.status,
        "body": BODIES[found.status].format(name=rollout),
    }
    if components:
        incident["component_ids"] = components
        incident["components"] = dict.fromkeys(components, impact)
    base = f"{target.api_url.rstrip('/')}/v1/pages/{page_id}/incidents"
    opened = found.record.incident_id if found.record else None
    if opened:
        return "PATCH", f"{base}/{opened}", {"incident": incident}
    return "POST", base, {"incident": incident}


def retry_after(failures: int) -> timedelta:
    return min(LAST_RETRY, FIRST_RETRY * (1 << min(10, max(0, failures - 1))))


def after_success(
    record: StatusPageRecord | None, found: Wanted, answer: dict[str, Any], now: datetime
) -> StatusPageRecord:
    opened = (record.incident_id if record else None) or (str(answer["id"]) if answer.get("id") else None)
    return StatusPageRecord(incident_id=opened, status=found.status, delivered_at=_stamp(now))


def after_failure(record: StatusPageRecord | None, error: str, now: datetime) -> StatusPageRecord:
    failures = (record.failures if record else 0) + 1
    kept = record or StatusPageRecord()
    return kept.model_copy(update={
        "failures": failures, "last_error": error[:1024], "retry_at": _stamp(now + retry_after(failures)),
    })  # fmt: skip


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- I/O


async def call(method: str, url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "Authorization": f"OAuth {token}"}
    try:
        _, text = await transport.send(
            method, url, json.dumps(body).encode(), headers, timeout=TIMEOUT_SECONDS
        )
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{method} {url} answered {error.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise RuntimeError(f"{method} {url} failed: {getattr(error, 'reason', error)}") from None
    answer = json.loads(text or b"{}")
    return answer if isinstance(answer, dict) else {}


async def _secret(namespace: str, ref: SecretKeyRef, what: str) -> str:
    found = await kube.read_secret_key(namespace, ref.name, ref.key)
    if found is None or not found.value.strip():
        raise LookupError(f"no {what}: Secret {namespace}/{ref.name} key {ref.key} not found")
    return found.value.strip()


async def _send(
    namespace: str, rollout: str, target: StatusPageNotification, found: Wanted
) -> dict[str, Any]:
    page_id = await _secret(namespace, target.page_id_secret_ref, "status page id")
    token = await _secret(namespace, target.token_secret_ref, "status page token")
    secrets = [page_id, token]
    method, url, body = request(target, page_id, rollout, found)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call(method, url, body, token)
        except Exception as error:  # the page is best effort: log, retry, then record it
            said = redact(str(error), secrets)
            logger.warning("status page %s for incident %s failed (attempt %d of %d): %s",
                           found.status, found.incident, attempt, ATTEMPTS, said)  # fmt: skip
            if attempt == ATTEMPTS:
                raise RuntimeError(said) from None
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def _record(
    namespace: str, name: str, incident_id: str, change: Callable[[StatusPageRecord | None], StatusPageRecord]
) -> None:
    """Write the delivery's outcome into the incident record (again, if a reconcile wrote first)."""
    for _ in range(RECORD_CONFLICTS):
        body = await kube.read_rollout(namespace, name)
        if body is None:
            return
        old = dict(body.get("status") or {})
        status = RolloutStatus.model_validate(old)
        incident = next((i for i in status.incidents or [] if i.id == incident_id), None)
        if incident is None:
            return
        incident.status_page = change(incident.status_page)
        new = status.model_dump(by_alias=True, exclude_none=True, mode="json")
        try:
            await kube.patch_rollout_status(
                namespace, name, old, new, body["metadata"]["resourceVersion"], decided=False
            )
            return
        except kube.ConflictError:
            continue
        except kube.GoneError:
            return
    logger.warning("status page outcome of incident %s not recorded: the Rollout kept changing", incident_id)


async def _deliver(namespace: str, name: str, target: StatusPageNotification, found: Wanted) -> None:
    try:
        answer = await _send(namespace, name, target, found)
    except Exception as error:
        message = str(error) if isinstance(error, RuntimeError | LookupError) else type(error).__name__
        await _record(namespace, name, found.incident,
                      lambda record: after_failure(record, message, datetime.now(UTC)))  # fmt: skip
        return
    _told[(namespace, name, found.incident)] = found.status
    logger.info("status page: incident %s is %s", found.incident, found.status)
    await _record(namespace, name, found.incident,
                  lambda record: after_success(record, found, answer, datetime.now(UTC)))  # fmt: skip


async def _deliver_logged(namespace: str, name: str, target: StatusPageNotification, found: Wanted) -> None:
    try:
        await _deliver(namespace, name, target, found)
    except Exception as error:  # recording failed: the next reconcile finds the page behind and tries again
        logger.warning(
            "status page delivery for incident %s not recorded: %s", found.incident, type(error).__name__
        )


def sync(rollout: dict[str, Any], spec: RolloutSpec, status: RolloutStatus, now: datetime) -> None:
    """Start telling the page what it should say, in the background; return at once."""
    target = target_of(spec)
    if target is None:
        return
    meta = rollout["metadata"]
    for found in wanted(spec, status, now):
        key = (meta["namespace"], meta["name"], found.incident)
        if not due(found, now) or key in _in_flight or _told.get(key) == found.status:
            continue
        task = asyncio.get_running_loop().create_task(
            _deliver_logged(meta["namespace"], meta["name"], target, found)
        )
        _in_flight[key] = task
        task.add_done_callback(_forget(key))


def forget(namespace: str, name: str) -> None:
    """The Rollout is gone: what its page was told goes with it."""
    for key in [k for k in _told if k[:2] == (namespace, name)]:
        del _told[key]


def _forget(key: tuple[str, str, str]) -> Callable[[asyncio.Task[None]], None]:
    def forget(_: asyncio.Task[None]) -> None:
        _in_flight.pop(key, None)

    return forget
