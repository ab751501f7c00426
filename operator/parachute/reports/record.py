"""Where user reports are kept: one Kubernetes Event per accepted report, on its Rollout.

An Event is append-only, so recording a report never races the reconcile's status writes, and
it lives in the API server, so a restart or a new leader loses nothing. Each carries the
issue key and the moment it was accepted in annotations, and a signature over both (and the
Rollout's uid, and the Event's name) made with the reports token: whoever may create Events in
a namespace could otherwise forge reports and roll a release back. An Event whose signature
does not hold is not counted. (A changed token therefore stops counting the reports signed
with the old one.)
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime
from typing import Any

from parachute import api, kube
from parachute.redaction import redact
from parachute.reports.request import Report
from parachute.reports.tally import Received

REASON = "UserReport"
# On every report's Event: the operator watches Events with this label alone.
LABEL = f"{api.GROUP}/user-report"
KEY_ANNOTATION = f"{api.GROUP}/report-key"
AT_ANNOTATION = f"{api.GROUP}/reported-at"
SIGNATURE_ANNOTATION = f"{api.GROUP}/report-signature"


def signature(token: bytes, *, namespace: str, uid: str, event: str, key: str, at: str) -> str:
    """HMAC-SHA256 of what a report says, keyed with the reports token."""
    text = "\n".join((namespace, uid, event, key, at)).encode()
    return hmac.new(token, text, hashlib.sha256).hexdigest()


async def record(rollout: dict[str, Any], report: Report, token: bytes, now: datetime) -> str:
    """Keep the report as an Event on the Rollout; returns the Event's name."""
    meta = rollout["metadata"]
    name = f"{meta['name'][:200]}.report-{uuid.uuid4().hex[:16]}"
    at = now.isoformat()
    said = redact(report.message, [token.decode(errors="replace")])
    message = f"user report {report.key}" + (f": {said}" if said else "")
    await kube.post_report_event(
        rollout, REASON, message, name=name,
        labels={LABEL: "true"},
        annotations={KEY_ANNOTATION: report.key, AT_ANNOTATION: at,
                     SIGNATURE_ANNOTATION: signature(token, namespace=meta["namespace"], uid=meta.get("uid") or "",
                                                     event=name, key=report.key, at=at)},
    )  # fmt: skip
    return name


def selector(name: str, uid: str) -> str:
    """The field selector of one Rollout's report Events (its uid: not a former namesake's)."""
    return f"involvedObject.uid={uid},involvedObject.name={name},reason={REASON}"


def verified(event: dict[str, Any], token: bytes) -> Received | None:
    """The report an Event records, if its signature holds."""
    meta = event.get("metadata") or {}
    notes = meta.get("annotations") or {}
    involved = event.get("involvedObject") or {}
    key, at, signed = notes.get(KEY_ANNOTATION), notes.get(AT_ANNOTATION), notes.get(SIGNATURE_ANNOTATION)
    if not key or not at or not signed:
        return None
    expected = signature(token, namespace=meta.get("namespace") or "", uid=involved.get("uid") or "",
                         event=meta.get("name") or "", key=key, at=at)  # fmt: skip
    if not hmac.compare_digest(expected, signed):
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return None
    return Received(key, moment) if moment.tzinfo is not None else None


async def received(namespace: str, name: str, uid: str, token: bytes) -> list[Received]:
    """Every report of the Rollout that the API server still keeps and that was signed with `token`."""
    events = await kube.list_events(namespace, selector(name, uid))
    return [found for event in events if (found := verified(event, token)) is not None]
