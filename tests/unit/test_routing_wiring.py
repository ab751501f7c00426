"""How a reconcile drives a router, over the in-memory client: the routing record is kept before
the user's route is first rewritten; a weight waits one reconcile after its backend changed;
a hand edit is put back with an Event; a refused grant names the chart toggle; and the route
is given back exactly as it was (or to the user's Service) when the Rollout stops routing or
is gone, before the Services it sent to are removed. Every call a router makes is one its
backend declares for RBAC."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from parachute import api, kube, rbac
from parachute.plan.model import Applied, TrafficIntent, TrafficView
from parachute.routing import access, record, teardown, wiring
from parachute.routing.fake import FakeClient
from parachute.routing.objects import Body, Ref
from parachute.routing.router import Release, RoutingSetupError
from testbed.routes import BACKENDS, OTHER, SERVICE, Backend, service

T = TypeVar("T")
NS = "shop"
UID = "11111111-2222-3333-4444-555555555555"
HASH = "5d4f8c7b9"
ROLLOUT = {"metadata": {"namespace": NS, "name": "checkout", "uid": UID}}
BACKEND_OF = {"gateway": "gatewayAPI", "istio": "istio", "nginx": "nginx"}
ROUTING: dict[str, dict[str, Any]] = {
    "gateway-north-south": {"gatewayAPI": {"httpRoute": "checkout", "service": SERVICE, "ruleName": "main"}},
    "gateway-gamma": {"gatewayAPI": {"httpRoute": "checkout", "service": SERVICE}},
    "istio": {"istio": {"virtualService": "checkout", "service": SERVICE}},
    "istio-subsets": {"istio": {"virtualService": "checkout", "service": SERVICE, "destinationRule": {"name": "checkout"}}},
    "nginx": {"nginx": {"ingress": "shop", "service": SERVICE}},
}  # fmt: skip


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def spec_for(backend: Backend) -> api.RolloutSpec:
    return api.RolloutSpec.model_validate(
        {"targetRef": {"name": "checkout"}, "trafficRouting": ROUTING[backend.id]}
    )


def user_world(backend: Backend, send_to: str = SERVICE) -> FakeClient:
    return FakeClient([service(NS), service(NS, OTHER), *backend.user_objects(NS, send_to)])


def users_objects(fake: FakeClient) -> dict[Ref, Body]:
    """What the user made, as it stands (without the server's bookkeeping)."""
    out = {}
    for ref, body in fake.objects.items():
        labels = body["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") == "parachute":
            continue
        kept = copy.deepcopy(body)
        for key in ("resourceVersion", "generation", "uid"):
            kept["metadata"].pop(key, None)
        if kept["metadata"].get("annotations") == {}:  # the API server keeps no empty map
            del kept["metadata"]["annotations"]
        out[ref] = kept
    return out


def steer(fake: FakeClient, backend: Backend, weight: int, stable: str = HASH) -> wiring.Steered:
    """One reconcile's routing: read, then act on an intent of `weight`%."""
    spec = spec_for(backend)
    seen = run(wiring.observe(ROLLOUT, spec, fake))
    return run(wiring.act(ROLLOUT, spec, TrafficIntent(share=weight, stable=stable), seen, fake))


def settled(fake: FakeClient, backend: Backend, weight: int) -> None:
    for _ in range(3):
        steer(fake, backend, weight)
    seen = run(wiring.observe(ROLLOUT, spec_for(backend), fake))
    assert seen is not None and seen.applied == Applied(weight)


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.param
    return found


# ---------------------------------------------------------------------------- reading


def test_a_route_not_yet_set_up_is_read_as_unknown_and_nothing_is_written(backend: Backend) -> None:
    fake = user_world(backend)
    seen = run(wiring.observe(ROLLOUT, spec_for(backend), fake))
    assert seen == TrafficView(Applied(None, wiring.NOT_SET_UP))
    assert fake.writes == []


def test_replica_ratio_reads_nothing() -> None:
    fake = FakeClient()
    spec = api.RolloutSpec.model_validate({"targetRef": {"name": "checkout"}})
    assert run(wiring.observe(ROLLOUT, spec, fake)) is None
    assert fake.reads == []


@pytest.mark.parametrize("what", ["route-misses-the-service", "service-missing"])
def test_bad_input_is_refused_before_anything_is_written(backend: Backend, what: str) -> None:
    fake = user_world(backend, send_to="payments" if what == "route-misses-the-service" else SERVICE)
    if what == "service-missing":
        del fake.objects[Ref("v1", "Service", NS, SERVICE)]
    with pytest.raises(RoutingSetupError) as error:
        run(wiring.observe(ROLLOUT, spec_for(backend), fake))
    assert error.value.field.startswith("spec.trafficRouting.")
    with pytest.raises(RoutingSetupError):
        run(wiring.act(ROLLOUT, spec_for(backend), TrafficIntent(share=0, stable=HASH), None, fake))
    assert fake.writes == []


def test_a_refused_grant_names_the_chart_toggle(backend: Backend) -> None:
    fake = user_world(backend)
    where = backend.weighted(NS)
    fake.forbidden.add((where.api_version, where.kind))
    with pytest.raises(RoutingSetupError) as error:
        run(wiring.observe(ROLLOUT, spec_for(backend), fake))
    toggle = BACKEND_OF[backend.id.split("-")[0]]
    assert error.value.field == f"spec.trafficRouting.{toggle}"
    assert f"rbac.{toggle}=true" in error.value.message


# ---------------------------------------------------------------------------- acting


def test_the_record_is_kept_before_the_route_is_first_rewritten(backend: Backend) -> None:
    fake = user_world(backend)
    steered = steer(fake, backend, 0)
    record_ref = record.record_ref(NS, "checkout")
    assert fake.writes[0] == ("create", record_ref)
    kept = record.parse(fake.look(record_ref))
    assert kept is not None and kept.rollout_uid == UID
    assert kept.routing == spec_for(backend).traffic_routing
    assert "ownerReferences" not in fake.look(record_ref)["metadata"]  # outlives the Rollout
    # What the backend needs was made; the weight waits for the next reconcile.
    assert steered.again and any("created" in c or "updated" in c for c in steered.changed)
    assert all(ref != backend.weighted(NS) or verb == "create" for verb, ref in fake.writes)


def test_a_weight_follows_one_reconcile_after_its_backend_changed(backend: Backend) -> None:
    fake = user_world(backend)
    steer(fake, backend, 0)
    writes = len(fake.writes)
    steered = steer(fake, backend, 0)
    assert steered.changed == ["route set to send 0% to the canary"]
    assert any(ref == backend.weighted(NS) for _, ref in fake.writes[writes:])
    assert steer(fake, backend, 0).changed == []  # nothing changed: nothing written


def test_a_new_stable_hash_holds_the_weight_back_one_reconcile(backend: Backend) -> None:
    if not backend.services and backend.id != "istio-subsets":
        pytest.skip("no stable backend to re-pin")
    fake = user_world(backend)
    settled(fake, backend, 100)
    moved = steer(fake, backend, 0, stable="77f9c6d8b")
    assert moved.again and "route set" not in " ".join(moved.changed)
    assert steer(fake, backend, 0, stable="77f9c6d8b").changed == ["route set to send 0% to the canary"]


def slices(fake: FakeClient, service_name: str, *pods: tuple[str, bool | None]) -> None:
    """What the endpoint controller lists for a Service now: its pods, each ready or not (None: unset)."""
    fake.endpoints_follow = False
    endpoints = [
        {
            "targetRef": {"kind": "Pod", "name": pod},
            **({"conditions": {"ready": ready}} if ready is not None else {}),
        }
        for pod, ready in pods
    ]
    fake.put({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"namespace": NS, "name": f"{service_name}-x7k2p",
                           "labels": {"kubernetes.io/service-name": service_name}},
              "endpoints": endpoints})  # fmt: skip


