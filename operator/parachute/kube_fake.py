"""An in-memory `KubeApi` for unit tests of the adapters (workload, recovery, gating, policy).

`FakeKube` keeps plain dicts by (kind, namespace, name), the namespace "" for cluster-scoped
kinds, and answers as the API server does where the adapters can tell: resourceVersions move
on every write, generations when the spec changes; a replace whose resourceVersion is not the
stored one raises `kube.ConflictError`; a patch whose `metadata.resourceVersion` precondition
fails raises the client's 409 (`kube`'s patches pass it on as it is); a ConfigMap created
`immutable` keeps its data (a 422); creating an object that exists is refused (a ConfigMap's
create answers False, as `kube.create_config_map` does). Status is left as it was (no
controller runs), and a Deployment patch is merged as RFC 7386 (a strategic merge differs
only in lists, which the adapters never patch).

A test arranges with `put`/`edit`, looks with `look`, reads `writes` ("nothing was written
twice") and `reads`, and injects a fault into the next call of a kind and verb with
`fail_next` (the verbs are RBAC's: get, list, create, patch, update).
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException

from parachute import kube
from parachute.kube_api import KubeApi
from parachute.plan.desired_workload import label_selector

Body = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace, name)


def key_of(body: Body) -> Key:
    meta = body["metadata"]
    return body["kind"], meta.get("namespace") or "", meta["name"]


def api_error(status: int, reason: str) -> ApiException:
    """What the kubernetes client raises for an answer with this HTTP status."""
    return ApiException(status=status, reason=reason)


class FakeKube:
    """A `KubeApi` over a dict of objects."""

    def __init__(self, objects: Iterable[Body] = ()) -> None:
        self.objects: dict[Key, Body] = {}
        # Each write that changed something: (verb, kind, namespace, name).
        self.writes: list[tuple[str, str, str, str]] = []
        # Each read: (verb, kind, namespace, name or label selector).
        self.reads: list[tuple[str, str, str, str]] = []
        # For `read_object`, by (apiVersion, kind): kinds the operator may not read, and kinds
        # the API server does not serve.
        self.forbidden: set[tuple[str, str]] = set()
        self.unserved: set[tuple[str, str]] = set()
        # Called once, before the next write, with the object's key: a test's way to change the
        # object "concurrently", between an adapter's read and its write.
        self.before_write: Callable[[Key], None] | None = None
        self._faults: dict[tuple[str, str], list[BaseException]] = {}
        self._versions = itertools.count(1)
        for body in objects:
            self.put(body)

    # -- what a test uses to arrange, to look and to break --------------------------------

    def put(self, body: Body) -> Body:
        """Store an object as a user would create it (no write is recorded)."""
        stored = copy.deepcopy(body)
        meta = stored["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[key_of(stored)] = stored
        return copy.deepcopy(stored)

    def edit(self, kind: str, namespace: str, name: str, change: Callable[[Body], None]) -> None:
        """Change an object by hand, as someone else would (no write is recorded)."""
        body = copy.deepcopy(self.objects[(kind, namespace, name)])
        change(body)
        self._store((kind, namespace, name), body)

    def look(self, kind: str, namespace: str, name: str) -> Body:
        return copy.deepcopy(self.objects[(kind, namespace, name)])

    def named(self, kind: str, namespace: str) -> list[str]:
        """The names of the objects of a kind in a namespace."""
        return sorted(n for k, ns, n in self.objects if (k, ns) == (kind, namespace))

    def fail_next(self, kind: str, verb: str, error: BaseException) -> None:
        """The next `verb` on any object of `kind` raises `error` and changes nothing."""
        self._faults.setdefault((kind, verb), []).append(error)

    # -- the KubeApi protocol -------------------------------------------------------------

    async def read_deployment(self, namespace: str, name: str) -> Body | None:
        return self._get("Deployment", namespace, name)

    async def create_deployment(self, namespace: str, body: Body) -> None:
        if not self._create("Deployment", namespace, body):
            raise api_error(409, "AlreadyExists")

    async def patch_deployment(self, namespace: str, name: str, patch: Body) -> None:
        self._patch("Deployment", namespace, name, patch)

    async def replace_deployment(self, namespace: str, name: str, body: Body) -> None:
        self._replace("Deployment", namespace, name, body)

    async def replica_sets_of(self, target: Body) -> list[Body]:
        return self._list("ReplicaSet", target["metadata"]["namespace"], label_selector(target))

    async def list_pods(self, namespace: str, selector: str) -> list[Body]:
        return self._list("Pod", namespace, selector)

    async def read_config_map(self, namespace: str, name: str) -> Body | None:
        return self._get("ConfigMap", namespace, name)

    async def create_config_map(self, namespace: str, body: Body) -> bool:
        return self._create("ConfigMap", namespace, body)

    async def patch_config_map(self, namespace: str, name: str, patch: Body) -> None:
        self._patch("ConfigMap", namespace, name, patch)

    async def replace_config_map(self, namespace: str, name: str, body: Body) -> None:
        self._replace("ConfigMap", namespace, name, body)

    async def read_feature_flag(self, namespace: str, name: str) -> Body | None:
        return self._get("FeatureFlag", namespace, name)

    async def replace_feature_flag(self, namespace: str, name: str, body: Body) -> None:
        self._replace("FeatureFlag", namespace, name, body)

    async def read_release_policy(self, name: str) -> Body | None:
        return self._get("ReleasePolicy", "", name)

    async def read_object(self, api_version: str, kind: str, namespace: str, name: str) -> Body | None:
        if (api_version, kind) in self.unserved:
            raise LookupError(f"the API server serves no {kind} in {api_version}")
        if (api_version, kind) in self.forbidden:
            raise kube.NotPermittedError(f"the operator may not read {kind} ({api_version})")
        if (kind, namespace, name) not in self.objects and (kind, "", name) in self.objects:
            namespace = ""  # a cluster-scoped kind
        return self._get(kind, namespace, name)

    # -- the API server's part ------------------------------------------------------------

    def _fault(self, kind: str, verb: str) -> None:
        queued = self._faults.get((kind, verb))
        if queued:
            raise queued.pop(0)

    def _get(self, kind: str, namespace: str, name: str) -> Body | None:
        self._fault(kind, "get")
        self.reads.append(("get", kind, namespace, name))
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def _list(self, kind: str, namespace: str, selector: str) -> list[Body]:
        self._fault(kind, "list")
        self.reads.append(("list", kind, namespace, selector))
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        return [
            copy.deepcopy(body)
            for (k, ns, _), body in sorted(self.objects.items())
            if (k, ns) == (kind, namespace)
            and wanted.items() <= (body["metadata"].get("labels") or {}).items()
        ]

    def _create(self, kind: str, namespace: str, body: Body) -> bool:
        self._fault(kind, "create")
        key = (kind, namespace, body["metadata"]["name"])
        self._before(key)
        if key in self.objects:
            return False
        stored = copy.deepcopy(body)
        stored["kind"] = kind
        stored["metadata"]["namespace"] = namespace
        stored["metadata"].pop("resourceVersion", None)
        stored["metadata"].pop("generation", None)
        stored.pop("status", None)
        self.put(stored)
        self.writes.append(("create", *key))
        return True

    def _patch(self, kind: str, namespace: str, name: str, patch: Body) -> None:
        self._fault(kind, "patch")
        key = (kind, namespace, name)
        self._before(key)
        before = self.objects.get(key)
        if before is None:
            raise api_error(404, "NotFound")
        patch = copy.deepcopy(patch)
        precondition = (patch.get("metadata") or {}).pop("resourceVersion", None)
        if precondition is not None and precondition != before["metadata"]["resourceVersion"]:
            raise api_error(409, "Conflict")
        body = kube.apply_merge_patch(
            copy.deepcopy(before), {k: v for k, v in patch.items() if k != "status"}
        )
        self._check_immutable(before, body)
        self._store(key, body)
        self.writes.append(("patch", *key))

    def _replace(self, kind: str, namespace: str, name: str, body: Body) -> None:
        self._fault(kind, "update")
        key = (kind, namespace, name)
        self._before(key)
        before = self.objects.get(key)
        if before is None:
            raise api_error(404, "NotFound")
        given = body["metadata"].get("resourceVersion")
        if given is not None and given != before["metadata"]["resourceVersion"]:
            raise kube.ConflictError(f"{kind} {namespace}/{name} changed while being updated")
        replaced = {k: copy.deepcopy(v) for k, v in body.items() if v is not None}  # nulls are not stored
        replaced["metadata"]["uid"] = before["metadata"]["uid"]
        replaced["metadata"]["generation"] = before["metadata"].get("generation", 1)
        if "status" in before:  # the main resource's update leaves status alone
            replaced["status"] = copy.deepcopy(before["status"])
        else:
            replaced.pop("status", None)
        self._check_immutable(before, replaced)
        self._store(key, replaced)
        self.writes.append(("update", *key))

    def _check_immutable(self, before: Body, after: Body) -> None:
        if before.get("immutable") and any(before.get(f) != after.get(f) for f in ("data", "binaryData")):
            raise api_error(422, "Invalid: field is immutable when `immutable` is set")

    def _store(self, key: Key, body: Body) -> None:
        before = self.objects[key]
        meta = body["metadata"]
        meta["resourceVersion"] = str(next(self._versions))
        if body.get("spec") != before.get("spec"):
            meta["generation"] = before["metadata"].get("generation", 1) + 1
        self.objects[key] = body

    def _before(self, key: Key) -> None:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(key)


# mypy holds the fake to the protocol here.
_MAKES_A_KUBE_API: Callable[[], KubeApi] = FakeKube
