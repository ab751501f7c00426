"""The Kubernetes reads and writes Parachute makes: one place to look.

The synchronous `kubernetes` client is called from worker threads (`asyncio.to_thread`)
so that a slow API server never blocks kopf's event loop. Objects travel as plain dicts.
Each function declares the calls it makes (`@calls`): the shipped RBAC rules grant exactly
these plus what kopf needs (`parachute.rbac`), which a unit test holds to.

Every request is counted (`parachute.telemetry`), and a write is refused before it is sent
when a replica is not the leader (`fence`): a leader that could not renew its Lease stops
writing at once, even in a reconcile that was already under way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import importlib.metadata
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from parachute import api, faults, listings, rbac, telemetry, watched
from parachute.plan.desired_workload import canary_name, label_selector

COMPONENT = "parachute"
# Which replica posts an Event (`reportingInstance`): the Lease's holder name when electing.
_instance = os.environ.get("POD_NAME", "")


def identify(instance: str) -> None:
    """Name this replica in the Events it posts."""
    global _instance  # noqa: PLW0603  (one name for the process, set once at start-up)
    _instance = instance


F = TypeVar("F", bound=Callable[..., Any])

# What each function below asks of the API server, by function name.
CALLS: dict[str, frozenset[rbac.Call]] = {}


def calls(*made: tuple[str, str, str]) -> Callable[[F], F]:
    """Declare the API calls a function makes, each as (apiGroup, resource, verb)."""

    def declare(function: F) -> F:
        CALLS[function.__name__] = frozenset(rbac.Call(*call) for call in made)
        return function

    return declare


class ConflictError(Exception):
    """The object changed since it was read; read it again and decide again."""


class GoneError(Exception):
    """The Rollout was deleted while it was being reconciled: nothing is left to decide for it."""


class NamespaceTerminatingError(Exception):
    """The namespace is being deleted: nothing new may be created in it."""


class NotLeadingError(Exception):
    """This replica is not the leader (or no longer is): it must not write."""


# Whether this process may write now; None: always (no leader election).
_may_write: Callable[[], bool] | None = None
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def fence(may_write: Callable[[], bool] | None) -> None:
    """Refuse every write (but the Lease's own) while `may_write()` is False."""
    global _may_write  # noqa: PLW0603  (one fence for the process, set once at start-up)
    _may_write = may_write


# (connect, read) seconds. Without a bound a request to an API server that stopped answering
# holds its worker thread and its Rollout's reconcile slot for ever; the API server ends its own
# requests at 60 s, so a read past that is a connection that is gone.
REQUEST_TIMEOUT = (5.0, 65.0)


def _user_agent() -> str:
    try:
        return f"parachute/{importlib.metadata.version('parachute')}"
    except importlib.metadata.PackageNotFoundError:
        return "parachute"


# The API server names the manager of each field an Update writes after the user agent, up to
# its first "/": "parachute" in managedFields, in a server-side apply's conflict message and in
# audit logs, as the routers' writes say it (`routing.client.FIELD_MANAGER`), not the client
# library's default that every Python script shares.
USER_AGENT = _user_agent()


class _Client(client.ApiClient):  # type: ignore[misc]  # the client is untyped
    """The Kubernetes client, counting every request and refusing writes behind the fence."""

    fenced = True

    def __init__(self, configuration: client.Configuration) -> None:
        super().__init__(configuration)
        self.user_agent = USER_AGENT

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.fenced and method not in _READS and _may_write is not None and not _may_write():
            raise NotLeadingError(f"not the leader: {method} refused")
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        try:
            response = super().request(method, url, *args, **kwargs)
        except ApiException as error:
            telemetry.api_request(method, error.status, url)
            raise
        except Exception:
            telemetry.api_request(method, None, url)
            raise
        telemetry.api_request(method, getattr(response, "status", None), url)
        return response


class _LeaseClient(_Client):
    """The client a standby writes with: trying to acquire the Lease is how it stands by, and a
    user report is a fact any replica records (`post_report_event`), not an action."""

    fenced = False


def _configuration() -> client.Configuration:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        # Read KUBECONFIG now: the client's own default was fixed when it was imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    # A connection for each thread that may be waiting on the API server (the client's default
    # is 5 per core): past the pool, every request opens a new TLS connection.
    configuration.connection_pool_maxsize = 32
    return configuration


@functools.cache
def api_client() -> client.ApiClient:
    return _Client(_configuration())


@functools.cache
def _lease_client() -> client.ApiClient:
    return _LeaseClient(_configuration())


def _plain(obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], api_client().sanitize_for_serialization(obj))


