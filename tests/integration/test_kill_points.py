"""The operator killed (SIGKILL) at its kill points, mid-release and mid-rollback, then started
again: every release ends where it should, no action is done twice, no state is lost.

Each scenario starts the operator with PARACHUTE_KILL_AT naming one point in its namespace,
waits for it to die there, and starts it with the next point: a chain of kills along one
release or rollback (`parachute.faults`). The last start is without the variable. Then:

- where it should end: the phase, the stable revision, the flag, the configuration, the
  template, the route as status and the cluster hold them;
- nothing twice: each Deployment and route at the generation its intended changes give it
  (one each; the same as a run without kills), each action's Event exactly once, one
  incident, its levels each applied once, each overwritten object copied once;
- nothing lost: what status recorded before a kill (the stable revision, the incident, its
  levels, the snapshots) is there after it.

A decision's Events are recorded in the status write that makes it (`status.outbox`): a kill
between that write and the Events leaves them to the next process, which tells them once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from parachute.routing.client import ApiServerClient
from parachute.routing.objects import Ref
from testbed import crds as router_crds
from testbed import routes
from testbed.dataplane import App, StartupSetting
from testbed.demoapp import Behaviour
from tests.integration.analysed import INTERVAL, NEW, STABLE
from tests.integration.conftest import (
    Cluster,
    deployment,
    event_reasons,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)
from tests.integration.test_recovery import Recovering, flag_store

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
KILL_AT = "PARACHUTE_KILL_AT"
IMAGE = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
# A reconcile that failed while the operator was away, and the next that worked: faults told.
FAULT_TOLD = {"ReconcileFailed", "Reconciled"}
# A metric's verdict told each time it changes: what was seen, not an action; it may come again.
OBSERVED = "Metric"
BAD = Behaviour(error_rate=0.2)  # clearly past 5% on a few hundred requests
ONE_STAGE = [{"name": "canary", "weight": 50, "minWait": "5m"}]


# One process imports the operator once and forks a fresh one for each start: a kill is
# followed by the next start at once, not by seconds of importing (the chains here start it
# some forty times). Each child takes its environment, reads its kill point afresh (the
# variable is read on import, so `parachute.faults` is loaded again) and writes to its log.
# Children are reaped by themselves (SIGCHLD ignored): a dead one's pid is gone.
FORKS = """
import importlib, json, os, signal, sys
import parachute.__main__ as entry, parachute.handlers, parachute.faults as faults
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
for line in sys.stdin:
    asked = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.pop(faults.KILL_AT_ENV, None)
        os.environ.update(asked["env"])
        importlib.reload(faults)
        log = os.open(asked["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(log, 1), os.dup2(log, 2), os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        code = 1
        try:
            code = entry.main(["run", "--verbose"]) or 0
        finally:
            os._exit(code)
    print(pid, flush=True)
"""


class Forks:
    """`python -m parachute run --verbose` under the operator's ServiceAccount, started at once."""

    def __init__(self, kubeconfig: Path) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        env.pop(KILL_AT, None)
        self.process = subprocess.Popen([sys.executable, "-c", FORKS], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)  # fmt: skip

    def start(self, log: Path, env: dict[str, str]) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"log": str(log), "env": env}).encode() + b"\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Killed:
    """The operator of one test, started again and again: each time with a kill point, or
    without one to finish."""

    def __init__(self, forks: Forks, log: Path, namespace: str) -> None:
        self.forks, self.log, self.namespace = forks, log, namespace
        self.running: int | None = None
        self.kills: list[str] = []

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def die_at(self, *points: str, timeout: float = 90) -> None:
        """For each point in turn: start the operator told to die there, and see it die there."""
        assert self.running is None, "stop the running operator first"
        for point in points:
            name, _, nth = point.partition("#")
            said = f"killed at {name} in {self.namespace} (reach {nth or 1})"
            before = self.output().count(said)
            target = f"{name}@{self.namespace}" + (f"#{nth}" if nth else "")
            pid = self.forks.start(self.log, {KILL_AT: target})
            deadline = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"the operator never reached {point} within {timeout}s; log: {self.log}")
            assert self.output().count(said) == before + 1, (point, self.output()[-3000:])
            self.kills.append(point)

    def finish(self) -> None:
        """The operator without a kill point, running until `stop`."""
        assert self.running is None, "stop the running operator first"
        self.running = self.forks.start(self.log, {})

    def stop(self) -> None:
        """Killed too, at rest: a clean stop waits for kopf's watch streams to close."""
        if self.running is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.running, signal.SIGKILL)
            while alive(self.running):
                time.sleep(0.05)
            self.running = None
        assert 'is forbidden: User "system:serviceaccount:' not in self.output(), f"refused; {self.log}"


