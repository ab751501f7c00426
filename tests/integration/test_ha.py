"""Two operator replicas on the real cluster, electing a leader over a Lease: exactly one acts;
when it is killed mid-stage the standby takes over within seconds and the release completes
with no action done twice (each transition's Event once, each Deployment changed once per
step of the plan); a leader frozen past its Lease stops acting, even when it wakes up; a
clean stop hands over at once; and label selectors shard Rollouts between installs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch

from parachute import rbac
from testbed.install import OPERATOR_NAMESPACE, apply
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    assert_never_refused,
    deployment,
    eventually,
    free_port,
    rollout,
    rollout_status,
    wait_adopted,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
# Short enough for a test, in the proportions of the defaults (15 / 10 / 2).
LEASE, RENEW, RETRY = 4.0, 3.0, 0.5
RELEASED = sorted(["Adopted", "ReleaseStarted", "StageAdvanced", "Promoting", "ReleaseCompleted"])


class Replica(RunningOperator):
    """One replica: the operator with leader election, named as a pod would be, with its probe."""

    def __init__(self, kubeconfig: Path, workdir: Path, name: str, lease: str, *extra: str) -> None:
        self.name, self.ready_port = name, free_port()
        args = ["--leader-election", f"--leader-election-id={lease}", f"--lease-duration={LEASE:g}",
                f"--renew-deadline={RENEW:g}", f"--retry-period={RETRY:g}",
                f"--readiness=http://127.0.0.1:{self.ready_port}/readyz", *extra]  # fmt: skip
        env = {"POD_NAME": name, "POD_NAMESPACE": OPERATOR_NAMESPACE}
        super().__init__(kubeconfig, workdir / f"{name}.log", env, args)

    def readiness(self) -> dict[str, Any]:
        """What /readyz says (503 too); nothing while it does not answer yet."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ready_port}/readyz", timeout=2) as answer:
                return dict(json.loads(answer.read()))
        except urllib.error.HTTPError as refused:
            return dict(json.loads(refused.read()))
        except OSError:
            return {}

    def signal(self, number: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)


class Replicas:
    """Replicas of one install (one Lease), started in the test's namespace's name."""

    def __init__(self, cluster: Cluster, kubeconfig: Path, workdir: Path, lease: str) -> None:
        self.cluster, self.kubeconfig, self.workdir, self.lease = cluster, kubeconfig, workdir, lease
        self.started: list[Replica] = []

    def start(self, name: str, *extra: str) -> Replica:
        replica = Replica(self.kubeconfig, self.workdir, name, self.lease, *extra)
        self.started.append(replica.start())
        return replica

    def holder(self) -> str | None:
        coordination = client.CoordinationV1Api(self.cluster.api)
        try:
            spec = coordination.read_namespaced_lease(self.lease, OPERATOR_NAMESPACE).spec
        except client.exceptions.ApiException:
            return None
        return spec.holder_identity if spec else None

    def leader(self) -> Replica:
        """The replica the Lease names (its holder identity is the pod's name and a random part)."""
        holder = eventually(self.holder, timeout=30, what=f"a holder of Lease {self.lease}")
        return next(r for r in self.started if holder.startswith(f"{r.name}_"))


@pytest.fixture
def replicas(crds: Cluster, operator_kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[Replicas]:
    # The chart's Role for the Lease (generated from the same rules), bound to the operator's account.
    for document in rbac.leader_election_documents(OPERATOR_NAMESPACE):
        apply(crds.api, document)
    group = Replicas(crds, operator_kubeconfig, tmp_path, lease=f"parachute-{namespace}")
    yield group
    for replica in group.started:
        if replica.process is not None:
            replica.signal(signal.SIGCONT)  # a frozen one must be able to stop
        replica.stop()
        assert_never_refused(replica)
    client.CoordinationV1Api(crds.api).delete_namespaced_lease(group.lease, OPERATOR_NAMESPACE)


class History:
    """Every change of every Deployment's spec in a namespace, as the watch shows it: (name,
    generation, what the spec says), recorded from the start. A watch that ends (its timeout,
    a connection cut) is resumed from the last resourceVersion seen, as informers do, so the
    history stays whole; a real gap (410 Gone: that version is no longer kept) is an error."""

    RESUMES = 20  # watches ended in a row without an event before it gives up

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.changes: list[tuple[str, int, tuple[Any, ...]]] = []
        self.error: Exception | None = None
        self._stopping = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(cluster, namespace), daemon=True)
        self._thread.start()

    def _run(self, cluster: Cluster, namespace: str) -> None:
        try:
            self._follow(cluster, namespace)
        except Exception as error:  # the test asks whether the history is whole
            self.error = error

    def _follow(self, cluster: Cluster, namespace: str) -> None:
        seen: dict[str, int] = {}
        version: str | None = None  # the last resourceVersion seen: where a resumed watch starts
        quiet = 0
        while not self._stopping.is_set():
            since = {"resource_version": version} if version else {}
            try:
                for event in self._watch.stream(
                    cluster.apps.list_namespaced_deployment, namespace, timeout_seconds=600, **since
                ):
                    quiet = 0
                    body = event["object"]
                    version = body.metadata.resource_version
                    name, generation = body.metadata.name, body.metadata.generation
                    if seen.get(name) == generation:
                        continue
                    seen[name] = generation
                    image = body.spec.template.spec.containers[0].image
                    self.changes.append(
                        (name, generation, (body.spec.replicas, bool(body.spec.paused), image))
                    )
            except urllib3.exceptions.HTTPError:  # the connection ended mid-watch: resume below
                pass
            if self._stopping.is_set():
                return
            quiet += 1
            if quiet > self.RESUMES:
                raise RuntimeError(f"the watch of Deployments ended {quiet} times in a row without an event")
            time.sleep(0.2)

    def of(self, name: str) -> list[tuple[int, tuple[Any, ...]]]:
        return [(generation, spec) for n, generation, spec in self.changes if n == name]

    def stop(self) -> None:
        self._stopping.set()
        self._watch.stop()


