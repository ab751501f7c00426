"""NGINX Ingress canary annotations on a Parachute-owned `<ingress>-canary` copy.

ingress-nginx sends `canary-weight`% of a host and path's requests to a second Ingress for
the same host and path marked `canary: "true"`. Parachute owns that second Ingress: a copy
of the user's rules for the paths that send to the Service, sending to `<svc>-canary`
instead, with the weight in its annotations. The user's own paths to the Service are
pointed at `<svc>-stable`, because the user's Service selects the canary's pods too and
would leak canary traffic into the stable share; nothing else in the user's Ingress is
touched. Reset sets the weight to 0. (ingress-nginx is retired upstream; prefer Gateway API.)

An audience (phased) is written into the same canary Ingress: `canary-by-header` with
`canary-by-header-value` for a header, `canary-by-cookie` for a cookie (whose value is then
always: ingress-nginx routes a request whose cookie says `always` to the canary, and no other
value). ingress-nginx asks the header first, then the cookie, then the weight, so the audience
goes to the canary and everyone else by the weight (0 at an audience's stage).
"""

from __future__ import annotations

import copy
from typing import Any

from parachute import api
from parachute.routing import services
from parachute.routing.objects import Body, Client, ConflictError, Operation, Ref, pointer, set_annotation
from parachute.routing.router import Applied, AudienceMatch, Release, RoutingSetupError, check_weight

FIELD = "spec.trafficRouting.nginx"
API_VERSION = "networking.k8s.io/v1"
PREFIX = "nginx.ingress.kubernetes.io"
CANARY = f"{PREFIX}/canary"
WEIGHT = f"{PREFIX}/canary-weight"
WEIGHT_TOTAL = f"{PREFIX}/canary-weight-total"
BY_HEADER = f"{PREFIX}/canary-by-header"
BY_HEADER_VALUE = f"{PREFIX}/canary-by-header-value"
BY_HEADER_PATTERN = f"{PREFIX}/canary-by-header-pattern"
BY_COOKIE = f"{PREFIX}/canary-by-cookie"
AUDIENCE_ANNOTATIONS = (BY_HEADER, BY_HEADER_VALUE, BY_HEADER_PATTERN, BY_COOKIE)
# Annotations that choose the controller; the canary copy must be picked up by the same one.
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
ATTEMPTS = 5


def canary_ingress_name(ingress: str) -> str:
    return f"{ingress}-canary"


