"""What each backend decides for itself: which rules it drives, how it names the Service,
what it reads back from odd states, and what it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from parachute import api
from parachute.routing.fake import FakeClient
from parachute.routing.gateway_api import GatewayAPIRouter
from parachute.routing.istio import IstioRouter, Subsets
from parachute.routing.nginx import NginxRouter
from parachute.routing.objects import Body, Ref
from parachute.routing.router import Release, RoutingSetupError
from testbed.routes import (
    OTHER,
    destination_rule,
    gateway_parent,
    http_route,
    ingress,
    service,
    virtual_service,
)

T = TypeVar("T")
NS = "shop"
RELEASE = Release(NS, "checkout", "uid-1", stable_hash="5d4f8c7b9")
ROUTE = Ref("gateway.networking.k8s.io/v1", "HTTPRoute", NS, "checkout")
VS = Ref("networking.istio.io/v1", "VirtualService", NS, "checkout")
INGRESS = Ref("networking.k8s.io/v1", "Ingress", NS, "shop")
CANARY_INGRESS = Ref("networking.k8s.io/v1", "Ingress", NS, "shop-canary")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def gateway(route: Body, **settings: Any) -> tuple[FakeClient, GatewayAPIRouter]:
    fake = FakeClient([service(NS), service(NS, OTHER), route])
    config = api.GatewayAPIRouting(http_route="checkout", service="checkout", **settings)
    return fake, GatewayAPIRouter(fake, RELEASE, config)


def route_with(*rules: dict[str, Any]) -> Body:
    body = http_route(NS, gateway_parent())
    body["spec"]["rules"] = list(rules)
    return body


def rule(*refs: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    return {**({"name": name} if name else {}), "backendRefs": list(refs)}


def ref(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": 80, **extra}


# -- Gateway API: which rules are Parachute's ---------------------------------------------------

MANAGED = [
    pytest.param(route_with(rule(ref(OTHER)), rule(ref("checkout"), name="main")), {"rule_name": "main"}, [1], id="named rule"),
    pytest.param(route_with(rule(ref(OTHER)), rule(ref("checkout"))), {}, [1], id="the rule that sends to the Service"),
    pytest.param(route_with(rule(ref("checkout")), rule(ref("checkout"))), {}, [0, 1], id="every rule that sends to it"),
    pytest.param(route_with(rule(ref("checkout-stable", weight=90), ref("checkout-canary", weight=10))), {}, [0], id="a rule already split"),
    pytest.param(route_with(rule(ref("checkout", namespace=NS))), {}, [0], id="explicit own namespace"),
    pytest.param(route_with(rule({"name": "checkout"})), {"port": 8080}, [0], id="no port on the ref, port in settings"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "settings", "indexes"), MANAGED)
def test_the_managed_rules(route: Body, settings: dict[str, Any], indexes: list[int]) -> None:
    _, router = gateway(route, **settings)
    assert [r.index for r in router.managed(route)] == indexes


REFUSED = [
    pytest.param(route_with(rule(ref("checkout"), name="main")), {"rule_name": "primary"}, "ruleName", "has no rule named 'primary'", id="no rule of that name"),
    pytest.param(route_with(rule(ref(OTHER), name="main")), {"rule_name": "main"}, "ruleName", "rule 'main' does not send to Service checkout", id="named rule sends elsewhere"),
    pytest.param(route_with(rule(ref(OTHER))), {}, "service", "has no rule whose backendRefs name Service checkout", id="no rule sends to the Service"),
    pytest.param(route_with(rule(ref("checkout", namespace="payments"))), {}, "service", "has no rule", id="same name, other namespace"),
    pytest.param(route_with(rule(ref("checkout", group="multicluster.x-k8s.io", kind="ServiceImport"))), {}, "service", "has no rule", id="same name, other kind"),
    pytest.param(route_with(rule(ref("checkout", weight=90), ref(OTHER, weight=10))), {}, "service", "rule 0 also sends to checkout-legacy", id="rule shared with another backend"),
    pytest.param(route_with(rule({"name": "checkout"})), {}, "port", "rule 0 names no port", id="no port anywhere"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "settings", "field", "message"), REFUSED)
def test_routes_parachute_cannot_drive(
    route: Body, settings: dict[str, Any], field: str, message: str
) -> None:
    fake, router = gateway(route, **settings)
    with pytest.raises(RoutingSetupError) as error:
        run(router.ensure())
    assert error.value.field == f"spec.trafficRouting.gatewayAPI.{field}"
    assert message in error.value.message
    assert fake.writes == []


def test_every_managed_rule_is_split_and_a_disagreement_is_not_a_weight() -> None:
    fake, router = gateway(route_with(rule(ref("checkout")), rule(ref("checkout"))))
    run(router.ensure())
    run(router.set_weight(10))
    body = fake.look(ROUTE)
    assert [[b["weight"] for b in r["backendRefs"]] for r in body["spec"]["rules"]] == [[90, 10], [90, 10]]
    fake.edit(ROUTE, lambda b: b["spec"]["rules"][1]["backendRefs"][1].update(weight=40))
    seen = run(router.read())
    assert seen.weight is None and seen.unverified is not None and "different shares" in seen.unverified
    assert (
        seen.hand_edit is not None and "rule 1 holds checkout-stable 90, checkout-canary 40" in seen.hand_edit
    )


def test_an_uneven_hand_edit_reads_as_the_nearest_percent_and_is_put_back() -> None:
    fake, router = gateway(route_with(rule(ref("checkout"))))
    run(router.ensure())
    run(router.set_weight(10))

    def two_to_one(body: Body) -> None:
        stable, canary = body["spec"]["rules"][0]["backendRefs"]
        stable["weight"], canary["weight"] = 2, 1

    fake.edit(ROUTE, two_to_one)
    assert run(router.read()).weight == 33
    assert run(router.set_weight(33)).wrote  # 67/33, not 2/1: what Parachute writes sums to 100


def test_a_rule_not_yet_split_cannot_be_verified() -> None:
    _, router = gateway(route_with(rule(ref("checkout"))))
    seen = run(router.read())
    assert seen.weight is None
    assert (
        seen.unverified
        == "HTTPRoute shop/checkout rule 0 still sends to Service checkout, which selects the canary's pods too"
    )
    assert seen.hand_edit is None  # Parachute has written nothing yet


def test_a_controller_that_refuses_the_route_makes_it_unverified() -> None:
    fake, router = gateway(route_with(rule(ref("checkout"))))
    run(router.ensure())
    run(router.set_weight(10))
    generation = fake.look(ROUTE)["metadata"]["generation"]

    def refuse(at: int) -> None:
        condition = {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
                     "message": "checkout-canary not found", "observedGeneration": at}  # fmt: skip
        status = {
            "parents": [{"parentRef": gateway_parent(), "controllerName": "x", "conditions": [condition]}]
        }
        fake.edit(ROUTE, lambda b: b.update(status=status))

    refuse(at=generation - 1)  # about an older generation: not about these weights
    assert run(router.read()).weight == 10
    refuse(at=generation)
    seen = run(router.read())
    assert seen.weight is None and seen.unverified is not None
    assert (
        "ResolvedRefs is False for parent shop (BackendNotFound: checkout-canary not found)"
        in seen.unverified
    )


def test_two_rollouts_share_a_route_each_with_its_own_rule_and_record() -> None:
    route = route_with(rule(ref("checkout"), name="main"), rule(ref("payments"), name="pay"))
    fake = FakeClient([service(NS), service(NS, "payments"), route])
    checkout = GatewayAPIRouter(
        fake, RELEASE, api.GatewayAPIRouting(http_route="checkout", service="checkout")
    )
    payments_release = Release(NS, "payments", "uid-2", stable_hash="aaa")
    payments = GatewayAPIRouter(
        fake, payments_release, api.GatewayAPIRouting(http_route="checkout", service="payments")
    )
    for router in (checkout, payments):
        run(router.ensure())
    run(checkout.set_weight(10))
    run(payments.set_weight(50))
    assert (run(checkout.read()).weight, run(payments.read()).weight) == (10, 50)
    assert run(checkout.read()).hand_edit is None and run(payments.read()).hand_edit is None
    annotations = fake.look(ROUTE)["metadata"]["annotations"]
    assert annotations == {"parachute.dev/weight.checkout": "10", "parachute.dev/weight.payments": "50"}


def test_the_record_of_a_long_named_rollout_is_a_valid_unique_annotation() -> None:
    long_a = Release(NS, "a" * 60 + "-one", "u", "h").weight_annotation()
    long_b = Release(NS, "a" * 60 + "-two", "u", "h").weight_annotation()
    assert long_a != long_b
    assert all(len(key.split("/")[1]) <= 63 for key in (long_a, long_b))


# -- Istio: hosts ------------------------------------------------------------------------------

HOSTS = [
    ("checkout", "checkout"),
    ("checkout.shop", "checkout"),
    ("checkout.shop.svc", "checkout"),
    ("checkout.shop.svc.cluster.local", "checkout"),
    ("checkout.shop.svc.corp.internal", "checkout"),
    ("checkout-canary.shop.svc.cluster.local", "checkout-canary"),
    ("checkout.payments.svc.cluster.local", None),
    ("checkout.example.com", None),
]


@pytest.mark.parametrize(("host", "service_name"), HOSTS, ids=[h for h, _ in HOSTS])
def test_which_service_an_istio_host_names(host: str, service_name: str | None) -> None:
    router = IstioRouter(
        FakeClient(), RELEASE, api.IstioRouting(virtual_service="checkout", service="checkout")
    )
    assert router.service_of({"destination": {"host": host}}) == service_name


@pytest.mark.parametrize("host", ["checkout", "checkout.shop.svc.cluster.local"])
def test_the_split_keeps_the_host_form_the_user_wrote(host: str) -> None:
    vs = virtual_service(NS)
    vs["spec"]["http"][1]["route"][0]["destination"]["host"] = host
    fake = FakeClient([service(NS), vs])
    router = IstioRouter(fake, RELEASE, api.IstioRouting(virtual_service="checkout", service="checkout"))
    run(router.ensure())
    run(router.set_weight(25))
    hosts = [d["destination"]["host"] for d in fake.look(VS)["spec"]["http"][1]["route"]]
    suffix = host.removeprefix("checkout")
    assert hosts == [f"checkout-stable{suffix}", f"checkout-canary{suffix}"]


def test_named_istio_routes_that_are_missing_or_elsewhere_are_refused() -> None:
    fake = FakeClient([service(NS), virtual_service(NS)])
    for names, message in ((["primary", "nope"], "has no http route named 'nope'"),
                           (["legacy"], "http route 'legacy' does not send to Service checkout")):  # fmt: skip
        router = IstioRouter(
            fake, RELEASE, api.IstioRouting(virtual_service="checkout", service="checkout", routes=names)
        )
        with pytest.raises(RoutingSetupError) as error:
            run(router.ensure())
        assert error.value.field == f"spec.trafficRouting.istio.routes[{len(names) - 1}]"
        assert message in error.value.message


def test_a_lone_istio_destination_without_weight_takes_everything() -> None:
    fake = FakeClient([service(NS), virtual_service(NS, send_to="checkout-canary")])
    router = IstioRouter(fake, RELEASE, api.IstioRouting(virtual_service="checkout", service="checkout"))
    assert run(router.read()).weight == 100


# -- Istio, subset-level: the DestinationRule ---------------------------------------------------

DR = Ref("networking.istio.io/v1", "DestinationRule", NS, "checkout")


def subset_router(fake: FakeClient, release: Release = RELEASE) -> IstioRouter:
    config = api.IstioRouting(virtual_service="checkout", service="checkout")
    return IstioRouter(fake, release, config, Subsets(destination_rule="checkout"))


def test_subsets_are_kept_in_step_and_the_users_own_are_left_alone() -> None:
    fake = FakeClient([service(NS), virtual_service(NS), destination_rule(NS)])
    router = subset_router(fake)
    assert run(router.ensure()) == [
        "updated DestinationRule shop/checkout subsets stable (pod-template-hash=5d4f8c7b9) and canary"
    ]
    spec = fake.look(DR)["spec"]
    assert spec["trafficPolicy"] == destination_rule(NS)["spec"]["trafficPolicy"]
    assert spec["subsets"] == [
        {"name": "legacy", "labels": {"version": "v0"}},
        {"name": "stable", "labels": {"pod-template-hash": "5d4f8c7b9"}},
        {"name": "canary", "labels": {"parachute.dev/canary": "true"}},
    ]
    assert run(router.ensure()) == []
    # A new stable ReplicaSet, and a subset's labels edited by hand: both put in step.
    fake.edit(
        DR,
        lambda b: b["spec"]["subsets"][2].update(
            labels={"version": "v2"}, trafficPolicy={"tls": {"mode": "ISTIO_MUTUAL"}}
        ),
    )
    run(subset_router(fake, Release(NS, "checkout", "uid-1", stable_hash="77f9c6d8b")).ensure())
    subsets = fake.look(DR)["spec"]["subsets"]
    assert subsets[1]["labels"] == {"pod-template-hash": "77f9c6d8b"}
    assert subsets[2] == {
        "name": "canary",
        "labels": {"parachute.dev/canary": "true"},
        "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
    }


def test_subset_level_destinations_keep_the_host_and_name_the_subsets() -> None:
    fake = FakeClient([service(NS), virtual_service(NS), destination_rule(NS)])
    router = subset_router(fake)
    run(router.ensure())
    run(router.set_weight(5))
    route = fake.look(VS)["spec"]["http"][1]["route"]
    assert [(d["destination"]["host"], d["destination"]["subset"], d["weight"]) for d in route] == [
        ("checkout.shop.svc.cluster.local", "stable", 95),
        ("checkout.shop.svc.cluster.local", "canary", 5),
    ]
    assert fake.objects.keys() == {Ref("v1", "Service", NS, "checkout"), VS, DR}  # no Service copies


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (None, "DestinationRule shop/checkout does not exist"),
        (
            {"host": "payments.shop.svc.cluster.local"},
            "is for host 'payments.shop.svc.cluster.local', not Service checkout",
        ),
    ],
    ids=["missing", "for another host"],
)
def test_a_destination_rule_parachute_cannot_use_is_a_setup_error(
    rule: dict[str, Any] | None, message: str
) -> None:
    fake = FakeClient([service(NS), virtual_service(NS)])
    if rule is not None:
        fake.put({**destination_rule(NS), "spec": rule})
    with pytest.raises(RoutingSetupError) as error:
        run(subset_router(fake).ensure())
    assert error.value.field == "spec.trafficRouting.istio.destinationRule"
    assert message in error.value.message
    assert fake.writes == []


def test_a_route_to_a_subset_of_the_users_own_is_refused() -> None:
    vs = virtual_service(NS)
    vs["spec"]["http"][1]["route"].append(
        {"destination": {"host": "checkout", "subset": "legacy"}, "weight": 0}
    )
    fake = FakeClient([service(NS), vs, destination_rule(NS)])
    with pytest.raises(RoutingSetupError, match="also sends to checkout subset legacy"):
        run(subset_router(fake).ensure())


# -- NGINX: the user's Ingress and the canary copy ---------------------------------------------


def nginx(user: Body | None = None) -> tuple[FakeClient, NginxRouter]:
    fake = FakeClient([service(NS), service(NS, OTHER), user or ingress(NS)])
    return fake, NginxRouter(fake, RELEASE, api.NginxRouting(ingress="shop", service="checkout"))


def test_the_canary_copy_has_only_the_services_paths_and_the_users_class() -> None:
    user = ingress(NS)
    user["metadata"]["annotations"]["kubernetes.io/ingress.class"] = "nginx-internal"
    fake, router = nginx(user)
    changes = run(router.ensure())
    assert changes[-1] == "created Ingress shop/shop-canary (canary weight 0)"
    canary = fake.look(CANARY_INGRESS)
    assert canary["spec"] == {
        "ingressClassName": "nginx",
        "rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "checkout-canary", "port": {"number": 80}}}}
        ]}}],
    }  # fmt: skip
    assert canary["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "0",
        "kubernetes.io/ingress.class": "nginx-internal",
    }


def test_the_users_paths_go_to_stable_and_a_path_pointed_back_is_put_right() -> None:
    fake, router = nginx()
    run(router.ensure())
    assert run(router.read()).weight is None  # the user's path still reaches canary pods
    run(router.set_weight(10))
    paths = fake.look(INGRESS)["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"]["service"]["name"] for p in paths] == [OTHER, "checkout-stable"]
    fake.edit(
        INGRESS,
        lambda b: b["spec"]["rules"][0]["http"]["paths"][1]["backend"]["service"].update(name="checkout"),
    )
    seen = run(router.read())
    assert seen.weight is None and seen.hand_edit is not None
    assert "Ingress shop/shop sends 1 path(s) to Service checkout again" in seen.hand_edit
    fixed = run(router.set_weight(10))
    assert fixed.weight == 10 and fixed.hand_edit is not None
    assert (
        fake.look(INGRESS)["spec"]["rules"][0]["http"]["paths"][1]["backend"]["service"]["name"]
        == "checkout-stable"
    )


def test_the_canary_copy_follows_a_new_path_of_the_user() -> None:
    fake, router = nginx()
    run(router.ensure())
    run(router.set_weight(10))
    extra = {
        "path": "/api",
        "pathType": "Prefix",
        "backend": {"service": {"name": "checkout", "port": {"number": 80}}},
    }
    fake.edit(INGRESS, lambda b: b["spec"]["rules"][0]["http"]["paths"].append(extra))
    assert run(router.ensure()) == ["updated Ingress shop/shop-canary to follow Ingress shop/shop"]
    assert [p["path"] for p in fake.look(CANARY_INGRESS)["spec"]["rules"][0]["http"]["paths"]] == [
        "/",
        "/api",
    ]
    assert run(router.set_weight(10)).weight == 10  # and the new path goes to stable
    assert (
        fake.look(CANARY_INGRESS)["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"]
        == "10"
    )


def test_a_weight_total_added_by_hand_is_reported_and_removed() -> None:
    fake, router = nginx()
    run(router.ensure())
    run(router.set_weight(10))
    fake.edit(
        CANARY_INGRESS,
        lambda b: b["metadata"]["annotations"].update(
            {"nginx.ingress.kubernetes.io/canary-weight-total": "1000"}
        ),
    )
    seen = run(router.read())
    assert seen.weight == 1 and seen.hand_edit is not None and "canary-weight 10 of 1000" in seen.hand_edit
    assert run(router.set_weight(10)).weight == 10
    assert (
        "nginx.ingress.kubernetes.io/canary-weight-total"
        not in fake.look(CANARY_INGRESS)["metadata"]["annotations"]
    )


def test_a_canary_ingress_of_someone_else_is_refused() -> None:
    fake, router = nginx()
    theirs = ingress(NS, name="shop-canary")
    fake.put(theirs)
    with pytest.raises(RoutingSetupError) as error:
        run(router.ensure())
    assert error.value.field == "spec.trafficRouting.nginx.ingress"
    assert "shop-canary exists and is not this Rollout's" in error.value.message
    assert fake.writes == []
