"""One reconcile of one Rollout: observe, decide, and say what the status should be.

Independent of what triggered it (a spec change, a timer, a change of the target), so a
later scheduler can call it the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from parachute import conditions, kube
from parachute.api import ConditionStatus, Phase, Risk, RolloutSpec, RolloutStatus


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


async def reconcile(body: dict[str, Any], now: datetime) -> RolloutStatus:
    """Compute the Rollout's next status from the cluster as it is now."""
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    namespace = meta.get("namespace", "default")
    status = RolloutStatus.model_validate(body.get("status") or {})
    try:
        spec = RolloutSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        return invalid(status, describe_validation_error(error), now, generation)

    target = await kube.read_deployment(namespace, spec.target_ref.name)
    if target is None:
        return invalid(
            status,
            f"spec.targetRef.name: Deployment {namespace}/{spec.target_ref.name} not found",
            now,
            generation,
        )
    valid = conditions.set_condition(
        status.conditions,
        type_=conditions.INVALID,
        status=ConditionStatus.false,
        reason="SpecValid",
        message="",
        now=now,
        generation=generation,
    )
    return status.model_copy(
        update={
            "observed_generation": generation,
            "phase": Phase.pending if status.phase in (None, Phase.invalid) else status.phase,
            "message": f"watching Deployment {spec.target_ref.name}",
            "risk": spec.risk or Risk.medium,
            "conditions": valid,
        }
    )
