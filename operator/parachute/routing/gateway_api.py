"""Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1): the primary traffic backend.

The same router serves a Gateway's route (north-south, `parentRefs` a Gateway) and a mesh's
(east-west GAMMA, `parentRefs` a Service): only the rule's `backendRefs` are written. The
managed rule is the one named `ruleName`, or every rule whose backendRefs name the Service
(or its -stable/-canary copies, once Parachute has split it). Its backendRefs become the
stable and canary Services with weights summing to 100; the rule's matches and filters, the
backendRef's own filters, and every other rule are left as they are. `rules` and
`backendRefs` are atomic lists, so the write is a JSON patch of that rule's `backendRefs`
only, guarded by a `test` that the rule is still as read.

An audience (phased) is a rule of Parachute's own just before the managed rule: its matches
with an `Exact` header match added (for a cookie, a `RegularExpression` match on the `Cookie`
header), its filters and timeouts, and the canary alone as backendRef. A match with one more
header is the more specific, so the audience's requests take it whatever the rule order.
"""

from __future__ import annotations

from typing import Any

from parachute import api
from parachute.routing.objects import Body, Client
from parachute.routing.router import AudienceMatch, Release, RoutingSetupError
from parachute.routing.weighted import Rule, WeightedRouteRouter, cookie_in, cookie_pattern, other_services

FIELD = "spec.trafficRouting.gatewayAPI"


class GatewayAPIRouter(WeightedRouteRouter):
    api_version = "gateway.networking.k8s.io/v1"
    kind = "HTTPRoute"
    field = FIELD
    rules_key = "rules"
    destinations_key = "backendRefs"
    max_rules = 16

    def __init__(self, client: Client, release: Release, settings: api.GatewayAPIRouting) -> None:
        super().__init__(client, release, settings.http_route, settings.service)
        self.settings = settings

    def route_field(self) -> str:
        return f"{FIELD}.httpRoute"

    def managed(self, route: Body) -> list[Rule]:
        rules: list[dict[str, Any]] = (route.get("spec") or {}).get("rules") or []
        names = self.names()
        sends = [
            not self.ours(r) and any(self.service_of(b) in names for b in r.get("backendRefs") or [])
            for r in rules
        ]
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

    def audience_rule(self, source: Rule, name: str, audience: AudienceMatch) -> dict[str, Any]:
        condition = _condition(audience)
        matches = []
        for match in source.body.get("matches") or [{}]:
            normal = _normal_match(match)
            others = [h for h in normal.get("headers", []) if h["name"].lower() != condition["name"]]
            matches.append({**normal, "headers": [*others, condition]})
        kept: dict[str, Any] = {k: source.body[k] for k in ("filters", "timeouts") if k in source.body}
        return {"name": name, "matches": matches, **kept, "backendRefs": [self.split(source, 100)[1]]}

    def audience_in(self, source: Rule, ours: dict[str, Any]) -> AudienceMatch | None:
        theirs = {
            h["name"].lower(): h
            for h in _normal_match((source.body.get("matches") or [{}])[0]).get("headers", [])
        }
        first = _normal_match((ours.get("matches") or [{}])[0])
        added = [h for h in first.get("headers", []) if theirs.get(h["name"].lower()) != h]
        if len(added) != 1:
            return None
        condition = added[0]
        if condition["name"].lower() == "cookie" and condition["type"] == "RegularExpression":
            cookie = cookie_in(str(condition.get("value", "")))
            return AudienceMatch("cookie", *cookie) if cookie is not None else None
        if condition["type"] == "Exact":
            return AudienceMatch("header", condition["name"].lower(), str(condition.get("value", "")))
        return None

    def normal_rule(self, rule: dict[str, Any]) -> Any:
        return (
            rule.get("name"),
            [_normal_match(m) for m in rule.get("matches") or [{}]],
            rule.get("filters") or [],
            rule.get("timeouts"),
            [self.normal(b) for b in rule.get("backendRefs") or []],
        )

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


def _condition(audience: AudienceMatch) -> dict[str, Any]:
    """The header match that selects an audience's requests."""
    if audience.by == "header":
        return {"type": "Exact", "name": audience.key, "value": audience.value}
    return {
        "type": "RegularExpression",
        "name": "cookie",
        "value": cookie_pattern(audience.key, audience.value),
    }


def _normal_match(match: dict[str, Any]) -> dict[str, Any]:
    """A rule's match with the CRD's defaults filled in: the path (PathPrefix /) and each
    header's and query parameter's match type (Exact)."""
    out = {**match, "path": {"type": "PathPrefix", "value": "/", **(match.get("path") or {})}}
    for key in ("headers", "queryParams"):
        if key in match:
            out[key] = [{"type": "Exact", **entry} for entry in match[key] or []]
    return out
