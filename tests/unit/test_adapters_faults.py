"""A 409 on each write the adapters make: the write changes nothing, the error reaches the
reconcile loop (which runs the reconcile again), and the next run finishes the job without
writing anything twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from parachute import api, kube
from parachute.api import FeatureFlags, FlagState
from parachute.kube_fake import FakeKube, Key, api_error
from parachute.plan.desired_workload import revision_of
from parachute.plan.model import WorkloadIntent
from parachute.plan.rollback import content_hash, snapshot_name
from parachute.recovery import flags, restarts, snapshots, template
from parachute.workload import act, observe

NS = "shop"
ROLLOUT = {"metadata": {"name": "checkout", "namespace": NS, "uid": "rollout-1", "annotations": {}}}
SETTINGS = {"timeout": "2s"}
SNAPSHOT = snapshot_name("settings", content_hash(SETTINGS))
DEFINITIONS = {"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                          "defaultVariant": "on"}}}  # fmt: skip


def deployment(name: str = "checkout", image: str = "shop/checkout:2", **meta: Any) -> dict[str, Any]:
    labels = {"app": "checkout"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, **meta},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": image}]}}},
    }  # fmt: skip


def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": data,
    }


def workload(intent: WorkloadIntent) -> Callable[[FakeKube], Awaitable[Any]]:
    async def reconcile(cluster: FakeKube) -> list[str]:
        target = await cluster.read_deployment(NS, "checkout")
        assert target is not None
        _, canary = await observe(cluster, ROLLOUT, target)
        return await act(cluster, ROLLOUT, target, canary, intent)

    return reconcile


def paused(target: dict[str, Any]) -> None:
    target["spec"]["paused"] = True
    target["metadata"]["annotations"] = {api.PAUSED_BY_ANNOTATION: "checkout"}


def with_canary(revision: str, replicas: int = 1) -> FakeKube:
    cluster = FakeKube([deployment()])
    asyncio.run(workload(WorkloadIntent(True, replicas, revision))(cluster))
    cluster.put(deployment(image="shop/checkout:3"))
    cluster.edit("Deployment", NS, "checkout", paused)
    cluster.writes.clear()
    return cluster


async def restart(cluster: FakeKube) -> list[str]:
    target = await cluster.read_deployment(NS, "checkout")
    assert target is not None
    return await restarts.restart(cluster, NS, target, "t1")


def restore_template(cluster: FakeKube) -> Awaitable[list[str]]:
    async def restore() -> list[str]:
        target = await cluster.read_deployment(NS, "checkout")
        assert target is not None
        return await template.restore(cluster, ROLLOUT, target, revision_of(deployment()["spec"]["template"]))

    return restore()


def with_old_replica_set() -> FakeKube:
    cluster = FakeKube([deployment(image="shop/checkout:3")])
    uid = cluster.look("Deployment", NS, "checkout")["metadata"]["uid"]
    labels = {"app": "checkout", "pod-template-hash": "h2"}
    cluster.put({"kind": "ReplicaSet",
                 "metadata": {"name": "checkout-h2", "namespace": NS, "labels": labels, "ownerReferences": [{"uid": uid}]},
                 "spec": {"template": {**deployment()["spec"]["template"], "metadata": {"labels": labels}}}})  # fmt: skip
    return cluster


def with_snapshot() -> FakeKube:
    cluster = FakeKube([config_map("settings", SETTINGS)])
    asyncio.run(snapshots.take(cluster, ROLLOUT, (("settings", content_hash(SETTINGS)),)))
    cluster.edit("ConfigMap", NS, "settings", lambda c: c.update(data={"timeout": "0s"}))
    cluster.writes.clear()
    return cluster


def shared_snapshot() -> FakeKube:
    cluster = with_snapshot()
    cluster.edit("ConfigMap", NS, "settings", lambda c: c.update(data=SETTINGS))
    return cluster


async def copy_for_another_rollout(cluster: FakeKube) -> str:
    other = {"metadata": {"name": "checkout-eu", "namespace": NS, "uid": "rollout-2"}}
    return await snapshots.copy(cluster, other, cluster.look("ConfigMap", NS, "settings"))


PLAIN = FeatureFlags.model_validate({"configMapRef": {"name": "flags"}, "flags": ["new-checkout"]})
FLAGD = FeatureFlags.model_validate(
    {"configMapRef": {"name": "flags"}, "format": "flagd", "flags": ["new-checkout"]}
)
RESOURCE = FeatureFlags.model_validate({"featureFlagRef": {"name": "flags"}, "flags": ["new-checkout"]})
FEATURE_FLAG = {"apiVersion": "core.openfeature.dev/v1beta1", "kind": "FeatureFlag",
                "metadata": {"name": "flags", "namespace": NS}, "spec": {"flagSpec": DEFINITIONS}}  # fmt: skip


def flags_off(store: FeatureFlags) -> Callable[[FakeKube], Awaitable[list[str]]]:
    return lambda cluster: flags.ensure(cluster, ROLLOUT, store, FlagState.off)


CONFLICT = api_error(409, "Conflict")  # what an unguarded write's 409 raises
STALE = kube.ConflictError("changed")  # what a replace guarded by its resourceVersion raises


@dataclass(frozen=True)
class Case:
    arrange: Callable[[], FakeKube]
    run: Callable[[FakeKube], Awaitable[Any]]
    failing: Key  # the object whose write meets the 409
    verb: str
    error: Exception


CASES = {
    "target-paused": Case(lambda: FakeKube([deployment()]), workload(WorkloadIntent(True, 1, "rev-2")),
                          ("Deployment", NS, "checkout"), "patch", CONFLICT),
    "canary-created": Case(lambda: FakeKube([deployment()]), workload(WorkloadIntent(False, 1, "rev-2")),
                           ("Deployment", NS, "checkout-canary"), "create", CONFLICT),
    "canary-replaced": Case(lambda: with_canary("rev-2"), workload(WorkloadIntent(True, 1, "rev-3")),
                            ("Deployment", NS, "checkout-canary"), "update", STALE),
    "canary-scaled": Case(lambda: with_canary("rev-2"), workload(WorkloadIntent(True, 3, "rev-2")),
                          ("Deployment", NS, "checkout-canary"), "patch", CONFLICT),
    "pods-restarted": Case(lambda: FakeKube([deployment()]), restart, ("Deployment", NS, "checkout"), "patch",
                           CONFLICT),
    "template-restored": Case(with_old_replica_set, restore_template, ("Deployment", NS, "checkout"), "update",
                              STALE),
    "snapshot-owned-by-a-second-rollout": Case(shared_snapshot, copy_for_another_rollout,
                                               ("ConfigMap", NS, SNAPSHOT), "patch", CONFLICT),
    "config-restored": Case(with_snapshot,
                            lambda cluster: snapshots.restore(cluster, ROLLOUT, (("settings", SNAPSHOT),)),
                            ("ConfigMap", NS, "settings"), "update", STALE),
    "plain-flags-written": Case(lambda: FakeKube([config_map("flags", {"new-checkout": "true"})]), flags_off(PLAIN),
                                ("ConfigMap", NS, "flags"), "patch", CONFLICT),
    "flagd-json-written": Case(lambda: FakeKube([config_map("flags", {"flags.json": json.dumps(DEFINITIONS)})]),
                               flags_off(FLAGD), ("ConfigMap", NS, "flags"), "update", STALE),
    "feature-flag-written": Case(lambda: FakeKube([FEATURE_FLAG]), flags_off(RESOURCE),
                                 ("FeatureFlag", NS, "flags"), "update", STALE),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_conflict_on_a_write_changes_nothing_and_the_next_reconcile_finishes_writing_each_object_once(
    case: Case,
) -> None:
    cluster = case.arrange()
    kind = case.failing[0]
    before = cluster.objects.get(case.failing)
    cluster.fail_next(kind, case.verb, case.error)
    with pytest.raises(type(case.error)):
        asyncio.run(case.run(cluster))
    assert cluster.objects.get(case.failing) == before, "the failed write changed its object"
    assert (case.verb, *case.failing) not in cluster.writes

    asyncio.run(case.run(cluster))
    assert (case.verb, *case.failing) in cluster.writes, "the next reconcile did not write it"
    written = list(cluster.writes)
    assert len(set(written)) == len(written), f"written twice: {written}"
    asyncio.run(case.run(cluster))
    assert cluster.writes == written, "a third run wrote again"


def test_a_snapshot_another_reconcile_made_first_is_adopted_not_copied_again() -> None:
    """A 409 on a snapshot's create says it exists: same name, same bytes; it gets this owner too."""
    cluster = FakeKube([config_map("settings", SETTINGS)])

    def made_meanwhile(key: Key) -> None:
        body = config_map(SNAPSHOT, SETTINGS)
        body["metadata"]["ownerReferences"] = [{"uid": "rollout-2"}]
        cluster.put({**body, "immutable": True})

    cluster.before_write = made_meanwhile
    asyncio.run(snapshots.take(cluster, ROLLOUT, (("settings", content_hash(SETTINGS)),)))
    assert cluster.writes == [("patch", "ConfigMap", NS, SNAPSHOT)]
    owners = cluster.look("ConfigMap", NS, SNAPSHOT)["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners] == ["rollout-2", "rollout-1"]


def test_a_canary_created_meanwhile_by_someone_else_is_then_refused() -> None:
    cluster = FakeKube([deployment()])
    cluster.before_write = lambda key: (
        cluster.put(deployment("checkout-canary", image="theirs:1")) if key[2] == "checkout-canary" else None
    )
    run = workload(WorkloadIntent(False, 1, "rev-2"))
    with pytest.raises(kube.client.exceptions.ApiException):
        asyncio.run(run(cluster))
    with pytest.raises(Exception, match="is not this Rollout's"):
        asyncio.run(run(cluster))
    assert (
        cluster.look("Deployment", NS, "checkout-canary")["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
        == "theirs:1"
    )
