"""Checklist gates before the first stage (spec §6): which gates apply, and the pure checks.

A gate is satisfied by an annotation a pipeline sets, the release's change ticket, a condition
on another object, an HTTP check, or a Prometheus query (the object, the check and the query are fetched by `parachute.gating`). The playbook's checklist is a preset of
annotation gates; it applies to `high` risk unless the Rollout says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parachute.api import (
    CHANGE_TICKET_ANNOTATION,
    AnnotationGate,
    Checklist,
    ConditionGate,
    Gate,
    Risk,
    RolloutSpec,
)
from parachute.plan.stages import effective_risk

GATE_PREFIX = "gates.parachute.dev"

# The playbook's pre-release checklist ("inside a window" is the window itself).
PLAYBOOK_GATES = (
    "tests-passed", "review-approved", "rollback-plan", "dashboards-configured", "flags-configured",
    "on-call-assigned", "migrations-compatible", "stakeholders-notified",
)  # fmt: skip


@dataclass(frozen=True)
class GateResult:
    name: str
    met: bool
    message: str


def preset_gate(name: str) -> Gate:
    return Gate(name=name, annotation=AnnotationGate(key=f"{GATE_PREFIX}/{name}"))


def gates_for(spec: RolloutSpec, policy: Checklist | None) -> list[Gate]:
    """The Rollout's gates, its policy's, and the playbook preset where it applies; by name, once."""
    own = spec.checklist
    preset = (own.preset if own and own.preset else None) or (
        policy.preset if policy and policy.preset else None
    )
    if preset is None:
        preset = "playbook" if effective_risk(spec) == Risk.high else "none"
    chosen: dict[str, Gate] = {}
    if preset == "playbook":
        chosen.update({name: preset_gate(name) for name in PLAYBOOK_GATES})
    for checklist in (policy, own):
        for gate in (checklist.gates if checklist else None) or []:
            chosen[gate.name] = gate
    return list(chosen.values())


def annotation_result(gate: Gate, annotations: dict[str, str]) -> GateResult:
    assert gate.annotation is not None
    key, wanted = gate.annotation.key, gate.annotation.value
    value = annotations.get(key)
    if value is None or value == "":
        return GateResult(gate.name, False, f"annotation {key} is not set")
    if wanted is not None and value != wanted:
        return GateResult(gate.name, False, f"annotation {key} is {value!r}, not {wanted!r}")
    return GateResult(gate.name, True, f"annotation {key} is set")


def change_ticket_result(gate: Gate, ticket: str) -> GateResult:
    """Met when the release carries a change ticket (spec.changeTicket or the annotation)."""
    if not ticket:
        return GateResult(
            gate.name,
            False,
            f"no change ticket: set spec.changeTicket or the {CHANGE_TICKET_ANNOTATION} annotation",
        )
    return GateResult(gate.name, True, f"change ticket {ticket}")


def condition_result(gate: ConditionGate, found: dict[str, Any]) -> tuple[bool, str]:
    """Whether `found` has condition `gate.type` at `gate.status` (and not out of date)."""
    what = f"{gate.kind} {gate.name}"
    conditions = (found.get("status") or {}).get("conditions") or []
    condition = next((c for c in conditions if c.get("type") == gate.type), None)
    if condition is None:
        return False, f"{what} has no {gate.type} condition yet"
    generation = (found.get("metadata") or {}).get("generation")
    observed = condition.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return False, f"{what}'s {gate.type} condition is out of date (generation {observed} < {generation})"
    status = condition.get("status")
    said = f": {condition['message']}" if condition.get("message") else ""
    if status != gate.status:
        return False, f"{what} is {gate.type}={status}, not {gate.status}{said}"
    return True, f"{what} is {gate.type}={status}"


def unmet(results: list[GateResult]) -> str:
    """One line naming every unmet gate ("" when all are met)."""
    return "; ".join(f"gate {r.name}: {r.message}" for r in results if not r.met)