CANARY_HASH = "6b8d9f7c5"
NEW_HASH = "77f9c6d8b"


def pod_of(set_hash: str) -> str:
    """The name of a pod of the target's ReplicaSet of that hash, or (CANARY_HASH) the canary's."""
    owner = "checkout-canary" if set_hash == CANARY_HASH else "checkout"
    return f"{owner}-{set_hash}-{set_hash[:5]}"


def pods(fake: FakeClient, *hashes: str) -> None:
    """The pods that exist now: one of each ReplicaSet, with the labels its template gives them."""
    fake.endpoints_follow = False
    for set_hash in hashes:
        canary = {"parachute.dev/canary": "true"} if set_hash == CANARY_HASH else {}
        labels = {"app": SERVICE, "pod-template-hash": set_hash, **canary}
        fake.put({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"namespace": NS, "name": pod_of(set_hash), "labels": labels}})  # fmt: skip


def ready(fake: FakeClient, endpoints: dict[str, bool | None]) -> None:
    """The user's Service's EndpointSlices now: the pod of each set named, ready or not (None: unset)."""
    slices(fake, SERVICE, *((pod_of(set_hash), state) for set_hash, state in endpoints.items()))


COPIES = pytest.mark.parametrize("backend", [b for b in BACKENDS if b.services], ids=lambda b: b.id)


