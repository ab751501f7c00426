"""Checklist gates before the first stage (spec §6): which gates apply, and the pure checks.

A gate is satisfied by an annotation a pipeline sets, an HTTP check, or a Prometheus query
(those two are measured by `parachute.gating`). The playbook's checklist is a preset of
annotation gates; it applies to `high` risk unless the Rollout says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from parachute.api import AnnotationGate, Checklist, Gate, Risk, RolloutSpec
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


def unmet(results: list[GateResult]) -> str:
    """One line naming every unmet gate ("" when all are met)."""
    return "; ".join(f"gate {r.name}: {r.message}" for r in results if not r.met)
