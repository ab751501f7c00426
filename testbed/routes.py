"""A user's traffic set-up for each router backend, and how a test looks at it.

Each `Backend` builds the objects a platform team would have before Parachute arrives (the
Service `checkout` and a route or Ingress that sends to it, next to a second rule with its
own filters that Parachute must leave alone), makes the router for them, and reads the
weights from the raw object independently of the router. The same backends serve the unit
tests (over `routing.fake.FakeClient`) and the contract tests on the real API server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parachute import api
from parachute.routing.gateway_api import GatewayAPIRouter
from parachute.routing.istio import IstioRouter, Subsets
from parachute.routing.nginx import NginxRouter, canary_ingress_name
from parachute.routing.objects import Body, Client, Operation, Ref, pointer
from parachute.routing.router import Release, Router
from testbed.dataplane import Headers, Target, ingress_backends, route_backends, virtual_service_backends

SERVICE = "checkout"
OTHER = "checkout-legacy"  # what the user's second rule sends to
GATEWAY_V1 = "gateway.networking.k8s.io/v1"
ISTIO_V1 = "networking.istio.io/v1"
INGRESS_V1 = "networking.k8s.io/v1"


def service(namespace: str, name: str = SERVICE) -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def header_filter(name: str, value: str) -> dict[str, Any]:
    return {
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {"set": [{"name": name, "value": value}]},
    }


def http_route(
    namespace: str, parent: dict[str, Any], send_to: str = SERVICE, name: str = "checkout"
) -> Body:
    """An HTTPRoute with a rule for the legacy version (matched by header) and the main rule
    (named "main") to `send_to`, each with filters of its own."""
    return {
        "apiVersion": GATEWAY_V1,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [parent],
            "rules": [
                {
                    "name": "legacy",
                    "matches": [{"headers": [{"name": "x-legacy", "value": "1"}]}],
                    "filters": [header_filter("x-route", "legacy")],
                    "backendRefs": [{"name": OTHER, "port": 80}],
                },
                {
                    "name": "main",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "filters": [header_filter("x-route", "main")],
                    "backendRefs": [
                        {"name": send_to, "port": 80, "filters": [header_filter("x-backend", "checkout")]}
                    ],
                },
            ],
        },
    }


def gateway_parent() -> dict[str, Any]:
    return {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "shop"}


def service_parent() -> dict[str, Any]:
    """GAMMA: the route attaches to the Service itself, as a mesh routes east-west."""
    return {"group": "", "kind": "Service", "name": SERVICE}


def virtual_service(namespace: str, send_to: str = SERVICE, name: str = "checkout") -> Body:
    return {
        "apiVersion": ISTIO_V1,
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [SERVICE],
            "http": [
                {
                    "name": "legacy",
                    "match": [{"headers": {"x-legacy": {"exact": "1"}}}],
                    "route": [{"destination": {"host": OTHER}}],
                },
                {
                    "name": "primary",
                    "retries": {"attempts": 3, "perTryTimeout": "2s"},
                    "route": [
                        {
                            "destination": {
                                "host": f"{send_to}.{namespace}.svc.cluster.local",
                                "port": {"number": 80},
                            },
                            "headers": {"request": {"set": {"x-backend": "checkout"}}},
                        }
                    ],
                },
            ],
        },
    }


def destination_rule(namespace: str, name: str = SERVICE) -> Body:
    """The user's DestinationRule for the Service, with a policy and a subset of its own."""
    return {
        "apiVersion": ISTIO_V1,
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "host": SERVICE,
            "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}},
            "subsets": [{"name": "legacy", "labels": {"version": "v0"}}],
        },
    }


def ingress(namespace: str, send_to: str = SERVICE, name: str = "shop") -> Body:
    def path(prefix: str, to: str) -> dict[str, Any]:
        return {
            "path": prefix,
            "pathType": "Prefix",
            "backend": {"service": {"name": to, "port": {"number": 80}}},
        }

    return {
        "apiVersion": INGRESS_V1,
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {"host": "shop.example", "http": {"paths": [path("/legacy", OTHER), path("/", send_to)]}}
            ],
        },
    }


@dataclass(frozen=True)
class Backend:
    """One router backend as a contract test drives it."""

    id: str
    crd: str | None  # the CRD whose absence the router must report, None for built-in kinds
    crd_message: str
    route_name: str
    user_objects: Callable[[str, str], list[Body]]  # (namespace, the Service the route sends to)
    make_router: Callable[[Client, Release], Router]
    weighted: Callable[[str], Ref]  # where the weights live
    weights: Callable[[Body], tuple[int, int]]  # (stable, canary) as the raw object holds them
    hand_edit: Callable[[Body, int], list[Operation]]  # a person's patch setting the canary to w%
    users_parts: Callable[[Body], Any]  # what Parachute must never change
    services: bool = True  # stable and canary are Services Parachute makes (else subsets)

    def router(self, client: Client, release: Release) -> Router:
        return self.make_router(client, release)


