"""Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1): the primary traffic backend.

The same router serves a Gateway's route (north-south, `parentRefs` a Gateway) and a mesh's
(east-west GAMMA, `parentRefs` a Service): only the rule's `backendRefs` are written. The
managed rule is the one named `ruleName`, or every rule whose backendRefs name the Service
(or its -stable/-canary copies, once Parachute has split it). Its backendRefs become the
stable and canary Services with weights summing to 100; the rule's matches and filters, the
backendRef's own filters, and every other rule are left as they are. `rules` and
`backendRefs` are atomic lists, so the write is a JSON patch of that rule's `backendRefs`
only, guarded by a `test` that the rule is still as read.
"""

from __future__ import annotations

from typing import Any

from parachute import api
from parachute.routing.objects import Body, Client
from parachute.routing.router import Release, RoutingSetupError
from parachute.routing.weighted import Rule, WeightedRouteRouter, other_services

FIELD = "spec.trafficRouting.gatewayAPI"


class GatewayAPIRouter(WeightedRouteRouter):
    api_version = "gateway.networking.k8s.io/v1"
    kind = "HTTPRoute"
    field = FIELD
    rules_key = "rules"
    destinations_key = "backendRefs"

    def __init__(self, client: Client, release: Release, settings: api.GatewayAPIRouting) -> None:
        super().__init__(client, release, settings.http_route, settings.service)
        self.settings = settings

    def route_field(self) -> str:
        return f"{FIELD}.httpRoute"

    def managed(self, route: Body) -> list[Rule]:
        rules: list[dict[str, Any]] = (route.get("spec") or {}).get("rules") or []
        names = self.names()
        sends = [any(self.service_of(b) in names for b in r.get("backendRefs") or []) for r in rules]
        wanted = self.settings.rule_name
        if wanted is not None:
            found = [i for i, r in enumerate(rules) if r.get("name") == wanted]
            if not found:
                raise RoutingSetupError(f"{FIELD}.ruleName", f"{self.ref} has no rule named {wanted!r}")
            if not sends[found[0]]:
                raise RoutingSetupError(
                    f"{FIELD}.ruleName", f"{self.ref} rule {wanted!r} does not send to Service {self.service}"
                )
            chosen = found[:1]
        else:
            chosen = [i for i, yes in enumerate(sends) if yes]
            if not chosen:
                raise RoutingSetupError(
                    f"{FIELD}.service",
                    f"{self.ref} has no rule whose backendRefs name Service {self.service}",
                )
        managed = [Rule(i, _label(i, rules[i]), rules[i]) for i in chosen]
        for rule in managed:
            refs = rule.body.get("backendRefs") or []
            others = other_services(names, [self.service_of(b) or b.get("name") for b in refs])
            if others:
                raise RoutingSetupError(
                    f"{FIELD}.service",
                    f"{self.ref} {rule.label} also sends to {', '.join(others)}; Parachute drives a rule "
                    f"whose only backend is Service {self.service}",
                )
            if self.settings.port is None and self._source(rule).get("port") is None:
                raise RoutingSetupError(f"{FIELD}.port", f"{self.ref} {rule.label} names no port; set one")
        return managed

    def refused(self, route: Body) -> str | None:
        """A parent's controller that reports this generation not Accepted or its refs unresolved.

        Without a controller (or before it has looked) there is no status: the spec is then
        all there is to read back.
        """
        generation = route["metadata"].get("generation")
        problems = []
        for parent in (route.get("status") or {}).get("parents") or []:
            for condition in parent.get("conditions") or []:
                current = condition.get("observedGeneration") == generation
                if (
                    current
                    and condition.get("type") in ("Accepted", "ResolvedRefs")
                    and condition.get("status") == "False"
                ):
                    name = (parent.get("parentRef") or {}).get("name")
                    problems.append(
                        f"{condition['type']} is False for parent {name} ({condition.get('reason')}: "
                        f"{condition.get('message', '')})"
                    )
        return f"{self.ref}: " + "; ".join(problems) if problems else None

    def describe(self, destination: dict[str, Any]) -> str:
        return str(destination.get("name"))

    def service_of(self, destination: dict[str, Any]) -> str | None:
        core = destination.get("group", "") == "" and destination.get("kind", "Service") == "Service"
        here = destination.get("namespace", self.release.namespace) == self.release.namespace
        return str(destination.get("name")) if core and here else None

    def weight_of(self, destination: dict[str, Any], alone: bool) -> int:
        return int(destination.get("weight", 1))

    def split(self, rule: Rule, weight: int) -> list[dict[str, Any]]:
        _, stable, canary = self.names()
        source = self._source(rule)
        port = self.settings.port or source.get("port")
        kept: dict[str, Any] = {k: source[k] for k in ("namespace", "filters") if k in source}

        def ref(name: str, share: int) -> dict[str, Any]:
            return {"group": "", "kind": "Service", "name": name, **kept, "port": port, "weight": share}

        return [ref(stable, 100 - weight), ref(canary, weight)]

    def normal(self, destination: dict[str, Any]) -> Any:
        return (
            destination.get("group", ""),
            destination.get("kind", "Service"),
            destination.get("name"),
            destination.get("namespace", self.release.namespace),
            destination.get("port"),
            destination.get("weight", 1),
            destination.get("filters") or [],
        )

    def unsplit(self, rule: Rule) -> list[dict[str, Any]]:
        source = self._source(rule)
        kept: dict[str, Any] = {k: source[k] for k in ("namespace", "port", "filters") if k in source}
        return [{"group": "", "kind": "Service", "name": self.service, **kept}]

    def _source(self, rule: Rule) -> dict[str, Any]:
        """The backendRef whose port and filters the split keeps: stable's, else the Service's."""
        refs = rule.body.get("backendRefs") or []
        for name in (self.names()[1], self.names()[0], self.names()[2]):
            for ref in refs:
                if self.service_of(ref) == name:
                    return dict(ref)
        return {}


def _label(index: int, rule: dict[str, Any]) -> str:
    return f"rule {rule['name']!r}" if rule.get("name") else f"rule {index}"
