"""GitOps on the real cluster, the operator running: a sync that applies the same documents
again mid-release changes nothing, and what Argo CD (the chart's Lua health check) and Flux
(kstatus) conclude of a Rollout is right in every phase it really goes through.

With PARACHUTE_CAPTURE_PHASES=1 the Rollouts seen here are written to
tests/unit/fixtures/rollout-phases/, the fixtures the unit tests run the Lua and kstatus on.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.dynamic import DynamicClient

from testbed import kstatus
from testbed.argocd_health import health
from testbed.demoapp import Behaviour
from tests.integration.analysed import NEW, Analysed
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "rollout-phases"
# What each phase means to Argo CD (the Lua) and to Flux (kstatus).
EXPECTED = {
    "Healthy": ("Healthy", "Current"),
    "Progressing": ("Progressing", "InProgress"),
    "Waiting": ("Progressing", "InProgress"),
    "Paused": ("Suspended", "InProgress"),
    "RollingBack": ("Degraded", "InProgress"),
    "RolledBack": ("Degraded", "Failed"),
    "Aborted": ("Degraded", "Failed"),
    "Invalid": ("Degraded", "Failed"),
}


def read(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return body


def judged(cluster: Cluster, namespace: str, name: str, phase: str, fixture: str) -> dict[str, Any]:
    """Wait for `phase`, then check what Argo CD and kstatus make of the live object."""
    body = eventually(
        lambda: read(cluster, namespace, name) if rollout_status(cluster, namespace, name).get("phase") == phase
        else None, timeout=90, interval=0.1, what=f"{name} {phase}",
    )  # fmt: skip
    argo, flux = EXPECTED[phase]
    assert health(body)[0] == argo, (fixture, health(body))
    assert kstatus.compute([body])[0]["status"] == flux, (fixture, kstatus.compute([body]))
    if os.environ.get("PARACHUTE_CAPTURE_PHASES") == "1":
        kept = copy.deepcopy(body)
        kept["metadata"].pop("managedFields", None)
        FIXTURES.mkdir(parents=True, exist_ok=True)
        (FIXTURES / f"{fixture}.json").write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
    return body


def new_image(cluster: Cluster, namespace: str, name: str, image: str) -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    cluster.apps.patch_namespaced_deployment(name, namespace, patch)


def create(cluster: Cluster, namespace: str, name: str, with_target: bool = True, **spec: Any) -> None:
    if with_target:
        cluster.apps.create_namespaced_deployment(namespace, deployment(name, replicas=2))
    body = rollout(name, targetRef={"name": name}, **spec)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def test_every_phase_reads_right_to_argo_cd_and_to_kstatus(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    c = crds
    create(c, namespace, "checkout", risk="medium", waits={"min": "60s", "max": "120s"})
    judged(c, namespace, "checkout", "Healthy", "healthy-adopted")
    new_image(c, namespace, "checkout", "registry.example/checkout:2.0")
    judged(c, namespace, "checkout", "Progressing", "progressing")
    c.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "checkout", {"spec": {"paused": True}}
    )
    judged(c, namespace, "checkout", "Paused", "paused")
    c.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "checkout", {"spec": {"paused": False}}
    )
    judged(c, namespace, "checkout", "Progressing", "progressing-resumed")
    abort = {"metadata": {"annotations": {"parachute.dev/abort": "now"}}}
    c.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "checkout", abort)
    judged(c, namespace, "checkout", "Aborted", "aborted")

    gates = {"gates": [{"name": "tests-passed", "annotation": {"key": "gates.parachute.dev/tests-passed"}}]}
    create(c, namespace, "gated", risk="medium", checklist=gates)
    judged(c, namespace, "gated", "Healthy", "healthy-gated")
    new_image(c, namespace, "gated", "registry.example/gated:2.0")
    judged(c, namespace, "gated", "Waiting", "waiting-for-gates")

    create(c, namespace, "orphan", with_target=False)
    judged(c, namespace, "orphan", "Invalid", "invalid-missing-target")

    create(c, namespace, "quick", risk="medium", waits={"min": "1s", "max": "2s"})
    judged(c, namespace, "quick", "Healthy", "healthy-before-release")
    new_image(c, namespace, "quick", "registry.example/quick:2.0")
    eventually(lambda: rollout_status(c, namespace, "quick").get("stage"), timeout=30, what="quick started")

    def released() -> bool:
        status = rollout_status(c, namespace, "quick")
        release = status.get("release") or {}
        return status.get("phase") == "Healthy" and release.get("revision") == release.get("stableRevision")

    eventually(released, timeout=90, what="quick released")
    judged(c, namespace, "quick", "Healthy", "healthy-released")


@pytest.mark.prometheus
def test_a_rollback_reads_degraded_to_argo_cd_and_failed_to_kstatus_once_over(
    analysed: Analysed, operator: RunningOperator
) -> None:
    analysed.set_app(NEW, Behaviour(error_rate=0.06))
    analysed.release(spec={"steps": [{"name": "canary", "weight": 50, "minWait": "5m"}]})
    judged(analysed.cluster, analysed.namespace, "checkout", "RollingBack", "rolling-back")
    judged(analysed.cluster, analysed.namespace, "checkout", "RolledBack", "rolled-back")


def test_applying_the_same_documents_again_mid_stage_changes_nothing(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    """What Argo CD or Flux does at every sync: server-side apply of the documents in git."""
    dynamic = DynamicClient(crds.api)
    deployments = dynamic.resources.get(api_version="apps/v1", kind="Deployment")
    rollouts = dynamic.resources.get(api_version=f"{GROUP}/{VERSION}", kind="Rollout")
    target = {**deployment("checkout", replicas=4), "metadata": {"name": "checkout", "namespace": namespace}}
    document = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "60s", "max": "120s"}
    )
    document["metadata"]["namespace"] = namespace

    def sync() -> None:
        for resource, body in ((deployments, target), (rollouts, document)):
            resource.server_side_apply(body=body, field_manager="gitops", force_conflicts=True)

    sync()
    wait_adopted(crds, namespace)
    target["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/checkout:2.0"
    sync()  # the new version, as git now says

    def in_stage() -> bool:
        canary = crds.apps.read_namespaced_deployment("checkout-canary", namespace)
        return rollout_status(crds, namespace).get("stage") == "1/3" and canary.status.ready_replicas == 1

    eventually(in_stage, timeout=60, what="first stage with its canary ready")
    time.sleep(2)  # let the first stage's writes settle

    def snapshot() -> dict[str, Any]:
        status = rollout_status(crds, namespace)
        canary = crds.apps.read_namespaced_deployment("checkout-canary", namespace)
        target_now = crds.apps.read_namespaced_deployment("checkout", namespace)
        events = crds.core.list_namespaced_event(namespace).items
        return {
            "stage": status["stage"],
            "stageStartedAt": status["stageStartedAt"],
            "release": status["release"],
            "weight": status["canaryWeight"],
            "rollout generation": read(crds, namespace, "checkout")["metadata"]["generation"],
            "canary": (
                canary.metadata.generation,
                canary.spec.replicas,
                canary.spec.template.spec.containers[0].image,
            ),
            "target": (target_now.metadata.generation, target_now.spec.paused),
            "events": sorted(e.metadata.name for e in events if e.involved_object.kind == "Rollout"),
        }

    before = snapshot()
    for _ in range(3):  # three syncs, a few seconds apart
        sync()
        time.sleep(2)
    assert snapshot() == before
