"""A notification receiver that hangs holds nothing up: on the real cluster, with traffic and
Prometheus, a canary that fails is rolled back while every channel it tells (Slack, CloudEvents,
the status page) sits on one receiver that reads each request and never finishes its answer;
another Rollout's release goes on meanwhile. What the rollback owes stays in the Rollout's
outbox, with why it is not delivered, and once the receiver answers again each notification
arrives there once, under the id status recorded, and the outbox empties."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.hanging_receiver import HangingReceiver
from tests.integration.analysed import GROUP, NEW, PLURAL, VERSION
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)
from tests.integration.test_kill_points import canary_gone_or_zero
from tests.integration.test_recovery import BAD, ONE_STAGE, Recovering, secret

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

SLACK = ("/slack/oncall", "/slack/releases")
BUSES = ("/events/a", "/events/b", "/events/c")
PAGE = "/v1/pages/pg-1/incidents"


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Recovering]:
    running = Recovering(crds, namespace, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def receiver() -> Iterator[HangingReceiver]:
    # A status line, then a byte a second: a read timeout alone never ends it.
    hanging = HangingReceiver("trickle")
    yield hanging
    hanging.stop()


def channels(world: Recovering, receiver: HangingReceiver) -> list[dict[str, Any]]:
    """Two Slack channels, three CloudEvents buses and a status page: all on the receiver."""
    told: list[dict[str, Any]] = []
    for index, path in enumerate(SLACK):
        told.append({"slack": {"webhookSecretRef": secret(world, f"slack-{index}", receiver.url(path))}})
    for index, path in enumerate(BUSES):
        told.append({"cloudEvents": {"urlSecretRef": secret(world, f"bus-{index}", receiver.url(path))}})
    told.append({"statusPage": {"pageIdSecretRef": secret(world, "page-id", "pg-1"),
                                "tokenSecretRef": secret(world, "page-token", "sp-token"),
                                "apiURL": receiver.url()}})  # fmt: skip
    return told


def adopt_cart(cluster: Cluster, namespace: str) -> str:
    """Another Rollout of the same operator, `cart`, adopted; its stable revision."""
    cluster.apps.create_namespaced_deployment(namespace, deployment("cart", replicas=2))
    body = rollout("cart", targetRef={"name": "cart"}, risk="medium", waits={"min": "3s", "max": "6s"})
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_adopted(cluster, namespace, "cart")
    return str(rollout_status(cluster, namespace, "cart")["release"]["stableRevision"])


def released(cluster: Cluster, namespace: str, name: str, before: str) -> bool:
    status = rollout_status(cluster, namespace, name)
    release = status.get("release") or {}
    return (
        status.get("phase") == "Healthy"
        and release.get("revision") == release.get("stableRevision") != before
    )


def test_a_receiver_that_hangs_holds_up_no_rollback_and_no_other_release_and_hears_each_notification_once(
    world: Recovering, receiver: HangingReceiver, operator: RunningOperator
) -> None:
    cart_stable = adopt_cart(world.cluster, world.namespace)
    world.set_app(NEW, BAD)
    world.release(
        spec={"steps": ONE_STAGE, "customerFacing": True, "notifications": channels(world, receiver)}
    )
    eventually(lambda: receiver.held, timeout=120, what="the rollback's first notification, hanging")

    # With every channel hanging, the rollback ends and another release goes through.
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "cart:2.0"}]}}}}
    world.cluster.apps.patch_namespaced_deployment("cart", world.namespace, image)
    eventually(lambda: world.status().get("phase") == "RolledBack", timeout=120, what="RolledBack")
    eventually(lambda: canary_gone_or_zero(world.cluster, world.namespace), timeout=60, what="canary at 0")
    eventually(lambda: released(world.cluster, world.namespace, "cart", cart_stable), timeout=120,
               what="cart released")  # fmt: skip
    assert receiver.answered == []  # all of it while not one request had its answer

    # What is not delivered stays owed in status, saying why.
    def owed_and_failing() -> dict[tuple[str, int], str]:
        entries = [e for e in world.status().get("outbox") or [] if e.get("target") is not None]
        owed = {(e["reason"], e["target"]): e["id"] for e in entries}
        every = {(reason, target) for reason in ("RollingBack", "RolledBack") for target in range(5)}
        started = [e for e in entries if e["reason"] == "RollingBack"]
        return owed if every <= set(owed) and all(e.get("lastError") for e in started) else {}

    owed = eventually(owed_and_failing, timeout=90, what="the notifications owed, their failures recorded")
    errors = [e["lastError"] for e in world.status()["outbox"] if e.get("lastError")]
    assert any("no answer within" in error for error in errors), errors

    # The status page is tried on its own schedule, not with the notifications: its failure is
    # recorded by a reconcile of its own, before or after theirs.
    def page_failing() -> dict[str, object]:
        page: dict[str, object] = world.status()["incidents"][-1].get("statusPage") or {}
        failures = page.get("failures", 0)
        return page if isinstance(failures, int) and failures >= 1 else {}

    page = eventually(page_failing, timeout=90, what="the status page's failure recorded")
    assert "incidentId" not in page, page

    receiver.answer()

    def told() -> bool:
        status = world.status()
        record = status["incidents"][-1].get("statusPage") or {}
        return not status.get("outbox") and bool(record.get("incidentId")) and not record.get("failures")

    eventually(told, timeout=300, what="every notification delivered and the outbox empty")
    answered = Counter(r.path for r in receiver.answered if r.method == "POST")
    for index, path in enumerate(BUSES):
        events = [r.body for r in receiver.answered if r.path == path]
        # Each once, under the id its outbox entry had while it hung: a receiver dedupes on it.
        assert sorted(e["id"] for e in events) == sorted(
            owed[(reason, index + len(SLACK))] for reason in ("RollingBack", "RolledBack")
        ), events
        assert sorted(e["type"].rsplit(".", 1)[-1] for e in events) == ["recovered", "started"]
    for path in SLACK:
        texts = [r.body["text"] for r in receiver.answered if r.path == path]
        # Each once, though not in order: each entry is tried again on its own backoff.
        assert sorted(text.split("*")[1] for text in texts) == ["RolledBack", "RollingBack"], texts
    assert answered[PAGE] == 1  # one page incident opened, however often the hung POST was tried
