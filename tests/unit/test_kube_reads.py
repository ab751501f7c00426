"""What a reconcile asks the API server: a target's ReplicaSets are not listed again while the
target and its canary show no change (and the listing agrees with their status); the watch
events of this process's own writes (a Rollout's status, a Deployment's patch) are known as its
own."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from parachute import kube, listings, watched
from parachute.plan.desired_workload import as_news


class Answer:
    """An unparsed answer, as the typed client gives with `_preload_content=False`."""

    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


class FakeApps:
    """The typed client's ReplicaSet list and Deployment patch, counted: ReplicaSet `rs-N` of the
    N-th listing, owned by `owner` with `ready` pods ready."""

    lists = 0
    owner, ready = "", 0
    during: Any = None  # what happens while a listing is asked for

    def __init__(self, _: Any = None) -> None:
        pass

    def list_namespaced_replica_set(self, namespace: str, label_selector: str, **_: Any) -> Answer:
        FakeApps.lists += 1
        if FakeApps.during is not None:
            FakeApps.during()
        managed = [{"manager": "kube-controller-manager", "operation": "Update"}]
        meta = {"name": f"rs-{FakeApps.lists}", "managedFields": managed,
                "ownerReferences": [{"uid": FakeApps.owner}] if FakeApps.owner else []}  # fmt: skip
        ready = {
            "replicas": FakeApps.ready,
            "readyReplicas": FakeApps.ready,
            "availableReplicas": FakeApps.ready,
        }
        return Answer({"items": [{"metadata": meta, "status": ready if FakeApps.owner else {}}]})

    def patch_namespaced_deployment(self, name: str, namespace: str, patch: Any, **_: Any) -> Answer:
        return Answer({"metadata": {"namespace": namespace, "name": name, "resourceVersion": "70"}})


@pytest.fixture(autouse=True)
def no_copies_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies the watch keeps are the process's; each story starts and ends without any."""
    monkeypatch.setattr(watched, "ROLLOUTS", watched.Copies())
    monkeypatch.setattr(watched, "DEPLOYMENTS", watched.Copies())
    monkeypatch.setattr(watched, "DEPLOYMENT_NEWS", watched.News(read=as_news))
    monkeypatch.setattr(listings, "REPLICA_SETS", listings.Listings())


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> type[FakeApps]:
    FakeApps.lists, FakeApps.owner, FakeApps.ready, FakeApps.during = 0, "", 0, None
    monkeypatch.setattr(kube.client, "AppsV1Api", FakeApps)
    monkeypatch.setattr(kube, "api_client", lambda: None)
    return FakeApps


def deployment(name: str, version: int, ready: int | None = None) -> dict[str, Any]:
    """Deployment `name` in namespace shop, selecting app=checkout; with `ready`, a status
    written from its ReplicaSets with that many pods ready."""
    body: dict[str, Any] = {
        "metadata": {"namespace": "shop", "name": name, "resourceVersion": str(version)},
        "spec": {"selector": {"matchLabels": {"app": "checkout"}}},
    }
    if ready is not None:
        body["metadata"] |= {"uid": f"uid-{name}", "generation": 3}
        body["status"] = {"observedGeneration": 3, "replicas": ready, "readyReplicas": ready,
                          "availableReplicas": ready}  # fmt: skip
    return body


def at_rest(target: dict[str, Any]) -> None:
    """The watch showed the target; the canary was asked for and is not there."""
    watched.DEPLOYMENTS.seen(target)
    watched.DEPLOYMENTS.answered_absent("shop", "checkout-canary", asked_at=0.0)


def asks(*targets: dict[str, Any]) -> list[list[dict[str, Any]]]:
    async def looks() -> list[list[dict[str, Any]]]:
        return [await kube.replica_sets_of(target) for target in targets]

    return asyncio.run(looks())


def test_a_targets_replica_sets_are_not_listed_again_while_its_deployments_are_unchanged(
    apps: type[FakeApps],
) -> None:
    target = deployment("checkout", 7)
    at_rest(target)
    found = asks(target, target)
    found[0][0]["metadata"]["name"] = "changed by a caller"  # a caller's copy is its own
    found.append(asks(target)[0])
    assert apps.lists == 1
    assert found[2] == [
        {"metadata": {"name": "rs-1", "ownerReferences": []}, "status": {}}
    ]  # no managedFields


