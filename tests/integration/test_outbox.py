"""Nothing said is lost, nothing is said twice: an operator killed right after it wrote a new
incident to status, before it told anyone or right after it posted the Events, tells what is
left when it starts again — each Event once, the notification once, with the id the status
recorded — on the real cluster, with traffic, Prometheus and a local receiver."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parachute.plan.fastlane import FAST_LANE_PREFIX
from tests.integration.analysed import NEW
from tests.integration.conftest import Cluster, RunningOperator, assert_never_refused, eventually
from tests.integration.test_recovery import BAD, ONE_STAGE, Receiver, Recovering, secret

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Recovering]:
    running = Recovering(crds, namespace, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def channel() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.mark.parametrize(
    "killed",
    [
        pytest.param("status-written", id="before-telling"),
        # The Events posted, the outbox not yet cleared: posted again, they are AlreadyExists.
        pytest.param("after-delivery", id="after-telling"),
    ],
)
def test_an_operator_killed_right_after_writing_an_incident_tells_it_once_when_it_starts_again(
    world: Recovering, channel: Receiver, operator_kubeconfig: Path, tmp_path: Path, killed: str
) -> None:
    notifications = [{"cloudEvents": {"urlSecretRef": secret(world, "bus", channel.url("/events"))}}]
    kill = {"PARACHUTE_KILL_AT": f"{killed}:RollingBack"}
    first = RunningOperator(operator_kubeconfig, tmp_path / "first.log", kill).start()
    second = RunningOperator(operator_kubeconfig, tmp_path / "second.log")
    try:
        world.set_app(NEW, BAD)
        world.release(spec={"steps": ONE_STAGE, "notifications": notifications})
        process = first.process
        assert process is not None
        eventually(lambda: process.poll() is not None, timeout=120, what="killed after writing the incident")

        # The incident is written, and so is all it owes; none of it was said.
        status = world.status()
        assert status["phase"] == "RollingBack"
        owed = {(e["reason"], e.get("target")): e["id"] for e in status["outbox"]}
        assert {("MetricFailed", None), ("RollingBack", None), ("RollingBack", 0)} <= set(owed)
        assert ("RollingBack" in world.reasons()) == (killed == "after-delivery")
        assert channel.received == []

        second.start()
        world.recovered()

        def told() -> list[dict[str, Any]]:
            sent = [b for p, _, b in channel.received if p == "/events"]
            recovered = any(b["type"].endswith("rollback.recovered") for b in sent)
            return sent if recovered and not world.status().get("outbox") else []

        sent = eventually(told, timeout=60, what="the recovery told and the outbox empty")
        reasons = Counter(world.reasons())
        assert reasons["RollingBack"] == 1, reasons
        # Each metric told failed once (two metrics may fail in one round; none is told twice).
        failed = [m.removeprefix(FAST_LANE_PREFIX).split()[0] for m in world.messages("MetricFailed")]
        assert failed and len(failed) == len(set(failed)), failed
        assert reasons["RolledBack"] == 1, reasons
        started = [b for b in sent if b["type"].endswith("rollback.started")]
        assert len(started) == 1, sent
        # The notification carries the id its outbox entry had before the kill: a receiver that
        # saw it already would drop it (CloudEvents: source and id).
        assert started[0]["id"] == owed[("RollingBack", 0)]
        assert len({b["id"] for b in sent}) == len(sent)
    finally:
        first.stop()
        second.stop()
    assert_never_refused(first)
    assert_never_refused(second)
