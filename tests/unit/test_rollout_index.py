"""What a change to a Deployment, a ConfigMap or a ReleasePolicy wakes: the Rollouts that name
it, as the newest version of each Rollout says."""

from __future__ import annotations

from typing import Any

from parachute.rollout_index import RolloutIndex


def rollout(name: str, rv: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": rv}, "spec": spec}


def test_a_rollout_is_found_by_its_target_its_configmaps_and_its_policy() -> None:
    index = RolloutIndex()
    index.saw(rollout("checkout", "1", targetRef={"name": "web"}, configRefs=[{"name": "flags"}],
                      policyRef={"name": "business-hours"}))  # fmt: skip
    assert index.by_target("shop", "web") == ["checkout"]
    assert index.by_config("shop", "flags") == ["checkout"]
    assert index.by_policy("business-hours") == [("shop", "checkout")]
    assert index.by_target("other", "web") == []


def test_a_rollout_without_a_policy_is_on_the_default_and_one_with_its_own_window_on_none() -> None:
    index = RolloutIndex()
    index.saw(rollout("checkout", "1", targetRef={"name": "web"}))
    index.saw(rollout("search", "1", targetRef={"name": "search"}, window={"timezone": "UTC"}))
    assert index.by_policy("") == [("shop", "checkout")]


def test_a_changed_target_is_found_under_the_new_name_only() -> None:
    index = RolloutIndex()
    index.saw(rollout("checkout", "1", targetRef={"name": "web"}))
    index.saw(rollout("checkout", "2", targetRef={"name": "web-v2"}))
    assert index.by_target("shop", "web") == []
    assert index.by_target("shop", "web-v2") == ["checkout"]


def test_an_older_version_seen_late_changes_nothing() -> None:
    index = RolloutIndex()
    index.saw(rollout("checkout", "5", targetRef={"name": "web-v2"}))
    index.saw(rollout("checkout", "3", targetRef={"name": "web"}))  # the first listing, after the watch
    assert index.by_target("shop", "web-v2") == ["checkout"]
    assert index.by_target("shop", "web") == []


def test_two_rollouts_of_one_target_and_a_deleted_one() -> None:
    index = RolloutIndex()
    index.saw(rollout("a", "1", targetRef={"name": "web"}))
    index.saw(rollout("b", "2", targetRef={"name": "web"}))
    assert index.by_target("shop", "web") == ["a", "b"]
    index.gone(rollout("a", "3"))
    assert index.by_target("shop", "web") == ["b"]
    index.gone(rollout("b", "4"))
    index.gone(rollout("never-seen", "5"))
    assert index.by_target("shop", "web") == []


def test_a_rollout_deleted_while_the_first_listing_was_read_does_not_come_back() -> None:
    index = RolloutIndex()
    listing = [rollout("x", "10", targetRef={"name": "web"})]  # read before the deletion
    index.gone(rollout("x", "12"))  # the watch's DELETED, handled first
    for body in listing:
        index.saw(body)
    index.completed()
    assert index.by_target("shop", "web") == []
    index.saw(rollout("x", "15", targetRef={"name": "web"}))  # made again afterwards
    assert index.by_target("shop", "web") == ["x"]
