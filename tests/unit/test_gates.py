"""Checklist gates (spec §6): which apply, and annotation checks; the planner waits on them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from parachute.api import Checklist, ConditionGate, Gate, Phase
from parachute.plan.checklist import PLAYBOOK_GATES, annotation_result, condition_result, gates_for
from tests.unit.world import Story, World, spec


def test_the_playbook_checklist_applies_to_high_risk_by_default() -> None:
    assert [g.name for g in gates_for(spec(risk="high"), None)] == list(PLAYBOOK_GATES)
    assert gates_for(spec(risk="medium"), None) == []
    assert gates_for(spec(risk="high", checklist={"preset": "none"}), None) == []


def test_a_rollout_and_its_policy_add_their_own_gates() -> None:
    policy = Checklist.model_validate(
        {"gates": [{"name": "change-ticket", "annotation": {"key": "x/ticket"}}]}
    )
    own = {"gates": [{"name": "smoke", "http": {"url": "http://smoke.test/ok"}}]}
    names = [g.name for g in gates_for(spec(risk="low", checklist=own), policy)]
    assert names == ["change-ticket", "smoke"]


def test_annotation_gates() -> None:
    gate = Gate.model_validate({"name": "review", "annotation": {"key": "ci/review", "value": "approved"}})
    assert not annotation_result(gate, {}).met
    assert "is 'pending', not 'approved'" in annotation_result(gate, {"ci/review": "pending"}).message
    assert annotation_result(gate, {"ci/review": "approved"}).met


def test_an_unmet_gate_holds_the_start_and_names_the_gate() -> None:
    story = Story(spec(risk="medium", waits={"min": "1m"}), World())
    story.tick()
    story.world.revision = "rev-2"
    story.world.gates = (("tests-passed", False, "annotation gates.parachute.dev/tests-passed is not set"),)
    decision = story.tick(timedelta(seconds=1))
    assert decision.status.phase == Phase.waiting
    assert "waits for its checklist: gate tests-passed: annotation" in decision.status.message
    assert decision.status.gates[0].name == "tests-passed" and decision.status.gates[0].met is False
    story.world.gates = (("tests-passed", True, "set"),)
    assert story.tick(timedelta(seconds=1)).status.phase == Phase.progressing


# ---------------------------------------------------------------------------- condition gates


def deployment_with(conditions: list[dict[str, object]], generation: int = 1) -> dict[str, object]:
    return {"metadata": {"generation": generation}, "status": {"conditions": conditions}}


CONDITION = ConditionGate(apiVersion="apps/v1", kind="Deployment", name="db", type="Available")


@pytest.mark.parametrize(
    ("conditions", "met", "message"),
    [
        ([{"type": "Available", "status": "True"}], True, "Deployment db is Available=True"),
        ([{"type": "Available", "status": "False", "message": "0 of 1 ready"}], False,
         "Deployment db is Available=False, not True: 0 of 1 ready"),
        ([], False, "Deployment db has no Available condition yet"),
        ([{"type": "Available", "status": "True", "observedGeneration": 1}], False,
         "Deployment db's Available condition is out of date (generation 1 < 2)"),
    ],
)  # fmt: skip
def test_a_condition_gate_reads_the_named_condition(
    conditions: list[dict[str, object]], met: bool, message: str
) -> None:
    generation = 2 if any("observedGeneration" in c for c in conditions) else 1
    assert condition_result(CONDITION, deployment_with(conditions, generation)) == (met, message)
