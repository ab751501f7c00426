"""The commands that steer a release, as the merge patches they make.

Each acts through what the operator already honours: `spec.paused`, or a command annotation
set to a new value (the operator acts once per value and records it in `status.commands`).
None of them writes status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from parachute.api import ABORT_ANNOTATION, PROMOTE_ANNOTATION, RESOLVED_ANNOTATION, RETRY_ANNOTATION

# The annotation each command sets; a fresh timestamp makes every use a new command.
ANNOTATIONS = {"promote": PROMOTE_ANNOTATION, "abort": ABORT_ANNOTATION, "retry": RETRY_ANNOTATION}


class ActionError(ValueError):
    """The command cannot apply to this Rollout as it is."""


def stamp(now: datetime) -> str:
    """A value no earlier command used: microseconds keep two commands in one second apart."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def annotate(action: str, now: datetime) -> dict[str, Any]:
    return {"metadata": {"annotations": {ANNOTATIONS[action]: stamp(now)}}}


def pause(paused: bool) -> dict[str, Any]:
    return {"spec": {"paused": paused}}


def resolve(body: dict[str, Any], revision: str) -> dict[str, Any]:
    """Mark a blocked revision's root cause fixed (or every one, with `all`)."""
    blocked = list((body.get("status") or {}).get("blockedRevisions") or [])
    if revision != "all" and revision not in blocked:
        known = ", ".join(blocked) or "none"
        raise ActionError(f"revision {revision} is not blocked (blocked: {known})")
    current = ((body.get("metadata") or {}).get("annotations") or {}).get(RESOLVED_ANNOTATION)
    if current == revision:
        # The operator acts once per value: the same value again would be ignored.
        raise ActionError(
            f"{RESOLVED_ANNOTATION} is already {revision}, and the operator acts once per value; "
            "resolve `all` instead"
        )
    return {"metadata": {"annotations": {RESOLVED_ANNOTATION: revision}}}
