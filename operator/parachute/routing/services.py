"""The stable and canary Services a router sends traffic to: `<svc>-stable` and `<svc>-canary`.

Both copy the user's Service's ports and selector. The stable one also selects the stable
ReplicaSet's pod-template-hash (the paused target's pods), the canary one the labels only
canary pods carry, so neither reaches the other's pods. The user's own Service is read, never
changed. A same-named Service that is not the Rollout's is refused, not taken over.
Everything is checked before anything is written.

They carry the Rollout's label and uid but no owner reference: the garbage collector would
delete them the moment the Rollout is deleted, while the user's route still sends to them.
The deletion path (`routing.teardown`) gives the route back first, then removes them.
"""

from __future__ import annotations

from typing import Any

from parachute.routing.objects import Body, Client, ConflictError, Ref, pointer
from parachute.routing.router import POD_TEMPLATE_HASH, Release, RoutingSetupError

ENDPOINT_SLICE = ("discovery.k8s.io/v1", "EndpointSlice")
SERVICE_NAME = "kubernetes.io/service-name"  # the label that ties an EndpointSlice to its Service
MAX_NAME = 63  # a Service's name is a DNS label
_PORT_FIELDS = ("name", "protocol", "appProtocol", "port", "targetPort")


def stable_name(service: str) -> str:
    return f"{service}-stable"


def canary_name(service: str) -> str:
    return f"{service}-canary"


def service_ref(release: Release, name: str) -> Ref:
    return Ref("v1", "Service", release.namespace, name)


async def read_user_service(client: Client, release: Release, service: str, field: str) -> Body:
    """The user's Service; a setup error naming `field` when it is missing or selects nothing."""
    found = await client.get(service_ref(release, service))
    if found is None:
        raise RoutingSetupError(field, f"Service {release.namespace}/{service} does not exist")
    if not (found.get("spec") or {}).get("selector"):
        raise RoutingSetupError(
            field,
            f"Service {release.namespace}/{service} has no selector; Parachute copies its selector "
            "into the stable and canary Services",
        )
    if len(stable_name(service)) > MAX_NAME:
        raise RoutingSetupError(
            field, f"Service name {service!r} is too long for its -stable and -canary copies (63 at most)"
        )
    return found


def desired(release: Release, user: Body, name: str, extra_selector: dict[str, str]) -> Body:
    spec = user["spec"]
    ports = [{k: p[k] for k in _PORT_FIELDS if k in p} for p in spec.get("ports") or []]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": release.namespace,
            "labels": release.labels(),
            "annotations": release.marks(),
        },
        "spec": {"type": "ClusterIP", "selector": {**spec["selector"], **extra_selector}, "ports": ports},
    }


async def ensure(client: Client, release: Release, service: str, field: str) -> list[str]:
    """Make `<service>-stable` and `<service>-canary` as they should be; returns what changed."""
    user = await read_user_service(client, release, service, field)
    wanted = [
        desired(release, user, stable_name(service), {POD_TEMPLATE_HASH: release.stable_hash}),
        desired(release, user, canary_name(service), dict(release.canary_labels)),
    ]
    current = {
        w["metadata"]["name"]: await client.get(service_ref(release, w["metadata"]["name"])) for w in wanted
    }
    for name, found in current.items():
        if found is not None and not release.owns(found):
            raise RoutingSetupError(
                field,
                f"Service {release.namespace}/{name} exists and is not this Rollout's; Parachute will not "
                "overwrite it (rename it, or delete it if it is left over)",
            )
    changed = []
    for body in wanted:
        name = body["metadata"]["name"]
        found = current[name]
        if found is None:
            try:
                await client.create(body)
            except ConflictError:
                # Made meanwhile (by this Rollout's previous reconcile, or someone else's):
                # the next ensure reads it and decides.
                continue
            changed.append(f"created Service {release.namespace}/{name}")
        elif operations := _differences(found, body):
            await client.patch(service_ref(release, name), operations)
            changed.append(f"updated Service {release.namespace}/{name} ({_what(found, body)})")
    return changed


async def check(client: Client, release: Release, service: str, field: str) -> None:
    """Refuse to send traffic to copies that are missing or not the Rollout's (ensure makes them)."""
    for name in (stable_name(service), canary_name(service)):
        found = await client.get(service_ref(release, name))
        if found is None or not release.owns(found):
            state = "does not exist" if found is None else "is not this Rollout's"
            raise RoutingSetupError(
                field, f"Service {release.namespace}/{name} {state}; ensure makes it first"
            )