def events(cluster: Cluster, namespace: str) -> list[Any]:
    found = cluster.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=checkout,involvedObject.kind=Rollout"
    ).items
    return sorted(found, key=lambda e: e.metadata.creation_timestamp)


def create_rollout(
    cluster: Cluster, namespace: str, name: str = "checkout", waits: str = "6s", **meta: Any
) -> None:
    body = rollout(name, targetRef={"name": name}, risk="medium", waits={"min": waits, "max": "20s"})
    body["metadata"].update(meta)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def new_image(cluster: Cluster, namespace: str, image: str = "registry.example/checkout:2.0") -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    cluster.apps.patch_namespaced_deployment("checkout", namespace, patch)


def released(cluster: Cluster, namespace: str, name: str = "checkout") -> Callable[[], bool]:
    def check() -> bool:
        status = rollout_status(cluster, namespace, name)
        release = status.get("release") or {}
        return status.get("phase") == "Healthy" and release.get("stableRevision") == release.get("revision")

    return check


def test_the_standby_takes_over_a_release_mid_stage_and_nothing_is_done_twice(
    replicas: Replicas, crds: Cluster, namespace: str
) -> None:
    history = History(crds, namespace)
    first = replicas.start("replica-a")
    leader = replicas.leader()
    assert leader is first
    standby = replicas.start("replica-b")
    eventually(lambda: standby.readiness().get("ready"), what="the standby ready")
    assert standby.readiness()["leading"] is False
    assert leader.readiness()["leading"] is True

    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=4))
    create_rollout(crds, namespace, waits="12s")  # a stage outlasts the takeover
    wait_adopted(crds, namespace)
    new_image(crds, namespace)
    eventually(lambda: rollout_status(crds, namespace).get("stage") == "1/3", timeout=60, what="stage 1/3")
    before = rollout_status(crds, namespace)
    # The release's start is told after the status write that makes it (through the outbox).
    eventually(lambda: "ReleaseStarted" in {e.reason for e in events(crds, namespace)}, what="start told")

    leader.kill()  # mid-stage, mid-wait, no goodbye
    killed_at = time.monotonic()
    eventually(lambda: standby.readiness().get("leading"), timeout=LEASE + 5, interval=0.1, what="takeover")
    took = time.monotonic() - killed_at
    assert took <= LEASE + RETRY + 1.5, f"took over in {took:.1f}s"

    time.sleep(1)
    during = rollout_status(crds, namespace)  # the new leader did not start the stage again
    assert (during["stage"], during["stageStartedAt"]) == (before["stage"], before["stageStartedAt"])
    eventually(released(crds, namespace), timeout=120, interval=0.3, what="the release completed")
    eventually(lambda: crds.apps.read_namespaced_deployment("checkout-canary", namespace).spec.replicas == 0,
               what="canary retired")  # fmt: skip
    time.sleep(2)  # anything done twice would have been done by now
    history.stop()
    assert history.error is None, f"the watch of Deployments broke: {history.error!r}"

    # Each transition was told once: by the leader of its moment, never by both.
    told = eventually(lambda: len(events(crds, namespace)) >= len(RELEASED) and events(crds, namespace))
    assert sorted(e.reason for e in told) == RELEASED
    by = {e.reason: (e.reporting_instance or "").split("_")[0] for e in told}
    assert by["Adopted"] == by["ReleaseStarted"] == "replica-a"
    assert by["StageAdvanced"] == by["Promoting"] == by["ReleaseCompleted"] == "replica-b"

    # Each Deployment changed once per step of the plan: the generations count the actions.
    target = [spec for _, spec in history.of("checkout")]
    v1, v2 = "registry.example/checkout:1.0", "registry.example/checkout:2.0"
    assert target == [(4, False, v1), (4, True, v1),  # created; adopted (paused)
                      (4, True, v2),  # the new image (the test's)
                      (4, False, v2), (4, True, v2)]  # promoted: let roll, held again  # fmt: skip
    assert [g for g, _ in history.of("checkout")] == [1, 2, 3, 4, 5]
    canary = history.of("checkout-canary")
    assert [spec[0] for _, spec in canary] == [1, 4, 0]  # 10%, 50%, retired
    assert [g for g, _ in canary] == [1, 2, 3]


