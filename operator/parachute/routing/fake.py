"""In-memory stand-ins for unit tests: a `Client` that keeps objects in a dict, and a `Router`.

`FakeClient` behaves as the API server does where routers can tell: resourceVersions and
generations move on every change, JSON patches apply all-or-nothing and fail on a failed
`test`, unserved kinds are refused, and every write is logged so a test can say "nothing was
written". It applies no schema defaults and no validation. `FakeRouter` holds a weight for
planner and reconcile tests that need a router without a backend.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from parachute.routing.objects import (
    Body,
    ConflictError,
    ForbiddenError,
    KindNotServedError,
    Operation,
    Ref,
    ref_of,
)
from parachute.routing.router import (
    POD_TEMPLATE_HASH,
    Applied,
    AudienceMatch,
    RoutingSetupError,
    check_weight,
)
from parachute.routing.services import ENDPOINT_SLICE, SERVICE_NAME

POD = ("v1", "Pod")
CANARY_LABEL = "parachute.dev/canary"  # what Release.canary_labels are by default
CANARY_HASH = "c4n4ry7f6"  # the canary pods' pod-template-hash in a world that has caught up

KINDS = (
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("networking.k8s.io/v1", "Ingress"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ENDPOINT_SLICE,
    POD,
)


class PatchError(Exception):
    """A JSON patch that cannot apply (a path that does not exist): the server's 422."""