@pytest.fixture(scope="module")
def forks(operator_kubeconfig: Path) -> Iterator[Forks]:
    started = Forks(operator_kubeconfig)
    yield started
    started.close()


@pytest.fixture
def killed(forks: Forks, namespace: str, tmp_path: Path) -> Iterator[Killed]:
    operator = Killed(forks, tmp_path / "operator.log", namespace)
    yield operator
    operator.stop()


def assert_each_told_once(told: list[str] | Callable[[], list[str]], expected: list[str]) -> None:
    """Each Event of `expected` once: one cut off by a kill after its status write is told by the
    next process from the outbox that write recorded, and never twice. Given a reader, the
    Events are read until all are there (they follow the status they are owed by)."""
    if callable(told):
        read = told
        told = eventually(
            lambda: (r := read()) and set(expected) <= set(r) and r, timeout=20, what=str(expected)
        )
    reasons = told
    counts = Counter(r for r in reasons if r not in FAULT_TOLD and not r.startswith(OBSERVED))
    twice = {r: n for r, n in counts.items() if n > 1}
    assert not twice, f"told more than once: {twice}; {reasons}"
    missing = [r for r in expected if r not in counts]
    assert not missing, f"never told: {missing}; {reasons}"


def generation(cluster: Cluster, namespace: str, name: str) -> int:
    return int(cluster.apps.read_namespaced_deployment(name, namespace).metadata.generation)


def canary_gone_or_zero(cluster: Cluster, namespace: str) -> bool:
    try:
        return cluster.apps.read_namespaced_deployment("checkout-canary", namespace).spec.replicas == 0
    except ApiException as error:
        return error.status == 404


# ---------------------------------------------------------------------------- a release


def test_a_release_killed_at_every_write_it_makes_ends_released_with_each_write_once(
    crds: Cluster, namespace: str, killed: Killed
) -> None:
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "2s", "max": "4s"}
    )
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    # Adoption: its status written, the target not yet paused; then paused, its last act.
    killed.die_at("status-written:Healthy", "target-paused")
    wait_adopted(crds, namespace, timeout=5)
    stable = rollout_status(crds, namespace)["release"]["stableRevision"]

    crds.apps.patch_namespaced_deployment("checkout", namespace, IMAGE)
    killed.die_at(
        "status-written:Progressing",  # the release started in status; no canary yet
        "canary-created",  # stage 1's canary made
        "canary-scaled",  # grown for stage 2
        "status-written:Progressing#2",  # the second decision after that written (stage 3's at the latest)
        "target-unpaused",  # stage 3: the target let roll
        "target-paused",  # rolled, paused again
        "canary-retired",  # the canary at 0
    )
    killed.finish()

    def released() -> dict[str, Any] | None:
        status = rollout_status(crds, namespace)
        release = status.get("release") or {}
        done = status.get("phase") == "Healthy" and release.get("stableRevision") == release.get("revision")
        return status if done and release["stableRevision"] != stable else None

    eventually(released, timeout=90, what="released")
    eventually(lambda: canary_gone_or_zero(crds, namespace), what="canary retired")
    # The target: paused on adoption (2), the new image (3), unpaused (4), paused again (5);
    # the canary: made (1), grown (2), retired (3). Each once, whatever the kills cut.
    assert generation(crds, namespace, "checkout") == 5
    assert generation(crds, namespace, "checkout-canary") == 3
    assert crds.apps.read_namespaced_deployment("checkout", namespace).spec.paused
    eventually(lambda: (r := event_reasons(crds, namespace)) and "ReleaseCompleted" in r and r,
                         what="ReleaseCompleted")  # fmt: skip
    assert_each_told_once(
        lambda: event_reasons(crds, namespace),
        ["Adopted", "ReleaseStarted", "StageAdvanced", "Promoting", "ReleaseCompleted"],
    )


