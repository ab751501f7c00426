"""Istio `VirtualService` (networking.istio.io/v1): host-level, or subset-level with a
`DestinationRule`.

The managed http routes are the ones named in `routes`, or every http route with a
destination that is the Service (its host the short name or an FQDN in the Rollout's
namespace), or, once split, its stable and canary destinations. Their `route` lists become
a stable and a canary destination with weights summing to 100, keeping the host form, port
and headers the user wrote; matches, retries, rewrites and every other http route stay as
they are. The write is a JSON patch of those `route` lists only, each guarded by a `test`
that its http route is as read.

Host-level (the default), the two destinations are the hosts `<svc>-stable` and
`<svc>-canary`, Services the router makes. Subset-level, both keep the Service's host and
name the subsets `stable` and `canary` of a DestinationRule for that host; the router keeps
those two subsets' labels in step with the stable pod-template-hash and the canary label,
and leaves the rule's other subsets and policies alone. A subset reaches what a mesh makes of
it: the Service's ready endpoints (EndpointSlices) whose pods carry the subset's labels. So a
weight moves onto a subset only once it reaches a pod, and a subset that takes requests is
re-pinned only once its new pods are among those endpoints (until then it keeps the pods it
reaches, unless it reaches none either).

An audience (phased) is an http route of Parachute's own just before the managed one (Istio
takes the first http route that matches): its matches each with the audience's header
condition added (`exact`; for a cookie, a `regex` on the `cookie` header), its other settings
(retries, timeouts, rewrites), and the canary destination alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parachute import api
from parachute.routing import services
from parachute.routing.objects import Body, Client, KindNotServedError, Ref
from parachute.routing.router import POD_TEMPLATE_HASH, AudienceMatch, Held, Release, RoutingSetupError
from parachute.routing.weighted import Rule, WeightedRouteRouter, cookie_in, cookie_pattern, other_services

FIELD = "spec.trafficRouting.istio"
API_VERSION = "networking.istio.io/v1"


@dataclass(frozen=True)
class Subsets:
    """Subset-level routing: the DestinationRule (in the Rollout's namespace) and its subsets."""

    destination_rule: str
    stable: str = "stable"
    canary: str = "canary"


class IstioRouter(WeightedRouteRouter):
    api_version = API_VERSION
    kind = "VirtualService"
    field = FIELD
    rules_key = "http"
    destinations_key = "route"

    def __init__(
        self, client: Client, release: Release, settings: api.IstioRouting, subsets: Subsets | None = None
    ) -> None:
        super().__init__(client, release, settings.virtual_service, settings.service)
        self.settings, self.subsets = settings, subsets

    def route_field(self) -> str:
        return f"{FIELD}.virtualService"

    def managed(self, route: Body) -> list[Rule]:
        http: list[dict[str, Any]] = (route.get("spec") or {}).get("http") or []
        names = self.names()
        sends = [
            not self.ours(r) and any(self.service_of(d) in names for d in r.get("route") or []) for r in http
        ]
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
        """The destination's Service; subset-level, its subset stands for the stable or canary copy."""
        name = self._host_service(_host(destination))
        if self.subsets is None or name != self.service:
            return name
        subset = (destination.get("destination") or {}).get("subset")
        _, stable, canary = self.names()
        known = {None: self.service, self.subsets.stable: stable, self.subsets.canary: canary}
        return known.get(subset, f"{self.service} subset {subset}")

    def describe(self, destination: dict[str, Any]) -> str:
        subset = (destination.get("destination") or {}).get("subset")
        return f"{_host(destination)} subset {subset}" if subset else _host(destination)

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

        def entry(name: str, subset: str | None, share: int) -> dict[str, Any]:
            target = {"host": name + suffix, **({"subset": subset} if subset else {}), **port}
            return {"destination": target, "weight": share, **headers}

        if self.subsets is not None:
            return [
                entry(self.service, self.subsets.stable, 100 - weight),
                entry(self.service, self.subsets.canary, weight),
            ]
        return [entry(stable, None, 100 - weight), entry(canary, None, weight)]

    def unsplit(self, rule: Rule) -> list[dict[str, Any]]:
        source = self._source(rule)
        host = _host(source)
        suffix = host[host.index(".") :] if "." in host else ""
        port = {"port": source["destination"]["port"]} if "port" in (source.get("destination") or {}) else {}
        headers = {"headers": source["headers"]} if "headers" in source else {}
        return [{"destination": {"host": self.service + suffix, **port}, **headers}]

    def _label(self, index: int, rule: dict[str, Any]) -> str:
        return _label(index, rule)

    def audience_rule(self, source: Rule, name: str, audience: AudienceMatch) -> dict[str, Any]:
        key, condition = _condition(audience)
        matches = [{**m, "headers": {**(m.get("headers") or {}), key: condition}}
                   for m in source.body.get("match") or [{}]]  # fmt: skip
        kept = {k: v for k, v in source.body.items() if k not in ("name", "match", "route")}
        return {"name": name, "match": matches, **kept, "route": [self.split(source, 100)[1]]}

    def audience_in(self, source: Rule, ours: dict[str, Any]) -> AudienceMatch | None:
        theirs = ((source.body.get("match") or [{}])[0]).get("headers") or {}
        headers = ((ours.get("match") or [{}])[0]).get("headers") or {}
        added = [(k, v) for k, v in headers.items() if theirs.get(k) != v]
        if len(added) != 1:
            return None
        key, condition = added[0]
        if key == "cookie" and set(condition) == {"regex"}:
            cookie = cookie_in(str(condition["regex"]))
            return AudienceMatch("cookie", *cookie) if cookie is not None else None
        if set(condition) == {"exact"}:
            return AudienceMatch("header", key, str(condition["exact"]))
        return None

    def normal_rule(self, rule: dict[str, Any]) -> Any:
        return {**rule, "route": [self.normal(d) for d in rule.get("route") or []]}

    def normal(self, destination: dict[str, Any]) -> Any:
        target = destination.get("destination") or {}
        return (
            target.get("host"),
            target.get("subset"),
            target.get("port"),
            destination.get("weight"),
            destination.get("headers"),
        )

    # -- subset-level: the DestinationRule ---------------------------------------------------

    async def unready(self, canary: bool) -> str:
        if self.subsets is None:
            return await super().unready(canary)
        # What the data plane sends a subset's share to: the host's ready endpoints whose pods
        # carry the subset's labels as the DestinationRule holds them now (ensure keeps them).
        name = self.subsets.canary if canary else self.subsets.stable
        rule = await self._destination_rule()
        labels = _labels_of(rule, name)
        if labels is None:
            return f"{self._destination_rule_ref()} has no subset {name} yet"
        return await self._subset_unready(name, labels)

    async def ensure_backends(self) -> list[str]:
        if self.subsets is None:
            return await super().ensure_backends()
        await services.read_user_service(self.client, self.release, self.service, f"{FIELD}.service")
        rule = await self._destination_rule()
        found = (rule.get("spec") or {}).get("subsets") or []
        wanted = self._subsets(found)
        if wanted == found:
            return []
        held = await self._held(found, wanted)
        if held:  # those keep the pods they select until the new ones can take their share
            kept = {name: _labels_of(rule, name) for name in held}
            wanted = [{**s, "labels": kept[s["name"]]} if s.get("name") in kept else s for s in wanted]
        notes: list[str] = [Held(why) for why in held.values()]
        if wanted == found:
            return notes
        ref = self._destination_rule_ref()
        await self.client.patch(
            ref,
            [{"op": "test", "path": "/metadata/resourceVersion", "value": rule["metadata"]["resourceVersion"]},
             {"op": "add", "path": "/spec/subsets", "value": wanted}],
        )  # fmt: skip
        pinned = {self.subsets.stable: f"{self.subsets.stable} ({POD_TEMPLATE_HASH}={self.release.stable_hash})",
                  self.subsets.canary: self.subsets.canary}  # fmt: skip
        return [
            f"updated {ref} subsets {' and '.join(v for k, v in pinned.items() if k not in held)}",
            *notes,
        ]

    async def _held(self, found: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> dict[str, str]:
        """The subsets whose new labels must wait, and why: a subset the route sends requests to
        is re-pinned only once the host lists a ready endpoint of the pods it is to select (the
        data plane takes a subset's new labels at once, and the host's EndpointSlices follow its
        pods a moment later), unless the pods it selects now have none either."""
        assert self.subsets is not None
        before = {s.get("name"): s.get("labels") for s in found}
        after = {s.get("name"): s.get("labels") for s in wanted}
        moving = [
            n for n in (self.subsets.stable, self.subsets.canary) if n in before and before[n] != after[n]
        ]
        if not moving:
            return {}
        weighted = self._weighted_subsets(await self._route())
        held = {}
        for name in moving:
            if name not in weighted:
                continue
            why = await self._subset_unready(name, dict(after[name] or {}))
            if why and not await self._subset_unready(name, dict(before[name] or {})):
                held[name] = (
                    f"kept {self._destination_rule_ref()} subset {name} as it is while it takes requests: {why}"
                )
        return held

    def _weighted_subsets(self, route: Body) -> set[str]:
        """This Rollout's subsets that some http route of the VirtualService sends requests to."""
        assert self.subsets is not None
        ours = {self.subsets.stable, self.subsets.canary}
        out = set()
        for http in (route.get("spec") or {}).get("http") or []:
            destinations = http.get("route") or []
            for destination in destinations:
                subset = (destination.get("destination") or {}).get("subset")
                if (subset in ours and self._host_service(_host(destination)) == self.service
                        and self.weight_of(destination, alone=len(destinations) == 1) > 0):  # fmt: skip
                    out.add(str(subset))
        return out

    async def _subset_unready(self, name: str, labels: dict[str, str]) -> str:
        what = f"{self._destination_rule_ref()} subset {name}"
        return await services.selected_unready(self.client, self.release, self.service, labels, what)

    async def snapshot_backends(self) -> Body:
        if self.subsets is None:
            return await super().snapshot_backends()
        await services.read_user_service(self.client, self.release, self.service, f"{FIELD}.service")
        rule = await self._destination_rule()
        return {"subsets": (rule.get("spec") or {}).get("subsets") or []}

    async def remove_backends(self, snapshot: Body) -> list[str]:
        if self.subsets is None:
            return await super().remove_backends(snapshot)
        ref = self._destination_rule_ref()
        try:
            rule = await self.client.get(ref)
        except KindNotServedError:
            return []
        if rule is None:
            return []
        ours = {self.subsets.stable, self.subsets.canary}
        before = {s.get("name"): s for s in snapshot.get("subsets") or []}
        found = (rule.get("spec") or {}).get("subsets") or []
        wanted = [before[s.get("name")] if s.get("name") in ours else s for s in found
                  if s.get("name") not in ours or s.get("name") in before]  # fmt: skip
        if wanted == found:
            return []
        await self.client.patch(
            ref,
            [{"op": "test", "path": "/metadata/resourceVersion", "value": rule["metadata"]["resourceVersion"]},
             {"op": "add", "path": "/spec/subsets", "value": wanted}],
        )  # fmt: skip
        return [f"{ref} subsets {self.subsets.stable} and {self.subsets.canary} put back as they were"]

    async def check_backends(self) -> None:
        if self.subsets is None:
            return await super().check_backends()
        rule = await self._destination_rule()
        present = {s.get("name") for s in (rule.get("spec") or {}).get("subsets") or []}
        if not {self.subsets.stable, self.subsets.canary} <= present:
            raise RoutingSetupError(
                f"{FIELD}.destinationRule",
                f"{self._destination_rule_ref()} has no subsets {self.subsets.stable} and "
                f"{self.subsets.canary} yet; ensure makes them first",
            )
        return None

    def _subsets(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rule's subsets with stable and canary selecting their pods; the others unchanged."""
        assert self.subsets is not None
        labels = {
            self.subsets.stable: {POD_TEMPLATE_HASH: self.release.stable_hash},
            self.subsets.canary: dict(self.release.canary_labels),
        }
        wanted = [{**s, "labels": labels[s["name"]]} if s.get("name") in labels else s for s in found]
        present = {s.get("name") for s in found}
        wanted += [{"name": name, "labels": chosen} for name, chosen in labels.items() if name not in present]
        return wanted

    def _destination_rule_ref(self) -> Ref:
        assert self.subsets is not None
        return Ref(API_VERSION, "DestinationRule", self.release.namespace, self.subsets.destination_rule)

    async def _destination_rule(self) -> Body:
        ref = self._destination_rule_ref()
        try:
            found = await self.client.get(ref)
        except KindNotServedError:
            raise RoutingSetupError(FIELD, f"DestinationRule CRD {API_VERSION} is not installed") from None
        if found is None:
            raise RoutingSetupError(f"{FIELD}.destinationRule", f"{ref} does not exist")
        host = str((found.get("spec") or {}).get("host", ""))
        if self._host_service(host) != self.service:
            raise RoutingSetupError(
                f"{FIELD}.destinationRule", f"{ref} is for host {host!r}, not Service {self.service}"
            )
        return found

    # -- shared ----------------------------------------------------------------------------------

    def _host_service(self, host: str) -> str | None:
        """The Service a host names in the Rollout's namespace (short name or FQDN), if any."""
        name, _, rest = host.partition(".")
        if not rest:
            return name or None
        namespace, _, tail = rest.partition(".")
        in_cluster = tail in {"", "svc"} or tail.startswith("svc.")
        return name if namespace == self.release.namespace and in_cluster else None

    def _source(self, rule: Rule) -> dict[str, Any]:
        """The destination whose host form, port and headers the split keeps."""
        route = rule.body.get("route") or []
        base, stable, canary = self.names()
        for name in (stable, base, canary):
            for destination in route:
                if self.service_of(destination) == name:
                    return dict(destination)
        return {}


def _labels_of(rule: Body, subset: str) -> dict[str, str] | None:
    """The labels of a DestinationRule's subset; None when it has no such subset."""
    for entry in (rule.get("spec") or {}).get("subsets") or []:
        if entry.get("name") == subset:
            return dict(entry.get("labels") or {})
    return None


def _host(destination: dict[str, Any]) -> str:
    return str((destination.get("destination") or {}).get("host", ""))


def _label(index: int, route: dict[str, Any]) -> str:
    return f"http route {route['name']!r}" if route.get("name") else f"http route {index}"


def _condition(audience: AudienceMatch) -> tuple[str, dict[str, str]]:
    """The header condition (name, StringMatch) that selects an audience's requests."""
    if audience.by == "header":
        return audience.key, {"exact": audience.value}
    return "cookie", {"regex": cookie_pattern(audience.key, audience.value)}