def test_a_change_the_watch_shows_of_the_target_or_its_canary_lists_again(apps: type[FakeApps]) -> None:
    target = deployment("checkout", 7)
    at_rest(target)
    asks(target)
    watched.DEPLOYMENTS.seen(deployment("checkout", 8))  # its status: ready replicas changed
    assert asks(target)[0][0]["metadata"]["name"] == "rs-2"
    watched.DEPLOYMENTS.seen(deployment("checkout-canary", 9))  # the canary was made
    assert [names[0]["metadata"]["name"] for names in asks(target, target)] == ["rs-3", "rs-3"]
    assert apps.lists == 3


def test_a_write_to_the_target_between_two_asks_lists_again(apps: type[FakeApps]) -> None:
    target = deployment("checkout", 7)
    at_rest(target)

    async def reconcile() -> None:
        await kube.replica_sets_of(target)
        await kube.patch_deployment("shop", "checkout", {"spec": {"paused": True}})  # its answer is the copy
        await kube.replica_sets_of(target)

    asyncio.run(reconcile())
    assert apps.lists == 2


def test_a_listing_asked_while_a_deployment_changed_is_not_answered_again(apps: type[FakeApps]) -> None:
    target = deployment("checkout", 7)
    at_rest(target)
    apps.during = lambda: watched.DEPLOYMENTS.seen(
        deployment("checkout", 8)
    )  # the answer may be from before it
    asks(target, target)
    assert apps.lists == 2


def test_a_listing_that_does_not_add_up_to_the_targets_status_is_not_kept(apps: type[FakeApps]) -> None:
    target = deployment("checkout", 7, ready=2)
    at_rest(target)
    apps.owner, apps.ready = "uid-checkout", 1  # a pod no longer ready: its status is not written yet
    asks(target, target)
    assert apps.lists == 2
    with listings.one_reconcile():  # one reconcile's asks are answered by its own listing
        asks(target, target)
    assert apps.lists == 3
    apps.ready = 2  # as the status says
    asks(target, target)
    assert apps.lists == 4


def test_two_targets_of_one_selector_keep_their_own_listings(apps: type[FakeApps]) -> None:
    checkout, cart = deployment("checkout", 7), deployment("cart", 8)
    for target in (checkout, cart):
        at_rest(target)
    watched.DEPLOYMENTS.answered_absent("shop", "cart-canary", asked_at=0.0)
    asks(checkout, cart, checkout, cart)
    assert apps.lists == 2


def test_without_a_copy_of_its_deployments_every_ask_lists(apps: type[FakeApps]) -> None:
    asks(deployment("checkout", 7), deployment("checkout", 7))
    assert apps.lists == 2


def test_the_version_a_status_write_made_is_known_as_this_processs_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def written(*_: Any) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": "42"}}

    monkeypatch.setattr(kube, "_guarded", written)
    monkeypatch.setattr(kube, "api_client", lambda: None)
    asyncio.run(kube.patch_rollout_status("shop", "checkout", {}, {"phase": "Healthy"}, "41"))
    assert kube.own_write("shop", "checkout", "42")
    assert kube.own_write("shop", "checkout", "39")  # an earlier write's event, arriving late
    assert not kube.own_write("shop", "checkout", "43")  # someone else's change after it
    assert not kube.own_write("shop", "payments", "42")
    kube.forget_writes("shop", "checkout")
    assert not kube.own_write("shop", "checkout", "42")