def test_a_release_superseded_and_killed_after_the_canary_is_replaced_moves_the_canary_once(
    crds: Cluster, namespace: str, killed: Killed
) -> None:
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "2s", "max": "4s"}
    )
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    killed.die_at("target-paused")
    crds.apps.patch_namespaced_deployment("checkout", namespace, IMAGE)
    killed.die_at("canary-created")
    # A second image while the operator is away: the canary moves to it (a guarded replace).
    third = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:3.0"}]}}}}
    crds.apps.patch_namespaced_deployment("checkout", namespace, third)
    killed.die_at("canary-replaced", "canary-scaled")
    killed.finish()

    def released() -> bool:
        status = rollout_status(crds, namespace)
        release = status.get("release") or {}
        return status.get("phase") == "Healthy" and release.get("revision") == release.get("stableRevision")

    eventually(released, timeout=90, what="3.0 released")
    eventually(lambda: canary_gone_or_zero(crds, namespace), what="canary retired")
    canary = crds.apps.read_namespaced_deployment("checkout-canary", namespace)
    assert canary.spec.template.spec.containers[0].image == "checkout:3.0"
    # The canary: made (1), moved to 3.0 (2), grown (3), retired (4); the target: paused (2),
    # 2.0 (3), 3.0 (4), unpaused (5), paused again (6).
    assert canary.metadata.generation == 4
    assert generation(crds, namespace, "checkout") == 6
    eventually(lambda: (r := event_reasons(crds, namespace)) and "ReleaseCompleted" in r and r,
                         what="ReleaseCompleted")  # fmt: skip
    assert_each_told_once(
        lambda: event_reasons(crds, namespace),
        ["ReleaseStarted", "ReleaseSuperseded", "Promoting", "ReleaseCompleted"],
    )


def test_a_configuration_release_killed_after_the_target_restarts_restarts_it_once(
    crds: Cluster, namespace: str, killed: Killed
) -> None:
    crds.core.create_namespaced_config_map(namespace, {"metadata": {"name": "checkout-config"},
                                                       "data": {"settings": "retries=3"}})  # fmt: skip
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout("checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "2s", "max": "4s"},
                   configRefs=[{"name": "checkout-config"}])  # fmt: skip
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    killed.die_at("target-paused")
    stable = rollout_status(crds, namespace)["release"]["stableRevision"]
    # A change to a tracked ConfigMap is a release of its own; promoted, the target's pods restart.
    crds.core.patch_namespaced_config_map("checkout-config", namespace, {"data": {"settings": "retries=5"}})
    killed.die_at("canary-created", "target-restarted")
    killed.finish()

    def released() -> bool:
        status = rollout_status(crds, namespace)
        release = status.get("release") or {}
        return (
            status.get("phase") == "Healthy"
            and release.get("revision") == release.get("stableRevision") != stable
        )

    eventually(released, timeout=90, what="the configuration released")
    eventually(lambda: canary_gone_or_zero(crds, namespace), what="canary retired")
    target = crds.apps.read_namespaced_deployment("checkout", namespace)
    assert "kubectl.kubernetes.io/restartedAt" in (target.spec.template.metadata.annotations or {})
    # The target: paused (2), restarted (3), unpaused (4), paused again (5); the canary: made (1),
    # grown (2), retired (3). The same as without kills.
    assert target.metadata.generation == 5
    assert generation(crds, namespace, "checkout-canary") == 3
    eventually(lambda: (r := event_reasons(crds, namespace)) and "ReleaseCompleted" in r and r,
                         what="ReleaseCompleted")  # fmt: skip
    assert_each_told_once(
        lambda: event_reasons(crds, namespace), ["ReleaseStarted", "Promoting", "ReleaseCompleted"]
    )


# ---------------------------------------------------------------------------- a routed release, deleted


GATEWAY = {
    "gatewayAPI": {"httpRoute": "checkout", "service": "checkout", "ruleName": "main"},
    "scaleDownDelay": "1s",
}


@pytest.fixture
def gateway(crds: Cluster) -> Cluster:
    router_crds.install(crds.api, *router_crds.GATEWAY_API)
    return crds