class FakeClient:
    """A `Client` over a dict of objects."""

    def __init__(self, objects: Iterable[Body] = (), served: Iterable[tuple[str, str]] = KINDS) -> None:
        self.objects: dict[Ref, Body] = {}
        self.served_kinds = set(served)
        self.writes: list[tuple[str, Ref]] = []
        self.reads: list[Ref] = []
        self.lists: list[Ref] = []
        # EndpointSlices and Pods as in a cluster whose endpoint controller has caught up (every
        # Service has a ready endpoint of each pod it selects; see `_caught_up_pods`); False:
        # only those a test put.
        self.endpoints_follow = True
        # Kinds the operator may not touch, by (apiVersion, kind): answered as a 403 would be.
        self.forbidden: set[tuple[str, str]] = set()
        # Called before each write with the object's ref: a test's way to change the object
        # "concurrently", between a router's read and its write.
        self.before_write: Callable[[Ref], None] | None = None
        self._versions = itertools.count(1)
        for body in objects:
            self.put(body)

    # -- what a test uses to arrange and look --------------------------------------------

    def put(self, body: Body) -> Body:
        """Store an object as a user would create it (no write is logged)."""
        stored = copy.deepcopy(body)
        meta = stored["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1
        self.objects[ref_of(stored)] = stored
        return copy.deepcopy(stored)

    def edit(self, ref: Ref, change: Callable[[Body], None]) -> None:
        """Change an object by hand (no write is logged)."""
        body = copy.deepcopy(self.objects[ref])
        change(body)
        self._store(ref, body)

    def look(self, ref: Ref) -> Body:
        return copy.deepcopy(self.objects[ref])

    # -- the Client protocol -------------------------------------------------------------

    async def served(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self.served_kinds

    async def get(self, ref: Ref) -> Body | None:
        self._check_served(ref.api_version, ref.kind)
        self._check_allowed("get", ref)
        self.reads.append(ref)
        found = self.objects.get(ref)
        return copy.deepcopy(found) if found is not None else None

    async def find(self, api_version: str, kind: str, namespace: str, labels: dict[str, str]) -> list[Body]:
        ref = Ref(api_version, kind, namespace, "")
        self._check_allowed("list", ref)
        self.lists.append(ref)
        if (api_version, kind) == ENDPOINT_SLICE and self.endpoints_follow:
            return self._caught_up_slices(namespace, labels)
        if (api_version, kind) == POD and self.endpoints_follow:
            return [pod for pod in self._caught_up_pods(namespace) if _carries(pod, labels)]
        return [
            copy.deepcopy(body)
            for found, body in self.objects.items()
            if (found.api_version, found.kind, found.namespace) == (api_version, kind, namespace)
            and _carries(body, labels)
        ]

    def _caught_up_pods(self, namespace: str) -> list[Body]:
        """The pods of a world that has caught up: one ready pod of each ReplicaSet whose
        pod-template-hash is named anywhere in the namespace, and one canary pod."""
        hashes = sorted(self._hashes(namespace))
        pods = [(f"pod-{each}-x1y2z", {POD_TEMPLATE_HASH: each}) for each in hashes]
        pods.append((f"pod-{CANARY_HASH}-x1y2z", {POD_TEMPLATE_HASH: CANARY_HASH, CANARY_LABEL: "true"}))
        return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                 "labels": labels}} for name, labels in pods]  # fmt: skip

    def _caught_up_slices(self, namespace: str, labels: dict[str, str]) -> list[Body]:
        """What an endpoint controller that has caught up lists for a Service: a ready endpoint of
        each pod its selector selects (`_caught_up_pods`)."""
        name = labels.get(SERVICE_NAME, "")
        service = self.objects.get(Ref("v1", "Service", namespace, name))
        if service is None:
            return []
        # Every pod carries the labels the user's selectors name: a selector picks by its
        # pod-template-hash and canary label alone.
        selector = (service.get("spec") or {}).get("selector") or {}
        selector = {k: v for k, v in selector.items() if k in (POD_TEMPLATE_HASH, CANARY_LABEL)}
        endpoints = [
            {"conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"]}}
            for pod in self._caught_up_pods(namespace)
            if _carries(pod, selector)
        ]
        return [
            {"metadata": {"name": f"{name}-abcde", "labels": {SERVICE_NAME: name}}, "endpoints": endpoints}
        ]

    def _hashes(self, namespace: str) -> set[str]:
        found: set[str] = set()

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                if isinstance(value.get(POD_TEMPLATE_HASH), str):
                    found.add(value[POD_TEMPLATE_HASH])
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        for ref, body in self.objects.items():
            if ref.namespace == namespace:
                walk(body.get("spec"))
        return found

    async def create(self, body: Body) -> Body:
        ref = ref_of(body)
        self._check_served(ref.api_version, ref.kind)
        self._check_allowed("create", ref)
        self._before(ref)
        if ref in self.objects:
            raise ConflictError(f"{ref} already exists")
        self.writes.append(("create", ref))
        return self.put(body)

    async def patch(self, ref: Ref, operations: list[Operation]) -> Body:
        self._check_served(ref.api_version, ref.kind)
        self._check_allowed("patch", ref)
        self._before(ref)
        if ref not in self.objects:
            raise PatchError(f"{ref} does not exist")
        body = copy.deepcopy(self.objects[ref])
        for op in operations:
            _apply(body, op)
        self.writes.append(("patch", ref))
        return self._store(ref, body)

    async def delete(self, ref: Ref, uid: str) -> bool:
        self._check_served(ref.api_version, ref.kind)
        self._check_allowed("delete", ref)
        self._before(ref)
        found = self.objects.get(ref)
        if found is None:
            return False
        if found["metadata"].get("uid") != uid:
            raise ConflictError(f"{ref} is no longer the object with uid {uid}")
        del self.objects[ref]
        self.writes.append(("delete", ref))
        return True

    def _check_allowed(self, verb: str, ref: Ref) -> None:
        if (ref.api_version, ref.kind) in self.forbidden:
            raise ForbiddenError(f"the operator may not {verb} {ref.kind} objects ({ref.api_version})")

    def _store(self, ref: Ref, body: Body) -> Body:
        before = self.objects[ref]
        meta = body["metadata"]
        meta["resourceVersion"] = str(next(self._versions))
        if body.get("spec") != before.get("spec"):
            meta["generation"] = before["metadata"].get("generation", 1) + 1
        self.objects[ref] = body
        return copy.deepcopy(body)

    def _before(self, ref: Ref) -> None:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(ref)

    def _check_served(self, api_version: str, kind: str) -> None:
        if (api_version, kind) not in self.served_kinds:
            raise KindNotServedError(f"{kind} {api_version} is not served")