@COPIES
def test_traffic_goes_back_to_stable_only_once_its_service_lists_the_new_stable_pods(
    backend: Backend,
) -> None:
    """At promotion the stable backend is re-pinned to the pods the target rolled to; its
    EndpointSlices follow a moment later (later still on a busy control plane). Until they list
    a ready pod of that set, the canary keeps its share: requests never meet a backend with none.
    (Subsets: their own stories below.)"""
    fake = user_world(backend)
    settled(fake, backend, 100)
    service_name = f"{SERVICE}-stable"
    slices(fake, service_name, (pod_of(HASH), True), (pod_of(NEW_HASH), False))
    for _ in range(3):
        held = steer(fake, backend, 0, stable=NEW_HASH)
        assert held.again and not any(c.startswith("route set") for c in held.changed)
    assert "lists no ready endpoint of pods 77f9c6d8b yet" in held.changed[-1]
    assert run(wiring.observe(ROLLOUT, spec_for(backend), fake)) == TrafficView(Applied(100))
    slices(fake, service_name, (pod_of(HASH), True), (pod_of(NEW_HASH), None))
    assert steer(fake, backend, 0, stable=NEW_HASH).changed == ["route set to send 0% to the canary"]


@COPIES
def test_a_canary_share_waits_for_the_canary_services_endpoints(backend: Backend) -> None:
    fake = user_world(backend)
    settled(fake, backend, 0)
    slices(fake, f"{SERVICE}-canary")
    held = steer(fake, backend, 10)
    assert "checkout-canary lists no ready endpoint yet" in held.changed[-1]
    slices(fake, f"{SERVICE}-canary", ("checkout-canary-6b8d9-qwert", True))
    assert steer(fake, backend, 10).changed == ["route set to send 10% to the canary"]


# -- subsets: a subset is the user's Service's ready endpoints whose pods carry its labels -----

SUBSETS = next(b for b in BACKENDS if b.id == "istio-subsets")
SUBSET_DR = Ref("networking.istio.io/v1", "DestinationRule", NS, SERVICE)


def weights(fake: FakeClient) -> tuple[int, int]:
    """(stable, canary) as the VirtualService holds them."""
    return SUBSETS.weights(fake.look(SUBSETS.weighted(NS)))


def stable_subset(fake: FakeClient) -> dict[str, str]:
    subsets = fake.look(SUBSET_DR)["spec"]["subsets"]
    return dict(next(s["labels"] for s in subsets if s["name"] == "stable"))


def test_a_canary_subset_gains_weight_only_once_the_users_service_lists_a_ready_canary_pod() -> None:
    """The canary subset is the canary's pods by label, among the user's Service's endpoints:
    a canary Deployment that says ready is not enough while the Service lists none of its pods."""
    fake = user_world(SUBSETS)
    settled(fake, SUBSETS, 0)
    pods(fake, HASH, CANARY_HASH)
    ready(fake, {HASH: True, CANARY_HASH: False})
    held = steer(fake, SUBSETS, 10)
    assert held.again and not any(c.startswith("route set") for c in held.changed)
    assert held.changed[-1].endswith(
        "DestinationRule shop/checkout subset canary (pods parachute.dev/canary=true) yet"
    )
    assert weights(fake) == (100, 0)
    ready(fake, {HASH: True, CANARY_HASH: True})
    assert steer(fake, SUBSETS, 10).changed == ["route set to send 10% to the canary"]