def _rule_index(rules: list[dict[str, Any]], key: str, service_of: Callable[[dict[str, Any]], str]) -> int:
    """The user's rule that sends to the Service (an audience's rule of Parachute's is not it)."""
    names = (SERVICE, f"{SERVICE}-stable", f"{SERVICE}-canary")
    return next(
        i
        for i, r in enumerate(rules)
        if not audience_rule(r) and any(service_of(d) in names for d in r.get(key) or [])
    )


def audience_rule(rule: dict[str, Any]) -> bool:
    """Whether a rule is one Parachute added for a phased release's audience."""
    return str(rule.get("name", "")).startswith("parachute-audience-")


def reaches(
    backend: Backend, look: Callable[[Ref], Body], namespace: str, headers: Headers
) -> dict[str, int]:
    """Where a `GET /` with `headers` goes, read from the raw objects as the testbed's data plane
    reads them (the proxies' rules, not the router's): each side's share in percent, "stable",
    "canary", or another Service."""
    if backend.id.startswith("gateway"):
        route = look(Ref(GATEWAY_V1, "HTTPRoute", namespace, backend.route_name))
        found = [(str(name), w) for name, w in route_backends(route, headers=headers)]
    elif backend.id.startswith("istio"):
        vs = look(Ref(ISTIO_V1, "VirtualService", namespace, backend.route_name))
        rules = [look(Ref(ISTIO_V1, "DestinationRule", namespace, SERVICE))] if not backend.services else []
        found = [(_side_of(t), w) for t, w in virtual_service_backends(vs, rules, headers)]
    else:
        user = look(Ref(INGRESS_V1, "Ingress", namespace, backend.route_name))
        canary = look(Ref(INGRESS_V1, "Ingress", namespace, canary_ingress_name(backend.route_name)))
        found = [(str(t.service), w) for t, w in ingress_backends(user, canary, headers=headers)]
    sides = {"stable": 0, "canary": 0}
    for name, weight in found:
        side = {f"{SERVICE}-stable": "stable", f"{SERVICE}-canary": "canary"}.get(name, name)
        sides[side] = sides.get(side, 0) + weight
    total = sum(sides.values())
    return {side: round(100 * weight / total) for side, weight in sides.items() if weight}


def _side_of(target: Target) -> str:
    labels = dict(target.labels)
    if "pod-template-hash" in labels:
        return "stable"
    if labels.get("parachute.dev/canary") == "true":
        return "canary"
    return str(target.service)


def _gateway_weights(route: Body) -> tuple[int, int]:
    rule = route["spec"]["rules"][_rule_index(route["spec"]["rules"], "backendRefs", lambda b: b["name"])]
    by_name = {b["name"]: b.get("weight", 1) for b in rule["backendRefs"]}
    return by_name.get(f"{SERVICE}-stable", 0), by_name.get(f"{SERVICE}-canary", 0)


def _gateway_edit(route: Body, weight: int) -> list[Operation]:
    index = _rule_index(route["spec"]["rules"], "backendRefs", lambda b: b["name"])
    refs = route["spec"]["rules"][index]["backendRefs"]
    return [
        {"op": "replace", "path": f"/spec/rules/{index}/backendRefs/{j}/weight",
         "value": weight if ref["name"].endswith("-canary") else 100 - weight}
        for j, ref in enumerate(refs)
    ]  # fmt: skip


def _gateway_users_parts(route: Body) -> Any:
    rules = route["spec"]["rules"]
    main = rules[1]
    return (
        route["spec"]["parentRefs"],
        rules[0],
        main.get("matches"),
        main.get("filters"),
        {repr(b.get("filters")) for b in main["backendRefs"]},
    )


def _host_service(destination: dict[str, Any]) -> str:
    return str(destination["destination"]["host"]).split(".")[0]


def _istio_weights(vs: Body) -> tuple[int, int]:
    http = vs["spec"]["http"][_rule_index(vs["spec"]["http"], "route", _host_service)]
    by_name = {_host_service(d): d.get("weight", 0) for d in http["route"]}
    return by_name.get(f"{SERVICE}-stable", 0), by_name.get(f"{SERVICE}-canary", 0)


def _istio_edit(vs: Body, weight: int) -> list[Operation]:
    index = _rule_index(vs["spec"]["http"], "route", _host_service)
    return [
        {"op": "replace", "path": f"/spec/http/{index}/route/{j}/weight",
         "value": weight if _host_service(d).endswith("-canary") else 100 - weight}
        for j, d in enumerate(vs["spec"]["http"][index]["route"])
    ]  # fmt: skip


def _istio_users_parts(vs: Body) -> Any:
    http = vs["spec"]["http"]
    return (
        vs["spec"]["hosts"],
        http[0],
        http[1].get("retries"),
        {repr(d.get("headers")) for d in http[1]["route"]},
        {repr(d["destination"].get("port")) for d in http[1]["route"]},
    )