async def unready(client: Client, release: Release, name: str, pods_of: str | None = None) -> str:
    """Why Service `name` cannot take requests yet ("" when it can): none of its EndpointSlices
    lists a ready endpoint, or, with `pods_of`, none of the pods of the ReplicaSet of that
    pod-template-hash. A selector just changed is followed by its EndpointSlices a moment later
    (the endpoint controller's work, later still under load); a proxy sends to what they list."""
    ready = await ready_pods(client, release, name)
    if pods_of is not None:
        ready = {pod for pod in ready if _pod_of(pod) == pods_of}
    if ready:
        return ""
    whose = f" of pods {pods_of}" if pods_of is not None else ""
    return f"Service {release.namespace}/{name} lists no ready endpoint{whose} yet"


async def selected_unready(
    client: Client, release: Release, name: str, labels: dict[str, str], what: str
) -> str:
    """Why the pods carrying `labels` (`what` they are to a person) cannot take requests sent
    through Service `name` yet ("" when they can): its EndpointSlices list no ready endpoint that
    is one of those pods. This is how a mesh resolves a subset of a host: the host's endpoints
    whose pods carry the subset's labels. An endpoint names its pod (`targetRef`); the pods'
    labels are read from the pods, so it holds for any labels, not only a pod-template-hash."""
    ready = await ready_pods(client, release, name)
    pods = await client.find("v1", "Pod", release.namespace, labels)
    if ready & {str(pod["metadata"]["name"]) for pod in pods}:
        return ""
    shown = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    return f"Service {release.namespace}/{name} lists no ready endpoint of {what} (pods {shown}) yet"


async def ready_pods(client: Client, release: Release, name: str) -> set[str]:
    """The pods Service `name`'s EndpointSlices list as ready endpoints, by name."""
    slices = await client.find(ENDPOINT_SLICE[0], ENDPOINT_SLICE[1], release.namespace, {SERVICE_NAME: name})
    return {
        str(target.get("name") or "")
        for found in slices
        for endpoint in found.get("endpoints") or []
        if (target := endpoint.get("targetRef") or {}).get("kind", "Pod") == "Pod"
        # An endpoint's readiness left unset is read as ready, as the API documents.
        and (endpoint.get("conditions") or {}).get("ready") is not False
    } - {""}


async def copy_unready(client: Client, release: Release, service: str, canary: bool) -> str:
    """The -canary copy's endpoints, or the -stable copy's of the stable pods (see `unready`)."""
    if canary:
        return await unready(client, release, canary_name(service))
    return await unready(client, release, stable_name(service), release.stable_hash)


def _pod_of(pod: str) -> str:
    """The pod-template-hash in a ReplicaSet's pod's name (`<deployment>-<hash>-<suffix>`)."""
    parts = pod.rsplit("-", 2)
    return parts[1] if len(parts) == 3 else ""


async def remove(client: Client, release: Release, service: str) -> list[str]:
    """Delete the stable and canary copies this Rollout made (any other's are left alone)."""
    removed = []
    for name in (stable_name(service), canary_name(service)):
        found = await client.get(service_ref(release, name))
        if found is None or not release.owns(found):
            continue
        try:
            if await client.delete(service_ref(release, name), found["metadata"]["uid"]):
                removed.append(f"deleted Service {release.namespace}/{name}")
        except ConflictError:
            continue  # replaced meanwhile by another object of that name: not ours to delete
    return removed


def _differences(found: Body, body: Body) -> list[dict[str, Any]]:
    spec = found.get("spec") or {}
    ops = [
        {"op": "add", "path": pointer("spec", key), "value": body["spec"][key]}
        for key in ("selector", "ports")
        if spec.get(key) != body["spec"][key]
    ]
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": found["metadata"]["resourceVersion"]},
            *ops] if ops else []  # fmt: skip


def _what(found: Body, body: Body) -> str:
    spec = found.get("spec") or {}
    parts = []
    if spec.get("selector") != body["spec"]["selector"]:
        parts.append("selector " + ",".join(f"{k}={v}" for k, v in sorted(body["spec"]["selector"].items())))
    if spec.get("ports") != body["spec"]["ports"]:
        parts.append("ports")
    return "; ".join(parts)
