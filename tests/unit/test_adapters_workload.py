"""The workload adapter over the in-memory API server: the canary Deployment is Parachute's,
made once and patched only where it differs; the target is only paused, unpaused and restarted;
a Deployment that is someone else's is refused and left alone."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from parachute import api, kube
from parachute.kube_fake import FakeKube
from parachute.plan.desired_workload import CONFIGURATION, RESTARTED_AT, revision_of
from parachute.plan.model import WorkloadIntent
from parachute.workload import CANARY_LABEL, REVISION_ANNOTATION, ForeignObjectError, act, observe

NS = "shop"
ROLLOUT = {"metadata": {"name": "checkout", "namespace": NS, "uid": "rollout-1", "annotations": {}}}
RELEASE = WorkloadIntent(target_paused=True, canary_replicas=1, canary_revision="rev-2")


def deployment(name: str = "checkout", image: str = "shop/checkout:2", **meta: Any) -> dict[str, Any]:
    labels = {"app": "checkout"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, **meta},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def reconcile(cluster: FakeKube, intent: WorkloadIntent) -> list[str]:
    """What one reconcile does with the workload: read the target, observe, act."""

    async def once() -> list[str]:
        target = await cluster.read_deployment(NS, "checkout")
        assert target is not None
        _, canary = await observe(cluster, ROLLOUT, target)
        return await act(cluster, ROLLOUT, target, canary, intent)

    return asyncio.run(once())


@pytest.fixture
def cluster() -> FakeKube:
    return FakeKube([deployment()])


def test_the_canary_is_created_once_and_the_target_paused_with_the_rollouts_mark(cluster: FakeKube) -> None:
    changed = reconcile(cluster, RELEASE)
    assert changed == ["paused Deployment checkout", "created checkout-canary with 1 replicas"]
    assert cluster.writes == [
        ("patch", "Deployment", NS, "checkout"),
        ("create", "Deployment", NS, "checkout-canary"),
    ]
    target = cluster.look("Deployment", NS, "checkout")
    assert target["spec"]["paused"] is True
    assert target["metadata"]["annotations"] == {api.PAUSED_BY_ANNOTATION: "checkout"}
    canary = cluster.look("Deployment", NS, "checkout-canary")
    assert canary["metadata"]["ownerReferences"] == [api.owner_reference("checkout", "rollout-1")]
    assert canary["metadata"]["annotations"] == {REVISION_ANNOTATION: "rev-2"}
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "checkout", CANARY_LABEL: "true"}
    assert canary["spec"]["template"]["metadata"]["labels"] == {"app": "checkout", CANARY_LABEL: "true"}
    # Its old ReplicaSets carry the canary label too, and all of those are watched: one is kept.
    assert canary["spec"]["revisionHistoryLimit"] == 1

    assert reconcile(cluster, RELEASE) == []  # as it should be: nothing is written again
    assert len(cluster.writes) == 2


def test_a_canary_scaled_is_patched_in_its_replicas_alone(cluster: FakeKube) -> None:
    reconcile(cluster, RELEASE)
    before = cluster.look("Deployment", NS, "checkout-canary")
    del cluster.writes[:]
    changed = reconcile(
        cluster, WorkloadIntent(target_paused=True, canary_replicas=3, canary_revision="rev-2")
    )
    assert changed == ["scaled checkout-canary to 3"]
    assert cluster.writes == [("patch", "Deployment", NS, "checkout-canary")]
    after = cluster.look("Deployment", NS, "checkout-canary")
    assert after["spec"] == {**before["spec"], "replicas": 3}
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1


def test_a_new_revision_replaces_the_canarys_template_whole(cluster: FakeKube) -> None:
    """A merge would keep a container the new template dropped."""
    two = deployment()
    two["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "proxy:1"})
    cluster.put(two)
    reconcile(cluster, RELEASE)
    cluster.put(deployment(image="shop/checkout:3"))  # the target's template moved on, one container
    del cluster.writes[:]
    changed = reconcile(
        cluster, WorkloadIntent(target_paused=True, canary_replicas=2, canary_revision="rev-3")
    )
    assert changed == ["paused Deployment checkout", "moved checkout-canary to revision rev-3"]
    assert cluster.writes[-1] == ("update", "Deployment", NS, "checkout-canary")
    canary = cluster.look("Deployment", NS, "checkout-canary")
    assert canary["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": "shop/checkout:3"}]
    assert canary["spec"]["replicas"] == 2
    assert canary["spec"]["revisionHistoryLimit"] == 1  # set here too: a canary made before the limit gets it
    assert canary["metadata"]["annotations"][REVISION_ANNOTATION] == "rev-3"


def test_a_canary_changed_between_the_read_and_the_replace_is_not_overwritten(cluster: FakeKube) -> None:
    reconcile(cluster, RELEASE)

    def meanwhile(key: tuple[str, str, str]) -> None:
        cluster.edit("Deployment", NS, "checkout-canary", lambda d: d["spec"].update(replicas=5))

    cluster.before_write = meanwhile
    cluster.put(deployment(image="shop/checkout:3"))
    with pytest.raises(kube.ConflictError):
        reconcile(cluster, WorkloadIntent(target_paused=True, canary_replicas=1, canary_revision="rev-3"))
    canary = cluster.look("Deployment", NS, "checkout-canary")
    assert canary["spec"]["replicas"] == 5  # the other writer's change stands
    assert canary["metadata"]["annotations"][REVISION_ANNOTATION] == "rev-2"


def test_a_deployment_of_the_canarys_name_that_is_someone_elses_is_refused_and_left_alone(
    cluster: FakeKube,
) -> None:
    theirs = cluster.put(deployment("checkout-canary", image="theirs:1"))
    with pytest.raises(ForeignObjectError, match="checkout-canary exists and is not this Rollout's"):
        reconcile(cluster, RELEASE)
    assert cluster.writes == []
    assert cluster.look("Deployment", NS, "checkout-canary") == theirs


def test_retiring_scales_the_canary_to_zero_once_and_gives_the_target_back(cluster: FakeKube) -> None:
    reconcile(cluster, RELEASE)
    del cluster.writes[:]
    done = WorkloadIntent(target_paused=False, canary_replicas=0, canary_revision=None)
    assert reconcile(cluster, done) == ["unpaused Deployment checkout", "scaled checkout-canary to 0"]
    assert reconcile(cluster, done) == []
    assert cluster.writes == [
        ("patch", "Deployment", NS, "checkout"),
        ("patch", "Deployment", NS, "checkout-canary"),
    ]
    target = cluster.look("Deployment", NS, "checkout")
    assert target["spec"]["paused"] is False and not target["metadata"].get("annotations")
    assert cluster.look("Deployment", NS, "checkout-canary")["spec"]["replicas"] == 0


def test_a_target_restart_is_stamped_once(cluster: FakeKube) -> None:
    promote = WorkloadIntent(
        target_paused=False, canary_replicas=0, canary_revision=None, target_restart="t1"
    )
    assert reconcile(cluster, promote) == ["restarted the pods of Deployment checkout (new configuration)"]
    assert reconcile(cluster, promote) == []
    assert cluster.writes == [("patch", "Deployment", NS, "checkout")]
    template = cluster.look("Deployment", NS, "checkout")["spec"]["template"]
    assert template["metadata"]["annotations"] == {RESTARTED_AT: "t1"}


def test_what_serves_is_counted_from_one_listing_of_the_targets_replica_sets(cluster: FakeKube) -> None:
    reconcile(cluster, RELEASE)
    target = cluster.look("Deployment", NS, "checkout")
    canary = cluster.look("Deployment", NS, "checkout-canary")
    for owner, ready, extra in ((target, 4, {}), (canary, 1, {CANARY_LABEL: "true"})):
        template = copy.deepcopy(owner["spec"]["template"])
        template["metadata"]["labels"]["pod-template-hash"] = f"h{ready}"
        cluster.put({
            "kind": "ReplicaSet",
            "metadata": {"name": f"{owner['metadata']['name']}-h{ready}", "namespace": NS,
                         "labels": {"app": "checkout", "pod-template-hash": f"h{ready}", **extra},
                         "ownerReferences": [{"uid": owner["metadata"]["uid"]}]},
            "spec": {"template": template},
            "status": {"readyReplicas": ready},
        })  # fmt: skip
    del cluster.reads[:]
    observed, _ = asyncio.run(observe(cluster, ROLLOUT, target))
    assert list(observed.serving.target.values()) == [4]
    assert list(observed.serving.canary.values()) == [1]
    assert cluster.reads == [
        ("get", "Deployment", NS, "checkout-canary"),
        ("list", "ReplicaSet", NS, "app=checkout"),
    ]


def canary_replica_set(canary: dict[str, Any], digest: str, ready: int, **annotations: str) -> dict[str, Any]:
    """A ReplicaSet the Deployment controller made of the canary's template (with `annotations`
    on its pods), `ready` of its pods ready."""
    template = copy.deepcopy(canary["spec"]["template"])
    template["metadata"]["labels"]["pod-template-hash"] = digest
    template["metadata"].setdefault("annotations", {}).update(annotations)
    if not template["metadata"]["annotations"]:
        del template["metadata"]["annotations"]
    return {
        "kind": "ReplicaSet",
        "metadata": {"name": f"checkout-canary-{digest}", "namespace": NS,
                     "labels": {"app": "checkout", "pod-template-hash": digest, CANARY_LABEL: "true"},
                     "ownerReferences": [{"uid": canary["metadata"]["uid"]}]},
        "spec": {"template": template},
        "status": {"readyReplicas": ready},
    }  # fmt: skip


def test_a_canary_ready_by_its_replica_set_is_ready_before_its_deployment_says_so(cluster: FakeKube) -> None:
    reconcile(cluster, RELEASE)
    target = cluster.look("Deployment", NS, "checkout")
    canary = cluster.look("Deployment", NS, "checkout-canary")
    assert "status" not in canary  # the Deployment controller has not written its count yet
    cluster.put(canary_replica_set(canary, "h1", ready=1))
    observed, _ = asyncio.run(observe(cluster, ROLLOUT, target))
    assert observed.canary is not None and observed.canary.ready == 1


def test_the_pods_of_a_template_that_differs_only_in_its_restart_stamp_are_not_the_canarys(
    cluster: FakeKube,
) -> None:
    reconcile(cluster, RELEASE)
    target = cluster.look("Deployment", NS, "checkout")
    canary = cluster.look("Deployment", NS, "checkout-canary")
    # Ready, but made before a restart: they run the configuration of before.
    cluster.put(canary_replica_set(canary, "h0", ready=1, **{RESTARTED_AT: "2026-12-06T10:00:00Z"}))
    observed, _ = asyncio.run(observe(cluster, ROLLOUT, target))
    assert observed.canary is not None and observed.canary.ready == 0


def test_a_configuration_released_over_a_running_one_starts_the_canarys_pods_again(cluster: FakeKube) -> None:
    """The pod template is the same for both: without a mark of the configuration the canary's
    pods, started with the first change's, would be judged as the second's."""
    template = revision_of(deployment()["spec"]["template"])
    first = WorkloadIntent(target_paused=True, canary_replicas=1, canary_revision=f"{template}.aaaa1111")
    reconcile(cluster, first)
    target = cluster.look("Deployment", NS, "checkout")
    before = cluster.look("Deployment", NS, "checkout-canary")
    assert before["spec"]["template"]["metadata"]["annotations"] == {CONFIGURATION: "aaaa1111"}
    cluster.put(canary_replica_set(before, "h1", ready=1, **{CONFIGURATION: "aaaa1111"}))
    observed, _ = asyncio.run(observe(cluster, ROLLOUT, target))
    assert observed.serving.in_canary_of(f"{template}.aaaa1111") == 1

    second = f"{template}.bbbb2222"
    moved = reconcile(cluster, WorkloadIntent(target_paused=True, canary_replicas=1, canary_revision=second))
    assert moved == [f"moved checkout-canary to revision {second}"]
    after = cluster.look("Deployment", NS, "checkout-canary")
    assert after["spec"]["template"]["metadata"]["annotations"] == {CONFIGURATION: "bbbb2222"}
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1  # its pods roll
    observed, _ = asyncio.run(observe(cluster, ROLLOUT, target))
    # The first's pods are not the release's, but they still serve until they stop.
    assert observed.canary is not None and observed.canary.ready == 0
    assert observed.serving.in_canary_of(second) == 0 and observed.serving.in_canary() == 1


def test_the_mark_of_the_configuration_leaves_the_release_of_the_template_what_it_was(
    cluster: FakeKube,
) -> None:
    """A canary's pods are the target's template's, whatever configuration they run."""
    reconcile(
        cluster, WorkloadIntent(target_paused=True, canary_replicas=1, canary_revision="rev-2.aaaa1111")
    )
    target = cluster.look("Deployment", NS, "checkout")
    canary = cluster.look("Deployment", NS, "checkout-canary")
    assert revision_of(canary["spec"]["template"]) == revision_of(
        {**target["spec"]["template"], "metadata": {"labels": {"app": "checkout", CANARY_LABEL: "true"}}}
    )
    reconcile(cluster, WorkloadIntent(target_paused=True, canary_replicas=1, canary_revision="rev-2"))
    untracked = cluster.look("Deployment", NS, "checkout-canary")
    assert CONFIGURATION not in (untracked["spec"]["template"]["metadata"].get("annotations") or {})
