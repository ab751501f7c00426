"""Incident notifications, sent in the background: a receiver that is slow, down or hanging never
holds a rollback. Each is owed in the Rollout's status (`notify.outbox`), which tries it again
later if this delivery fails. Each POST is cut at its timeout, on threads of its own
(`notify.transport`), and tried a few times; URLs and tokens are
read from Secrets at send time, so a rotated Secret is used at once. A failure is logged with those
values masked (`parachute.redaction`): a webhook URL is a credential.

The status page (`notify.statuspage`) is kept in step with the incident record instead, not
per Event. Payloads: Slack's incoming-webhook `{"text": ...}` (Mattermost, Teams' Slack-compatible
connectors and many others accept it too), and a CloudEvents 1.0 event in structured JSON
mode (`application/cloudevents+json`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from parachute import api, kube
from parachute.api import Notification, SecretKeyRef
from parachute.notify import transport
from parachute.redaction import redact

logger = logging.getLogger("parachute.notify")

# Events worth waking someone for; everything else stays in `kubectl describe`.
NOTIFIED = {
    "RollingBack": "rollback.started",
    "RecoveryEscalated": "rollback.escalated",
    "RolledBack": "rollback.recovered",
    "RecoveryObjectiveMissed": "rollback.objective-missed",
    "RecoveryStalled": "rollback.stalled",
    "RegressedAfterRollback": "rollback.regressed",
}
TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
EVENT_TYPE_PREFIX = "dev.parachute.rollout."


def ticket_note(message: str, incident: dict[str, Any] | None) -> str:
    """The change ticket of the release rolled back, unless the message names it already."""
    ticket = (incident or {}).get("changeTicket")
    return f" (change ticket {ticket})" if ticket and ticket not in message else ""


def slack_payload(
    rollout: dict[str, Any],
    reason: str,
    message: str,
    channel: str | None,
    incident: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta = rollout["metadata"]
    icon = ":white_check_mark:" if reason == "RolledBack" else ":rotating_light:"
    payload: dict[str, Any] = {
        "text": f"{icon} *{reason}* Rollout {meta['namespace']}/{meta['name']}: {message}{ticket_note(message, incident)}"
    }
    if channel:
        payload["channel"] = channel
    return payload


def cloud_event(
    rollout: dict[str, Any],
    reason: str,
    message: str,
    incident: dict[str, Any] | None,
    *,
    id_: str | None = None,
    occurred: str | None = None,
) -> dict[str, Any]:
    """`id_`: the idempotency key, and `occurred`: when the change was made; both the same each
    time this notification is sent."""
    meta = rollout["metadata"]
    return {
        "specversion": "1.0",
        "id": id_ or str(uuid.uuid4()),
        "source": f"/apis/{api.API_VERSION}/namespaces/{meta['namespace']}/{api.PLURAL}/{meta['name']}",
        "type": EVENT_TYPE_PREFIX + NOTIFIED.get(reason, reason.lower()),
        "subject": meta["name"],
        "time": occurred or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "reason": reason,
            "message": message,
            "namespace": meta["namespace"],
            "rollout": meta["name"],
            "changeTicket": (incident or {}).get("changeTicket"),
            "incident": incident,
        },
    }


async def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    """The answer's status; cut at TIMEOUT_SECONDS however the receiver dawdles."""
    status, _ = await transport.send("POST", url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json", **headers},
                                     timeout=TIMEOUT_SECONDS)  # fmt: skip
    return status


async def _with_retries(send: Callable[[], Awaitable[int]], what: str, secrets: list[str]) -> str | None:
    """None when sent; else why the last attempt failed (secrets masked)."""
    said = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            await send()
            return None
        except Exception as error:  # a notification is retried here, then by the outbox
            said = redact(str(error), secrets)
            logger.warning("notification to %s failed (attempt %d of %d): %s", what, attempt, ATTEMPTS,
                           said)  # fmt: skip
            if attempt < ATTEMPTS:
                await asyncio.sleep(0.5 * 2**attempt)
    return f"{what}: {said}"


async def _read(namespace: str, ref: SecretKeyRef, what: str) -> str:
    found = await kube.read_secret_key(namespace, ref.name, ref.key)
    if found is None:
        raise LookupError(f"no {what}: Secret {namespace}/{ref.name} key {ref.key} not found")
    return found.value.strip()


async def deliver(
    rollout: dict[str, Any],
    target: Notification,
    reason: str,
    message: str,
    incident: dict[str, Any] | None,
    *,
    key: str,
    occurred: str | None = None,
) -> str | None:
    """Send one notification to one target: None when it was received, else why not. `key` is
    the notification's idempotency key: the CloudEvent's id (receivers deduplicate on source
    and id). Slack's incoming webhooks take none, so there a retry may repeat the message."""
    namespace = rollout["metadata"]["namespace"]
    try:
        if target.slack is not None:
            slack_url = await _read(namespace, target.slack.webhook_secret_ref, "Slack webhook URL")
            body = slack_payload(rollout, reason, message, target.slack.channel, incident)
            return await _with_retries(lambda: post(slack_url, body, {}), "Slack webhook", [slack_url])
        if target.cloud_events is not None:
            ce = target.cloud_events
            ce_url = await _read(namespace, ce.url_secret_ref, "CloudEvents URL")
            headers = {"Content-Type": "application/cloudevents+json"}
            token = (
                await _read(namespace, ce.token_secret_ref, "CloudEvents token")
                if ce.token_secret_ref
                else None
            )
            if token:
                headers["Authorization"] = f"Bearer {token}"
            event = cloud_event(rollout, reason, message, incident, id_=key, occurred=occurred)
            return await _with_retries(lambda: post(ce_url, event, headers),
                                       "CloudEvents receiver", [ce_url, token or ""])  # fmt: skip
    except LookupError as missing:
        logger.warning("notification %s not sent: %s", reason, missing)
        return str(missing)
    return None
