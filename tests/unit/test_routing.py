"""The router contract, over the in-memory client: every backend sets, reads back, writes
nothing when nothing changes, leaves the user's other rules and filters alone, puts a hand
edit back and says so, resets to stable, and refuses a set-up that cannot work before
writing anything. (tests/integration/test_router_contract.py runs the same backends on the
real API server with the real CRDs.)"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parachute.routing.fake import KINDS, FakeClient, FakeRouter, PatchError
from parachute.routing.objects import Body, Ref
from parachute.routing.replicas import ReplicaRouter
from parachute.routing.router import Applied, Release, RoutingSetupError
from testbed.routes import BACKENDS, OTHER, SERVICE, Backend, service

T = TypeVar("T")
NS = "shop"
ROLLOUT_UID = "11111111-2222-3333-4444-555555555555"
RELEASE = Release(namespace=NS, rollout="checkout", rollout_uid=ROLLOUT_UID, stable_hash="5d4f8c7b9")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def world(backend: Backend, send_to: str = SERVICE, **client: Any) -> FakeClient:
    return FakeClient([service(NS), service(NS, OTHER), *backend.user_objects(NS, send_to)], **client)


def ready(backend: Backend, **client: Any) -> tuple[FakeClient, Any]:
    fake = world(backend, **client)
    router = backend.router(fake, RELEASE)
    run(router.ensure())
    return fake, router


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.param
    return found


@pytest.mark.parametrize("weight", [0, 1, 10, 50, 99, 100])
def test_set_weight_is_read_back(backend: Backend, weight: int) -> None:
    fake, router = ready(backend)
    applied = run(router.set_weight(weight))
    assert applied == Applied(weight, wrote=True)
    assert run(router.read()) == Applied(weight)
    assert backend.weights(fake.look(backend.weighted(NS))) == (100 - weight, weight)


def test_nothing_is_written_when_nothing_changed(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(10))
    before, writes = fake.look(backend.weighted(NS))["metadata"], len(fake.writes)
    assert run(router.set_weight(10)) == Applied(10, wrote=False)
    assert run(router.ensure()) == []
    after = fake.look(backend.weighted(NS))["metadata"]
    assert (after["resourceVersion"], after["generation"]) == (
        before["resourceVersion"],
        before["generation"],
    )
    assert len(fake.writes) == writes


def test_the_users_other_rules_and_filters_are_untouched(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(0))
    parts = backend.users_parts(fake.look(backend.weighted(NS)))
    for weight in (10, 50, 100, 0):
        run(router.set_weight(weight))
        assert backend.users_parts(fake.look(backend.weighted(NS))) == parts
    users_service = Ref("v1", "Service", NS, SERVICE)
    assert fake.look(users_service)["spec"] == service(NS)["spec"]
    assert ("patch", users_service) not in fake.writes


def test_a_hand_edit_is_reported_and_put_back(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(10))
    where = backend.weighted(NS)
    run(fake.patch(where, backend.hand_edit(fake.look(where), 30)))
    seen = run(router.read())
    assert seen.weight == 30
    assert seen.hand_edit is not None and "someone else" in seen.hand_edit
    fixed = run(router.set_weight(10))
    assert fixed.weight == 10 and fixed.wrote
    assert fixed.hand_edit is not None and fixed.hand_edit.endswith("put back to canary 10%")
    assert backend.weights(fake.look(where)) == (90, 10)
    assert run(router.read()) == Applied(10)


def test_a_hand_edit_during_a_stage_change_is_reported_with_the_new_weight(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(10))
    where = backend.weighted(NS)
    run(fake.patch(where, backend.hand_edit(fake.look(where), 30)))
    moved = run(router.set_weight(50))
    assert (
        moved.weight == 50 and moved.hand_edit is not None and moved.hand_edit.endswith("set to canary 50%")
    )


def test_reset_sends_everything_to_stable(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(50))
    assert run(router.reset()) == Applied(0, wrote=True)
    assert backend.weights(fake.look(backend.weighted(NS))) == (100, 0)
    assert run(router.reset()) == Applied(0, wrote=False)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.services], ids=lambda b: b.id)
def test_services_follow_the_users_service(backend: Backend) -> None:
    fake, _ = ready(backend)
    stable = fake.look(Ref("v1", "Service", NS, "checkout-stable"))
    canary = fake.look(Ref("v1", "Service", NS, "checkout-canary"))
    assert stable["spec"]["selector"] == {"app": "checkout", "pod-template-hash": "5d4f8c7b9"}
    assert canary["spec"]["selector"] == {"app": "checkout", "parachute.dev/canary": "true"}
    for copy in (stable, canary):
        assert copy["spec"]["ports"] == service(NS)["spec"]["ports"]
        # Labelled with the Rollout and marked with its uid, but not owned: the garbage collector
        # must not take them while the user's route still sends to them (teardown removes them).
        assert "ownerReferences" not in copy["metadata"]
        assert copy["metadata"]["labels"]["parachute.dev/rollout"] == "checkout"
        assert copy["metadata"]["annotations"]["parachute.dev/rollout-uid"] == ROLLOUT_UID


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.crd], ids=lambda b: b.id)
def test_a_missing_crd_is_a_setup_error_naming_it(backend: Backend) -> None:
    group = str(backend.crd).split(".", 1)[1]
    served = [k for k in KINDS if not k[0].startswith(f"{group}/")]
    fake = FakeClient([service(NS)], served=served)
    router = backend.router(fake, RELEASE)
    for call in (router.ensure, router.read, lambda: router.set_weight(10)):
        with pytest.raises(RoutingSetupError) as error:
            run(call())
        assert backend.crd_message in str(error.value)
        assert str(error.value).startswith("spec.trafficRouting.")
    assert fake.writes == []


def test_a_route_that_does_not_send_to_the_service_is_a_setup_error(backend: Backend) -> None:
    fake = world(backend, send_to="payments")
    with pytest.raises(RoutingSetupError) as error:
        run(backend.router(fake, RELEASE).ensure())
    assert error.value.field.endswith((".service", ".ruleName"))
    assert fake.writes == []


@pytest.mark.parametrize("missing", ["service", "route"])
def test_a_missing_object_is_a_setup_error_and_nothing_is_written(backend: Backend, missing: str) -> None:
    fake = world(backend)
    gone = Ref("v1", "Service", NS, SERVICE) if missing == "service" else _route_ref(backend)
    del fake.objects[gone]
    router = backend.router(fake, RELEASE)
    with pytest.raises(RoutingSetupError) as error:
        run(router.ensure())
    assert f"{NS}/{gone.name} does not exist" in error.value.message
    assert fake.writes == []


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.services], ids=lambda b: b.id)
def test_a_same_named_service_of_someone_else_is_refused(backend: Backend) -> None:
    fake = world(backend)
    fake.put(service(NS, "checkout-canary"))
    with pytest.raises(RoutingSetupError) as error:
        run(backend.router(fake, RELEASE).ensure())
    assert "checkout-canary exists and is not this Rollout's" in error.value.message
    assert fake.writes == []


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.crd], ids=lambda b: b.id)
def test_weights_are_never_pointed_at_services_not_yet_made(backend: Backend) -> None:
    fake = world(backend)
    router = backend.router(fake, RELEASE)
    with pytest.raises(RoutingSetupError, match=r"ensure makes (it|them) first"):
        run(router.set_weight(10))
    assert fake.writes == []


def test_a_concurrent_change_is_kept_and_the_write_retried(backend: Backend) -> None:
    fake, router = ready(backend)
    where = backend.weighted(NS)

    def someone_labels_it(ref: Ref) -> None:
        fake.edit(ref, lambda body: body["metadata"].setdefault("labels", {}).update(team="shop"))
        if ref == where:
            # ...and edits the very rule Parachute is about to write.
            fake.edit(ref, lambda body: _add_rule_filter(backend, body))

    fake.before_write = someone_labels_it
    assert run(router.set_weight(20)).weight == 20
    body = fake.look(where)
    assert backend.weights(body) == (80, 20)
    if backend.id != "nginx":
        assert _has_added_filter(backend, body)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.services], ids=lambda b: b.id)
def test_the_stable_service_follows_a_new_stable_hash(backend: Backend) -> None:
    fake, _ = ready(backend)
    moved = Release(NS, "checkout", ROLLOUT_UID, stable_hash="77f9c6d8b")
    changes = run(backend.router(fake, moved).ensure())
    assert changes == [
        f"updated Service {NS}/checkout-stable (selector app=checkout,pod-template-hash=77f9c6d8b)"
    ]


# -- replica ratio and the fakes ---------------------------------------------------------------


def test_replica_ratio_writes_nothing_and_says_it_cannot_verify() -> None:
    router = ReplicaRouter()
    assert run(router.ensure()) == []
    for applied in (run(router.set_weight(10)), run(router.read()), run(router.reset())):
        assert applied.weight is None and not applied.wrote
        assert applied.unverified is not None and "replica ratio" in applied.unverified
        assert not applied.holds(10)


def test_the_fake_router_holds_its_weight_and_notices_a_hand_edit() -> None:
    router = FakeRouter()
    assert run(router.set_weight(10)) == Applied(10, wrote=True)
    router.hand_edit(40)
    assert run(router.read()).hand_edit == "found 40%, set 10%"
    assert run(router.set_weight(10)).hand_edit == "found 40%, set 10%; now 10%"
    assert run(router.set_weight(10)) == Applied(10)
    unverified = FakeRouter(verifiable=False)
    assert run(unverified.set_weight(10)) == Applied(None, FakeRouter.UNVERIFIED)
    assert unverified.writes == []
    broken = FakeRouter(
        setup_error=RoutingSetupError("spec.trafficRouting.istio", "VirtualService CRD missing")
    )
    with pytest.raises(RoutingSetupError):
        run(broken.ensure())


@pytest.mark.parametrize("weight", [-1, 101])
def test_a_weight_is_a_percentage(backend: Backend, weight: int) -> None:
    _, router = ready(backend)
    with pytest.raises(ValueError, match="percentage"):
        run(router.set_weight(weight))


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.integers(0, 100), min_size=1, max_size=6), which=st.sampled_from(BACKENDS))
def test_any_sequence_of_weights_sums_to_100_and_reads_back(steps: list[int], which: Backend) -> None:
    fake, router = ready(which)
    for weight in steps:
        run(router.set_weight(weight))
        stable, canary = which.weights(fake.look(which.weighted(NS)))
        assert stable + canary == 100 and canary == weight
        assert run(router.read()).holds(weight)


def test_the_fake_client_applies_a_patch_all_or_nothing() -> None:
    fake = FakeClient([service(NS)])
    ref = Ref("v1", "Service", NS, SERVICE)
    before = fake.look(ref)
    with pytest.raises(PatchError):
        run(fake.patch(ref, [{"op": "add", "path": "/spec/type", "value": "NodePort"},
                             {"op": "replace", "path": "/spec/missing/x", "value": 1}]))  # fmt: skip
    assert fake.look(ref) == before


def _route_ref(backend: Backend) -> Ref:
    where = backend.weighted(NS)
    return Ref(where.api_version, where.kind, NS, backend.route_name)


def _add_rule_filter(backend: Backend, body: Body) -> None:
    if backend.id.startswith("gateway"):
        rule = next(r for r in body["spec"]["rules"] if r.get("name") == "main")
        rule.setdefault("filters", []).append(
            {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": OTHER, "port": 80}}}
        )
    elif backend.id.startswith("istio"):
        body["spec"]["http"][1]["timeout"] = "5s"


def _has_added_filter(backend: Backend, body: Body) -> bool:
    if backend.id.startswith("gateway"):
        rule = next(r for r in body["spec"]["rules"] if r.get("name") == "main")
        return any(f["type"] == "RequestMirror" for f in rule["filters"])
    return bool(body["spec"]["http"][1].get("timeout") == "5s")
