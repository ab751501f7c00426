"""What the HTTPRoute and VirtualService routers share: a route object in which some rules
send to the Service, and whose weighted destinations Parachute rewrites to a stable and a
canary destination.

A backend module says how its rules are found, how a destination names a Service and
carries a weight, and what the two destinations for a share look like. This module does
the rest the same way for both: read the share back, tell Parachute's own weights from
someone else's (the share Parachute last wrote is recorded in an annotation on the route,
per Rollout), and write one JSON patch that replaces only the managed rules' destinations,
each guarded by a `test` that the rule is still as read.

An audience (phased) is a rule of Parachute's own beside each managed rule, just before it
and named for the Rollout (`Release.audience_rule_name`): the managed rule's matches, each with
the audience's header (or cookie) condition added, its other settings, and the canary alone as
destination. Adding, changing or removing one rewrites the rule list in one JSON patch guarded
by a `test` that the whole list is as read; the user's rules go back into it as they were. What
such a rule sends is read back from the route, and counts only when it is what Parachute would
write for that audience.

Before the first rewrite the managed rules' destinations are snapshotted (`snapshot`), and
`restore` puts them back: every rule that sends only to the stable and canary copies gets the
snapshot's destinations again, or, with none saved (a route that named the copies itself),
one destination to the user's Service that keeps the port, filters and headers it had.
Parachute's audience rules are removed.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from parachute.routing import services
from parachute.routing.objects import (
    Body,
    Client,
    ConflictError,
    KindNotServedError,
    Operation,
    Ref,
    pointer,
    set_annotation,
)
from parachute.routing.router import Applied, AudienceMatch, Release, RoutingSetupError, check_weight

ATTEMPTS = 5
AUDIENCE_RULE_PREFIX = "parachute-audience-"


@dataclass(frozen=True)
class Rule:
    """One managed rule of a route, as read."""

    index: int
    label: str  # how a person finds it: "rule 'main'", "http route 0"
    body: dict[str, Any]


class WeightedRouteRouter(ABC):
    """A router whose backend is a route object with weighted destinations."""

    api_version: str
    kind: str
    field: str  # spec.trafficRouting.<backend>
    rules_key: str  # the route's list of rules: "rules", "http"
    destinations_key: str  # a rule's list of destinations: "backendRefs", "route"

    def __init__(self, client: Client, release: Release, route: str, service: str) -> None:
        self.client, self.release, self.service = client, release, service
        self.ref = Ref(self.api_version, self.kind, release.namespace, route)

    # -- what a backend says ---------------------------------------------------------------

    @abstractmethod
    def managed(self, route: Body) -> list[Rule]:
        """The rules Parachute drives; a setup error naming the field when there are none."""

    @abstractmethod
    def service_of(self, destination: dict[str, Any]) -> str | None:
        """The name of the Service (in the Rollout's namespace) a destination sends to."""

    @abstractmethod
    def weight_of(self, destination: dict[str, Any], alone: bool) -> int:
        """The destination's weight as the backend reads it (its default when unset)."""

    @abstractmethod
    def split(self, rule: Rule, weight: int) -> list[dict[str, Any]]:
        """The rule's destinations that send `weight`% to canary and the rest to stable."""

    @abstractmethod
    def normal(self, destination: dict[str, Any]) -> Any:
        """A destination with the backend's defaults filled in, for comparing."""

    @abstractmethod
    def unsplit(self, rule: Rule) -> list[dict[str, Any]]:
        """The rule's destinations sending everything to the user's Service again."""

    @abstractmethod
    def audience_rule(self, source: Rule, name: str, audience: AudienceMatch) -> dict[str, Any]:
        """Parachute's rule `name` for `audience` beside `source`: the source's matches with the
        audience's condition added, its other settings, and the canary alone as destination."""

    @abstractmethod
    def audience_in(self, source: Rule, ours: dict[str, Any]) -> AudienceMatch | None:
        """The audience whose condition `ours` adds to `source`'s first match, if it adds one."""

    @abstractmethod
    def normal_rule(self, rule: dict[str, Any]) -> Any:
        """A rule with the backend's defaults filled in, for comparing."""

    # A route holds at most this many rules (Gateway API's HTTPRoute: 16); None: no limit.
    max_rules: int | None = None

    def describe(self, destination: dict[str, Any]) -> str:
        """A destination as a person reads it in a message."""
        return str(self.service_of(destination))

    def ours(self, rule: dict[str, Any]) -> bool:
        """Whether a rule is one of this Rollout's audience rules (by its name)."""
        name = rule.get("name")
        if not isinstance(name, str) or not name.startswith(AUDIENCE_RULE_PREFIX):
            return False
        index = name.removeprefix(AUDIENCE_RULE_PREFIX).split(".", 1)[0]
        return index.isdigit() and name == self.release.audience_rule_name(int(index))

    def refused(self, route: Body) -> str | None:
        """What the backend's controller says it could not apply, when it says so."""
        return None

    def crd(self) -> str:
        return f"{self.kind} CRD {self.api_version}"

    # -- the Router protocol -----------------------------------------------------------------

    async def ensure(self) -> list[str]:
        if not await self.client.served(self.api_version, self.kind):
            raise RoutingSetupError(self.field, f"{self.crd()} is not installed")
        self.managed(await self._route())
        return await self.ensure_backends()

    async def ensure_backends(self) -> list[str]:
        """Make what the split destinations send to: the stable and canary Services."""
        return await services.ensure(self.client, self.release, self.service, f"{self.field}.service")

    async def unready(self, canary: bool) -> str:
        return await services.copy_unready(self.client, self.release, self.service, canary)

    async def check_backends(self) -> None:
        """Refuse to send traffic to destinations that are not there yet."""
        await services.check(self.client, self.release, self.service, f"{self.field}.service")

    async def read(self) -> Applied:
        route = await self._route()
        return self._observe(route, self.managed(route))

    async def set_weight(self, weight: int, audience: AudienceMatch | None = None) -> Applied:
        check_weight(weight)
        for _ in range(ATTEMPTS):
            route = await self._route()
            rules = self.managed(route)
            seen = self._observe(route, rules)
            operations = self._rule_operations(route, rules, weight, audience)
            if operations:
                await self.check_backends()
            key = self.release.weight_annotation()
            recorded = _annotations(route).get(key)
            if operations or recorded != str(weight):
                operations += set_annotation(route, key, str(weight))
            if not operations:
                return seen
            try:
                written = await self.client.patch(self.ref, operations)
            except ConflictError:
                continue
            after = self._observe(written, self.managed(written))
            put = "put back to" if recorded == str(weight) else "set to"
            hand_edit = seen.hand_edit and f"{seen.hand_edit}; {put} canary {weight}%"
            return Applied(after.weight, after.unverified, hand_edit, wrote=True, audience=after.audience)
        raise ConflictError(f"{self.ref} kept changing while Parachute set its weights")

    def _rule_operations(
        self, route: Body, rules: list[Rule], weight: int, audience: AudienceMatch | None
    ) -> list[Operation]:
        """The patch that makes the managed rules send `weight`% to the canary, with `audience`'s
        rules beside them (or none): only their destinations while the audience rules are right,
        else the whole rule list, rewritten from the one read."""
        held, problem = self._audience_held(route, rules)
        if problem is None and held == audience:
            operations: list[Operation] = []
            for rule in rules:
                wanted = self.split(rule, weight)
                if self._normals(rule.body.get(self.destinations_key)) != self._normals(wanted):
                    at = f"/spec/{self.rules_key}/{rule.index}"
                    operations += [
                        {"op": "test", "path": at, "value": rule.body},
                        {"op": "add", "path": f"{at}/{self.destinations_key}", "value": wanted},
                    ]
            return operations
        current: list[dict[str, Any]] = (route.get("spec") or {}).get(self.rules_key) or []
        managed = {rule.index: (k, rule) for k, rule in enumerate(rules)}
        out: list[dict[str, Any]] = []
        for index, body in enumerate(current):
            if self.ours(body):
                continue  # written anew beside its rule, or gone
            if index in managed:
                k, rule = managed[index]
                if audience is not None:
                    out.append(self.audience_rule(rule, self.release.audience_rule_name(k), audience))
                wanted = self.split(rule, weight)
                if self._normals(body.get(self.destinations_key)) != self._normals(wanted):
                    out.append({**body, self.destinations_key: wanted})
                    continue
            out.append(body)
        if self.max_rules is not None and len(out) > self.max_rules:
            raise RoutingSetupError(
                self.route_field(),
                f"{self.ref} would hold {len(out)} rules with the audience's; a route holds at most "
                f"{self.max_rules}",
            )
        at = f"/spec/{self.rules_key}"
        return [{"op": "test", "path": at, "value": current}, {"op": "add", "path": at, "value": out}]

    def _audience_held(self, route: Body, rules: list[Rule]) -> tuple[AudienceMatch | None, str | None]:
        """The audience this Rollout's rules send to the canary (None: no rule), or why it cannot
        tell: a rule that is not what Parachute writes for an audience, or not just before its
        managed rule, or the rules holding different audiences."""
        current: list[dict[str, Any]] = (route.get("spec") or {}).get(self.rules_key) or []
        found = {body["name"]: (index, body) for index, body in enumerate(current) if self.ours(body)}
        if not found:
            return None, None
        held: list[AudienceMatch | None] = []
        problems: list[str] = []
        for k, rule in enumerate(rules):
            name = self.release.audience_rule_name(k)
            entry = found.pop(name, None)
            if entry is None:
                held.append(None)
                continue
            index, body = entry
            audience = self.audience_in(rule, body)
            label = self._label(index, body)
            if audience is None or self.normal_rule(body) != self.normal_rule(
                self.audience_rule(rule, name, audience)
            ):
                problems.append(f"{self.ref} {label} is not the audience rule Parachute writes")
            elif index != rule.index - 1:
                problems.append(f"{self.ref} {label} is not just before {rule.label}")
            else:
                held.append(audience)
        problems += [f"{self.ref} {self._label(index, body)} has no rule to stand beside"
                     for index, body in found.values()]  # fmt: skip
        if problems:
            return None, "; ".join(problems)
        if len(set(held)) > 1:
            shown = ", ".join(str(a) if a is not None else "none" for a in held)
            return None, f"{self.ref}: its rules send different audiences to the canary ({shown})"
        return held[0], None

    async def reset(self) -> Applied:
        return await self.set_weight(0)

    async def snapshot(self) -> Body:
        if not await self.client.served(self.api_version, self.kind):
            raise RoutingSetupError(self.field, f"{self.crd()} is not installed")
        rules = self.managed(await self._route())
        base = self.names()[0]
        saved = [
            {
                "index": r.index,
                "name": r.body.get("name"),
                "destinations": r.body.get(self.destinations_key) or [],
            }
            for r in rules
            if any(self.service_of(d) == base for d in r.body.get(self.destinations_key) or [])
        ]
        return {"rules": saved, **await self.snapshot_backends()}

    async def snapshot_backends(self) -> Body:
        """Check what the split destinations will send to; what of it `restore` puts back."""
        await services.read_user_service(self.client, self.release, self.service, f"{self.field}.service")
        return {}

    async def restore(self, snapshot: Body) -> list[str]:
        changed = await self._restore_route(snapshot.get("rules") or [])
        return [*changed, *await self.remove_backends(snapshot)]

    async def remove_backends(self, snapshot: Body) -> list[str]:
        """Remove what `ensure_backends` made: the stable and canary Services."""
        return await services.remove(self.client, self.release, self.service)

    async def _restore_route(self, saved: list[Body]) -> list[str]:
        _, stable, canary = self.names()
        for _ in range(ATTEMPTS):
            try:
                route = await self.client.get(self.ref)
            except KindNotServedError:
                return []  # no CRD, no route: nothing sends to the copies
            if route is None:
                return []
            rules: list[dict[str, Any]] = (route.get("spec") or {}).get(self.rules_key) or []
            operations: list[Operation] = []
            given_back = []
            kept: list[dict[str, Any]] = []  # the rule list without Parachute's audience rules
            removed = []
            for index, body in enumerate(rules):
                if self.ours(body):
                    removed.append(self._label(index, body))
                    continue
                kept.append(body)
                destinations = body.get(self.destinations_key) or []
                if not destinations or any(self.service_of(d) not in (stable, canary) for d in destinations):
                    continue  # not a rule Parachute split
                rule = Rule(index, self._label(index, body), body)
                original = _saved_for(saved, rule)
                wanted = original if original is not None else self.unsplit(rule)
                at = f"/spec/{self.rules_key}/{index}"
                operations += [
                    {"op": "test", "path": at, "value": body},
                    {"op": "add", "path": f"{at}/{self.destinations_key}", "value": wanted},
                ]
                kept[-1] = {**body, self.destinations_key: wanted}
                given_back.append(f"{rule.label} to {', '.join(self.describe(d) for d in wanted)}")
            if removed:  # the list shrinks: it is written whole, as read but for what changes
                at = f"/spec/{self.rules_key}"
                operations = [
                    {"op": "test", "path": at, "value": rules},
                    {"op": "add", "path": at, "value": kept},
                ]
                given_back.append(f"removed the audience {' and '.join(removed)}")
            key = self.release.weight_annotation()
            if key in _annotations(route):
                operations.append({"op": "remove", "path": pointer("metadata", "annotations", key)})
            if not operations:
                return []
            try:
                await self.client.patch(self.ref, operations)
            except ConflictError:
                continue
            return [f"{self.ref} {'; '.join(given_back)}"] if given_back else []
        raise ConflictError(f"{self.ref} kept changing while Parachute gave it back")

    def _label(self, index: int, rule: dict[str, Any]) -> str:
        return f"rule {rule['name']!r}" if rule.get("name") else f"rule {index}"

    # -- shared ------------------------------------------------------------------------------

    async def _route(self) -> Body:
        try:
            found = await self.client.get(self.ref)
        except KindNotServedError:
            raise RoutingSetupError(self.field, f"{self.crd()} is not installed") from None
        if found is None:
            raise RoutingSetupError(self.route_field(), f"{self.ref} does not exist")
        return found

    def route_field(self) -> str:
        return self.field

    def names(self) -> tuple[str, str, str]:
        return self.service, services.stable_name(self.service), services.canary_name(self.service)

    def _normals(self, destinations: list[dict[str, Any]] | None) -> list[Any]:
        return [self.normal(d) for d in destinations or []]

    def _observe(self, route: Body, rules: list[Rule]) -> Applied:
        """The share the managed rules hold, and whether it is the one Parachute last wrote."""
        shares: dict[str, int | None] = {}
        unverified: list[str] = []
        for rule in rules:
            share, why = self._share(rule)
            shares[rule.label] = share
            if why:
                unverified.append(f"{self.ref} {rule.label} {why}")
        recorded = _annotations(route).get(self.release.weight_annotation())
        edits = []
        if recorded is not None and recorded.isdigit():
            for rule in rules:
                if self._normals(rule.body.get(self.destinations_key)) != self._normals(
                    self.split(rule, int(recorded))
                ):
                    edits.append(f"{rule.label} holds {self._describe(rule)}")
        hand_edit = None
        if edits:
            found = "; ".join(edits)
            hand_edit = f"{self.ref} was changed by someone else: {found} (Parachute set canary {recorded}%)"
        values = set(shares.values())
        audience, problem = self._audience_held(route, rules)
        if problem:
            unverified.append(problem)
        refusal = self.refused(route)
        if refusal:
            unverified.append(refusal)
        if unverified:
            return Applied(None, "; ".join(unverified), hand_edit)
        if len(values) > 1:
            found = ", ".join(f"{label} {share}%" for label, share in shares.items())
            return Applied(None, f"{self.ref}: its rules hold different shares ({found})", hand_edit)
        return Applied(values.pop(), None, hand_edit, audience=audience)

    def _share(self, rule: Rule) -> tuple[int | None, str | None]:
        base, stable, canary = self.names()
        destinations = rule.body.get(self.destinations_key) or []
        weights = {base: 0, stable: 0, canary: 0}
        for destination in destinations:
            name = self.service_of(destination)
            if name in weights:
                weights[name] += self.weight_of(destination, alone=len(destinations) == 1)
        if weights[base]:
            return None, f"still sends to Service {base}, which selects the canary's pods too"
        total = weights[stable] + weights[canary]
        if total == 0:
            return None, f"sends nothing to {stable} or {canary}"
        return round(100 * weights[canary] / total), None

    def _describe(self, rule: Rule) -> str:
        destinations = rule.body.get(self.destinations_key) or []
        alone = len(destinations) == 1
        return ", ".join(f"{self.describe(d)} {self.weight_of(d, alone)}" for d in destinations) or "nothing"


def cookie_pattern(name: str, value: str) -> str:
    """A regular expression for a `Cookie` header that carries `name=value` among its cookies
    (RE2, as Envoy and Istio read it; anchored, so a full match and a search agree)."""
    return rf"^(.*?;\s*)?{re.escape(name)}={re.escape(value)}(;.*)?$"


_COOKIE_PATTERN = re.compile(r"^\^\(\.\*\?;\\s\*\)\?(?P<pair>.+)\(;\.\*\)\?\$$")


def cookie_in(pattern: str) -> tuple[str, str] | None:
    """The (name, value) `cookie_pattern` made `pattern` from; None when it did not make it."""
    found = _COOKIE_PATTERN.match(pattern)
    if found is None:
        return None
    name, equals, value = found["pair"].partition("=")
    if not equals:
        return None
    pair = (re.sub(r"\\(.)", r"\1", name), re.sub(r"\\(.)", r"\1", value))
    return pair if cookie_pattern(*pair) == pattern else None


def _saved_for(saved: list[Body], rule: Rule) -> list[dict[str, Any]] | None:
    """The snapshot's destinations for a rule: by its name, else by its place."""
    name = rule.body.get("name")
    for entry in saved:
        if (name is not None and entry.get("name") == name) or (
            name is None and entry.get("index") == rule.index
        ):
            return list(entry.get("destinations") or [])
    return None


def _annotations(body: Body) -> dict[str, str]:
    return dict(body["metadata"].get("annotations") or {})


def other_services(names: tuple[str, ...], found: Sequence[str | None]) -> list[str]:
    """Services a rule sends to besides the Service and its copies."""
    return sorted({f or "(not a Service)" for f in found if f not in names})
