"""A phased release's every route change, over the in-memory client, as the reconcile makes it:
the audience's rule comes once the canary is ready, the next audience replaces it, the weight
steps beside it, everyone goes to the canary with the rule gone in the same write, the stable
Service is re-pinned to the pods the target rolled to and the route goes back to it, and a
rollback or an abort takes the audience back to stable mid-phase.

Through all of it: a request whose way a write changes is sent only to Services that list a
ready endpoint. Where a request goes is read from the raw objects as the testbed's data plane
reads them (the rule that matches it, its backends by weight), and a Service's ready endpoints
are what its EndpointSlices list, as a proxy takes them. A side that lists none keeps what it
has; a rollback waits for it at most `wiring.ROLLBACK_HOLD_LIMIT`, an abort without bound.
(Istio subsets are their own stories in test_routing_wiring.py.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from parachute import api
from parachute.plan.model import Applied, AudienceMatch, TrafficIntent
from parachute.routing import services, wiring
from parachute.routing.fake import FakeClient
from parachute.routing.objects import Ref
from parachute.routing.router import Release
from testbed.routes import BACKENDS, OTHER, SERVICE, Backend, reaches, service

T = TypeVar("T")
NS = "shop"
UID = "11111111-2222-3333-4444-555555555555"
OLD_HASH, NEW_HASH = "5d4f8c7b9", "77f9c6d8b"
ROLLOUT = {"metadata": {"namespace": NS, "name": "checkout", "uid": UID}}
RELEASE = Release(NS, "checkout", UID, OLD_HASH)
EMPLOYEES = AudienceMatch("header", "x-employee", "true")
ROUTING: dict[str, dict[str, Any]] = {
    "gateway-north-south": {"gatewayAPI": {"httpRoute": "checkout", "service": SERVICE, "ruleName": "main"}},
    "gateway-gamma": {"gatewayAPI": {"httpRoute": "checkout", "service": SERVICE}},
    "istio": {"istio": {"virtualService": "checkout", "service": SERVICE}},
    "nginx": {"nginx": {"ingress": "shop", "service": SERVICE}},
}  # fmt: skip
STABLE, CANARY = f"{SERVICE}-stable", f"{SERVICE}-canary"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def beta(backend: Backend) -> AudienceMatch:
    """The second audience, by cookie (NGINX routes a cookie's "always" only)."""
    return AudienceMatch("cookie", "beta", "always" if backend.id == "nginx" else "yes")


def pod(owner: str, set_hash: str) -> str:
    return f"{owner}-{set_hash}-{set_hash[:5]}"


class World:
    """The user's Service and route, the Services' EndpointSlices as a test sets them, and a
    reconcile's routing: read, then act on what the phased planner asks for."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.fake = FakeClient([service(NS), service(NS, OTHER), *backend.user_objects(NS, SERVICE)])
        self.fake.endpoints_follow = False
        self.spec = api.RolloutSpec.model_validate({
            "targetRef": {"name": "checkout"}, "strategy": "phased", "trafficRouting": ROUTING[backend.id],
            "phased": {"audiences": [{"name": "internal", "header": {"name": "x-employee", "value": "true"}},
                                     {"name": "everyone"}]},
        })  # fmt: skip
        self.stable_hash = OLD_HASH
        self.incident = str(uuid.uuid4())
        self.lists(SERVICE, pod("checkout", OLD_HASH))
        self.lists(STABLE, pod("checkout", OLD_HASH))
        self.lists(CANARY)
        self.classes = {"the audience": {"x-employee": "true"}, "the beta audience": self.cookie(beta(backend)),
                        "everyone else": {}}  # fmt: skip
        for _ in range(2):  # the record and the Services, then the route at 0%
            self.reconcile(0)
        assert self.holds() == Applied(0)

    @staticmethod
    def cookie(audience: AudienceMatch) -> dict[str, str]:
        return {"cookie": f"session=1; {audience.key}={audience.value}"}

    def lists(self, name: str, *ready: str, unready: tuple[str, ...] = ()) -> None:
        """What the endpoint controller lists for Service `name` now: pods ready, and not."""
        endpoints = [{"targetRef": {"kind": "Pod", "name": p}, "conditions": {"ready": True}} for p in ready]
        endpoints += [
            {"targetRef": {"kind": "Pod", "name": p}, "conditions": {"ready": False}} for p in unready
        ]
        self.fake.put({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"namespace": NS, "name": f"{name}-x7k2p",
                                    "labels": {"kubernetes.io/service-name": name}},
                       "endpoints": endpoints})  # fmt: skip

    def ways(self) -> dict[str, dict[str, int]]:
        """Where each class of request goes now: each Service's share."""
        out = {}
        for who, headers in self.classes.items():
            shares = reaches(self.backend, self.look, NS, headers)
            out[who] = {f"{SERVICE}-{side}" if side in ("stable", "canary") else side: share
                        for side, share in shares.items()}  # fmt: skip
        return out

    def look(self, ref: Ref) -> Any:
        """An object as the data plane reads it; None while it does not exist (NGINX's canary
        Ingress before the route is set up)."""
        return self.fake.look(ref) if ref in self.fake.objects else None

    def reconcile(
        self, weight: int, audience: AudienceMatch | None = None, rollback: wiring.Rollback | None = None
    ) -> wiring.Steered:
        """One reconcile's routing; then no request whose way it changed meets an empty Service."""
        before = self.ways()
        seen = run(wiring.observe(ROLLOUT, self.spec, self.fake))
        intent = TrafficIntent(share=weight, audience=audience, stable=self.stable_hash)
        steered = run(wiring.act(ROLLOUT, self.spec, intent, seen, self.fake, rollback=rollback))
        after = self.ways()
        for who, way in after.items():
            if way != before[who]:
                empty = [name for name in way if not run(services.ready_pods(self.fake, RELEASE, name))]
                assert empty == [], (
                    f"{who} sent to {empty}, which list no ready endpoint ({before[who]} -> {way})"
                )
        return steered

    def holds(self) -> Applied:
        seen = run(wiring.observe(ROLLOUT, self.spec, self.fake))
        assert seen is not None
        return seen.applied


def route_written(steered: wiring.Steered) -> bool:
    return any(change.startswith("route set") for change in steered.changed)


@pytest.fixture(params=[b for b in BACKENDS if b.id in ROUTING], ids=lambda b: b.id)
def world(request: pytest.FixtureRequest) -> World:
    return World(request.param)


def at_the_audience_stage(world: World) -> None:
    world.lists(CANARY, pod("checkout-canary", "6b8d9f7c5"))
    world.reconcile(0, EMPLOYEES)
    assert world.holds() == Applied(0, audience=EMPLOYEES)


def test_the_audience_goes_to_the_canary_only_once_its_service_lists_a_ready_endpoint(world: World) -> None:
    """The canary's pod says ready before the endpoint controller lists it: the rule waits."""
    world.lists(CANARY, unready=(pod("checkout-canary", "6b8d9f7c5"),))
    for _ in range(3):
        held = world.reconcile(0, EMPLOYEES)
        assert held.again and not route_written(held)
    assert held.changed[-1] == (
        "route kept 0% until it can send 0% to the canary and header x-employee: true to it: "
        "Service shop/checkout-canary lists no ready endpoint yet"
    )
    assert world.holds() == Applied(0)
    assert world.ways()["the audience"] == {STABLE: 100}
    at_the_audience_stage(world)
    assert world.ways() == {"the audience": {CANARY: 100}, "the beta audience": {STABLE: 100},
                            "everyone else": {STABLE: 100}}  # fmt: skip


def test_the_next_audience_replaces_the_last_once_both_sides_list_a_ready_endpoint(world: World) -> None:
    """The next audience goes to the canary and the last one back to stable, in one write: both
    sides gain requests, and both must be able to take them."""
    at_the_audience_stage(world)
    world.lists(STABLE, unready=(pod("checkout", OLD_HASH),))
    held = world.reconcile(0, beta(world.backend))
    assert not route_written(held)
    assert held.changed[-1].startswith(
        "route kept 0% and header x-employee: true to the canary until it can send 0% to the canary and "
        f"{beta(world.backend)} to it: Service shop/checkout-stable lists no ready endpoint of pods {OLD_HASH}"
    )
    world.lists(STABLE, pod("checkout", OLD_HASH))
    world.lists(CANARY, unready=(pod("checkout-canary", "6b8d9f7c5"),))
    assert not route_written(world.reconcile(0, beta(world.backend)))
    world.lists(CANARY, pod("checkout-canary", "6b8d9f7c5"))
    assert route_written(world.reconcile(0, beta(world.backend)))
    assert world.ways() == {"the audience": {STABLE: 100}, "the beta audience": {CANARY: 100},
                            "everyone else": {STABLE: 100}}  # fmt: skip


def test_a_weight_step_beside_the_audience_waits_for_the_canarys_endpoints(world: World) -> None:
    at_the_audience_stage(world)
    world.lists(CANARY, unready=(pod("checkout-canary", "6b8d9f7c5"),))  # its pod restarts
    held = world.reconcile(10, EMPLOYEES)
    assert not route_written(held) and "checkout-canary lists no ready endpoint" in held.changed[-1]
    world.lists(CANARY, pod("checkout-canary", "6b8d9f7c5"))
    assert world.reconcile(10, EMPLOYEES).changed == [
        "route set to send 10% to the canary and header x-employee: true to it"
    ]
    assert world.ways()["everyone else"] == {STABLE: 90, CANARY: 10}


def test_at_the_full_stage_everyone_goes_to_the_canary_and_the_rule_goes_in_the_same_write(
    world: World,
) -> None:
    at_the_audience_stage(world)
    world.lists(CANARY, pod("checkout-canary", "6b8d9f7c5"), unready=(pod("checkout-canary", "6b8d9f7c6"),))
    writes = len(world.fake.writes)
    assert world.reconcile(100).changed == ["route set to send 100% to the canary"]
    assert len(world.fake.writes) == writes + 1
    assert world.holds() == Applied(100)
    assert world.ways() == {who: {CANARY: 100} for who in world.classes}


def test_at_the_end_the_stable_service_is_repinned_and_traffic_goes_back_once_it_lists_the_new_pods(
    world: World,
) -> None:
    """The target has rolled to the new version: the stable Service, which takes no requests at
    100%, is re-pinned to its pods at once; the route goes back to it only once the Service lists
    one of them as a ready endpoint (its EndpointSlices follow the selector a moment later)."""
    at_the_audience_stage(world)
    world.reconcile(100)
    world.stable_hash = NEW_HASH
    repinned = world.reconcile(100)
    assert repinned.again and repinned.changed == [
        f"updated Service shop/checkout-stable (selector app=checkout,pod-template-hash={NEW_HASH})"
    ]
    world.lists(STABLE, pod("checkout", OLD_HASH), unready=(pod("checkout", NEW_HASH),))
    for _ in range(3):
        held = world.reconcile(0)
        assert held.again and not route_written(held)
    assert held.changed[-1] == (
        "route kept 100% until it can send 0% to the canary: Service shop/checkout-stable lists no ready "
        f"endpoint of pods {NEW_HASH} yet"
    )
    world.lists(STABLE, pod("checkout", NEW_HASH))
    assert world.reconcile(0).changed == ["route set to send 0% to the canary"]
    assert world.ways() == {who: {STABLE: 100} for who in world.classes}


STARTED = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def rollback(world: World, after: float) -> wiring.Rollback:
    """The rollback of this world's incident (held traffic is told once per incident)."""
    return wiring.Rollback(world.incident, STARTED, STARTED + timedelta(seconds=after))


def test_a_rollback_at_the_audience_stage_takes_the_audience_back_to_stable_in_one_write(
    world: World,
) -> None:
    at_the_audience_stage(world)
    writes = len(world.fake.writes)
    steered = world.reconcile(0, rollback=rollback(world, 1))
    assert steered.changed == ["route set to send 0% to the canary"] and steered.events == []
    assert len(world.fake.writes) == writes + 1
    assert world.holds() == Applied(0)
    assert world.ways() == {who: {STABLE: 100} for who in world.classes}


def test_a_rollback_keeps_the_audience_on_the_canary_while_stable_lists_none_for_a_minute_at_most(
    world: World,
) -> None:
    """Dropping the audience's rule sends its requests to stable: stable gains them, and is
    checked as for any share it gains. A rollback never waits on the new version: it tells once
    that it holds them, and sends them back at `ROLLBACK_HOLD_LIMIT` all the same."""
    at_the_audience_stage(world)
    world.lists(STABLE, unready=(pod("checkout", OLD_HASH),))
    held = world.reconcile(0, rollback=rollback(world, 1))
    assert not route_written(held)
    assert held.changed[-1].startswith(
        "route kept 0% and header x-employee: true to the canary until it can send 0% to the canary and "
        "no audience: Service shop/checkout-stable lists no ready endpoint"
    )
    assert [e.reason for e in held.events] == ["TrafficHeld"]
    assert "(0% and header x-employee: true to the canary)" in held.events[0].message
    assert world.ways()["the audience"] == {CANARY: 100}
    late = run(wiring.act(ROLLOUT, world.spec, TrafficIntent(share=0, stable=OLD_HASH),
                          run(wiring.observe(ROLLOUT, world.spec, world.fake)), world.fake,
                          rollback=rollback(world, wiring.ROLLBACK_HOLD_LIMIT.total_seconds())))  # fmt: skip
    assert late.changed[0].startswith("route sent back to stable though")
    assert late.changed[-1] == "route set to send 0% to the canary"
    assert world.holds() == Applied(0)


def test_an_abort_at_the_audience_stage_waits_for_stable_without_a_bound(world: World) -> None:
    at_the_audience_stage(world)
    world.lists(STABLE, unready=(pod("checkout", OLD_HASH),))
    for _ in range(3):
        held = world.reconcile(0)
        assert held.again and held.events == [] and not route_written(held)
    assert world.holds() == Applied(0, audience=EMPLOYEES)
    world.lists(STABLE, pod("checkout", OLD_HASH))
    assert world.reconcile(0).changed == ["route set to send 0% to the canary"]
    assert world.ways() == {who: {STABLE: 100} for who in world.classes}