def test_a_frozen_leader_stops_acting_and_stays_stood_down_when_it_wakes(
    replicas: Replicas, crds: Cluster, namespace: str
) -> None:
    first = replicas.start("replica-a")
    assert replicas.leader() is first
    second = replicas.start("replica-b")
    eventually(lambda: second.readiness().get("ready"), what="the standby ready")
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=4))
    create_rollout(crds, namespace)
    wait_adopted(crds, namespace)
    new_image(crds, namespace)
    eventually(lambda: rollout_status(crds, namespace).get("stage") == "1/3", timeout=60, what="stage 1/3")

    first.signal(signal.SIGSTOP)  # a leader that cannot renew: stalled, partitioned, swapped out
    eventually(lambda: second.readiness().get("leading"), timeout=LEASE + 5, interval=0.1, what="takeover")
    first.signal(signal.SIGCONT)  # it wakes with its renewals long overdue
    eventually(lambda: first.readiness().get("leading") is False, timeout=10,
               what="the old leader knows it no longer leads")  # fmt: skip
    eventually(released(crds, namespace), timeout=120, interval=0.3, what="the release completed")
    time.sleep(2)

    told = events(crds, namespace)
    assert sorted(e.reason for e in told) == RELEASED
    woke = [e.reason for e in told if (e.reporting_instance or "").startswith("replica-a_")]
    assert set(woke) <= {"Adopted", "ReleaseStarted"}, f"the frozen leader acted after it woke: {woke}"
    assert "standing by as replica-a_" in first.output


def test_a_leader_that_stops_cleanly_hands_over_without_waiting_for_its_lease(
    replicas: Replicas, namespace: str
) -> None:
    first = replicas.start("replica-a", "--lease-duration=30", "--renew-deadline=20")
    assert replicas.leader() is first
    second = replicas.start("replica-b")
    eventually(lambda: second.readiness().get("ready"), what="the standby ready")
    stopped_at = time.monotonic()
    first.stop()  # SIGTERM, as a rolling update does
    eventually(lambda: second.readiness().get("leading"), timeout=10, interval=0.1, what="handover")
    assert time.monotonic() - stopped_at < 10  # not the 30 s the Lease would take to expire
    assert "released the Lease" in first.output


def test_label_selectors_shard_rollouts_between_installs_and_a_relabelled_one_moves(
    crds: Cluster, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    for document in rbac.leader_election_documents(OPERATOR_NAMESPACE):
        apply(crds.api, document)
    shards = {
        shard: Replicas(crds, operator_kubeconfig, tmp_path, lease=f"parachute-{namespace}-{shard}")
        for shard in ("a", "b")
    }
    try:
        for shard, group in shards.items():
            group.start(f"shard-{shard}", f"--selector=parachute.dev/shard={shard}")
        for name, shard in (("cart", "a"), ("checkout", "b")):
            crds.apps.create_namespaced_deployment(namespace, deployment(name, replicas=2))
            create_rollout(crds, namespace, name, labels={"parachute.dev/shard": shard})
        for name in ("cart", "checkout"):
            wait_adopted(crds, namespace, name)

        def adopted_by(name: str) -> set[str]:
            found = crds.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=Rollout"
            ).items
            return {(e.reporting_instance or "").split("_")[0] for e in found}

        assert adopted_by("cart") == {"shard-a"}
        assert adopted_by("checkout") == {"shard-b"}

        # Relabelled into shard b: shard a lets it go, shard b releases it.
        patch = {"metadata": {"labels": {"parachute.dev/shard": "b"}}}
        crds.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cart", patch)
        time.sleep(1)
        image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "cart:2.0"}]}}}}
        crds.apps.patch_namespaced_deployment("cart", namespace, image)
        eventually(lambda: rollout_status(crds, namespace, "cart").get("stage") == "1/3", timeout=60)
        # Told after the status write that starts the release (through the outbox).
        started = eventually(
            lambda: (
                crds.core.list_namespaced_event(
                    namespace, field_selector="involvedObject.name=cart,reason=ReleaseStarted"
                ).items
            ),
            timeout=30,
            what="ReleaseStarted told",
        )
        assert [(e.reporting_instance or "").split("_")[0] for e in started] == ["shard-b"]
    finally:
        for group in shards.values():
            for replica in group.started:
                replica.stop()
                assert_never_refused(replica)
