"""The rollback levels' writers over the in-memory API server: nothing a user owns is
overwritten before an immutable, content-addressed copy of it exists; each writer is
idempotent (run twice, written once); a write that meets a conflict changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from parachute import api, kube
from parachute.api import FeatureFlags, FlagState
from parachute.kube_fake import FakeKube
from parachute.plan.desired_workload import RESTARTED_AT, revision_of
from parachute.plan.model import RecoveryIntent
from parachute.plan.rollback import content_hash, snapshot_name
from parachute.recovery import apply, flags, restarts, snapshots, template

T = TypeVar("T")
NS = "shop"


def rollout(name: str = "checkout", uid: str = "rollout-1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "uid": uid}}


def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": data,
    }


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def owners(cluster: FakeKube, name: str) -> list[str]:
    return [o["uid"] for o in cluster.look("ConfigMap", NS, name)["metadata"]["ownerReferences"]]


SETTINGS = {"timeout": "2s", "retries": "3"}
SNAPSHOT = snapshot_name("settings", content_hash(SETTINGS))


# -- snapshots ------------------------------------------------------------------------------


def test_a_snapshot_is_an_immutable_copy_named_by_its_content_and_taken_once() -> None:
    cluster = FakeKube([config_map("settings", SETTINGS)])
    wanted = (("settings", content_hash(SETTINGS)),)
    run(snapshots.take(cluster, rollout(), wanted))
    run(snapshots.take(cluster, rollout(), wanted))
    assert cluster.writes == [("create", "ConfigMap", NS, SNAPSHOT)]
    copy = cluster.look("ConfigMap", NS, SNAPSHOT)
    assert copy["immutable"] is True and copy["data"] == SETTINGS
    assert copy["metadata"]["labels"][snapshots.ROLLOUT_LABEL] == "checkout"
    assert copy["metadata"]["annotations"][snapshots.SOURCE_ANNOTATION] == "settings"
    with pytest.raises(kube.client.exceptions.ApiException):  # the API server keeps it as it is
        run(cluster.patch_config_map(NS, SNAPSHOT, {"data": {"timeout": "9s"}}))


def test_one_copy_of_the_same_bytes_is_owned_by_both_rollouts_that_took_it() -> None:
    cluster = FakeKube([config_map("settings", SETTINGS)])
    source = cluster.look("ConfigMap", NS, "settings")
    assert run(snapshots.copy(cluster, rollout("checkout"), source)) == SNAPSHOT
    assert run(snapshots.copy(cluster, rollout("checkout-eu", uid="rollout-2"), source)) == SNAPSHOT
    assert run(snapshots.copy(cluster, rollout("checkout-eu", uid="rollout-2"), source)) == SNAPSHOT
    assert cluster.named("ConfigMap", NS) == sorted(["settings", SNAPSHOT])
    assert owners(cluster, SNAPSHOT) == ["rollout-1", "rollout-2"]
    assert cluster.writes == [("create", "ConfigMap", NS, SNAPSHOT), ("patch", "ConfigMap", NS, SNAPSHOT)]


def test_a_configmap_whose_content_moved_on_since_the_planner_saw_it_is_not_copied() -> None:
    cluster = FakeKube([config_map("settings", {**SETTINGS, "retries": "9"})])
    run(snapshots.take(cluster, rollout(), (("settings", content_hash(SETTINGS)),)))
    assert cluster.writes == []


def test_a_restore_copies_what_the_configmap_holds_first_then_puts_the_snapshots_bytes_back() -> None:
    cluster = FakeKube([config_map("settings", SETTINGS)])
    run(snapshots.take(cluster, rollout(), (("settings", content_hash(SETTINGS)),)))
    broken = {"timeout": "0s", "retries": "3"}
    cluster.edit("ConfigMap", NS, "settings", lambda c: c.update(data=broken))
    del cluster.writes[:]
    kept = snapshot_name("settings", content_hash(broken))
    changed = run(snapshots.restore(cluster, rollout(), (("settings", SNAPSHOT),)))
    assert changed == [f"ConfigMap settings restored from {SNAPSHOT} (what it held is kept in {kept})"]
    assert cluster.writes == [("create", "ConfigMap", NS, kept), ("update", "ConfigMap", NS, "settings")]
    assert cluster.look("ConfigMap", NS, "settings")["data"] == SETTINGS
    assert cluster.look("ConfigMap", NS, kept)["data"] == broken
    assert run(snapshots.restore(cluster, rollout(), (("settings", SNAPSHOT),))) == []
    assert len(cluster.writes) == 2


def test_a_deleted_configmap_is_recreated_from_its_snapshot_and_a_missing_snapshot_restores_nothing() -> None:
    cluster = FakeKube([config_map("settings", SETTINGS)])
    run(snapshots.take(cluster, rollout(), (("settings", content_hash(SETTINGS)),)))
    del cluster.objects[("ConfigMap", NS, "settings")]
    del cluster.writes[:]
    assert run(snapshots.restore(cluster, rollout(), (("settings", SNAPSHOT),))) == [
        f"ConfigMap settings re-created from {SNAPSHOT}"
    ]
    assert cluster.look("ConfigMap", NS, "settings")["data"] == SETTINGS
    assert run(snapshots.restore(cluster, rollout(), (("other", "other-snapshot-0"),))) == [
        "ConfigMap other: snapshot other-snapshot-0 is missing, not restored"
    ]
    assert cluster.writes == [("create", "ConfigMap", NS, "settings")]


# -- flags ----------------------------------------------------------------------------------

PLAIN = FeatureFlags.model_validate({"configMapRef": {"name": "flags"}, "flags": ["new-checkout"]})
FLAGD = FeatureFlags.model_validate(
    {"configMapRef": {"name": "flags"}, "format": "flagd", "flags": ["new-checkout"]}
)
RESOURCE = FeatureFlags.model_validate({"featureFlagRef": {"name": "flags"}, "flags": ["new-checkout"]})
DEFINITIONS = {
    "flags": {
        "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
    }
}


def test_a_deleted_configmap_made_again_by_someone_else_meanwhile_is_theirs_until_the_next_look() -> None:
    cluster = FakeKube([config_map("settings", SETTINGS)])
    run(snapshots.take(cluster, rollout(), (("settings", content_hash(SETTINGS)),)))
    del cluster.objects[("ConfigMap", NS, "settings")]
    theirs = {"mode": "theirs"}
    cluster.before_write = lambda key: cluster.put(config_map("settings", theirs))
    with pytest.raises(kube.ConflictError):
        run(snapshots.restore(cluster, rollout(), (("settings", SNAPSHOT),)))
    assert cluster.look("ConfigMap", NS, "settings")["data"] == theirs
    kept = snapshot_name("settings", content_hash(theirs))
    changed = run(snapshots.restore(cluster, rollout(), (("settings", SNAPSHOT),)))
    assert changed == [f"ConfigMap settings restored from {SNAPSHOT} (what it held is kept in {kept})"]
    assert cluster.look("ConfigMap", NS, kept)["data"] == theirs


def feature_flag() -> dict[str, Any]:
    return {
        "apiVersion": "core.openfeature.dev/v1beta1",
        "kind": "FeatureFlag",
        "metadata": {"name": "flags", "namespace": NS},
        "spec": {"flagSpec": DEFINITIONS},
    }


def test_plain_flags_are_copied_then_switched_off_once() -> None:
    cluster = FakeKube([config_map("flags", {"new-checkout": "true", "other": "true"})])
    kept = snapshot_name("flags", content_hash({"new-checkout": "true", "other": "true"}))
    assert run(flags.ensure(cluster, rollout(), PLAIN, FlagState.off)) == [
        f"flags new-checkout set to false (previous values kept in {kept})"
    ]
    assert run(flags.ensure(cluster, rollout(), PLAIN, FlagState.off)) == []
    assert cluster.writes == [("create", "ConfigMap", NS, kept), ("patch", "ConfigMap", NS, "flags")]
    assert cluster.look("ConfigMap", NS, "flags")["data"] == {"new-checkout": "false", "other": "true"}
    assert run(flags.observe(cluster, NS, PLAIN)).state == "off"


def test_flagd_json_in_a_configmap_is_replaced_whole_after_a_copy() -> None:
    cluster = FakeKube([config_map("flags", {"flags.json": json.dumps(DEFINITIONS)})])
    changed = run(flags.ensure(cluster, rollout(), FLAGD, FlagState.off))
    assert changed[-1].startswith("previous flag definitions kept in flags-snapshot-")
    assert [w[0] for w in cluster.writes] == ["create", "update"]
    document = json.loads(cluster.look("ConfigMap", NS, "flags")["data"]["flags.json"])
    assert document["flags"]["new-checkout"]["defaultVariant"] == "off"
    assert run(flags.ensure(cluster, rollout(), FLAGD, FlagState.off)) == []
    assert len(cluster.writes) == 2


def test_an_openfeature_resource_keeps_its_definitions_in_a_copy_and_gets_new_ones() -> None:
    cluster = FakeKube([feature_flag()])
    run(flags.ensure(cluster, rollout(), RESOURCE, FlagState.off))
    kept = snapshot_name("flags", content_hash({"flagSpec.json": json.dumps(DEFINITIONS)}))
    assert cluster.writes == [("create", "ConfigMap", NS, kept), ("update", "FeatureFlag", NS, "flags")]
    assert json.loads(cluster.look("ConfigMap", NS, kept)["data"]["flagSpec.json"]) == DEFINITIONS
    written = cluster.look("FeatureFlag", NS, "flags")
    assert written["spec"]["flagSpec"]["flags"]["new-checkout"]["defaultVariant"] == "off"
    assert written["metadata"]["generation"] == 2


def test_a_flag_write_that_meets_a_conflict_is_reported_and_not_half_applied_then_done_on_the_retry() -> None:
    """Someone edits the store between the read and the write: the replace fails, their edit
    stands, and the next reconcile switches the flags in what they wrote."""
    cluster = FakeKube([config_map("flags", {"flags.json": json.dumps(DEFINITIONS)})])
    edited = {"flags": {**DEFINITIONS["flags"], "dark-mode": {"state": "ENABLED", "variants": {"on": True},
                                                              "defaultVariant": "on"}}}  # fmt: skip

    def meanwhile(key: tuple[str, str, str]) -> None:
        cluster.edit("ConfigMap", NS, "flags", lambda c: c.update(data={"flags.json": json.dumps(edited)}))

    cluster.before_write = meanwhile
    with pytest.raises(kube.ConflictError):
        run(flags.ensure(cluster, rollout(), FLAGD, FlagState.off))
    assert json.loads(cluster.look("ConfigMap", NS, "flags")["data"]["flags.json"]) == edited
    run(flags.ensure(cluster, rollout(), FLAGD, FlagState.off))
    document = json.loads(cluster.look("ConfigMap", NS, "flags")["data"]["flags.json"])
    assert document["flags"]["new-checkout"]["defaultVariant"] == "off"
    assert document["flags"]["dark-mode"] == edited["flags"]["dark-mode"]
    assert [w for w in cluster.writes if w[3] == "flags"] == [("update", "ConfigMap", NS, "flags")]


def test_a_missing_flag_store_is_said_and_nothing_is_written() -> None:
    cluster = FakeKube()
    assert run(flags.observe(cluster, NS, PLAIN)).problem == (
        "spec.featureFlags.configMapRef: ConfigMap shop/flags not found"
    )
    with pytest.raises(flags.FlagStoreError):
        run(flags.ensure(cluster, rollout(), RESOURCE, FlagState.off))
    assert cluster.writes == []


# -- restarts, template, and the order of the levels ----------------------------------------


def deployment(image: str, stamp: str | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": "checkout"}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }
    if stamp:
        template["metadata"]["annotations"] = {RESTARTED_AT: stamp}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": NS},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "checkout"}}, "template": template},
    }


def replica_set(owner: dict[str, Any], image: str) -> dict[str, Any]:
    labels = {"app": "checkout", "pod-template-hash": image[-1]}
    return {
        "kind": "ReplicaSet",
        "metadata": {"name": f"checkout-{image[-1]}", "namespace": NS, "labels": labels,
                     "ownerReferences": [{"uid": owner["metadata"]["uid"]}]},
        "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": image}]}}},
    }  # fmt: skip


def test_a_restart_stamps_the_pod_template_once() -> None:
    cluster = FakeKube([deployment("shop/checkout:2")])
    target = cluster.look("Deployment", NS, "checkout")
    assert run(restarts.restart(cluster, NS, target, "t1")) == ["restarted the pods of Deployment checkout"]
    target = cluster.look("Deployment", NS, "checkout")
    assert run(restarts.restart(cluster, NS, target, "t1")) == []
    assert cluster.writes == [("patch", "Deployment", NS, "checkout")]
    assert target["spec"]["template"]["metadata"]["annotations"] == {RESTARTED_AT: "t1"}


def test_the_targets_template_goes_back_to_the_stable_replica_sets_after_a_copy_of_the_one_replaced() -> None:
    cluster = FakeKube([deployment("shop/checkout:2")])
    target = cluster.look("Deployment", NS, "checkout")
    cluster.put(replica_set(target, "shop/checkout:1"))
    stable = revision_of(deployment("shop/checkout:1")["spec"]["template"])
    changed = run(template.restore(cluster, rollout(), target, stable))
    assert changed[0].startswith(f"Deployment checkout's pod template restored to revision {stable}")
    [(_, _, _, kept)] = [w for w in cluster.writes if w[1] == "ConfigMap"]
    assert (
        json.loads(cluster.look("ConfigMap", NS, kept)["data"]["template.json"])
        == deployment("shop/checkout:2")["spec"]["template"]
    )
    restored = cluster.look("Deployment", NS, "checkout")
    assert revision_of(restored["spec"]["template"]) == stable
    assert run(template.restore(cluster, rollout(), restored, stable)) == []
    assert [w[0] for w in cluster.writes] == ["create", "update"]


def test_a_revision_no_replica_set_runs_is_left_to_a_person() -> None:
    cluster = FakeKube([deployment("shop/checkout:2")])
    target = cluster.look("Deployment", NS, "checkout")
    assert run(template.restore(cluster, rollout(), target, "rev-gone")) == [
        "Deployment checkout: no ReplicaSet runs revision rev-gone; revert its template by hand"
    ]
    assert cluster.writes == []


def test_the_levels_act_fastest_first_configuration_then_restarts_then_the_template() -> None:
    """(The planner restarts and restores a template at different levels; one intent with all
    three only shows the order.)"""
    canary = {**deployment("shop/checkout:2"), "metadata": {"name": "checkout-canary", "namespace": NS}}
    cluster = FakeKube([deployment("shop/checkout:2"), canary, config_map("settings", SETTINGS)])
    target = cluster.look("Deployment", NS, "checkout")
    cluster.put(replica_set(target, "shop/checkout:1"))
    run(snapshots.take(cluster, rollout(), (("settings", content_hash(SETTINGS)),)))
    cluster.edit("ConfigMap", NS, "settings", lambda c: c.update(data={"timeout": "0s"}))
    del cluster.writes[:]
    stable = revision_of(deployment("shop/checkout:1")["spec"]["template"])
    intent = RecoveryIntent(
        restore_configs=(("settings", SNAPSHOT),), restart_stamp="t1", restore_template=stable
    )
    run(apply.act(cluster, rollout(), target, cluster.look("Deployment", NS, "checkout-canary"), intent))
    assert [(verb, name) for verb, _, _, name in cluster.writes] == [
        ("create", snapshot_name("settings", content_hash({"timeout": "0s"}))),
        ("update", "settings"),
        ("patch", "checkout-canary"),  # the restart
        ("create", cluster.writes[3][3]),  # the copy of the template being replaced
        ("update", "checkout"),
    ]
    assert cluster.look("ConfigMap", NS, "settings")["data"] == SETTINGS
    owner = cluster.look("ConfigMap", NS, SNAPSHOT)["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == (api.KIND, "rollout-1")
