"""What the routers ask of the API server, as RBAC calls: the routing side of least privilege.

Routers reach any kind through `objects.Client` (by apiVersion and kind), so their calls are
declared here rather than on functions as `parachute.kube` does: what every router needs
(`CORE`: the Service it sends to and the -stable/-canary copies, their endpoints and pods, and
the routing record) and what each backend adds (`BACKENDS`, one chart toggle each).
`parachute.rbac` grants exactly these, which tests/unit/test_rbac.py holds to, and the routing
unit tests check that every call a router makes on the in-memory client is declared here for
its backend.
"""

from __future__ import annotations

from parachute.rbac import Call

# (apiVersion, kind) of what routers touch -> (apiGroup, resource), as RBAC names them.
RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Service"): ("", "services"),
    ("v1", "ConfigMap"): ("", "configmaps"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("gateway.networking.k8s.io", "httproutes"),
    ("networking.istio.io/v1", "VirtualService"): ("networking.istio.io", "virtualservices"),
    ("networking.istio.io/v1", "DestinationRule"): ("networking.istio.io", "destinationrules"),
    ("networking.k8s.io/v1", "Ingress"): ("networking.k8s.io", "ingresses"),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("discovery.k8s.io", "endpointslices"),
    ("v1", "Pod"): ("", "pods"),
}


def _calls(group: str, resources: tuple[str, ...], verbs: tuple[str, ...]) -> frozenset[Call]:
    return frozenset(Call(group, resource, verb) for resource in resources for verb in verbs)


CORE: frozenset[Call] = (
    _calls("", ("services",), ("get", "create", "patch", "delete"))
    # The routing record: read, written once, deleted when the route is given back.
    | _calls("", ("configmaps",), ("get", "create", "delete"))
    # Whether a Service a weight would send to lists ready endpoints yet (of a subset: of the
    # pods its labels select).
    | _calls("discovery.k8s.io", ("endpointslices",), ("list",))
    | _calls("", ("pods",), ("list",))
)
BACKENDS: dict[str, frozenset[Call]] = {
    "gatewayAPI": _calls("gateway.networking.k8s.io", ("httproutes",), ("get", "patch")),
    "istio": _calls("networking.istio.io", ("virtualservices", "destinationrules"), ("get", "patch")),
    "nginx": _calls("networking.k8s.io", ("ingresses",), ("get", "create", "patch", "delete")),
}


def call_of(verb: str, api_version: str, kind: str) -> Call:
    group, resource = RESOURCES[(api_version, kind)]
    return Call(group, resource, verb)