def test_a_routed_release_killed_at_each_route_write_and_deleted_mid_give_back_leaves_the_route_as_it_was(
    gateway: Cluster, namespace: str, killed: Killed
) -> None:
    client = ApiServerClient(gateway.api)
    route = Ref(routes.GATEWAY_V1, "HTTPRoute", namespace, "checkout")
    for body in (routes.service(namespace), routes.service(namespace, routes.OTHER),
                 routes.http_route(namespace, routes.gateway_parent())):  # fmt: skip
        asyncio.run(client.create(body))

    def route_now() -> dict[str, Any]:
        found = asyncio.run(client.get(route))
        assert found is not None
        return found

    original = route_now()
    gateway.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    steps = [{"weight": 10, "minWait": "2s"}, {"weight": 50, "minWait": "2s"}, {"weight": 100}]
    body = rollout("checkout", targetRef={"name": "checkout"}, trafficRouting=GATEWAY, steps=steps)
    gateway.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    # Set up: the record (the user's route kept) before the Services, the Services before the weight.
    # Then the target paused, the adoption's last act.
    killed.die_at("route-record-written", "route-backends-made", "route-weight-set:0", "target-paused")
    wait_adopted(gateway, namespace, timeout=5)
    set_up = int(route_now()["metadata"]["generation"])

    gateway.apps.patch_namespaced_deployment("checkout", namespace, IMAGE)
    killed.die_at("route-weight-set:10", "route-weight-set:50", "route-weight-set:100")
    killed.finish()

    def released() -> bool:
        status = rollout_status(gateway, namespace)
        release = status.get("release") or {}
        return (
            status.get("phase") == "Healthy"
            and release.get("revision") == release.get("stableRevision")
            and (status.get("traffic") or {}).get("applied") == 0
        )

    eventually(released, timeout=90, what="released, the route back at 0% (the target serves through stable)")
    # Each weight once: 10, 50, 100 and back to 0 are four changes of the route's spec.
    assert int(route_now()["metadata"]["generation"]) == set_up + 4
    assert_each_told_once(
        lambda: event_reasons(gateway, namespace), ["StageAdvanced", "Promoting", "ReleaseCompleted"]
    )
    killed.stop()

    # Deleted: the route given back, then (killed, started again) the target handed back.
    gateway.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "checkout")
    killed.die_at("route-restored", "handed-back")
    killed.finish()
    eventually(lambda: route_now()["spec"] == original["spec"], timeout=30, what="the route given back")
    services = lambda: {s.metadata.name for s in gateway.core.list_namespaced_service(namespace).items}  # noqa: E731
    eventually(lambda: services() == {"checkout", routes.OTHER}, timeout=30, what="the copies gone")
    assert not gateway.apps.read_namespaced_deployment("checkout", namespace).spec.paused
    # Given back once: the route's spec changed one more time, not twice.
    assert int(route_now()["metadata"]["generation"]) == set_up + 5


# ---------------------------------------------------------------------------- blue/green


def test_a_blue_green_release_killed_after_the_preview_and_after_the_switch_switches_once(
    crds: Cluster, namespace: str, killed: Killed
) -> None:
    crds.core.create_namespaced_service(namespace, {
        "metadata": {"name": "checkout"},
        "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })  # fmt: skip
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    blue_green = {"activeService": "checkout", "previewWait": "2s", "scaleDownDelay": "1s"}
    body = rollout("checkout", targetRef={"name": "checkout"}, strategy="blueGreen", blueGreen=blue_green)
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def selector() -> dict[str, str]:
        return dict(crds.core.read_namespaced_service("checkout", namespace).spec.selector or {})

    # Adoption: the preview Service made, the active one not yet pinned to stable.
    killed.die_at("preview-ensured", "switched:0", "target-paused")
    assert "pod-template-hash" in selector()
    wait_adopted(crds, namespace, timeout=5)
    stable = rollout_status(crds, namespace)["release"]["stableRevision"]

    crds.apps.patch_namespaced_deployment("checkout", namespace, IMAGE)
    killed.die_at("canary-created", "switched:100", "target-unpaused", "switched:0#1")
    killed.finish()

    def released() -> bool:
        status = rollout_status(crds, namespace)
        release = status.get("release") or {}
        return (
            status.get("phase") == "Healthy"
            and release.get("revision") == release.get("stableRevision") != stable
        )

    eventually(released, timeout=90, what="released")
    assert "pod-template-hash" in selector()
    eventually(lambda: canary_gone_or_zero(crds, namespace), what="the copy retired")
    # The copy: made (1) and retired (2); the target: paused (2), new image (3), unpaused (4), paused (5).
    assert generation(crds, namespace, "checkout-canary") == 2
    assert generation(crds, namespace, "checkout") == 5
    assert_each_told_once(lambda: event_reasons(crds, namespace), ["Promoting", "ReleaseCompleted"])


# ---------------------------------------------------------------------------- a fault reported


def test_a_fault_reported_in_status_and_killed_before_its_event_is_cleared_once_it_works(
    crds: Cluster, namespace: str, killed: Killed
) -> None:
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "10m", "max": "20m"}
    )
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    killed.die_at("target-paused")  # adopted
    wait_adopted(crds, namespace, timeout=5)
    # A status edited by hand into one the engine cannot follow (rolling back with no incident).
    crds.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "checkout",
                                                      {"status": {"phase": "RollingBack"}})  # fmt: skip
    killed.die_at("fault-status-written")
    failed = next(c for c in rollout_status(crds, namespace)["conditions"] if c["type"] == "ReconcileFailed")
    assert failed["status"] == "True" and failed["reason"] == "AssertionError"
    crds.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "checkout",
                                                      {"status": {"phase": "Healthy"}})  # fmt: skip
    killed.finish()
    cleared = eventually(
        lambda: (c := next(c for c in rollout_status(crds, namespace)["conditions"] if c["type"] == "ReconcileFailed"))
        and c["status"] == "False" and c,
        timeout=60, what="ReconcileFailed cleared",
    )  # fmt: skip
    assert cleared["reason"] == "Reconciled"
    reasons = eventually(
        lambda: (r := event_reasons(crds, namespace)) and "Reconciled" in r and r, what="Reconciled"
    )
    assert reasons.count("Reconciled") == 1 and reasons.count("ReconcileFailed") == 1, reasons


