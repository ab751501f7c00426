"""The flag level asks the app (spec.featureFlags.verify), on the real cluster: the operator lists
the pods serving the release and asks each one's `/health` at its IP and port, reaching them
through the testbed's pod network (the proxy `--app-proxy` names, as an operator outside the
cluster network would), never through a copy of what it reports.

An app that follows its flag store says the flag is off once it is, and the flag level recovers
the release with the check passing. An app that read the flag once at start-up (a cached flag)
keeps serving the new path and says so: the level escalates once the check's grace is over,
long before the level's five-minute budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.dataplane import App, StartupSetting
from testbed.demoapp import FlagSource
from testbed.podnet import PodNetwork
from tests.integration.conftest import Cluster, RunningOperator, told
from tests.integration.test_recovery import BAD, NEW, ONE_STAGE, Recovering, assert_recovery_time_recorded

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

VERIFY = {
    "path": "/health",
    "jsonPath": "features.new-checkout",
    "expect": False,
    "grace": "5s",
    "port": 8080,
}
FLAGS = {"configMapRef": {"name": "checkout-flags"}, "flags": ["new-checkout"], "verify": VERIFY}


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Recovering]:
    running = Recovering(crds, namespace, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def network(world: Recovering) -> Iterator[PodNetwork]:
    running = PodNetwork.for_plane(world.plane).start()
    yield running
    running.stop()


@pytest.fixture
def reaching_pods(
    operator_kubeconfig: Path, tmp_path: Path, network: PodNetwork
) -> Iterator[RunningOperator]:
    """The operator, reaching pods through the testbed's pod network."""
    running = RunningOperator(
        operator_kubeconfig, tmp_path / "operator.log", args=["--app-proxy", network.url]
    ).start()
    yield running
    running.stop()
    assert 'is forbidden: User "system:serviceaccount:' not in running.output, running.log


def messages(world: Recovering, reason: str) -> list[str]:
    events = world.cluster.core.list_namespaced_event(
        world.namespace, field_selector="involvedObject.name=checkout,involvedObject.kind=Rollout"
    ).items
    return [e.message for e in events if e.reason == reason]


def pod_ips(world: Recovering, canary: bool) -> set[str]:
    pods = world.cluster.core.list_namespaced_pod(world.namespace, label_selector="app=checkout").items
    return {
        p.status.pod_ip
        for p in pods
        if p.status.pod_ip and ((p.metadata.labels or {}).get("parachute.dev/canary") == "true") == canary
    }


def asked_ips(network: PodNetwork) -> set[str]:
    return {url.split("//", 1)[1].split(":", 1)[0] for url in network.requests}


def flag_level(incident: dict[str, Any]) -> dict[str, Any]:
    level = incident["levels"][0]
    assert level["level"] == "flag", incident
    return dict(level)


def test_an_app_that_follows_its_flags_is_recovered_by_the_flag_level_with_the_check_passing(
    world: Recovering, network: PodNetwork, reaching_pods: RunningOperator
) -> None:
    store = world.config_map("checkout-flags", {"new-checkout": "true"})
    # Image 2.0's new code path is bad; its flag SDK follows the mounted store.
    world.set_app(NEW, App(flag=FlagSource(store.path("new-checkout"), "new-checkout"), when_flag_on=BAD))
    world.release(spec={"steps": ONE_STAGE, "featureFlags": FLAGS})
    stable_ips = pod_ips(world, canary=False)
    incident = world.recovered()
    assert_recovery_time_recorded(incident, "flag")
    assert [level["level"] for level in incident["levels"]] == ["flag"]
    level = flag_level(incident)
    said = level["flagCheck"]["said"]
    assert level["appliedAt"] and "GET /health says features.new-checkout is false" in said, level
    assert world.data("checkout-flags")["new-checkout"] == "false"
    # The canary's pods were asked at their IPs and the port given; stable's never.
    assert network.requests and all(url.endswith(":8080/health") for url in network.requests)
    assert asked_ips(network) and not asked_ips(network) & stable_ips, (network.requests, stable_ips)
    assert "RecoveryEscalated" not in told(world.reasons, "RecoveryApplied")


def test_an_app_that_keeps_serving_the_new_path_escalates_once_the_grace_is_over(
    world: Recovering, network: PodNetwork, reaching_pods: RunningOperator
) -> None:
    world.config_map("checkout-flags", {"new-checkout": "true"})
    # Image 2.0 reads the flag once, when its pod starts: switching it off changes nothing it serves.
    cached = StartupSetting("checkout-flags", "new-checkout", "new-checkout")
    world.set_app(NEW, App(flag=cached, when_flag_on=BAD))
    world.release(spec={"steps": ONE_STAGE, "featureFlags": FLAGS})  # the flag level's budget: 5m
    incident = world.recovered()
    assert [level["level"] for level in incident["levels"]] == ["flag", "code"]
    assert_recovery_time_recorded(incident, "code")
    level = flag_level(incident)
    # Escalated within seconds of the grace, not at the end of the five-minute budget.
    assert "appliedAt" not in level and level["seconds"] < 60, level
    check = level["flagCheck"]
    assert check["mismatchSince"] and "says features.new-checkout is true, not false" in check["said"], check
    (why,) = messages(world, "RecoveryEscalated")
    assert "level flag: the app does not report the flags off after" in why and "(grace 5s)" in why, why
    assert "says features.new-checkout is true, not false" in why and why.endswith("moving to level code"), (
        why
    )
    assert world.data("checkout-flags")["new-checkout"] == "false"  # the store was switched all the same