def test_a_ready_endpoint_counts_for_a_subset_only_if_its_pod_carries_the_subsets_labels() -> None:
    """An endpoint whose pod is gone, or whose name looks like the set's but whose pod carries
    other labels, is not one the data plane sends the subset's share to."""
    fake = user_world(SUBSETS)
    settled(fake, SUBSETS, 100)
    run(wiring.act(ROLLOUT, spec_for(SUBSETS), TrafficIntent(share=100, stable=NEW_HASH), None, fake))
    assert stable_subset(fake) == {"pod-template-hash": NEW_HASH}
    pods(fake, HASH, CANARY_HASH)  # no pod of the new set exists...
    ready(fake, {HASH: True, CANARY_HASH: True, NEW_HASH: True})  # ...whatever a slice says
    assert "subset stable (pods pod-template-hash=77f9c6d8b)" in steer(fake, SUBSETS, 0, NEW_HASH).changed[-1]
    fake.put({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"namespace": NS, "name": pod_of(NEW_HASH), "labels": {"app": SERVICE}}})  # fmt: skip
    assert "subset stable" in steer(fake, SUBSETS, 0, NEW_HASH).changed[-1]
    assert weights(fake) == (0, 100)


def test_at_the_full_stage_the_weight_stays_on_the_canary_until_the_repinned_stable_subset_lists_a_ready_endpoint() -> (
    None
):
    """The target has rolled to the new version: the stable subset is re-pinned to its pods at
    once (it takes no requests while the canary holds them all), and the weight goes back to it
    only once the user's Service lists one of those pods as a ready endpoint."""
    fake = user_world(SUBSETS)
    settled(fake, SUBSETS, 100)
    pods(fake, HASH, NEW_HASH, CANARY_HASH)
    ready(fake, {HASH: False, NEW_HASH: False, CANARY_HASH: True})
    repinned = steer(fake, SUBSETS, 0, stable=NEW_HASH)
    assert repinned.again and repinned.changed == [
        "updated DestinationRule shop/checkout subsets stable (pod-template-hash=77f9c6d8b) and canary"
    ]
    for _ in range(3):
        held = steer(fake, SUBSETS, 0, stable=NEW_HASH)
        assert held.again and not any(c.startswith("route set") for c in held.changed)
        assert weights(fake) == (0, 100)
    assert held.changed == [
        "route kept 100% until it can send 0% to the canary: Service shop/checkout lists no ready endpoint "
        "of DestinationRule shop/checkout subset stable (pods pod-template-hash=77f9c6d8b) yet"
    ]
    ready(fake, {HASH: False, NEW_HASH: None, CANARY_HASH: True})
    assert steer(fake, SUBSETS, 0, stable=NEW_HASH).changed == ["route set to send 0% to the canary"]
    assert weights(fake) == (100, 0)


def test_at_rollback_the_stable_subset_that_holds_the_weight_is_not_repinned_until_its_new_pods_are_ready_endpoints() -> (
    None
):
    """A rollback at the full stage, the target part-way to the failing version: the stable subset
    followed the set with the most ready pods (the new one) and takes the traffic back at once.
    As the target rolls back, the stable set is the old one again; the subset, which holds all
    the requests, keeps selecting the pods it reaches until the old pods are ready endpoints."""
    fake = user_world(SUBSETS)
    settled(fake, SUBSETS, 100)
    pods(fake, HASH, NEW_HASH, CANARY_HASH)
    ready(fake, {HASH: True, NEW_HASH: True, CANARY_HASH: True})
    steer(fake, SUBSETS, 100, stable=NEW_HASH)  # the target rolls: the stable subset follows it
    assert steer(fake, SUBSETS, 0, stable=NEW_HASH).changed == ["route set to send 0% to the canary"]
    ready(fake, {HASH: False, NEW_HASH: True, CANARY_HASH: False})
    for _ in range(3):
        held = steer(fake, SUBSETS, 0, stable=HASH)
        assert held.again and held.changed == [
            "kept DestinationRule shop/checkout subset stable as it is while it takes requests: Service "
            "shop/checkout lists no ready endpoint of DestinationRule shop/checkout subset stable (pods "
            "pod-template-hash=5d4f8c7b9) yet"
        ]
        assert stable_subset(fake) == {"pod-template-hash": NEW_HASH}
    ready(fake, {HASH: True, NEW_HASH: True, CANARY_HASH: False})
    assert steer(fake, SUBSETS, 0, stable=HASH).changed == [
        "updated DestinationRule shop/checkout subsets stable (pod-template-hash=5d4f8c7b9) and canary"
    ]
    assert stable_subset(fake) == {"pod-template-hash": HASH}
    assert weights(fake) == (100, 0)


