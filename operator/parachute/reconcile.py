"""One reconcile of one Rollout: observe, decide, write status, act, tell.

Independent of what triggered it (a change of the Rollout or its Deployment, or a wait
that ran out), so the scheduler calls it the same way for all of them. Status is written
before the workload is touched: if the process dies in between, the next reconcile finds
the decision in status and makes the workload match it. Events go out only after the
status write succeeded, so a lost race never repeats them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from parachute import conditions, kube
from parachute.api import ConditionStatus, Phase, RolloutSpec, RolloutStatus
from parachute.plan.engine import decide
from parachute.plan.model import Event, EventType
from parachute.workload import ForeignObjectError, act, observe

logger = logging.getLogger("parachute.reconcile")


def describe_validation_error(error: ValidationError, root: str = "spec") -> str:
    """`spec.steps[1].weight: Input should be less than or equal to 100` — one line per problem."""
    lines = []
    for problem in error.errors():
        path = root
        for part in problem["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        lines.append(f"{path}: {problem['msg']}")
    return "; ".join(lines)


def invalid(status: RolloutStatus, message: str, now: datetime, generation: int | None) -> RolloutStatus:
    return status.model_copy(
        update={
            "observed_generation": generation,
            "phase": Phase.invalid,
            "message": message,
            "next_check_at": None,
            "conditions": conditions.set_condition(
                status.conditions,
                type_=conditions.INVALID,
                status=ConditionStatus.true,
                reason="InvalidSpec",
                message=message,
                now=now,
                generation=generation,
            ),
        }
    )


async def reconcile(namespace: str, name: str, now: datetime) -> datetime | None:
    """Bring one Rollout a step forward; returns when it wants to be looked at again."""
    body = await kube.read_rollout(namespace, name)
    if body is None:
        return None
    generation = body["metadata"].get("generation")
    old = dict(body.get("status") or {})
    status = RolloutStatus.model_validate(old)
    try:
        spec = RolloutSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        await _write_invalid(body, old, invalid(status, describe_validation_error(error), now, generation))
        return None
    target = await kube.read_deployment(namespace, spec.target_ref.name)
    if target is None:
        message = f"spec.targetRef.name: Deployment {namespace}/{spec.target_ref.name} not found"
        await _write_invalid(body, old, invalid(status, message, now, generation))
        return None
    try:
        observed = await observe(body, target)
    except ForeignObjectError as refusal:
        await _write_invalid(body, old, invalid(status, str(refusal), now, generation))
        return None

    decision = decide(spec, status, observed, now, generation)
    new = _dump(decision.status)
    if new != old:
        await kube.patch_rollout_status(namespace, name, old, new, body["metadata"]["resourceVersion"])
    changed = await act(body, target, decision.workload)
    if changed:
        logger.info("%s/%s: %s", namespace, name, "; ".join(changed))
    await _tell(body, decision.events)
    return decision.next_check_at


async def _write_invalid(body: dict[str, Any], old: dict[str, Any], status: RolloutStatus) -> None:
    new = _dump(status)
    if new == old:
        return
    meta = body["metadata"]
    await kube.patch_rollout_status(meta["namespace"], meta["name"], old, new, meta["resourceVersion"])
    if old.get("message") != status.message:
        await _tell(body, (Event(EventType.warning, "Invalid", status.message or ""),))


async def _tell(body: dict[str, Any], events: tuple[Event, ...]) -> None:
    for event in events:
        try:
            await kube.post_event(body, event.type.value, event.reason, event.message)
        except kube.NamespaceTerminatingError:
            logger.debug("no Event %s: the namespace is being deleted", event.reason)
        except Exception:  # an Event is a courtesy: losing one must not stop a release
            logger.exception("could not post Event %s", event.reason)


def _dump(status: RolloutStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")
