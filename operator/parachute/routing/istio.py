"""Istio `VirtualService` (networking.istio.io/v1), host-level: two Services, two destinations.

The managed http routes are the ones named in `routes`, or every http route with a
destination whose host is the Service (short name or FQDN in the Rollout's namespace), or,
once split, its -stable/-canary copies. Their `route` lists become the stable and canary
hosts (keeping the host form, port and headers the user wrote) with weights summing to 100;
matches, retries, rewrites and every other http route stay as they are. The write is a JSON
patch of those `route` lists only, each guarded by a `test` that its http route is as read.
"""

from __future__ import annotations

from typing import Any

from parachute import api
from parachute.routing.objects import Body, Client
from parachute.routing.router import Release, RoutingSetupError
from parachute.routing.weighted import Rule, WeightedRouteRouter, other_services

FIELD = "spec.trafficRouting.istio"


class IstioRouter(WeightedRouteRouter):
    api_version = "networking.istio.io/v1"
    kind = "VirtualService"
    field = FIELD
    rules_key = "http"
    destinations_key = "route"

    def __init__(self, client: Client, release: Release, settings: api.IstioRouting) -> None:
        super().__init__(client, release, settings.virtual_service, settings.service)
        self.settings = settings

    def route_field(self) -> str:
        return f"{FIELD}.virtualService"

    def managed(self, route: Body) -> list[Rule]:
        http: list[dict[str, Any]] = (route.get("spec") or {}).get("http") or []
        names = self.names()
        sends = [any(self.service_of(d) in names for d in r.get("route") or []) for r in http]
        chosen: list[int] = []
        if self.settings.routes:
            for k, wanted in enumerate(self.settings.routes):
                found = [i for i, r in enumerate(http) if r.get("name") == wanted]
                if not found:
                    raise RoutingSetupError(
                        f"{FIELD}.routes[{k}]", f"{self.ref} has no http route named {wanted!r}"
                    )
                if not sends[found[0]]:
                    raise RoutingSetupError(
                        f"{FIELD}.routes[{k}]",
                        f"{self.ref} http route {wanted!r} does not send to Service {self.service}",
                    )
                chosen.append(found[0])
        else:
            chosen = [i for i, yes in enumerate(sends) if yes]
            if not chosen:
                raise RoutingSetupError(
                    f"{FIELD}.service", f"{self.ref} has no http route that sends to Service {self.service}"
                )
        managed = [Rule(i, _label(i, http[i]), http[i]) for i in sorted(set(chosen))]
        for rule in managed:
            hosts = [self.service_of(d) or _host(d) for d in rule.body.get("route") or []]
            others = other_services(names, hosts)
            if others:
                raise RoutingSetupError(
                    f"{FIELD}.service",
                    f"{self.ref} {rule.label} also sends to {', '.join(others)}; Parachute drives an http "
                    f"route whose only destination is Service {self.service}",
                )
        return managed

    def service_of(self, destination: dict[str, Any]) -> str | None:
        name, _, rest = _host(destination).partition(".")
        if not rest:
            return name or None
        namespace, _, tail = rest.partition(".")
        in_cluster = tail in {"", "svc"} or tail.startswith("svc.")
        return name if namespace == self.release.namespace and in_cluster else None

    def weight_of(self, destination: dict[str, Any], alone: bool) -> int:
        # An unset weight is all the traffic for a lone destination, none beside others.
        return int(destination.get("weight", 100 if alone else 0))

    def split(self, rule: Rule, weight: int) -> list[dict[str, Any]]:
        _, stable, canary = self.names()
        source = self._source(rule)
        host = _host(source)
        suffix = host[host.index(".") :] if "." in host else ""
        port = {"port": source["destination"]["port"]} if "port" in (source.get("destination") or {}) else {}
        headers = {"headers": source["headers"]} if "headers" in source else {}

        def entry(name: str, share: int) -> dict[str, Any]:
            return {"destination": {"host": name + suffix, **port}, "weight": share, **headers}

        return [entry(stable, 100 - weight), entry(canary, weight)]

    def normal(self, destination: dict[str, Any]) -> Any:
        target = destination.get("destination") or {}
        return (
            target.get("host"),
            target.get("subset"),
            target.get("port"),
            destination.get("weight"),
            destination.get("headers"),
        )

    def _source(self, rule: Rule) -> dict[str, Any]:
        """The destination whose host form, port and headers the split keeps."""
        route = rule.body.get("route") or []
        _, stable, _ = self.names()
        for name in (stable, self.service, self.names()[2]):
            for destination in route:
                if self.service_of(destination) == name:
                    return dict(destination)
        return {}


def _host(destination: dict[str, Any]) -> str:
    return str((destination.get("destination") or {}).get("host", ""))


def _label(index: int, route: dict[str, Any]) -> str:
    return f"http route {route['name']!r}" if route.get("name") else f"http route {index}"