def test_at_rollback_the_weight_goes_back_to_the_stable_subset_it_always_had() -> None:
    """A rollback at a partial stage: the stable subset keeps the old set's pods, which the user's
    Service lists as ready; the canary's share goes back to it in one write."""
    fake = user_world(SUBSETS)
    settled(fake, SUBSETS, 50)
    pods(fake, HASH, CANARY_HASH)
    ready(fake, {HASH: True, CANARY_HASH: False})
    assert steer(fake, SUBSETS, 0).changed == ["route set to send 0% to the canary"]
    assert stable_subset(fake) == {"pod-template-hash": HASH}
    assert weights(fake) == (100, 0)


def stable_lists_no_ready_endpoint(fake: FakeClient, backend: Backend) -> None:
    """The stable side's pods are there but not ready endpoints (the canary's are)."""
    if backend.services:
        slices(fake, f"{SERVICE}-stable", (pod_of(HASH), False))
    else:
        pods(fake, HASH, CANARY_HASH)
        ready(fake, {HASH: False, CANARY_HASH: True})


def test_a_rollback_holding_traffic_back_says_so_once_and_puts_it_back_anyway_after_a_minute(
    backend: Backend,
) -> None:
    """A rollback must never wait on the new version: while the stable side lists no ready
    endpoint the canary keeps its share, with one Warning saying so and until when; from
    ROLLBACK_HOLD_LIMIT after the rollback started, the share goes back to stable all the same."""
    fake = user_world(backend)
    settled(fake, backend, 50)
    stable_lists_no_ready_endpoint(fake, backend)
    spec = spec_for(backend)
    started = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def reconcile(after: float, incident: str = "1") -> wiring.Steered:
        rollback = wiring.Rollback(f"{backend.id}-{incident}", started, started + timedelta(seconds=after))
        seen = run(wiring.observe(ROLLOUT, spec, fake))
        return run(
            wiring.act(ROLLOUT, spec, TrafficIntent(share=0, stable=HASH), seen, fake, rollback=rollback)
        )

    first = reconcile(1)
    assert first.again and first.changed[-1].startswith("route kept 50% until it can send 0% to the canary")
    assert [(e.type.value, e.reason) for e in first.events] == [("Warning", "TrafficHeld")]
    assert "(50%)" in first.events[0].message and "by 12:01:00 UTC" in first.events[0].message
    assert reconcile(30).events == []  # told once per incident, not every reconcile
    assert reconcile(31, incident="2").events[0].reason == "TrafficHeld"  # a new incident is told
    assert backend.weights(fake.look(backend.weighted(NS))) == (50, 50)
    late = reconcile(wiring.ROLLBACK_HOLD_LIMIT.total_seconds())
    assert late.changed[0].startswith("route sent back to stable though")
    assert late.changed[-1] == "route set to send 0% to the canary"
    assert backend.weights(fake.look(backend.weighted(NS))) == (100, 0)


def test_outside_a_rollback_traffic_held_back_from_stable_waits_without_a_bound(backend: Backend) -> None:
    fake = user_world(backend)
    settled(fake, backend, 50)
    stable_lists_no_ready_endpoint(fake, backend)
    held = steer(fake, backend, 0)
    assert held.again and held.events == [] and "route kept 50%" in held.changed[-1]
    assert backend.weights(fake.look(backend.weighted(NS))) == (50, 50)


