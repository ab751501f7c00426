"""Where each version is in the metrics: pod-name patterns read from the ReplicaSets, exact for
the pods Kubernetes names, and never matching the other version's pods."""

from __future__ import annotations

import re
from typing import Any

import pytest

from parachute.plan.desired_workload import CONFIGURATION, replica_set_revision, revision_of
from parachute.plan.versions import any_pod_of, at_rest, locate, pod_pattern

TEMPLATE = {
    "metadata": {"labels": {"app": "checkout"}},
    "spec": {"containers": [{"name": "app", "image": "checkout:1.0"}]},
}
NEW = {
    "metadata": {"labels": {"app": "checkout"}},
    "spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]},
}
STABLE, RELEASE = revision_of(TEMPLATE), revision_of(NEW)
TARGET = {"metadata": {"name": "checkout", "uid": "t-uid"}}
CANARY = {"metadata": {"name": "checkout-canary", "uid": "c-uid"}}


def replica_set(
    name: str, owner: str, template: dict[str, Any], replicas: int = 2, canary: bool = False
) -> dict[str, Any]:
    labels = {**template["metadata"]["labels"], "pod-template-hash": name.rsplit("-", 1)[1]}
    if canary:
        labels["parachute.dev/canary"] = "true"
    return {
        "metadata": {"name": name, "ownerReferences": [{"uid": owner}], "labels": labels},
        "spec": {"template": {**template, "metadata": {"labels": labels}}},
        "status": {"replicas": replicas},
    }  # fmt: skip


SETS = [
    replica_set("checkout-6d4cf56db6", "t-uid", TEMPLATE),
    replica_set("checkout-7b9f5c8d4", "t-uid", NEW, replicas=0),
    replica_set("checkout-canary-5f7b8c9d4b", "c-uid", NEW, canary=True),
]
PODS = {
    "stable": ["checkout-6d4cf56db6-x2v9q", "checkout-6d4cf56db6-7hbzk"],
    "canary": ["checkout-canary-5f7b8c9d4b-kq8zt"],
    "other": ["checkout-worker-6d4cf56db6-x2v9q", "checkout-db-0", "checkout-canary-x-5f7b8c9d4b-kq8zt",
              "shop-checkout-6d4cf56db6-x2v9q"],
}  # fmt: skip


def matches(pattern: str, pod: str) -> bool:
    return re.fullmatch(pattern, pod) is not None  # PromQL anchors =~ patterns the same way


def test_each_version_matches_its_own_pods_and_no_one_elses() -> None:
    versions = locate(SETS, target=TARGET, canary=CANARY, revision=RELEASE, stable_revision=STABLE,
                      judges_target=False)  # fmt: skip
    for pod in PODS["canary"]:
        assert matches(versions.judged.pods, pod) and not matches(versions.stable.pods, pod)
    for pod in PODS["stable"]:
        assert matches(versions.stable.pods, pod) and not matches(versions.judged.pods, pod)
    for pod in PODS["other"]:
        assert not matches(versions.judged.pods, pod) and not matches(versions.stable.pods, pod)
    assert (versions.judged.workload, versions.stable.workload) == ("checkout-canary", "checkout")


def test_once_the_target_is_judged_its_serving_pods_are_the_new_version() -> None:
    promoted = [
        replica_set("checkout-6d4cf56db6", "t-uid", TEMPLATE, replicas=0),
        replica_set("checkout-7b9f5c8d4", "t-uid", NEW, replicas=4),
    ]
    versions = locate(promoted, target=TARGET, canary=None, revision=RELEASE, stable_revision=STABLE,
                      judges_target=True)  # fmt: skip
    assert matches(versions.judged.pods, "checkout-7b9f5c8d4-abcde")
    assert not matches(versions.judged.pods, "checkout-6d4cf56db6-x2v9q")
    assert versions.judges_target and versions.judged.workload == "checkout"


def test_a_router_s_services_name_the_versions() -> None:
    versions = locate(SETS, target=TARGET, canary=CANARY, revision=RELEASE, stable_revision=STABLE,
                      judges_target=False, service="checkout")  # fmt: skip
    assert (versions.judged.service, versions.stable.service) == ("checkout-canary", "checkout-stable")
    assert versions.judged.canary_backend and not versions.stable.canary_backend
    assert at_rest(SETS, TARGET, "checkout").service == "checkout-stable"