# ---------------------------------------------------------------------------- rollbacks


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Recovering]:
    running = Recovering(crds, namespace, tmp_path)
    yield running
    running.stop()


def adopt(
    world: Recovering,
    killed: Killed,
    metrics: list[dict[str, Any]] | None = None,
    points: tuple[str, ...] = (),
    **spec: Any,
) -> None:
    """The Rollout of `checkout`, analysed every interval, adopted by an operator killed at
    `points`, then once it paused the target (adoption's last act); nothing running after."""
    analysis = {"prometheus": {"address": world.prometheus.url}, "interval": INTERVAL}
    fields = {"risk": "medium", **spec, "analysis": {**analysis, **({"metrics": metrics} if metrics else {})}}
    body = rollout("checkout", targetRef={"name": "checkout"}, **fields)
    world.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, body)
    killed.die_at(*points, "target-paused")
    wait_adopted(world.cluster, world.namespace, timeout=5)


def recovered(world: Recovering, levels: list[str]) -> dict[str, Any]:
    """One incident, recovered by `levels` exactly, each applied once."""
    incident = eventually(
        lambda: (i := world.incident()).get("recoveredAt") and i, timeout=120, what="recovered"
    )
    assert len(world.status()["incidents"]) == 1, world.status()["incidents"]
    assert [level["level"] for level in incident["levels"]] == levels, incident
    return dict(incident)


def copies(world: Recovering) -> list[dict[str, str]]:
    """The data of every copy Parachute kept (snapshots, what it overwrote)."""
    kept = world.cluster.core.list_namespaced_config_map(
        world.namespace, label_selector="parachute.dev/rollout=checkout"
    )
    return [dict(c.data or {}) for c in kept.items if not c.metadata.name.startswith("parachute-routing-")]


def test_a_flag_rollback_killed_after_the_incident_between_copy_and_flag_write_and_after_recovery_switches_once(
    world: Recovering, killed: Killed
) -> None:
    ref, source = flag_store(world, "plain")
    world.set_app(NEW, App(flag=source, when_flag_on=BAD))  # its new code path is bad
    adopt(world, killed, steps=ONE_STAGE, featureFlags={**ref, "flags": ["new-checkout"]})
    world.apply_image(NEW, starts=False)
    killed.die_at(
        "status-written:RollingBack",  # the incident in status; nothing done, nothing told
        "flags-copied",  # the store copied, the flag not yet off
        "flags-written",  # the flag off; traffic and the canary untouched yet
        "status-written:RolledBack",  # recovered in status
    )
    killed.finish()
    recovered(world, ["flag"])
    assert world.data("checkout-flags") == {"new-checkout": "false"}
    assert copies(world) == [{"new-checkout": "true"}]  # what it held, kept once
    eventually(lambda: canary_gone_or_zero(world.cluster, world.namespace), what="all traffic on stable")
    # The canary: made (1), retired (2). The target: paused (2), the new image (3), never rolled.
    assert generation(world.cluster, world.namespace, "checkout-canary") == 2
    assert generation(world.cluster, world.namespace, "checkout") == 3
    assert_each_told_once(
        world.reasons,
        ["ReleaseStarted", "RollingBack", "RecoveryApplied", "RolledBack"],
    )