def test_a_hand_edit_is_put_back_with_an_event(backend: Backend) -> None:
    fake = user_world(backend)
    settled(fake, backend, 10)
    where = backend.weighted(NS)
    run(fake.patch(where, backend.hand_edit(fake.look(where), 30)))
    steered = steer(fake, backend, 10)
    assert [e.reason for e in steered.events] == ["WeightsPutBack"]
    assert "changed by someone else" in steered.events[0].message
    assert backend.weights(fake.look(where)) == (90, 10)


# ---------------------------------------------------------------------------- giving back


def test_the_route_is_given_back_exactly_as_it_was_and_what_parachute_made_goes(backend: Backend) -> None:
    fake = user_world(backend)
    before = users_objects(fake)
    settled(fake, backend, 50)
    assert users_objects(fake) != before  # the user's route was rewritten
    found = run(record.read(fake, NS, "checkout"))
    assert found is not None
    done = len(fake.writes)
    changed = run(teardown.give_back(fake, found))
    assert users_objects(fake) == before
    assert not [
        r
        for r, b in fake.objects.items()
        if (b["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by")
    ]
    assert changed[-1] == "removed the routing record of Rollout checkout"
    # The route is given back first, the record goes last, what it sent to in between.
    where = backend.weighted(NS)
    writes = fake.writes[done:]
    assert writes[0] == ("patch", Ref(where.api_version, where.kind, NS, backend.route_name))
    assert writes[-1] == ("delete", record.record_ref(NS, "checkout"))


def test_a_route_that_named_the_copies_itself_is_given_back_to_the_users_service() -> None:
    backend = next(b for b in BACKENDS if b.id == "gateway-north-south")
    fake = user_world(backend, send_to=f"{SERVICE}-stable")  # GitOps: the route names the copies
    settled(fake, backend, 10)
    found = run(record.read(fake, NS, "checkout"))
    assert found is not None and found.snapshot["rules"] == []  # nothing of the user's to keep
    run(teardown.give_back(fake, found))
    rule = fake.look(backend.weighted(NS))["spec"]["rules"][1]
    assert [(b["name"], b.get("port"), b.get("weight")) for b in rule["backendRefs"]] == [(SERVICE, 80, None)]
    assert rule["backendRefs"][0]["filters"]  # the backendRef's own filters are kept


def test_removing_the_router_gives_the_route_back(backend: Backend) -> None:
    fake = user_world(backend)
    before = users_objects(fake)
    settled(fake, backend, 10)
    replicas = api.RolloutSpec.model_validate({"targetRef": {"name": "checkout"}})
    steered = run(wiring.act(ROLLOUT, replicas, None, None, fake))
    assert steered.changed and users_objects(fake) == before
    assert run(record.read(fake, NS, "checkout")) is None


def test_a_rollout_of_the_same_name_gives_back_what_its_predecessor_left(backend: Backend) -> None:
    fake = user_world(backend)
    before = users_objects(fake)
    settled(fake, backend, 10)
    newer = {"metadata": {"namespace": NS, "name": "checkout", "uid": "another-uid"}}
    spec = spec_for(backend)
    seen = run(wiring.observe(newer, spec, fake))
    assert seen == TrafficView(Applied(None, wiring.GIVING_BACK))  # not judged against the leftovers
    steered = run(wiring.act(newer, spec, TrafficIntent(share=0, stable=HASH), seen, fake))
    assert steered.again and run(record.read(fake, NS, "checkout")) is None
    assert users_objects(fake) == before
    # The next reconcile checks and sets up the route for the new Rollout.
    seen = run(wiring.observe(newer, spec, fake))
    assert seen == TrafficView(Applied(None, wiring.NOT_SET_UP))
    run(wiring.act(newer, spec, TrafficIntent(share=0, stable=HASH), seen, fake))
    kept = run(record.read(fake, NS, "checkout"))
    assert kept is not None and kept.rollout_uid == "another-uid"


def test_a_deleted_rollout_has_its_route_given_back_and_a_live_one_does_not(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = user_world(backend)
    before = users_objects(fake)
    settled(fake, backend, 10)
    rollouts: dict[str, Any] = {"checkout": ROLLOUT}

    async def read_rollout(namespace: str, name: str) -> dict[str, Any] | None:
        return rollouts.get(name)

    monkeypatch.setattr(kube, "read_rollout", read_rollout)
    assert run(teardown.give_back_if_orphaned(NS, "checkout", fake)) == []
    del rollouts["checkout"]
    assert run(teardown.give_back_if_orphaned(NS, "checkout", fake))
    assert users_objects(fake) == before
    assert run(teardown.give_back_if_orphaned(NS, "checkout", fake)) == []  # once only


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.services], ids=lambda b: b.id)
def test_a_reconcile_still_acting_when_its_rollout_is_deleted_leaves_nothing_behind(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconcile read its Rollout just before the deletion and is making the Services when
    the DELETED event's give-back starts: the give-back waits its turn, then removes them."""
    gate = asyncio.Event()

    class Slow(FakeClient):
        async def create(self, body: Body) -> Body:
            if body["kind"] == "Service":
                await gate.wait()
            return await super().create(body)

    fake = Slow([service(NS), service(NS, OTHER), *backend.user_objects(NS, SERVICE)])
    before = users_objects(fake)

    async def gone(namespace: str, name: str) -> dict[str, Any] | None:
        return None

    monkeypatch.setattr(kube, "read_rollout", gone)
    spec = spec_for(backend)

    async def story() -> None:
        seen = await wiring.observe(ROLLOUT, spec, fake)
        acting = asyncio.create_task(
            wiring.act(ROLLOUT, spec, TrafficIntent(share=0, stable=HASH), seen, fake)
        )
        await asyncio.sleep(0.01)  # the reconcile waits at its first Service
        giving = asyncio.create_task(teardown.give_back_if_orphaned(NS, "checkout", fake))
        await asyncio.sleep(0.01)  # time for a give-back that did not wait to finish
        gate.set()
        await acting
        await giving

    run(story())
    assert users_objects(fake) == before
    assert [ref for ref in fake.objects if ref not in before] == []


def test_giving_back_tolerates_what_is_already_gone(backend: Backend) -> None:
    fake = user_world(backend)
    settled(fake, backend, 10)
    found = run(record.read(fake, NS, "checkout"))
    assert found is not None
    where = backend.weighted(NS)
    del fake.objects[Ref(where.api_version, where.kind, NS, backend.route_name)]
    run(teardown.give_back(fake, found))
    assert run(record.read(fake, NS, "checkout")) is None


# ---------------------------------------------------------------------------- least privilege


def test_every_call_a_router_makes_is_declared_for_its_backend(backend: Backend) -> None:
    fake = user_world(backend)
    settled(fake, backend, 10)
    steer(fake, backend, 50)
    found = run(record.read(fake, NS, "checkout"))
    assert found is not None
    run(teardown.give_back(fake, found))
    made = {access.call_of("get", r.api_version, r.kind) for r in fake.reads}
    made |= {access.call_of(verb, r.api_version, r.kind) for verb, r in fake.writes}
    made |= {access.call_of("list", r.api_version, r.kind) for r in fake.lists}
    toggle = BACKEND_OF[backend.id.split("-")[0]]
    assert made <= access.CORE | access.BACKENDS[toggle]
    assert made & access.BACKENDS[toggle]
    assert made <= rbac.granted(backends=(toggle,))


def test_the_record_names_itself_within_a_configmaps_name() -> None:
    assert record.record_name("checkout") == "parachute-routing-checkout"
    long = record.record_name("x" * 253)
    assert len(long) <= 253 and long != record.record_name("x" * 252 + "y")


def test_a_record_with_garbage_is_not_read_as_one() -> None:
    release = Release(NS, "checkout", UID, HASH)
    fake = FakeClient()
    routing = api.TrafficRouting.model_validate(ROUTING["istio"])
    run(record.write(fake, release, routing, {"rules": []}))
    ref = record.record_ref(NS, "checkout")
    assert record.parse(fake.look(ref)) is not None
    fake.edit(ref, lambda body: body["data"].update(trafficRouting="{not json"))
    assert record.parse(fake.look(ref)) is None


@pytest.fixture(autouse=True)
def known(monkeypatch: pytest.MonkeyPatch) -> record.Known:
    """The records as this process knows them: each story starts before the first listing."""
    fresh = record.Known()
    monkeypatch.setattr(record, "KNOWN", fresh)
    return fresh


@pytest.fixture
def listed(known: record.Known) -> record.Known:
    """The records as an operator knows them once its first listing is in (none at the time)."""
    known.listing([])
    return known


REPLICAS_ONLY = api.RolloutSpec.model_validate({"targetRef": {"name": "checkout"}})


def test_a_rollout_without_routing_looks_for_no_record_where_none_can_exist(listed: record.Known) -> None:
    fake = FakeClient([service(NS)])
    run(wiring.act(ROLLOUT, REPLICAS_ONLY, None, None, fake))
    assert fake.reads == []


def test_before_the_first_listing_a_rollout_without_routing_looks_for_its_record() -> None:
    fake = FakeClient([service(NS)])
    run(wiring.act(ROLLOUT, REPLICAS_ONLY, None, None, fake))
    assert fake.reads == [record.record_ref(NS, "checkout")]


def test_removing_the_router_gives_the_route_back_once_the_records_are_known(
    backend: Backend, listed: record.Known
) -> None:
    fake = user_world(backend)
    before = users_objects(fake)
    settled(fake, backend, 10)  # its own write of the record is known
    assert listed.may_exist(NS, "checkout")
    steered = run(wiring.act(ROLLOUT, REPLICAS_ONLY, None, None, fake))
    assert steered.changed and users_objects(fake) == before
    assert not listed.may_exist(NS, "checkout")  # removed with the route given back
    fake.reads.clear()
    run(wiring.act(ROLLOUT, REPLICAS_ONLY, None, None, fake))
    assert fake.reads == []


def test_a_record_is_known_from_the_listing_and_the_watch_and_forgotten_when_deleted() -> None:
    known = record.Known()
    assert known.may_exist(NS, "checkout")  # nothing listed yet: anywhere
    body = {"metadata": {"namespace": NS, "name": record.record_name("checkout"),
                         "labels": {record.KIND_LABEL: record.KIND}}}  # fmt: skip
    known.listing([body])
    assert known.may_exist(NS, "checkout") and not known.may_exist(NS, "cart")
    known.seen(body, gone=True)
    assert not known.may_exist(NS, "checkout")
    other = {"metadata": {"namespace": NS, "name": record.record_name("cart"),
                          "labels": {record.KIND_LABEL: record.KIND}}}  # fmt: skip
    known.seen(other)  # a record written by another replica, from the watch
    assert known.may_exist(NS, "cart")
    known.seen({"metadata": {**other["metadata"], "labels": {}}})  # no longer a record
    assert not known.may_exist(NS, "cart")


def a_record(rollout: str, uid: str) -> Body:
    return {"metadata": {"namespace": NS, "name": record.record_name(rollout), "uid": uid,
                         "labels": {record.KIND_LABEL: record.KIND}}}  # fmt: skip


def test_the_deletion_of_an_earlier_record_seen_late_does_not_forget_the_next_one_of_its_name() -> None:
    known = record.Known()
    known.listing([a_record("checkout", "first")])
    known.seen(a_record("checkout", "second"))  # made again; kopf handles each uid's events apart
    known.seen(a_record("checkout", "first"), gone=True)
    assert known.may_exist(NS, "checkout")
    known.seen(a_record("checkout", "second"), gone=True)
    assert not known.may_exist(NS, "checkout")


def test_a_record_written_here_is_not_forgotten_by_the_late_deletion_of_its_predecessor(
    backend: Backend, listed: record.Known
) -> None:
    fake = user_world(backend)
    settled(fake, backend, 10)
    listed.seen(a_record("checkout", "an-earlier-one"), gone=True)
    assert listed.may_exist(NS, "checkout")


def test_a_record_wrongly_thought_to_exist_is_forgotten_by_the_read_that_finds_none(
    listed: record.Known,
) -> None:
    listed.seen(a_record("checkout", "deleted-while-the-watch-was-away"))
    fake = FakeClient([service(NS)])
    run(wiring.act(ROLLOUT, REPLICAS_ONLY, None, None, fake))
    assert fake.reads == [record.record_ref(NS, "checkout")]
    fake.reads.clear()
    run(wiring.act(ROLLOUT, REPLICAS_ONLY, None, None, fake))
    assert fake.reads == []
