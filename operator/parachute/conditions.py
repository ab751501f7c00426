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
# Whether every watched metric's query finds series (checked when the analysis changes, and
# again while it does not): a release does not start on metrics that never existed.
METRICS_AVAILABLE = "MetricsAvailable"


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times. A naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """A time as `timestamp` writes it (any RFC 3339 time); None for none. A naive time is UTC."""
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def at(text: str) -> datetime:
    """A time that must be there (status fields set together with the one that names it)."""
    moment = parse_time(text)
    assert moment is not None, text
    return moment


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


# An operator-side fault: a reconcile that keeps raising. True names what failed; False once
# a reconcile succeeds again.
RECONCILE_FAILED = "ReconcileFailed"


def _find(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_), None)


def mark_failed(
    conditions: list[Condition] | None, *, reason: str, message: str, now: datetime, generation: int | None
) -> list[Condition] | None:
    """`conditions` with ReconcileFailed True for this fault; None when it already says so."""
    current = _find(conditions, RECONCILE_FAILED)
    if current is not None and current.status == ConditionStatus.true and current.message == message:
        return None
    return set_condition(conditions, type_=RECONCILE_FAILED, status=ConditionStatus.true, reason=reason,
                         message=message, now=now, generation=generation)  # fmt: skip


def clear_failed(
    conditions: list[Condition] | None, *, now: datetime, generation: int | None
) -> list[Condition] | None:
    """`conditions` with ReconcileFailed False after a fault; None when there is none to clear."""
    current = _find(conditions, RECONCILE_FAILED)
    if current is None or current.status != ConditionStatus.true:
        return None
    return set_condition(conditions, type_=RECONCILE_FAILED, status=ConditionStatus.false, reason="Reconciled",
                         message=f"reconciled again after {current.message}", now=now, generation=generation)  # fmt: skip