def _json(call: Any, *args: Any, **kwargs: Any) -> Any:
    """A typed client's call, its answer parsed as plain JSON: building the client's models
    and turning them back into dicts was a tenth of the operator's time at 1,000 Rollouts."""
    response = call(*args, _preload_content=False, **kwargs)
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def _absent_on_404(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


async def _read(call: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """A typed client's read as a plain dict, or None when the object does not exist."""
    return cast(dict[str, Any] | None, await asyncio.to_thread(_absent_on_404, _json, call, name, namespace))


@calls(("apps", "deployments", "get"))
async def read_deployment(namespace: str, name: str) -> dict[str, Any] | None:
    """The Deployment as a plain dict, or None when it does not exist."""
    asked_at = watched.DEPLOYMENTS.clock()
    found = await _read(client.AppsV1Api(api_client()).read_namespaced_deployment, namespace, name)
    if found is None:
        # Also a copy the watch missed the deletion of; not one it showed made since.
        watched.DEPLOYMENTS.answered_absent(namespace, name, asked_at)
        return None
    watched.DEPLOYMENTS.answered(found)
    return found


@calls(("apps", "deployments", "get"))
async def latest_deployment(namespace: str, name: str) -> dict[str, Any] | None:
    """The Deployment as the watch last showed it (`parachute.watched`), else as read now;
    None, without asking, when it is known not to exist."""
    if watched.DEPLOYMENTS.known_absent(namespace, name):
        return None
    kept = watched.DEPLOYMENTS.get(namespace, name)
    return kept if kept is not None else await read_deployment(namespace, name)


def _wrote_deployment(answer: Any, expected: dict[str, Any] | None) -> None:
    """`expected`: what the answer shows if the write changed only what it meant to."""
    if isinstance(answer, dict):
        watched.DEPLOYMENTS.answered(answer)
        watched.DEPLOYMENT_NEWS.wrote(answer, expected)


@contextlib.contextmanager
def _writing_deployment(namespace: str, name: str) -> Iterator[None]:
    """A write that failed says the copy may be wrong: gone on a 404, else read it again."""
    try:
        yield
    except ApiException as error:
        if error.status == 404:
            watched.DEPLOYMENTS.gone(namespace, name)
        else:
            watched.DEPLOYMENTS.doubt(namespace, name)
        raise
    except ConflictError:
        watched.DEPLOYMENTS.doubt(namespace, name)
        raise


@calls(("apps", "deployments", "create"))
async def create_deployment(namespace: str, body: dict[str, Any]) -> None:
    apps = client.AppsV1Api(api_client())
    with _writing_deployment(namespace, str((body.get("metadata") or {}).get("name") or "")):
        answer = await asyncio.to_thread(_json, apps.create_namespaced_deployment, namespace, body)
    _wrote_deployment(answer, answer)  # new: nothing else can be in it


@calls(("apps", "deployments", "patch"))
async def patch_deployment(namespace: str, name: str, patch: dict[str, Any]) -> None:
    """A merge patch (strategic for Deployments: lists of containers merge by name)."""
    apps = client.AppsV1Api(api_client())
    # The newest copy: what the answer shows if nothing else changed (an event after the
    # reconcile's read and before this asks that reconcile to run again).
    base = watched.DEPLOYMENTS.get(namespace, name)
    with _writing_deployment(namespace, name):
        answer = await asyncio.to_thread(_json, apps.patch_namespaced_deployment, name, namespace, patch)
    # Patches only set map keys, where a strategic merge is a JSON merge.
    _wrote_deployment(answer, apply_merge_patch(base, patch) if base is not None else None)


async def _guarded(what: str, call: Any, *args: Any) -> Any:
    """A write whose body carries a resourceVersion: a 409 means someone wrote first."""
    try:
        return await asyncio.to_thread(call, *args)
    except ApiException as error:
        if error.status == 409:
            raise ConflictError(f"{what} changed while being updated") from error
        raise


@calls(("apps", "deployments", "update"))
async def replace_deployment(namespace: str, name: str, body: dict[str, Any]) -> None:
    """A full replace, guarded by the resourceVersion in `body`."""
    apps = client.AppsV1Api(api_client())
    with _writing_deployment(namespace, name):
        answer = await _guarded(f"Deployment {namespace}/{name}", _json,
                                apps.replace_namespaced_deployment, name, namespace, body)  # fmt: skip
    # Guarded by the version the body carries: nothing else can be in the answer.
    _wrote_deployment(answer, answer if (body.get("metadata") or {}).get("resourceVersion") else None)


@dataclass(frozen=True)
class SecretValue:
    """One key of a Secret, and the Secret's resourceVersion (a new one: the value may have changed)."""

    value: str = field(repr=False)  # never printed, not even in a traceback's repr
    version: str


@calls(("", "secrets", "get"))
async def read_secret_key(namespace: str, name: str, key: str) -> SecretValue | None:
    """One key of a Secret, decoded; None when the Secret or the key is missing."""
    core = client.CoreV1Api(api_client())
    secret = await asyncio.to_thread(_absent_on_404, core.read_namespaced_secret, name, namespace)
    if secret is None or not secret.data or key not in secret.data:
        return None
    version = (secret.metadata and secret.metadata.resource_version) or ""
    return SecretValue(base64.b64decode(secret.data[key]).decode(), version)


@calls((api.GROUP, "metrictemplates", "list"), (api.GROUP, "clustermetrictemplates", "list"))
async def list_metric_templates(namespace: str) -> dict[str, dict[str, Any]]:
    """MetricTemplates of the namespace and ClusterMetricTemplates, by kind/name."""
    custom = client.CustomObjectsApi(api_client())
    found: dict[str, dict[str, Any]] = {}
    for plural, kind, scoped in (("metrictemplates", "MetricTemplate", True),
                                 ("clustermetrictemplates", "ClusterMetricTemplate", False)):  # fmt: skip
        if scoped:
            items = await asyncio.to_thread(
                custom.list_namespaced_custom_object, api.GROUP, api.VERSION, namespace, plural
            )
        else:
            items = await asyncio.to_thread(custom.list_cluster_custom_object, api.GROUP, api.VERSION, plural)
        for item in cast(dict[str, Any], items).get("items", []):
            found[f"{kind}/{item['metadata']['name']}"] = item
    return found


@calls((api.GROUP, "releasepolicies", "get"))
async def read_release_policy(name: str) -> dict[str, Any] | None:
    custom = client.CustomObjectsApi(api_client())
    found = await asyncio.to_thread(
        _absent_on_404, custom.get_cluster_custom_object, api.GROUP, api.VERSION, "releasepolicies", name
    )
    return cast(dict[str, Any] | None, found)


@calls((api.GROUP, api.PLURAL, "get"))
async def read_rollout(namespace: str, name: str) -> dict[str, Any] | None:
    custom = client.CustomObjectsApi(api_client())
    found = await asyncio.to_thread(
        _absent_on_404,
        custom.get_namespaced_custom_object,
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        name,
    )
    if found is None:
        watched.ROLLOUTS.gone(namespace, name)
    else:
        watched.ROLLOUTS.answered(found)
    return cast(dict[str, Any] | None, found)


@calls((api.GROUP, api.PLURAL, "get"))
async def latest_rollout(namespace: str, name: str) -> dict[str, Any] | None:
    """The Rollout as the watch last showed it (`parachute.watched`), else as read now. The
    status write is guarded by the copy's resourceVersion, so a stale copy's decision is refused
    before anything is acted on; one that writes no status only repeats what the copy says, and
    the event the copy is behind wakes the Rollout again."""
    kept = watched.ROLLOUTS.get(namespace, name)
    return kept if kept is not None else await read_rollout(namespace, name)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns `old` into `new`: changed keys, None for removed ones."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: `target` with `patch` merged in (None removes a key); neither is changed."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = apply_merge_patch(merged.get(key), value)
    return merged


# The resourceVersion of this process's last status write to each Rollout: the watch event of
# one's own write is no news (the reconcile that wrote it said when to look again), and waking
# on it would double every reconcile that writes.
_written: dict[tuple[str, str], str] = {}


def own_write(namespace: str, name: str, resource_version: str | None) -> bool:
    """Whether this version of the Rollout is no news to this process: the one its last status
    write made, or an older one. A write is made only on the version it read (the precondition),
    so every version before it was read by the reconcile that wrote; under load the events of
    two writes in a row arrive after both, and the first is no news either."""
    written = _written.get((namespace, name))
    if resource_version is None or written is None:
        return False
    if resource_version == written:
        return True
    event, own = watched.number(resource_version), watched.number(written)
    return event is not None and own is not None and event < own


def forget_writes(namespace: str, name: str) -> None:
    _written.pop((namespace, name), None)


@calls((api.GROUP, f"{api.PLURAL}/status", "patch"))
async def patch_rollout_status(
    namespace: str,
    name: str,
    old: dict[str, Any],
    new: dict[str, Any],
    resource_version: str,
    *,
    decided: bool = True,
) -> None:
    """Write the status change, only if nobody wrote the Rollout since it was read (else Conflict).

    The resourceVersion in the patch is a precondition, so two reconciles of one Rollout
    can never interleave their writes. `decided`: a reconcile's decision, made on the version it
    read, after which every older version is no news (`own_write`). A side write (a delivery
    record, a fault noted) decides nothing: a change it was written over (a user's promote) is
    still news, so its version counts as this process's own only when it was written over
    this process's last write.
    """
    custom = client.CustomObjectsApi(api_client())
    body = {"metadata": {"resourceVersion": resource_version}, "status": merge_patch(old, new)}
    try:
        written = await _guarded(f"Rollout {namespace}/{name}", custom.patch_namespaced_custom_object_status,
                                 api.GROUP, api.VERSION, namespace, api.PLURAL, name, body)  # fmt: skip
    except ConflictError:
        watched.ROLLOUTS.doubt(namespace, name)
        raise
    except ApiException as error:
        if error.status == 404:
            watched.ROLLOUTS.gone(namespace, name)
            raise GoneError(f"Rollout {namespace}/{name} was deleted while being reconciled") from error
        raise
    version = ((written or {}).get("metadata") or {}).get("resourceVersion")
    if version and (decided or _written.get((namespace, name)) == resource_version):
        _written[(namespace, name)] = version
    if isinstance(written, dict):
        watched.ROLLOUTS.answered(written)
    faults.point("status-written", namespace, new.get("phase"))  # before the Events and acts it decided


@calls((api.GROUP, api.PLURAL, "list"))
async def list_rollouts(namespaces: list[str]) -> list[dict[str, Any]]:
    """Every Rollout in `namespaces` (all when empty)."""
    custom = client.CustomObjectsApi(api_client())
    pages = []
    if namespaces:
        for namespace in namespaces:
            pages.append(await asyncio.to_thread(custom.list_namespaced_custom_object, api.GROUP,
                                                 api.VERSION, namespace, api.PLURAL))  # fmt: skip
    else:
        pages.append(
            await asyncio.to_thread(custom.list_cluster_custom_object, api.GROUP, api.VERSION, api.PLURAL)
        )
    return [item for page in pages for item in cast(dict[str, Any], page).get("items", [])]


# Names and resourceVersions only: a Deployment's spec and status are most of its JSON.
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
VERSIONS_PAGE = 500  # objects a page: at 10,000 Rollouts a page's JSON is about a megabyte


@dataclass(frozen=True)
class Versions:
    """Every object of a kind, by (namespace, name), and the resourceVersion of the snapshot."""

    listed: dict[tuple[str, str], int]
    at: int


def _versions(path: str) -> Versions | None:
    """The objects at `path` as one snapshot, page by page (the continue token keeps the
    first page's resourceVersion; an expired one is a 410, raised: its offer to go on from a
    newer snapshot is not taken); None when a version is not a number, or a page is of
    another snapshot."""
    client_ = api_client()
    listed: dict[tuple[str, str], int] = {}
    at: int | None = None
    token = ""
    while True:
        query = [("limit", VERSIONS_PAGE), *([("continue", token)] if token else [])]
        response = client_.call_api(
            path, "GET", query_params=query, header_params={"Accept": _METADATA_ONLY},
            auth_settings=["BearerToken"], _preload_content=False,
        )  # fmt: skip
        try:
            page = json.loads(response.data)
        finally:
            response.release_conn()
        meta = page.get("metadata") or {}
        number = watched.number(meta.get("resourceVersion"))
        if at is not None and number != at:
            return None  # not one snapshot after all: it confirms nothing
        at = number
        for item in page.get("items") or []:
            item_meta = item.get("metadata") or {}
            item_version = watched.number(item_meta.get("resourceVersion"))
            if item_version is None:
                return None
            listed[(item_meta.get("namespace") or "", item_meta.get("name") or "")] = item_version
        token = meta.get("continue") or ""
        if not token:
            return None if at is None else Versions(listed, at)


@calls(("apps", "deployments", "list"))
async def deployment_versions(namespace: str | None) -> Versions | None:
    """Every Deployment's name and resourceVersion (in `namespace`; all when None), to confirm
    the copies the watch keeps (`watched.Copies.confirm`)."""
    where = f"/namespaces/{namespace}" if namespace else ""
    return await asyncio.to_thread(_versions, f"/apis/apps/v1{where}/deployments")


@calls((api.GROUP, api.PLURAL, "list"))
async def rollout_versions(namespace: str | None) -> Versions | None:
    """Every Rollout's name and resourceVersion (in `namespace`; all when None)."""
    where = f"/namespaces/{namespace}" if namespace else ""
    return await asyncio.to_thread(_versions, f"/apis/{api.GROUP}/{api.VERSION}{where}/{api.PLURAL}")


COORDINATION = "coordination.k8s.io"
# A Lease request that takes longer than this has failed: the renewal loop must go on.
LEASE_TIMEOUT = 5.0


@calls((COORDINATION, "leases", "get"))
async def read_lease(namespace: str, name: str) -> dict[str, Any] | None:
    """The Lease as a plain dict (its times as RFC 3339 strings), or None when there is none."""
    leases = client.CoordinationV1Api(_lease_client())
    found = await asyncio.to_thread(
        _absent_on_404, functools.partial(leases.read_namespaced_lease, _request_timeout=LEASE_TIMEOUT),
        name, namespace,
    )  # fmt: skip
    return None if found is None else _plain(found)


@calls((COORDINATION, "leases", "create"))
async def create_lease(namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """Create it; None when one of that name exists already (another replica was first)."""
    leases = client.CoordinationV1Api(_lease_client())
    try:
        made = await asyncio.to_thread(leases.create_namespaced_lease, namespace, body,  # type: ignore[arg-type]
                                       _request_timeout=LEASE_TIMEOUT)  # fmt: skip
    except ApiException as error:
        if error.status == 409:
            return None
        raise
    return _plain(made)


@calls((COORDINATION, "leases", "update"))
async def replace_lease(namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """A full replace, guarded by the resourceVersion in `body` (ConflictError when it moved on)."""
    leases = client.CoordinationV1Api(_lease_client())
    try:
        made = await asyncio.to_thread(leases.replace_namespaced_lease, name, namespace, body,  # type: ignore[arg-type]
                                       _request_timeout=LEASE_TIMEOUT)  # fmt: skip
    except ApiException as error:
        if error.status == 409:
            raise ConflictError(f"Lease {namespace}/{name} changed while being renewed") from error
        raise
    return _plain(made)


@calls(("", "events", "create"))
async def post_event(
    rollout: dict[str, Any], type_: str, reason: str, message: str, name: str | None = None
) -> bool:
    """A core/v1 Event about the Rollout, as `kubectl describe pr` shows them. Given a `name`,
    posting it again is harmless: False when an Event of that name exists already."""
    metadata = {"name": name} if name else None
    try:
        await _create_event(api_client(), _event(rollout, type_, reason, message, metadata))
    except ApiException as error:
        if name and error.status == 409:
            return False
        raise
    return True


def _event(
    rollout: dict[str, Any], type_: str, reason: str, message: str, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    meta = rollout["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"],
                     **(metadata or {})},
        "involvedObject": {
            "apiVersion": api.API_VERSION, "kind": api.KIND, "name": meta["name"],
            "namespace": meta["namespace"], "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        **({"reportingInstance": _instance} if _instance else {}),
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }  # fmt: skip


async def _create_event(api: client.ApiClient, event: dict[str, Any]) -> None:
    namespace = event["metadata"]["namespace"]
    core = client.CoreV1Api(api)
    try:
        await asyncio.to_thread(core.create_namespaced_event, namespace, event)  # type: ignore[arg-type]
    except ApiException as error:
        if error.status == 403 and "NamespaceTerminating" in str(error.body):
            raise NamespaceTerminatingError(namespace) from error
        raise


@calls(("", "events", "create"))
async def post_report_event(
    rollout: dict[str, Any],
    reason: str,
    message: str,
    *,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> None:
    """A Warning Event recording a user report about the Rollout. Any replica posts it, a standby
    too: it records what someone reported, a fact, and decides nothing (the leader counts it)."""
    metadata = {"name": name, "labels": labels, "annotations": annotations}
    await _create_event(_lease_client(), _event(rollout, "Warning", reason, message, metadata))


@calls(("", "events", "list"))
async def list_events(namespace: str, field_selector: str) -> list[dict[str, Any]]:
    """The Events of a namespace that the field selector selects (e.g. one object's, one reason)."""
    core = client.CoreV1Api(api_client())
    found = await asyncio.to_thread(core.list_namespaced_event, namespace, field_selector=field_selector)
    return [_plain(item) for item in found.items]


@calls(("", "configmaps", "get"))
async def read_config_map(namespace: str, name: str) -> dict[str, Any] | None:
    return await _read(client.CoreV1Api(api_client()).read_namespaced_config_map, namespace, name)


@calls(("", "configmaps", "list"))
async def list_config_maps(namespaces: list[str], label_selector: str) -> list[dict[str, Any]]:
    """The ConfigMaps in `namespaces` (all when empty) that `label_selector` selects."""
    core = client.CoreV1Api(api_client())
    if not namespaces:
        found = await asyncio.to_thread(
            _json, core.list_config_map_for_all_namespaces, label_selector=label_selector
        )
        return list(found.get("items") or [])
    items: list[dict[str, Any]] = []
    for namespace in namespaces:
        found = await asyncio.to_thread(
            _json, core.list_namespaced_config_map, namespace, label_selector=label_selector
        )
        items += found.get("items") or []
    return items


@calls(("", "configmaps", "create"))
async def create_config_map(namespace: str, body: dict[str, Any]) -> bool:
    """Create it; False when one of that name exists already."""
    core = client.CoreV1Api(api_client())
    try:
        await asyncio.to_thread(core.create_namespaced_config_map, namespace, body)  # type: ignore[arg-type]
    except ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


@calls(("", "configmaps", "patch"))
async def patch_config_map(namespace: str, name: str, patch: dict[str, Any]) -> None:
    core = client.CoreV1Api(api_client())
    await asyncio.to_thread(core.patch_namespaced_config_map, name, namespace, patch)


@calls(("", "configmaps", "update"))
async def replace_config_map(namespace: str, name: str, body: dict[str, Any]) -> None:
    """A full replace, guarded by the resourceVersion in `body`: exact bytes, no merging."""
    core = client.CoreV1Api(api_client())
    await _guarded(f"ConfigMap {namespace}/{name}", core.replace_namespaced_config_map, name, namespace, body)


OPENFEATURE = ("core.openfeature.dev", "v1beta1", "featureflags")


@calls(("core.openfeature.dev", "featureflags", "get"))
async def read_feature_flag(namespace: str, name: str) -> dict[str, Any] | None:
    """The OpenFeature FeatureFlag, or None when it (or its CRD) does not exist."""
    custom = client.CustomObjectsApi(api_client())
    group, version, plural = OPENFEATURE
    found = await asyncio.to_thread(
        _absent_on_404, custom.get_namespaced_custom_object, group, version, namespace, plural, name
    )
    return cast(dict[str, Any] | None, found)


@calls(("core.openfeature.dev", "featureflags", "update"))
async def replace_feature_flag(namespace: str, name: str, body: dict[str, Any]) -> None:
    custom = client.CustomObjectsApi(api_client())
    group, version, plural = OPENFEATURE
    await _guarded(f"FeatureFlag {namespace}/{name}", custom.replace_namespaced_custom_object,
                   group, version, namespace, plural, name, body)  # fmt: skip


@calls(("apps", "replicasets", "list"))
async def list_replica_sets(namespace: str, selector: str) -> list[dict[str, Any]]:
    """The ReplicaSets `selector` selects, without their managedFields (nobody reads them)."""
    apps = client.AppsV1Api(api_client())
    found = await asyncio.to_thread(
        _json, apps.list_namespaced_replica_set, namespace, label_selector=selector
    )
    return [watched.without_managed_fields(item) for item in found.get("items") or []]


@calls(("apps", "replicasets", "list"))
async def replica_sets_of(target: dict[str, Any]) -> list[dict[str, Any]]:
    """The ReplicaSets of `target` and of its canary (its selector selects both): as last
    listed while neither Deployment has changed since (`parachute.listings`), else listed now.
    A write to either one stores its answer as the copy: the next ask lists again."""
    meta = target["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    names = (name, canary_name(name))
    # Taken before the listing is asked for: a change after them moves them, and lists again.
    marks = tuple(watched.DEPLOYMENTS.mark(namespace, n) for n in names)
    kept = listings.REPLICA_SETS.get((namespace, name), marks)
    if kept is not None:
        return kept
    asked_at = listings.REPLICA_SETS.clock()
    items = await list_replica_sets(namespace, label_selector(target))
    now = [watched.DEPLOYMENTS.marked(namespace, n) for n in names]
    if tuple(mark for mark, _ in now) == marks:  # what it is checked against is what was marked
        listings.REPLICA_SETS.put((namespace, name), marks, items, asked_at, [body for _, body in now])
    return items


@calls(("", "pods", "list"))
async def list_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    core = client.CoreV1Api(api_client())
    found = await asyncio.to_thread(_json, core.list_namespaced_pod, namespace, label_selector=selector)
    return cast(list[dict[str, Any]], found.get("items") or [])


class NotPermittedError(Exception):
    """The operator's ServiceAccount may not read this kind."""


@functools.cache
def _dynamic() -> Any:
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(api_client())


def _read_object(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.dynamic.exceptions import ForbiddenError, NotFoundError, ResourceNotFoundError

    try:
        resource = _dynamic().resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError as error:
        raise LookupError(f"the API server serves no {kind} in {api_version}") from error
    try:
        found = resource.get(name=name, namespace=namespace if resource.namespaced else None)
    except NotFoundError:
        return None
    except ForbiddenError as error:
        raise NotPermittedError(f"the operator may not read {kind} ({api_version})") from error
    return cast(dict[str, Any], found.to_dict())


# The kinds are the user's (condition gates): granted per install with `rbac.extraReadRules`.
@calls()
async def read_object(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """Any object by apiVersion and kind (discovered), or None when it does not exist."""
    return await asyncio.to_thread(_read_object, api_version, kind, namespace, name)
