"""The change ticket on the real cluster: a ReleasePolicy's "change ticket present" gate holds a
release until the pipeline sets the annotation; the ticket is then kept in the release record,
named in the ReleaseStarted and RollingBack Events, carried into the incident and the Slack and
CloudEvents notifications, and printed by the postmortem draft."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from parachute.api import CHANGE_TICKET_ANNOTATION
from parachute.cli import postmortem
from tests.integration.analysed import NEW, Analysed
from tests.integration.conftest import Cluster, RunningOperator, eventually
from tests.integration.test_recovery import BAD, ONE_STAGE, Receiver, secret

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

GROUP, VERSION = "parachute.dev", "v1alpha1"


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Analysed]:
    running = Analysed(crds, namespace, tmp_path)
    yield running
    running.stop()


def messages(world: Analysed, reason: str) -> list[str]:
    events = world.cluster.core.list_namespaced_event(
        world.namespace, field_selector="involvedObject.name=checkout,involvedObject.kind=Rollout"
    ).items
    return [e.message for e in events if e.reason == reason]


def test_a_policy_asks_for_a_change_ticket_and_the_ticket_follows_the_release_into_its_incident(
    world: Analysed, operator: RunningOperator
) -> None:
    policy_name = f"tickets-{world.namespace}"
    policy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ReleasePolicy", "metadata": {"name": policy_name},
              "spec": {"checklist": {"gates": [{"name": "change-ticket", "changeTicket": {}}]}}}  # fmt: skip
    world.cluster.custom.create_cluster_custom_object(GROUP, VERSION, "releasepolicies", policy)
    channel = Receiver()
    try:
        notifications = [
            {"slack": {"webhookSecretRef": secret(world, "slack", channel.url("/slack"))}},
            {"cloudEvents": {"urlSecretRef": secret(world, "bus", channel.url("/events"))}},
        ]
        world.set_app(NEW, BAD)
        world.release(
            spec={"steps": ONE_STAGE, "policyRef": {"name": policy_name}, "notifications": notifications}
        )

        def waiting() -> bool:
            status = world.status()
            return status.get("phase") == "Waiting" and "gate change-ticket: no change ticket" in (
                status.get("message") or ""
            )

        eventually(waiting, timeout=60, what="held for its change ticket")
        annotate = {"metadata": {"annotations": {CHANGE_TICKET_ANNOTATION: "CHG-4711"}}}
        world.cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, world.namespace, "rollouts", "checkout", annotate)  # fmt: skip
        eventually(lambda: (world.status().get("release") or {}).get("changeTicket") == "CHG-4711", timeout=60,
                   what="the ticket in the release record")  # fmt: skip

        incident = eventually(
            lambda: (world.status().get("incidents") or [{}])[-1].get("recoveredAt") and world.status()["incidents"][-1],
            timeout=180, what="rolled back",
        )  # fmt: skip
        assert incident["changeTicket"] == "CHG-4711"
        status = world.status()
        assert any(g["name"] == "change-ticket" and g["met"] for g in status.get("gates") or [])
        assert any("(change ticket CHG-4711)" in m for m in messages(world, "ReleaseStarted"))
        assert any("(change ticket CHG-4711)" in m for m in messages(world, "RollingBack"))

        def heard() -> bool:
            slack = [b["text"] for p, _, b in channel.received if p == "/slack"]
            events = [b for p, _, b in channel.received if p == "/events"]
            return any("RolledBack" in t for t in slack) and any(
                e["type"].endswith("recovered") for e in events
            )

        eventually(heard, timeout=30, what="notifications")
        assert all("CHG-4711" in b["text"] for p, _, b in channel.received if p == "/slack")
        assert all(b["data"]["changeTicket"] == "CHG-4711" for p, _, b in channel.received if p == "/events")

        body = world.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, world.namespace, "rollouts", "checkout"
        )
        assert "Change ticket: **CHG-4711**." in postmortem.draft(body, [], None, datetime.now(UTC))
    finally:
        channel.stop()
        world.cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "releasepolicies", policy_name)
