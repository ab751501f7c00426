"""Releases on the real cluster, with the operator running under its own ServiceAccount:
a new image goes 10% → 50% → 100%, survives the operator dying mid-stage, and an abort
puts everything back on stable. A flag-gated release takes the code to everyone with its
flags off, then switches them on, with no canary at all."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    event_reasons,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"


class Release:
    """What a test needs to drive and read one Rollout of Deployment `checkout`."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace

    def create(self, replicas: int = 4, **spec: Any) -> None:
        self.cluster.apps.create_namespaced_deployment(
            self.namespace, deployment("checkout", replicas=replicas)
        )
        body = rollout("checkout", targetRef={"name": "checkout"}, **spec)
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        wait_adopted(self.cluster, self.namespace)

    def status(self) -> dict[str, Any]:
        return rollout_status(self.cluster, self.namespace)

    def annotate(self, key: str, value: str) -> None:
        patch = {"metadata": {"annotations": {key: value}}}
        self.cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, "checkout", patch
        )

    def target(self) -> Any:
        return self.cluster.apps.read_namespaced_deployment("checkout", self.namespace)

    def canary_replicas(self) -> int | None:
        try:
            return int(
                self.cluster.apps.read_namespaced_deployment("checkout-canary", self.namespace).spec.replicas
            )
        except Exception:
            return None

    def new_image(self, image: str = "registry.example/checkout:2.0") -> None:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
        self.cluster.apps.patch_namespaced_deployment("checkout", self.namespace, patch)

    def reasons(self) -> list[str]:
        return event_reasons(self.cluster, self.namespace)

    def running_images(self) -> set[str]:
        pods = self.cluster.core.list_namespaced_pod(self.namespace, label_selector="app=checkout").items
        return {p.spec.containers[0].image for p in pods if p.metadata.deletion_timestamp is None}


@pytest.fixture
def release(crds: Cluster, namespace: str) -> Release:
    return Release(crds, namespace)


def test_a_medium_release_goes_10_50_100_with_matching_canary_pods(
    release: Release, operator: RunningOperator
) -> None:
    release.create(replicas=4, risk="medium", waits={"min": "3s", "max": "10s"})
    release.new_image()

    seen: list[tuple[str, int, int | None]] = []

    def released() -> bool:
        status = release.status()
        point = (status.get("stage", ""), status.get("canaryWeight", 0), release.canary_replicas())
        if not seen or seen[-1] != point:
            seen.append(point)
        stable = (status.get("release") or {}).get("stableRevision")
        return status.get("phase") == "Healthy" and stable == status["release"]["revision"] and len(seen) > 1

    eventually(released, timeout=120, interval=0.2, what="release completed")
    # 4 stable pods: 10% is 1 canary pod, 50% is as many canary pods as stable ones.
    assert ("1/3", 10, 1) in seen
    assert ("2/3", 50, 4) in seen
    assert any(stage == "3/3" and weight == 100 for stage, weight, _ in seen)

    target = release.target()
    assert target.spec.template.spec.containers[0].image == "registry.example/checkout:2.0"
    assert target.spec.paused is True  # held again, ready for the next release
    eventually(lambda: release.canary_replicas() == 0, what="canary retired")
    eventually(lambda: release.running_images() == {"registry.example/checkout:2.0"}, timeout=60)
    # Event times have one-second resolution, so their order is not theirs to show; each happened once.
    expected = sorted(["Adopted", "ReleaseStarted", "StageAdvanced", "Promoting", "ReleaseCompleted"])
    eventually(lambda: sorted(release.reasons()) == expected, what=f"Events {expected}")
    # At rest, no write is due that would record them delivered: status does not show them owed.
    eventually(lambda: "outbox" not in release.status(), what="nothing owed in status at rest")
    # Who wrote what, as the API server tells it: Parachute under its own name.
    found = release.cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, release.namespace, PLURAL, "checkout"
    )
    assert {(m["manager"], m.get("subresource")) for m in found["metadata"]["managedFields"]} >= {
        ("parachute", "status")
    }
    assert {m.manager for m in target.metadata.managed_fields} >= {"parachute"}  # it paused the target


def test_a_new_operator_resumes_the_stage_its_predecessor_died_in(
    release: Release, operator: RunningOperator
) -> None:
    release.create(replicas=4, risk="medium", waits={"min": "12s", "max": "30s"})
    release.new_image()
    eventually(lambda: release.status().get("stage") == "1/3" and release.canary_replicas() == 1, timeout=60)
    before = release.status()

    operator.kill()  # no goodbye: mid-stage, mid-wait
    time.sleep(2)
    operator.start()

    # The new process does not start the stage again, nor the release.
    time.sleep(3)
    during = release.status()
    assert (during["stage"], during["stageStartedAt"]) == (before["stage"], before["stageStartedAt"])
    eventually(lambda: release.status().get("stage") == "2/3", timeout=60, what="resumed and advanced")
    # Events follow the status write that decided them.
    reasons = eventually(lambda: "StageAdvanced" in release.reasons() and release.reasons())
    assert reasons.count("ReleaseStarted") == 1
    assert reasons.count("StageAdvanced") == 1


def test_an_abort_mid_stage_returns_everything_to_stable(release: Release, operator: RunningOperator) -> None:
    release.create(replicas=4, risk="medium", waits={"min": "60s", "max": "120s"})
    release.new_image()
    eventually(lambda: release.status().get("stage") == "1/3" and release.canary_replicas() == 1, timeout=60)
    eventually(lambda: "registry.example/checkout:2.0" in release.running_images(), timeout=60)

    release.annotate("parachute.dev/abort", "2026-11-26T12:00:00Z")

    eventually(lambda: release.status().get("phase") == "Aborted", timeout=30, what="aborted")
    eventually(lambda: release.canary_replicas() == 0, what="canary scaled to zero")
    eventually(lambda: release.running_images() == {"registry.example/checkout:1.0"}, timeout=60)
    status = release.status()
    assert status["canaryWeight"] == 0
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "Aborted")
    assert release.target().spec.paused is True  # the new template waits for a retry
    eventually(lambda: "Aborted" in release.reasons(), what="an Aborted Event")