def test_a_config_rollback_killed_mid_restore_and_between_restore_and_restart_restores_once(
    world: Recovering, killed: Killed
) -> None:
    good = {"settings": "fast_path=false\nretries=3\n"}
    bad = {"settings": "fast_path=true\nretries=3\n"}
    world.config_map("checkout-config", good)
    # The app reads its settings when its pod starts: the pods that start with fast_path on fail.
    world.set_app(
        STABLE, App(flag=StartupSetting("checkout-config", "settings", "fast_path"), when_flag_on=BAD)
    )
    # Adoption killed once the good configuration is copied, before status names the copy.
    adopt(
        world,
        killed,
        steps=ONE_STAGE,
        configRefs=[{"name": "checkout-config"}],
        points=("config-snapshot-taken",),
    )
    snapshot = world.status()["configSnapshots"][0]["snapshot"]
    assert world.data(snapshot) == good

    world.cluster.core.patch_namespaced_config_map("checkout-config", world.namespace, {"data": bad})
    killed.die_at(
        "status-written:RollingBack",  # the incident in status
        "config-live-copied",  # the bad configuration copied, not yet replaced
        "config-restored",  # replaced by the snapshot's bytes, the pods not restarted
        "configs-restored",  # every tracked ConfigMap restored
        "canary-pods-restarted",  # the canary's pods told to restart
    )
    killed.finish()
    recovered(world, ["config"])
    assert world.data("checkout-config") == good == world.data(snapshot)
    assert sorted(json.dumps(c) for c in copies(world)) == sorted(json.dumps(c) for c in (good, bad))
    canary = world.cluster.apps.read_namespaced_deployment("checkout-canary", world.namespace)
    assert "kubectl.kubernetes.io/restartedAt" in (canary.spec.template.metadata.annotations or {})
    # The canary: made (1), restarted (2), retired once stable serves (3); the target: paused (2).
    eventually(lambda: canary_gone_or_zero(world.cluster, world.namespace), what="the canary retired")
    assert generation(world.cluster, world.namespace, "checkout-canary") == 3
    assert generation(world.cluster, world.namespace, "checkout") == 2
    assert_each_told_once(
        world.reasons,
        ["ReleaseStarted", "RollingBack", "RecoveryApplied", "RolledBack"],
    )


def test_new_code_in_the_target_killed_between_copying_and_restoring_its_template_is_restored_once(
    world: Recovering, killed: Killed
) -> None:
    # Zero risk goes straight to 100%: the Deployment itself runs the new version.
    adopt(world, killed, [{"template": "error-rate"}], risk="zero", waits={"min": "60s", "max": "60s"},
          recovery={"restoreTemplate": True})  # fmt: skip
    world.set_app(NEW, BAD)  # what the Deployment will run is bad
    world.apply_image(NEW, starts=False)
    killed.die_at(
        "target-unpaused",  # zero risk: the target itself rolls to the new version
        "status-written:RollingBack",  # the incident in status
        "template-copied",  # the new template copied, not yet replaced
        "template-restored",  # the stable template back
    )
    killed.finish()
    incident = recovered(world, ["code"])
    assert incident["newCodeInTarget"] is True
    target = world.cluster.apps.read_namespaced_deployment("checkout", world.namespace)
    assert target.spec.template.spec.containers[0].image == STABLE
    kept = [json.loads(c["template.json"]) for c in copies(world) if "template.json" in c]
    assert [t["spec"]["containers"][0]["image"] for t in kept] == [NEW]
    assert_each_told_once(
        world.reasons,
        ["ReleaseStarted", "RollingBack", "RecoveryApplied", "RolledBack"],
    )
    # Paused on adoption (2), the new image (3), unpaused (4), paused once rolled (5), its
    # template restored (6), unpaused to roll back (7), paused once rolled (8): as without kills.
    eventually(lambda: generation(world.cluster, world.namespace, "checkout") >= 8, what="rolled back")
    assert generation(world.cluster, world.namespace, "checkout") == 8
