"""Standard Kubernetes conditions (metav1.Condition) kept in `status.conditions`.

Pure functions: the time is passed in. A condition's `lastTransitionTime` changes only
when its status does, as the API conventions ask.
"""

from __future__ import annotations

from datetime import UTC, datetime

from parachute.api import Condition, ConditionStatus

# The condition types a Rollout reports.
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
PAUSED = "Paused"
INVALID = "Invalid"
# kstatus (Flux, kpt) reads Stalled=True as Failed: a release that ended without releasing, or a
# spec that cannot work. Ready=False alone reads as InProgress, which a pipeline waits out.
STALLED = "Stalled"


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times. A naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Condition] | None,
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Return `conditions` with `type_` set; other conditions are kept as they are."""
    current = {c.type: c for c in conditions or []}
    previous = current.get(type_)
    transition = previous.last_transition_time if previous and previous.status == status else timestamp(now)
    current[type_] = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    return list(current.values())