def test_adopting_a_deployment_restarts_none_of_its_pods(release: Release, operator: RunningOperator) -> None:
    release.cluster.apps.create_namespaced_deployment(release.namespace, deployment("checkout", replicas=3))
    eventually(lambda: release.target().status.ready_replicas == 3, timeout=60)
    pods = {p.metadata.uid for p in release.cluster.core.list_namespaced_pod(release.namespace).items}
    body = rollout("checkout", targetRef={"name": "checkout"})
    release.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, release.namespace, PLURAL, body)
    eventually(
        lambda: release.status().get("phase") == "Healthy" and release.target().spec.paused, timeout=60
    )
    time.sleep(2)
    assert {p.metadata.uid for p in release.cluster.core.list_namespaced_pod(release.namespace).items} == pods


def test_a_second_image_mid_release_replaces_the_first(release: Release, operator: RunningOperator) -> None:
    release.create(replicas=4, risk="medium", waits={"min": "4s", "max": "10s"})
    release.new_image("registry.example/checkout:2.0")
    eventually(lambda: release.status().get("stage") == "2/3", timeout=60, what="second stage of 2.0")
    release.new_image("registry.example/checkout:3.0")

    def restarted_with_three() -> bool:
        canary = release.cluster.apps.read_namespaced_deployment("checkout-canary", release.namespace)
        return (
            release.status().get("stage") == "1/3"
            and canary.spec.template.spec.containers[0].image == "registry.example/checkout:3.0"
        )

    eventually(restarted_with_three, timeout=30, what="superseded: back to the first stage with 3.0")
    eventually(lambda: "ReleaseSuperseded" in release.reasons(), what="a ReleaseSuperseded Event")
    eventually(lambda: release.status().get("phase") == "Healthy", timeout=120, what="3.0 released")
    eventually(lambda: release.running_images() == {"registry.example/checkout:3.0"}, timeout=60)


def test_a_canary_deployment_that_is_not_ours_is_left_alone(
    release: Release, operator: RunningOperator
) -> None:
    foreign = deployment("checkout-canary", replicas=1)
    release.cluster.apps.create_namespaced_deployment(release.namespace, foreign)
    release.cluster.apps.create_namespaced_deployment(release.namespace, deployment("checkout", replicas=2))
    body = rollout("checkout", targetRef={"name": "checkout"})
    release.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, release.namespace, PLURAL, body)
    status = eventually(lambda: release.status().get("phase") == "Invalid" and release.status(), timeout=60)
    assert "checkout-canary exists and is not this Rollout's" in status["message"]
    untouched = release.cluster.apps.read_namespaced_deployment("checkout-canary", release.namespace)
    assert untouched.spec.replicas == 1 and not untouched.metadata.owner_references


def test_a_flag_gated_release_ships_the_code_with_its_flags_off_then_switches_them_on(
    release: Release, operator: RunningOperator
) -> None:
    core = release.cluster.core
    # Left on by an earlier feature: the new code must not start with it on.
    core.create_namespaced_config_map(release.namespace, {"metadata": {"name": "checkout-flags"},
                                                          "data": {"new-checkout": "true"}})  # fmt: skip
    flags = {"configMapRef": {"name": "checkout-flags"}, "flags": ["new-checkout"]}
    release.create(replicas=4, featureFlags=flags, waits={"min": "3s", "max": "6s"})
    release.new_image()

    seen: list[tuple[str, str, int | None]] = []

    def released() -> bool:
        status = release.status()
        flag = core.read_namespaced_config_map("checkout-flags", release.namespace).data["new-checkout"]
        point = (status.get("stage", ""), flag, release.canary_replicas())
        if not seen or seen[-1] != point:
            seen.append(point)
        stable = (status.get("release") or {}).get("stableRevision")
        return status.get("phase") == "Healthy" and stable == status["release"]["revision"] and len(seen) > 1

    eventually(released, timeout=120, interval=0.2, what="release completed")
    assert ("1/3", "false", None) in seen and ("3/3", "true", None) in seen, seen
    assert all(canary is None for _, _, canary in seen)  # the code went to everyone: no canary
    assert seen.index(("3/3", "true", None)) > seen.index(("1/3", "false", None))
    status = release.status()
    assert [stage["flags"] for stage in status["plan"]] == ["off", "off", "on"]
    assert status["flags"]["state"] == "on" and status["flags"]["reason"] == "stage 3/3 (full)"
    assert status["flags"]["inPlaceAt"] >= status["flags"]["requestedAt"]
    assert release.reasons().count("FlagsSet") == 3
    # What the store held before each change is kept.
    copies = core.list_namespaced_config_map(
        release.namespace, label_selector="parachute.dev/rollout=checkout"
    )
    assert {"new-checkout": "true"} in [c.data for c in copies.items]
    eventually(lambda: release.running_images() == {"registry.example/checkout:2.0"}, timeout=60)


def test_a_step_that_sets_flags_needs_the_flags(crds: Cluster, namespace: str) -> None:
    body = rollout("checkout", targetRef={"name": "checkout"}, steps=[{"weight": 100, "flags": "on"}])
    with pytest.raises(ApiException) as refused:
        crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert refused.value.status == 422
    assert "spec.steps" in refused.value.body
    assert "steps[].flags needs spec.featureFlags" in refused.value.body