def _subset_weights(vs: Body) -> tuple[int, int]:
    http = vs["spec"]["http"][_rule_index(vs["spec"]["http"], "route", _host_service)]
    by_subset = {d["destination"].get("subset"): d.get("weight", 0) for d in http["route"]}
    return by_subset.get("stable", 0), by_subset.get("canary", 0)


def _subset_edit(vs: Body, weight: int) -> list[Operation]:
    index = _rule_index(vs["spec"]["http"], "route", _host_service)
    return [
        {"op": "replace", "path": f"/spec/http/{index}/route/{j}/weight",
         "value": weight if d["destination"].get("subset") == "canary" else 100 - weight}
        for j, d in enumerate(vs["spec"]["http"][index]["route"])
    ]  # fmt: skip


def _nginx_weights(canary: Body) -> tuple[int, int]:
    weight = int(canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"])
    return 100 - weight, weight


def _nginx_edit(canary: Body, weight: int) -> list[Operation]:
    key = pointer("metadata", "annotations", "nginx.ingress.kubernetes.io/canary-weight")
    return [{"op": "replace", "path": key, "value": str(weight)}]


def _nginx_users_parts(canary: Body) -> Any:
    # The canary copy is Parachute's; its rules must keep following the user's host and path.
    return [(r["host"], [p["path"] for p in r["http"]["paths"]]) for r in canary["spec"]["rules"]]


BACKENDS = (
    Backend(
        id="gateway-north-south",
        crd="httproutes.gateway.networking.k8s.io",
        crd_message="HTTPRoute CRD gateway.networking.k8s.io/v1 is not installed",
        route_name="checkout",
        user_objects=lambda ns, to: [http_route(ns, gateway_parent(), to)],
        make_router=lambda client, release: GatewayAPIRouter(
            client, release, api.GatewayAPIRouting(http_route="checkout", service=SERVICE, rule_name="main")
        ),
        weighted=lambda ns: Ref(GATEWAY_V1, "HTTPRoute", ns, "checkout"),
        weights=_gateway_weights,
        hand_edit=_gateway_edit,
        users_parts=_gateway_users_parts,
    ),
    Backend(
        id="gateway-gamma",
        crd="httproutes.gateway.networking.k8s.io",
        crd_message="HTTPRoute CRD gateway.networking.k8s.io/v1 is not installed",
        route_name="checkout",
        user_objects=lambda ns, to: [http_route(ns, service_parent(), to)],
        make_router=lambda client, release: GatewayAPIRouter(
            client, release, api.GatewayAPIRouting(http_route="checkout", service=SERVICE)
        ),
        weighted=lambda ns: Ref(GATEWAY_V1, "HTTPRoute", ns, "checkout"),
        weights=_gateway_weights,
        hand_edit=_gateway_edit,
        users_parts=_gateway_users_parts,
    ),
    Backend(
        id="istio",
        crd="virtualservices.networking.istio.io",
        crd_message="VirtualService CRD networking.istio.io/v1 is not installed",
        route_name="checkout",
        user_objects=lambda ns, to: [virtual_service(ns, to)],
        make_router=lambda client, release: IstioRouter(
            client, release, api.IstioRouting(virtual_service="checkout", service=SERVICE)
        ),
        weighted=lambda ns: Ref(ISTIO_V1, "VirtualService", ns, "checkout"),
        weights=_istio_weights,
        hand_edit=_istio_edit,
        users_parts=_istio_users_parts,
    ),
    Backend(
        id="istio-subsets",
        crd="virtualservices.networking.istio.io",
        crd_message="VirtualService CRD networking.istio.io/v1 is not installed",
        route_name="checkout",
        user_objects=lambda ns, to: [virtual_service(ns, to), destination_rule(ns)],
        make_router=lambda client, release: IstioRouter(
            client,
            release,
            api.IstioRouting(virtual_service="checkout", service=SERVICE),
            Subsets(destination_rule="checkout"),
        ),
        weighted=lambda ns: Ref(ISTIO_V1, "VirtualService", ns, "checkout"),
        weights=_subset_weights,
        hand_edit=_subset_edit,
        users_parts=_istio_users_parts,
        services=False,
    ),
    Backend(
        id="nginx",
        crd=None,
        crd_message="",
        route_name="shop",
        user_objects=lambda ns, to: [ingress(ns, to)],
        make_router=lambda client, release: NginxRouter(
            client, release, api.NginxRouting(ingress="shop", service=SERVICE)
        ),
        weighted=lambda ns: Ref(INGRESS_V1, "Ingress", ns, canary_ingress_name("shop")),
        weights=_nginx_weights,
        hand_edit=_nginx_edit,
        users_parts=_nginx_users_parts,
    ),
)