class NginxRouter:
    def __init__(self, client: Client, release: Release, settings: api.NginxRouting) -> None:
        self.client, self.release, self.settings = client, release, settings
        self.service = settings.service
        self.stable = services.stable_name(settings.service)
        self.canary = services.canary_name(settings.service)
        self.ref = Ref(API_VERSION, "Ingress", release.namespace, settings.ingress)
        self.canary_ref = Ref(
            API_VERSION, "Ingress", release.namespace, canary_ingress_name(settings.ingress)
        )

    async def ensure(self) -> list[str]:
        user = await self._user_ingress()
        existing = await self.client.get(self.canary_ref)
        if existing is not None and not self.release.owns(existing):
            raise RoutingSetupError(
                f"{FIELD}.ingress",
                f"{self.canary_ref} exists and is not this Rollout's; Parachute will not overwrite it "
                "(rename it, or delete it if it is left over)",
            )
        changed = await services.ensure(self.client, self.release, self.service, f"{FIELD}.service")
        wanted = self._desired_canary(user)
        if existing is None:
            try:
                await self.client.create(wanted)
            except ConflictError:
                return changed  # made meanwhile: the next ensure checks whose it is
            return [*changed, f"created {self.canary_ref} (canary weight 0)"]
        if existing.get("spec") != wanted["spec"]:
            await self.client.patch(
                self.canary_ref,
                [{"op": "test", "path": "/metadata/resourceVersion", "value": existing["metadata"]["resourceVersion"]},
                 {"op": "add", "path": "/spec", "value": wanted["spec"]}],
            )  # fmt: skip
            changed.append(f"updated {self.canary_ref} to follow {self.ref}")
        return changed

    async def read(self) -> Applied:
        user, canary = await self._user_ingress(), await self._canary_ingress()
        return self._observe(user, canary)

    async def set_weight(self, weight: int, audience: AudienceMatch | None = None) -> Applied:
        check_weight(weight)
        for _ in range(ATTEMPTS):
            user, canary = await self._user_ingress(), await self._canary_ingress()
            seen = self._observe(user, canary)
            to_stable = self._to_stable(user)
            annotations = canary["metadata"].get("annotations") or {}
            key = self.release.weight_annotation()
            recorded = annotations.get(key)
            ops: list[Operation] = []
            if (annotations.get(CANARY), annotations.get(WEIGHT)) != ("true", str(weight)):
                ops += [{"op": "add", "path": pointer("metadata", "annotations", CANARY), "value": "true"},
                        {"op": "add", "path": pointer("metadata", "annotations", WEIGHT), "value": str(weight)}]  # fmt: skip
            if WEIGHT_TOTAL in annotations:
                ops.append({"op": "remove", "path": pointer("metadata", "annotations", WEIGHT_TOTAL)})
            ops += _audience_operations(annotations, audience)
            if ops or recorded != str(weight):
                ops = [*set_annotation(canary, key, str(weight)), *ops]
            if not ops and not to_stable:
                return seen
            if to_stable:
                await services.check(self.client, self.release, self.service, f"{FIELD}.service")
            try:
                # Stable first: until the user's paths go to <svc>-stable, canary pods serve
                # part of the "stable" share too.
                if to_stable:
                    user = await self.client.patch(self.ref, to_stable)
                if ops:
                    canary = await self.client.patch(self.canary_ref, ops)
            except ConflictError:
                continue
            after = self._observe(user, canary)
            put = "put back to" if recorded == str(weight) else "set to"
            hand_edit = seen.hand_edit and f"{seen.hand_edit}; {put} canary {weight}%"
            return Applied(after.weight, after.unverified, hand_edit, wrote=True, audience=after.audience)
        raise ConflictError(f"{self.ref} or {self.canary_ref} kept changing while Parachute set the weight")

    async def unready(self, canary: bool) -> str:
        return await services.copy_unready(self.client, self.release, self.service, canary)

    async def reset(self) -> Applied:
        return await self.set_weight(0)

    async def snapshot(self) -> Body:
        """Nothing to keep: the user's paths are only ever pointed from the Service to its stable copy,
        and back. Checks the set-up as `ensure` does."""
        await self._user_ingress()
        existing = await self.client.get(self.canary_ref)
        if existing is not None and not self.release.owns(existing):
            raise RoutingSetupError(
                f"{FIELD}.ingress",
                f"{self.canary_ref} exists and is not this Rollout's; Parachute will not overwrite it "
                "(rename it, or delete it if it is left over)",
            )
        await services.read_user_service(self.client, self.release, self.service, f"{FIELD}.service")
        return {}

    async def restore(self, snapshot: Body) -> list[str]:
        changed = []
        for _ in range(ATTEMPTS):
            user = await self.client.get(self.ref)
            paths = self._paths(user, (self.stable,)) if user is not None else []
            if not paths:
                break
            ops: list[Operation] = []
            for r, p, _path in paths:
                at = pointer("spec", "rules", r, "http", "paths", p, "backend", "service", "name")
                ops += [
                    {"op": "test", "path": at, "value": self.stable},
                    {"op": "add", "path": at, "value": self.service},
                ]
            try:
                await self.client.patch(self.ref, ops)
            except ConflictError:
                continue
            changed.append(f"{self.ref}: {len(paths)} path(s) send to Service {self.service} again")
            break
        canary = await self.client.get(self.canary_ref)
        if canary is not None and self.release.owns(canary):
            try:
                if await self.client.delete(self.canary_ref, canary["metadata"]["uid"]):
                    changed.append(f"deleted {self.canary_ref}")
            except ConflictError:
                pass  # another object of that name now: not ours
        return [*changed, *await services.remove(self.client, self.release, self.service)]

    # -- the pieces ----------------------------------------------------------------------------

    async def _user_ingress(self) -> Body:
        found = await self.client.get(self.ref)
        if found is None:
            raise RoutingSetupError(f"{FIELD}.ingress", f"{self.ref} does not exist")
        if not self._paths(found, (self.service, self.stable)):
            raise RoutingSetupError(f"{FIELD}.service", f"{self.ref} has no path to Service {self.service}")
        return found

    async def _canary_ingress(self) -> Body:
        found = await self.client.get(self.canary_ref)
        if found is None or not self.release.owns(found):
            state = "does not exist" if found is None else "is not this Rollout's"
            raise RoutingSetupError(f"{FIELD}.ingress", f"{self.canary_ref} {state}; ensure makes it first")
        return found

    def _paths(self, ingress: Body, names: tuple[str, ...]) -> list[tuple[int, int, dict[str, Any]]]:
        """(rule index, path index, path) of every path whose backend is one of `names`."""
        found = []
        for r, rule in enumerate((ingress.get("spec") or {}).get("rules") or []):
            for p, path in enumerate((rule.get("http") or {}).get("paths") or []):
                if ((path.get("backend") or {}).get("service") or {}).get("name") in names:
                    found.append((r, p, path))
        return found

    def _to_stable(self, user: Body) -> list[Operation]:
        """Ops that point the user's paths to the Service at `<svc>-stable`, each guarded."""
        ops: list[Operation] = []
        for r, p, _ in self._paths(user, (self.service,)):
            at = pointer("spec", "rules", r, "http", "paths", p, "backend", "service", "name")
            ops += [
                {"op": "test", "path": at, "value": self.service},
                {"op": "add", "path": at, "value": self.stable},
            ]
        return ops

    def _desired_canary(self, user: Body) -> Body:
        spec = user.get("spec") or {}
        rules = []
        for rule in spec.get("rules") or []:
            paths = [
                _to_service(path, self.canary)
                for path in (rule.get("http") or {}).get("paths") or []
                if ((path.get("backend") or {}).get("service") or {}).get("name")
                in (self.service, self.stable)
            ]
            if paths:
                rules.append({**{k: v for k, v in rule.items() if k != "http"}, "http": {"paths": paths}})
        canary_spec: dict[str, Any] = {"rules": rules}
        if "ingressClassName" in spec:
            canary_spec["ingressClassName"] = spec["ingressClassName"]
        user_annotations = user["metadata"].get("annotations") or {}
        # The weight Parachute records is written by set_weight, with the user's paths moved.
        annotations = {CANARY: "true", WEIGHT: "0"}
        if CLASS_ANNOTATION in user_annotations:
            annotations[CLASS_ANNOTATION] = user_annotations[CLASS_ANNOTATION]
        return {
            "apiVersion": API_VERSION,
            "kind": "Ingress",
            "metadata": {
                "name": self.canary_ref.name,
                "namespace": self.release.namespace,
                "labels": self.release.labels(),
                "annotations": annotations,
                "ownerReferences": [self.release.owner_reference()],
            },
            "spec": canary_spec,
        }

    def _observe(self, user: Body, canary: Body) -> Applied:
        annotations = canary["metadata"].get("annotations") or {}
        recorded = annotations.get(self.release.weight_annotation())
        raw, total = annotations.get(WEIGHT, "0"), annotations.get(WEIGHT_TOTAL, "100")
        edits = []
        if annotations.get(CANARY) != "true":
            edits.append(f"{self.canary_ref} is no longer marked canary")
        if recorded is not None and (raw != recorded or WEIGHT_TOTAL in annotations):
            edits.append(
                f"{self.canary_ref} holds canary-weight {raw}"
                + (f" of {total}" if WEIGHT_TOTAL in annotations else "")
            )
        leaks = self._paths(user, (self.service,))
        if recorded is not None and leaks:
            # Parachute pointed them at <svc>-stable when it recorded a weight.
            edits.append(f"{self.ref} sends {len(leaks)} path(s) to Service {self.service} again")
        hand_edit = (
            f"changed by someone else: {'; '.join(edits)} (Parachute set canary {recorded}%)"
            if edits
            else None
        )
        if leaks:
            return Applied(
                None,
                f"{self.ref} still sends to Service {self.service}, which selects the canary's pods too",
                hand_edit,
            )
        if annotations.get(CANARY) != "true":
            return Applied(None, f"{self.canary_ref} is not marked canary", hand_edit)
        if not (raw.isdigit() and total.isdigit() and int(total) > 0):
            return Applied(
                None, f"{self.canary_ref} canary-weight {raw!r} of {total!r} is not a weight", hand_edit
            )
        audience, problem = _audience_in(annotations)
        if problem:
            return Applied(None, f"{self.canary_ref} {problem}", hand_edit)
        return Applied(round(100 * int(raw) / int(total)), None, hand_edit, audience=audience)


