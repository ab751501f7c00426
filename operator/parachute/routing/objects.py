"""The few Kubernetes calls a router makes, as a small Protocol, and what they can raise.

Routers never import a Kubernetes client: they are given a `Client` (the real one in
`routing.client`, an in-memory one in `routing.fake`) and speak in plain dicts. Every write
is either a create or an RFC 6902 JSON patch that carries its own `test` preconditions, so a
router changes exactly the part it read and decided about, and a concurrent change makes the
write fail instead of being overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Body = dict[str, Any]
Operation = dict[str, Any]


@dataclass(frozen=True)
class Ref:
    """One namespaced object: apiVersion, kind, namespace and name."""

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def ref_of(body: Body) -> Ref:
    meta = body["metadata"]
    return Ref(body["apiVersion"], body["kind"], meta["namespace"], meta["name"])


class ConflictError(Exception):
    """The object changed since it was read (a `test` op or resourceVersion failed, or it was
    created meanwhile): read it again and decide again."""


class KindNotServedError(Exception):
    """The API server does not serve this apiVersion and kind (its CRD is not installed)."""


class ForbiddenError(Exception):
    """The operator's ServiceAccount may not do this (its role lacks the grant)."""


class Client(Protocol):
    """What routers need of the API server."""

    async def served(self, api_version: str, kind: str) -> bool:
        """Whether discovery lists the kind under that apiVersion now."""
        ...

    async def get(self, ref: Ref) -> Body | None:
        """The object, or None when it does not exist; KindNotServedError for an unserved kind."""
        ...

    async def find(self, api_version: str, kind: str, namespace: str, labels: dict[str, str]) -> list[Body]:
        """The objects of a kind in a namespace that carry all of `labels`."""
        ...

    async def create(self, body: Body) -> Body:
        """Create the object (namespace and name from its metadata); ConflictError if it exists."""
        ...

    async def patch(self, ref: Ref, operations: list[Operation]) -> Body:
        """Apply a JSON patch; ConflictError when one of its `test` ops fails. Returns the result."""
        ...

    async def delete(self, ref: Ref, uid: str) -> bool:
        """Delete the object if it is still the one with `uid`; False when it is gone already,
        ConflictError when another object of that name took its place."""
        ...


def pointer(*parts: str | int) -> str:
    """An RFC 6901 JSON pointer: `pointer("metadata", "annotations", "a/b")` → /metadata/annotations/a~1b."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def set_annotation(body: Body, key: str, value: str) -> list[Operation]:
    """Ops that set one annotation and leave the others as they are.

    Adding the whole map when there is none would replace a map someone else added meanwhile,
    so that case is guarded by the resourceVersion as read.
    """
    meta = body["metadata"]
    if meta.get("annotations"):
        return [{"op": "add", "path": pointer("metadata", "annotations", key), "value": value}]
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
        {"op": "add", "path": "/metadata/annotations", "value": {key: value}},
    ]