def _carries(body: Body, labels: dict[str, str]) -> bool:
    return labels.items() <= ((body.get("metadata") or {}).get("labels") or {}).items()


def _parse(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(body: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(body, dict) and part in body:
            body = body[part]
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            raise PatchError(f"no {part!r} in the document")
    return body


def _apply(body: Body, op: Operation) -> None:
    parts = _parse(op["path"])
    parent, last = _walk(body, parts[:-1]), parts[-1]
    kind = op["op"]
    if kind == "test":
        if _walk(body, parts) != op["value"]:
            raise ConflictError(f"test of {op['path']} failed")
    elif kind in ("add", "replace"):
        _put(parent, last, copy.deepcopy(op["value"]), kind, op["path"])
    elif kind == "remove":
        _walk(body, parts)
        if isinstance(parent, dict):
            del parent[last]
        else:
            del parent[int(last)]
    else:
        raise PatchError(f"unsupported op {kind}")


def _put(parent: Any, last: str, value: Any, kind: str, path: str) -> None:
    if isinstance(parent, dict):
        if kind == "replace" and last not in parent:
            raise PatchError(f"replace of missing {path}")
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add" and index <= len(parent):
            parent.insert(index, value)
        elif kind == "replace" and index < len(parent):
            parent[index] = value
        else:
            raise PatchError(f"index out of range: {path}")
    else:
        raise PatchError(f"cannot {kind} inside a scalar: {path}")


class FakeRouter:
    """A `Router` with no backend: it holds the weight it was given.

    `setup_error` makes every call fail as a broken set-up would; `verifiable=False` makes it
    answer as replica ratio does (nothing written, nothing to read back); `hand_edit(w)`
    changes the weight behind its back.
    """

    UNVERIFIED = "the fake router is set up not to verify"

    def __init__(self, setup_error: RoutingSetupError | None = None, verifiable: bool = True) -> None:
        self.weight = 0
        self.recorded = 0
        self.audience: AudienceMatch | None = None
        self.setup_error = setup_error
        self.verifiable = verifiable
        self.writes: list[int] = []
        self.restored = False
        # Why a backend cannot take requests yet, by side (True: the canary's); none by default.
        self.unready_backends: dict[bool, str] = {}

    def hand_edit(self, weight: int) -> None:
        self.weight = weight

    async def ensure(self) -> list[str]:
        self._check()
        return []

    async def read(self) -> Applied:
        self._check()
        if not self.verifiable:
            return Applied(None, self.UNVERIFIED)
        edited = None if self.weight == self.recorded else f"found {self.weight}%, set {self.recorded}%"
        return Applied(self.weight, hand_edit=edited, audience=self.audience)

    async def set_weight(self, weight: int, audience: AudienceMatch | None = None) -> Applied:
        check_weight(weight)
        seen = await self.read()
        if not self.verifiable or (self.weight, self.recorded, self.audience) == (weight, weight, audience):
            return seen
        self.weight = self.recorded = weight
        self.audience = audience
        self.writes.append(weight)
        hand_edit = f"{seen.hand_edit}; now {weight}%" if seen.hand_edit else None
        return Applied(weight, hand_edit=hand_edit, wrote=True, audience=audience)

    async def unready(self, canary: bool) -> str:
        return self.unready_backends.get(canary, "")

    async def reset(self) -> Applied:
        return await self.set_weight(0)

    async def snapshot(self) -> dict[str, Any]:
        self._check()
        return {"weight": self.weight}

    async def restore(self, snapshot: dict[str, Any]) -> list[str]:
        self.restored = True
        return ["restored"]

    def _check(self) -> None:
        if self.setup_error is not None:
            raise self.setup_error