def test_a_side_write_over_someone_elses_change_leaves_that_change_news(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    versions = iter(["42", "46", "47"])

    async def written(*_: Any) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": next(versions)}}

    monkeypatch.setattr(kube, "_guarded", written)
    monkeypatch.setattr(kube, "api_client", lambda: None)
    asyncio.run(kube.patch_rollout_status("shop", "cart", {}, {"phase": "Healthy"}, "41"))  # decided
    # A user's promote made 45; a delivery record is written over it and decides nothing.
    asyncio.run(kube.patch_rollout_status("shop", "cart", {}, {"phase": "Healthy"}, "45", decided=False))
    assert not kube.own_write("shop", "cart", "45") and not kube.own_write("shop", "cart", "46")
    # Written over this process's own last write, a side write is its own.
    asyncio.run(kube.patch_rollout_status("shop", "cart", {}, {"phase": "Healthy"}, "42", decided=False))
    assert kube.own_write("shop", "cart", "47")
    kube.forget_writes("shop", "cart")


def test_a_refused_status_write_makes_the_next_reconcile_read_the_rollout_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refused(*_: Any) -> dict[str, Any]:
        raise kube.ConflictError("Rollout shop/checkout changed while being updated")

    watched.ROLLOUTS.seen({"metadata": {"namespace": "shop", "name": "checkout", "resourceVersion": "41"}})
    monkeypatch.setattr(kube, "_guarded", refused)
    monkeypatch.setattr(kube, "api_client", lambda: None)
    with pytest.raises(kube.ConflictError):
        asyncio.run(kube.patch_rollout_status("shop", "checkout", {}, {"phase": "Healthy"}, "41"))
    assert watched.ROLLOUTS.get("shop", "checkout") is None


def test_a_deployment_write_is_what_the_next_read_sees(apps: type[FakeApps]) -> None:
    watched.DEPLOYMENTS.seen({"metadata": {"namespace": "shop", "name": "checkout", "resourceVersion": "5"}})
    asyncio.run(kube.patch_deployment("shop", "checkout", {"spec": {"paused": True}}))
    watched.DEPLOYMENTS.seen({"metadata": {"namespace": "shop", "name": "checkout", "resourceVersion": "6"}})
    found = asyncio.run(kube.latest_deployment("shop", "checkout"))
    assert found is not None and found["metadata"]["resourceVersion"] == "70"


def test_a_deployment_write_that_finds_it_gone_drops_the_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    class Gone(FakeApps):
        def patch_namespaced_deployment(self, name: str, namespace: str, patch: Any, **_: Any) -> Answer:
            raise kube.ApiException(status=404, reason="Not Found")

    monkeypatch.setattr(kube.client, "AppsV1Api", Gone)
    monkeypatch.setattr(kube, "api_client", lambda: None)
    watched.DEPLOYMENTS.seen(
        {"metadata": {"namespace": "shop", "name": "checkout-canary", "resourceVersion": "5"}}
    )
    with pytest.raises(kube.ApiException):
        asyncio.run(kube.patch_deployment("shop", "checkout-canary", {"spec": {"replicas": 0}}))
    assert watched.DEPLOYMENTS.get("shop", "checkout-canary") is None


def server_side(meanwhile: dict[str, Any]) -> type[FakeApps]:
    """An API server holding one Deployment at version 5, to which `meanwhile` is done (by someone
    else) before the operator's patch arrives."""

    class Patching(FakeApps):
        stored: dict[str, Any] = {
            "metadata": {"namespace": "shop", "name": "checkout", "resourceVersion": "5", "annotations": {}},
            "spec": {"replicas": 2},
        }

        def patch_namespaced_deployment(self, name: str, namespace: str, patch: Any, **_: Any) -> Answer:
            answer = kube.apply_merge_patch(kube.apply_merge_patch(self.stored, meanwhile), patch)
            answer["metadata"]["resourceVersion"] = "7"
            return Answer(answer)

    return Patching


def patch_and_hear_the_echo(monkeypatch: pytest.MonkeyPatch, meanwhile: dict[str, Any]) -> bool:
    apps = server_side(meanwhile)
    monkeypatch.setattr(kube.client, "AppsV1Api", apps)
    monkeypatch.setattr(kube, "api_client", lambda: None)
    watched.DEPLOYMENTS.seen(apps.stored)
    watched.DEPLOYMENT_NEWS.event(apps.stored)
    asyncio.run(kube.patch_deployment("shop", "checkout", {"spec": {"paused": True}}))
    echo = asyncio.run(kube.latest_deployment("shop", "checkout"))
    assert echo is not None
    question = watched.DEPLOYMENT_NEWS.event(echo)
    return question is not None and question()


def test_the_echo_of_a_deployment_patch_is_no_news(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not patch_and_hear_the_echo(monkeypatch, meanwhile={})


def test_the_echo_of_a_patch_that_landed_on_someone_elses_change_is_news(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert patch_and_hear_the_echo(monkeypatch, meanwhile={"spec": {"replicas": 3}})


class Absent(FakeApps):
    """A Deployment that is not there; `meanwhile` runs while the read is on its way."""

    reads = 0
    meanwhile: Any = None

    def read_namespaced_deployment(self, name: str, namespace: str, **_: Any) -> Answer:
        Absent.reads += 1
        if Absent.meanwhile is not None:
            Absent.meanwhile()
        raise kube.ApiException(status=404, reason="Not Found")


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> type[Absent]:
    Absent.reads, Absent.meanwhile = 0, None
    monkeypatch.setattr(kube.client, "AppsV1Api", Absent)
    monkeypatch.setattr(kube, "api_client", lambda: None)
    return Absent


def test_a_deployment_that_is_not_there_is_asked_for_once(absent: type[Absent]) -> None:
    async def looks() -> list[Any]:
        return [await kube.latest_deployment("shop", "checkout-canary") for _ in range(3)]

    assert asyncio.run(looks()) == [None, None, None]
    assert absent.reads == 1


def test_a_deployment_the_watch_showed_made_while_the_read_was_answered_not_found_is_kept(
    absent: type[Absent],
) -> None:
    made = {"metadata": {"namespace": "shop", "name": "checkout", "resourceVersion": "9"}}
    absent.meanwhile = lambda: watched.DEPLOYMENTS.seen(made)
    assert asyncio.run(kube.read_deployment("shop", "checkout")) is None  # the answer, as it came
    found = asyncio.run(kube.latest_deployment("shop", "checkout"))
    assert found is not None and found["metadata"]["resourceVersion"] == "9"


class PagedApi:
    """The API server's metadata listing, page by page: each page names its snapshot."""

    def __init__(self, pages: list[tuple[str, list[tuple[str, str]]]]) -> None:
        self.pages = pages
        self.asked: list[tuple[str, dict[str, Any], str]] = []

    def call_api(self, path: str, method: str, query_params: list[tuple[str, Any]], **kwargs: Any) -> Answer:
        self.asked.append((path, dict(query_params), kwargs["header_params"]["Accept"]))
        at, items = self.pages[len(self.asked) - 1]
        more = len(self.asked) < len(self.pages)
        meta = {"resourceVersion": at, **({"continue": f"token-{len(self.asked)}"} if more else {})}
        listed = [
            {"metadata": {"namespace": "shop", "name": name, "resourceVersion": rv}} for name, rv in items
        ]
        return Answer({"metadata": meta, "items": listed})


def test_the_names_and_versions_are_listed_page_by_page_as_one_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paged = PagedApi([("40", [("checkout", "10"), ("payments", "12")]), ("40", [("ledger", "30")])])
    monkeypatch.setattr(kube, "api_client", lambda: paged)
    found = asyncio.run(kube.deployment_versions("shop"))
    assert found == kube.Versions(
        {("shop", "checkout"): 10, ("shop", "payments"): 12, ("shop", "ledger"): 30}, 40
    )
    (path, first, accept), (_, second, _) = paged.asked
    assert path == "/apis/apps/v1/namespaces/shop/deployments" and "PartialObjectMetadataList" in accept
    assert "continue" not in first and second["continue"] == "token-1"


def test_a_listing_whose_pages_are_of_two_snapshots_confirms_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    paged = PagedApi([("40", [("checkout", "10")]), ("41", [("ledger", "30")])])
    monkeypatch.setattr(kube, "api_client", lambda: paged)
    assert asyncio.run(kube.rollout_versions(None)) is None
    assert paged.asked[0][0] == "/apis/parachute.dev/v1alpha1/rollouts"