def test_before_its_replica_sets_exist_a_version_is_any_pod_of_its_deployment() -> None:
    versions = locate([], target=TARGET, canary=None, revision=RELEASE, stable_revision=STABLE,
                      judges_target=False)  # fmt: skip
    assert matches(versions.judged.pods, "checkout-canary-5f7b8c9d4b-kq8zt")
    assert matches(versions.stable.pods, "checkout-6d4cf56db6-x2v9q")
    assert not matches(versions.stable.pods, "checkout-canary-5f7b8c9d4b-kq8zt")
    assert any_pod_of("checkout") == versions.stable.pods


def test_long_names_are_cut_as_kubernetes_cuts_generated_names() -> None:
    long = "payments-settlement-reconciliation-worker-eu-west-1"  # 51 characters
    pattern = pod_pattern([f"{long}-6d4cf56db6"])
    pod = f"{long}-6d4cf56db6-"[:58] + "x2v9q"  # what the API server names it
    assert matches(pattern, pod)
    assert not matches(pattern, f"{long}-6d4cf56db6-x2v9q")


def test_dots_in_names_match_only_dots() -> None:
    pattern = pod_pattern(["api.v2-6d4cf56db6"])
    assert matches(pattern, "api.v2-6d4cf56db6-x2v9q") and not matches(pattern, "apixv2-6d4cf56db6-x2v9q")
    assert "\\" not in pattern  # nothing to double inside a PromQL string


def test_several_replica_sets_make_one_pattern() -> None:
    pattern = pod_pattern(["checkout-6d4cf56db6", "checkout-7b9f5c8d4"])
    assert matches(pattern, "checkout-6d4cf56db6-x2v9q") and matches(pattern, "checkout-7b9f5c8d4-x2v9q")
    with pytest.raises(ValueError, match="no ReplicaSet"):
        pod_pattern([])


def test_a_replica_sets_revision_is_its_templates_and_is_hashed_again_only_for_a_new_generation() -> None:
    made = replica_set("checkout-6d4cf56db6", "t-uid", TEMPLATE)
    made["metadata"].update(uid="rs-uid", generation=1)
    assert replica_set_revision(made) == STABLE
    # The same generation is the same template: a look at a copy is answered from the first.
    changed_behind_its_generation = {
        **made,
        "spec": {"template": {**NEW, "metadata": made["spec"]["template"]["metadata"]}},
    }
    assert replica_set_revision(changed_behind_its_generation) == STABLE
    changed = {**changed_behind_its_generation, "metadata": {**made["metadata"], "generation": 2}}
    assert replica_set_revision(changed) == RELEASE
    # Without a uid and a generation nothing is remembered.
    assert replica_set_revision(replica_set("checkout-7b9f5c8d4", "t-uid", NEW)) == RELEASE


def marked(replica_set: dict[str, Any], configuration: str) -> dict[str, Any]:
    """A canary's ReplicaSet of a tracked configuration: its pods marked with the configuration."""
    replica_set["spec"]["template"]["metadata"]["annotations"] = {CONFIGURATION: configuration}
    return replica_set


def test_a_canarys_pods_started_for_another_configuration_are_not_the_release_judged() -> None:
    """A configuration released over another keeps the pod template: the first's pods (their
    ReplicaSet kept, or still stopping) read the first configuration when they started."""
    sets = [
        replica_set("checkout-6d4cf56db6", "t-uid", TEMPLATE),
        marked(replica_set("checkout-canary-5f7b8c9d4b", "c-uid", NEW, replicas=1, canary=True), "aaaa1111"),
        marked(replica_set("checkout-canary-6c8d9f7b5d", "c-uid", NEW, canary=True), "bbbb2222"),
    ]
    versions = locate(sets, target=TARGET, canary=CANARY, revision=f"{RELEASE}.bbbb2222",
                      stable_revision=f"{STABLE}.0000aaaa", judges_target=False)  # fmt: skip
    assert matches(versions.judged.pods, "checkout-canary-6c8d9f7b5d-kq8zt")
    assert not matches(versions.judged.pods, "checkout-canary-5f7b8c9d4b-kq8zt")
    assert matches(versions.stable.pods, "checkout-6d4cf56db6-x2v9q")  # the target's pods are not marked


def test_a_canary_made_before_the_mark_is_judged_by_its_template_alone() -> None:
    versions = locate(SETS, target=TARGET, canary=CANARY, revision=f"{RELEASE}.bbbb2222",
                      stable_revision=STABLE, judges_target=False)  # fmt: skip
    assert matches(versions.judged.pods, "checkout-canary-5f7b8c9d4b-kq8zt")