def _audience_annotations(audience: AudienceMatch | None) -> dict[str, str]:
    """The canary Ingress's annotations that send `audience` to the canary."""
    if audience is None:
        return {}
    if audience.by == "header":
        return {BY_HEADER: audience.key, BY_HEADER_VALUE: audience.value}
    return {BY_COOKIE: audience.key}  # its value is "always": the schema allows no other with nginx


def _audience_operations(annotations: dict[str, str], audience: AudienceMatch | None) -> list[Operation]:
    """Ops that leave exactly `audience`'s annotations on the canary Ingress."""
    wanted = _audience_annotations(audience)
    ops: list[Operation] = [
        {"op": "remove", "path": pointer("metadata", "annotations", key)}
        for key in AUDIENCE_ANNOTATIONS
        if key in annotations and key not in wanted
    ]
    ops += [{"op": "add", "path": pointer("metadata", "annotations", key), "value": value}
            for key, value in wanted.items() if annotations.get(key) != value]  # fmt: skip
    return ops


def _audience_in(annotations: dict[str, str]) -> tuple[AudienceMatch | None, str | None]:
    """The audience the canary Ingress sends to the canary, as ingress-nginx reads it, or what
    it holds that Parachute does not write."""
    header, cookie = annotations.get(BY_HEADER), annotations.get(BY_COOKIE)
    if BY_HEADER_PATTERN in annotations:
        return None, "holds canary-by-header-pattern, which Parachute does not write"
    if header and cookie:
        return None, "holds both canary-by-header and canary-by-cookie"
    if header:
        # Without a value, the header's value "always" sends a request to the canary.
        return AudienceMatch("header", header.lower(), annotations.get(BY_HEADER_VALUE, "always")), None
    if cookie:
        return AudienceMatch("cookie", cookie, "always"), None
    return None, None


def _to_service(path: dict[str, Any], name: str) -> dict[str, Any]:
    moved = copy.deepcopy(path)
    moved["backend"]["service"]["name"] = name
    return moved
