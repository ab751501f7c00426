"""The routers' `Client` on a real API server, over the kubernetes client's ApiClient.

Any kind is addressed by apiVersion and kind, as the dynamic client does; but discovery is
one group-version at a time and held in memory only. (The client's DynamicClient re-reads
every group on a miss and keeps its cache in a shared file in /tmp, which stays stale when a
CRD is installed or removed while the operator runs.) `served` always asks the server, so a
CRD installed after the operator started is found on the next reconcile. Calls are blocking
and run in worker threads, so a slow API server never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from parachute import kube
from parachute.routing.objects import (
    Body,
    ConflictError,
    ForbiddenError,
    KindNotServedError,
    Operation,
    Ref,
)

FIELD_MANAGER = "parachute"
# The API server's answer when a JSON patch's `test` op fails: 422 with this message and no
# causes (a schema violation also answers 422, but names the field in its causes).
_PATCH_TEST_FAILED = "the server rejected our request due to an error in our request"


class ApiServerClient:
    """A `Client` for the cluster the given ApiClient (default: Parachute's own) talks to."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._given = api_client
        # apiVersion -> kind -> (plural, namespaced); refreshed when a kind is missing
        self._resources: dict[str, dict[str, tuple[str, bool]]] = {}

    @property
    def _api(self) -> client.ApiClient:
        if self._given is None:
            self._given = kube.api_client()
        return self._given

    async def served(self, api_version: str, kind: str) -> bool:
        resources = await asyncio.to_thread(self._discover, api_version)
        return kind in resources

    async def get(self, ref: Ref) -> Body | None:
        path = await self._path(ref.api_version, ref.kind, ref.namespace, ref.name)
        try:
            return await asyncio.to_thread(self._call, "GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            if error.status == 403:
                raise _forbidden("get", ref) from error
            raise

    async def find(self, api_version: str, kind: str, namespace: str, labels: dict[str, str]) -> list[Body]:
        path = await self._path(api_version, kind, namespace)
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        try:
            found = await asyncio.to_thread(self._call, "GET", path, None, "application/json", selector)
        except ApiException as error:
            if error.status == 403:
                raise _forbidden("list", Ref(api_version, kind, namespace, "")) from error
            raise
        return list(found.get("items") or [])

    async def create(self, body: Body) -> Body:
        meta = body["metadata"]
        path = await self._path(body["apiVersion"], body["kind"], meta["namespace"])
        try:
            return await asyncio.to_thread(self._call, "POST", path, body)
        except ApiException as error:
            if error.status == 409:
                raise ConflictError(
                    f"{body['kind']} {meta['namespace']}/{meta['name']} already exists"
                ) from error
            if error.status == 403:
                raise _forbidden(
                    "create", Ref(body["apiVersion"], body["kind"], meta["namespace"], meta["name"])
                ) from error
            raise

    async def patch(self, ref: Ref, operations: list[Operation]) -> Body:
        path = await self._path(ref.api_version, ref.kind, ref.namespace, ref.name)
        try:
            return await asyncio.to_thread(
                self._call, "PATCH", path, operations, "application/json-patch+json"
            )
        except ApiException as error:
            if error.status == 409 or (error.status == 422 and _test_failed(error)):
                raise ConflictError(f"{ref} changed since it was read") from error
            if error.status == 403:
                raise _forbidden("patch", ref) from error
            raise

    async def delete(self, ref: Ref, uid: str) -> bool:
        path = await self._path(ref.api_version, ref.kind, ref.namespace, ref.name)
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            await asyncio.to_thread(self._call, "DELETE", path, options)
        except ApiException as error:
            if error.status == 404:
                return False
            if error.status == 409:  # the uid precondition: another object of that name now
                raise ConflictError(f"{ref} is no longer the object Parachute made") from error
            if error.status == 403:
                raise _forbidden("delete", ref) from error
            raise
        return True

    async def _path(self, api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
        found = self._resources.get(api_version, {}).get(kind)
        if found is None:
            found = (await asyncio.to_thread(self._discover, api_version)).get(kind)
        if found is None:
            raise KindNotServedError(f"{kind} {api_version} is not served")
        plural, namespaced = found
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        scope = f"/namespaces/{namespace}" if namespaced else ""
        return f"{base}{scope}/{plural}" + (f"/{name}" if name else "")

    def _discover(self, api_version: str) -> dict[str, tuple[str, bool]]:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self._call("GET", path)
        except ApiException as error:
            if error.status != 404:
                raise
            listing = {}
        resources = {
            r["kind"]: (r["name"], bool(r.get("namespaced")))
            for r in listing.get("resources", [])
            if "/" not in r["name"]  # subresources (status, scale) share their parent's kind
        }
        self._resources[api_version] = resources
        return resources

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        labels: str = "",
    ) -> Body:
        query = [("fieldManager", FIELD_MANAGER)] if method in ("POST", "PATCH") else []
        query += [("labelSelector", labels)] if labels else []
        response = self._api.call_api(
            path, method, query_params=query, body=body, auth_settings=["BearerToken"],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            _preload_content=False,
        )  # fmt: skip
        return cast(Body, json.loads(response.data))


def _test_failed(error: ApiException) -> bool:
    try:
        status = json.loads(error.body or "{}")
    except ValueError:
        return False
    return status.get("message") == _PATCH_TEST_FAILED and not (status.get("details") or {}).get("causes")


def _forbidden(verb: str, ref: Ref) -> ForbiddenError:
    """A 403, saying what may not be done (without the server's text, which names the account)."""
    return ForbiddenError(
        f"the operator may not {verb} {ref.kind} objects ({ref.api_version}) in {ref.namespace}"
    )
