"""The change ticket a release carries: where it is read from, the gate that asks for it, and
where it shows (release record, incident, Events, notifications, postmortem draft)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pytest

from parachute.api import CHANGE_TICKET_ANNOTATION, ChangeTicketGate, Gate, Phase
from parachute.cli import postmortem
from parachute.notify.webhooks import cloud_event, slack_payload
from parachute.plan.gates import change_ticket_result
from parachute.plan.model import Observed
from parachute.reconcile import change_ticket
from tests.unit.test_recovery import breach, rollout, started
from tests.unit.world import Story, World, spec


@dataclass
class Ticketed(World):
    """A world whose pipeline names a change ticket (as reconcile reads it)."""

    ticket: str = ""

    def observe(self, now: datetime) -> Observed:
        return replace(super().observe(now), change_ticket=self.ticket)


def holder(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "checkout", "namespace": "shop", "annotations": annotations or {}}}


TICKET = {CHANGE_TICKET_ANNOTATION: "CHG-2"}


@pytest.mark.parametrize(
    ("fields", "deployment", "rollout_", "expected"),
    [
        pytest.param({"changeTicket": "CHG-1"}, TICKET, TICKET, "CHG-1", id="the-field-wins"),
        pytest.param(
            {}, TICKET, {CHANGE_TICKET_ANNOTATION: "CHG-3"}, "CHG-2", id="deployment-before-rollout"
        ),
        pytest.param({}, {}, {CHANGE_TICKET_ANNOTATION: " CHG-3 "}, "CHG-3", id="rollout-annotation-trimmed"),
        pytest.param({}, {CHANGE_TICKET_ANNOTATION: ""}, {}, "", id="empty-is-none"),
        pytest.param({}, {}, {}, "", id="none"),
    ],
)
def test_the_ticket_is_read_from_the_field_then_the_annotations(
    fields: dict[str, Any], deployment: dict[str, str], rollout_: dict[str, str], expected: str
) -> None:
    assert change_ticket(spec(**fields), holder(rollout_), holder(deployment)) == expected


@pytest.mark.parametrize(
    ("ticket", "met", "says"),
    [
        pytest.param("CHG-7", True, "change ticket CHG-7", id="present"),
        pytest.param(
            "",
            False,
            f"no change ticket: set spec.changeTicket or the {CHANGE_TICKET_ANNOTATION}",
            id="absent",
        ),
    ],
)
def test_the_change_ticket_gate(ticket: str, met: bool, says: str) -> None:
    result = change_ticket_result(Gate(name="change-ticket", change_ticket=ChangeTicketGate()), ticket)
    assert result.met is met and says in result.message


def test_a_gate_accepts_change_ticket_as_its_one_check() -> None:
    gate = Gate.model_validate({"name": "change-ticket", "changeTicket": {}})
    assert gate.change_ticket is not None


def test_the_ticket_is_kept_in_the_release_and_the_incident_and_named_in_events() -> None:
    story = started(Story(rollout(), Ticketed(ticket="CHG-42")))
    assert story.status.release is not None and story.status.release.change_ticket == "CHG-42"
    started_ = next(e for e in story.events if e.reason == "ReleaseStarted")
    assert started_.message.endswith("(change ticket CHG-42)")
    incident = breach(story)
    assert incident.change_ticket == "CHG-42"
    rolling = next(e for e in story.events if e.reason == "RollingBack")
    assert "(change ticket CHG-42)" in rolling.message


def test_a_waiting_release_takes_the_ticket_it_was_given_while_waiting() -> None:
    world = Ticketed(gates=(("change-ticket", False, "no change ticket"),))
    story = Story(rollout(), world)
    story.tick()
    world.revision = "rev-2"
    story.tick()
    assert story.status.phase == Phase.waiting
    world.ticket, world.gates = "CHG-9", (("change-ticket", True, "change ticket CHG-9"),)
    story.tick()
    assert story.status.phase == Phase.progressing
    assert story.status.release is not None and story.status.release.change_ticket == "CHG-9"
    assert story.events[-1].reason == "ReleaseStarted" and "CHG-9" in story.events[-1].message


def test_no_ticket_adds_nothing_to_the_messages() -> None:
    story = started(Story(rollout(), Ticketed()))
    breach(story)
    assert all("change ticket" not in e.message for e in story.events)
    assert story.status.incidents and story.status.incidents[-1].change_ticket is None


INCIDENT = {
    "id": "rev-2-1",
    "reason": "error-rate",
    "startedAt": "2026-11-25T10:30:00Z",
    "changeTicket": "CHG-42",
}


def test_notifications_carry_the_ticket() -> None:
    body = holder()
    slack = slack_payload(body, "RolledBack", "recovered by the code level", None, INCIDENT)
    assert slack["text"].endswith("(change ticket CHG-42)")
    named = slack_payload(body, "RollingBack", "rolling back rev-2 (change ticket CHG-42)", None, INCIDENT)
    assert named["text"].count("CHG-42") == 1
    assert cloud_event(body, "RolledBack", "recovered", INCIDENT)["data"]["changeTicket"] == "CHG-42"
    assert cloud_event(body, "RolledBack", "recovered", None)["data"]["changeTicket"] is None


def test_the_postmortem_draft_names_the_ticket() -> None:
    body = {**holder(), "spec": {"targetRef": {"name": "checkout"}},
            "status": {"incidents": [{**INCIDENT, "revision": "rev-2"}]}}  # fmt: skip
    text = postmortem.draft(body, [], None, datetime.fromisoformat("2026-11-26T10:00:00+00:00"))
    assert "Change ticket: **CHG-42**." in text
