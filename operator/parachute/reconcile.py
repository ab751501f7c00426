"""One reconcile of one Rollout: observe, decide, write status, act, tell.

Independent of what triggered it (a change of the Rollout or its Deployment, or a wait
that ran out), so the scheduler calls it the same way for all of them. Status is written
before the workload is touched: if the process dies in between, the next reconcile finds
the decision in status and makes the workload match it. Events go out right after the
status write succeeded: a lost race never repeats them, a failed act never loses them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from parachute import conditions, kube
from parachute.analysis.connect import AnalysisSetupError, provider_for, templates_for
from parachute.analysis.evaluate import evaluate
from parachute.api import (
    HOTFIX_ANNOTATION,
    AnalysisLimits,
    ConditionStatus,
    Phase,
    RolloutSpec,
    RolloutStatus,
    parse_duration,
)
from parachute.conditions import timestamp
from parachute.gating import check_all
from parachute.plan.engine import decide, parse_time
from parachute.plan.gates import GateResult, gates_for
from parachute.plan.metrics import UnknownTemplateError
from parachute.plan.model import Event, EventType, Health, Observed
from parachute.plan.verdicts import health, worst
from parachute.policy import PolicyError, window_for
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


# Everything that means "this Rollout cannot work as written": its message names the field.
CANNOT_WORK = (ForeignObjectError, PolicyError, AnalysisSetupError, UnknownTemplateError)


class MissingTargetError(ValueError):
    """The target Deployment does not exist (yet)."""


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
        target, canary, observed = await _observe(body, spec, status, now)
        analysis_events: list[Event] = []
        if spec.analysis is not None:
            status, health_now, analysis_events = await _analyse(spec, status, observed, namespace, now)
            observed = replace(observed, health=health_now)
    except ValidationError as error:
        await _write_invalid(body, old, invalid(status, describe_validation_error(error), now, generation))
        return None
    except (MissingTargetError, *CANNOT_WORK) as problem:
        await _write_invalid(body, old, invalid(status, str(problem), now, generation))
        return None

    decision = decide(spec, status, observed, now, generation)
    new = _dump(decision.status)
    if new != old:
        await kube.patch_rollout_status(namespace, name, old, new, body["metadata"]["resourceVersion"])
    # Told as soon as the decision is written: if acting fails below, the next reconcile finds
    # the decision already made and would not tell it again.
    await _tell(body, (*analysis_events, *decision.events))
    changed = await act(body, target, canary, decision.workload)
    if changed:
        logger.info("%s/%s: %s", namespace, name, "; ".join(changed))
    return _earliest(decision.next_check_at, parse_time(decision.status.next_analysis_at))


async def _observe(
    body: dict[str, Any], spec: RolloutSpec, status: RolloutStatus, now: datetime
) -> tuple[dict[str, Any], dict[str, Any] | None, Observed]:
    """The target, the canary, the commands, the window and whether this is a hotfix."""
    namespace = body["metadata"]["namespace"]
    target = await kube.read_deployment(namespace, spec.target_ref.name)
    if target is None:
        raise MissingTargetError(
            f"spec.targetRef.name: Deployment {namespace}/{spec.target_ref.name} not found"
        )
    observed, canary = await observe(body, target)
    annotations = body["metadata"].get("annotations") or {}
    hotfix = spec.hotfix or annotations.get(HOTFIX_ANNOTATION) == "true"
    window, policy = await window_for(spec, namespace, now)
    release = status.release
    pending = status.phase == Phase.waiting or (
        release is not None
        and release.stable_revision is not None
        and observed.target.revision != release.revision
    )
    results: list[GateResult] = []
    if pending:
        gates = gates_for(spec, policy.checklist if policy else None)
        results = await check_all(gates, spec, namespace, annotations)
    gate_view = tuple((r.name, r.met, r.message) for r in results)
    return target, canary, replace(observed, window=window, hotfix=hotfix, gates=gate_view)


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


async def _analyse(
    spec: RolloutSpec, status: RolloutStatus, observed: Observed, namespace: str, now: datetime
) -> tuple[RolloutStatus, Health, list[Event]]:
    """Evaluate the metrics when a round is due; summarise them for the planner either way."""
    assert spec.analysis is not None
    if status.phase != Phase.progressing:
        return status, Health(), []
    events: list[Event] = []
    due = parse_time(status.next_analysis_at)
    if due is None or now >= due:
        provider = await provider_for(spec.analysis, namespace)
        templates = await templates_for(spec, namespace)
        stage = (status.plan or [])[status.stage_index or 0] if status.plan else None
        promoted = stage is not None and stage.weight == 100 and observed.target.rolled_out
        round_ = await evaluate(spec, namespace=namespace, previous=status.metrics, provider=provider,
                                templates=templates, now=now, promoted=promoted)  # fmt: skip
        interval = parse_duration(spec.analysis.interval)
        status = status.model_copy(update={
            "metrics": round_.metrics, "next_analysis_at": timestamp(now + interval),
            "last_verdict": worst(m.verdict for m in round_.metrics),
        })  # fmt: skip
        events = round_.events
    limits = spec.analysis.limits or AnalysisLimits()
    grace = parse_duration(spec.analysis.interval)
    return status, health(status.metrics or [], limits, parse_time(status.stage_started_at), grace), events


def _earliest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


def _dump(status: RolloutStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")
