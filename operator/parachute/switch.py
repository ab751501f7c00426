"""The blue/green switch as the cluster holds it: the active Service's selector, and the preview
Service.

The active Service is the user's, and its selector is the only thing of it written: the user's
own labels plus either the stable pods' pod-template-hash or the new copy's canary label. Each
change is one JSON patch guarded by the resourceVersion, so a request finds one side or the
other, never both and never neither, and a concurrent edit makes the write fail instead of being
lost. Which side it selects is read back from the selector itself (`Applied`: 0 stable, 100 the
copy), so the planner's switch back after a failure is seen, not assumed. The preview Service is
the operator's (`<active>-preview`, owned by the Rollout): the user's labels plus the canary label.
"""

from __future__ import annotations

from typing import Any

from parachute import api, faults
from parachute.plan.desired_workload import HASH_LABEL
from parachute.plan.model import Applied, TrafficIntent, TrafficView
from parachute.routing.objects import Body, Client, ConflictError, Ref, pointer
from parachute.routing.router import RoutingSetupError
from parachute.routing.wiring import Steered

CANARY_LABEL = f"{api.GROUP}/canary"
PINNED_BY = f"{api.GROUP}/pinned-by"  # annotation: the Rollout whose switch pins the selector
ACTIVE_FIELD = "spec.blueGreen.activeService"
PREVIEW_FIELD = "spec.blueGreen.previewService"
UNPINNED = "the active Service selects every version's pods (not pinned to a side yet)"
_PORT_FIELDS = ("name", "protocol", "appProtocol", "port", "targetPort")


def user_selector(selector: dict[str, str]) -> dict[str, str]:
    """The user's part of a selector: without the side the switch added."""
    return {k: v for k, v in selector.items() if k not in (HASH_LABEL, CANARY_LABEL)}


def side(selector: dict[str, str]) -> int | None:
    """The share of the new copy a selector gives: 100 when it selects the copy, 0 when it selects
    one ReplicaSet of the target, None when it selects both."""
    if selector.get(CANARY_LABEL) == "true" and HASH_LABEL not in selector:
        return 100
    if HASH_LABEL in selector and CANARY_LABEL not in selector:
        return 0
    return None


def wanted_selector(current: dict[str, str], weight: int, stable_hash: str) -> dict[str, str]:
    user = user_selector(current)
    return {**user, CANARY_LABEL: "true"} if weight == 100 else {**user, HASH_LABEL: stable_hash}


def preview_name(settings: api.BlueGreen) -> str:
    return settings.preview_service or f"{settings.active_service}-preview"


def _ref(namespace: str, name: str) -> Ref:
    return Ref("v1", "Service", namespace, name)


def _settings(spec: api.RolloutSpec) -> api.BlueGreen:
    assert spec.blue_green is not None
    return spec.blue_green


async def _active(client: Client, namespace: str, name: str) -> Body:
    found = await client.get(_ref(namespace, name))
    if found is None:
        raise RoutingSetupError(ACTIVE_FIELD, f"Service {namespace}/{name} does not exist")
    if not user_selector((found.get("spec") or {}).get("selector") or {}):
        raise RoutingSetupError(
            ACTIVE_FIELD, f"Service {namespace}/{name} has no selector of its own; blue/green switches it"
        )
    return found


def _owned(found: Body, rollout: dict[str, Any]) -> bool:
    uid = rollout["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in found["metadata"].get("ownerReferences") or [])


async def observe(rollout: dict[str, Any], spec: api.RolloutSpec, client: Client) -> TrafficView:
    """Which side the active Service selects; RoutingSetupError when the set-up cannot work."""
    namespace = rollout["metadata"]["namespace"]
    settings = _settings(spec)
    active = await _active(client, namespace, settings.active_service)
    preview = await client.get(_ref(namespace, preview_name(settings)))
    if preview is not None and not _owned(preview, rollout):
        raise RoutingSetupError(
            PREVIEW_FIELD,
            f"Service {namespace}/{preview_name(settings)} exists and is not this Rollout's; Parachute will "
            "not overwrite it (name another previewService, or delete it if it is left over)",
        )
    weight = side((active.get("spec") or {}).get("selector") or {})
    return TrafficView(Applied(weight, None if weight is not None else UNPINNED))


def desired_preview(rollout: dict[str, Any], active: Body, name: str) -> Body:
    meta, spec = rollout["metadata"], active.get("spec") or {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "parachute", f"{api.GROUP}/rollout": meta["name"]},
            "ownerReferences": [api.owner_reference(meta["name"], meta["uid"])],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {**user_selector(spec.get("selector") or {}), CANARY_LABEL: "true"},
            "ports": [{k: p[k] for k in _PORT_FIELDS if k in p} for p in spec.get("ports") or []],
        },
    }


async def act(
    rollout: dict[str, Any], spec: api.RolloutSpec, intent: TrafficIntent | None, client: Client
) -> Steered:
    """Make the preview Service, and the active Service select the side `intent` says."""
    out = Steered()
    if intent is None or not intent.stable:
        return out  # no stable pods to select yet
    namespace, settings = rollout["metadata"]["namespace"], _settings(spec)
    active = await _active(client, namespace, settings.active_service)
    await _ensure_preview(rollout, active, preview_name(settings), client, out)
    faults.point("preview-ensured", namespace)
    current = (active.get("spec") or {}).get("selector") or {}
    want = wanted_selector(current, intent.weight, intent.stable)
    if current == want:
        return out
    mark = rollout["metadata"]["name"]
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": active["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/selector", "value": want},
    ]
    if (active["metadata"].get("annotations") or {}).get(PINNED_BY) != mark:
        if active["metadata"].get("annotations"):
            operations.append(
                {"op": "add", "path": pointer("metadata", "annotations", PINNED_BY), "value": mark}
            )
        else:
            operations.append({"op": "add", "path": "/metadata/annotations", "value": {PINNED_BY: mark}})
    try:
        await client.patch(_ref(namespace, settings.active_service), operations)
    except ConflictError:
        out.again = True  # changed meanwhile: read again and decide again
        return out
    what = "the new copy" if intent.weight == 100 else f"the stable pods ({HASH_LABEL}={intent.stable})"
    out.changed.append(f"Service {namespace}/{settings.active_service} switched to {what}")
    faults.point("switched", namespace, intent.weight)
    out.again = True  # read it back soon
    return out


async def _ensure_preview(
    rollout: dict[str, Any], active: Body, name: str, client: Client, out: Steered
) -> None:
    namespace = rollout["metadata"]["namespace"]
    body = desired_preview(rollout, active, name)
    found = await client.get(_ref(namespace, name))
    if found is None:
        try:
            await client.create(body)
            out.changed.append(f"created Service {namespace}/{name}")
        except ConflictError:
            out.again = True
        return
    if not _owned(found, rollout):
        raise RoutingSetupError(PREVIEW_FIELD, f"Service {namespace}/{name} exists and is not this Rollout's")
    spec = found.get("spec") or {}
    ops = [{"op": "add", "path": pointer("spec", key), "value": body["spec"][key]}
           for key in ("selector", "ports") if spec.get(key) != body["spec"][key]]  # fmt: skip
    if ops:
        test = {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": found["metadata"]["resourceVersion"],
        }
        await client.patch(_ref(namespace, name), [test, *ops])
        out.changed.append(f"updated Service {namespace}/{name}")


async def give_back(client: Client, namespace: str, service: str, rollout: str) -> bool:
    """The active Service's selector back to the user's own, when the Rollout that pinned it is
    gone (a pinned hash would select nothing once the target rolls on)."""
    found = await client.get(_ref(namespace, service))
    if found is None or (found["metadata"].get("annotations") or {}).get(PINNED_BY) != rollout:
        return False
    selector = (found.get("spec") or {}).get("selector") or {}
    await client.patch(_ref(namespace, service), [
        {"op": "test", "path": "/metadata/resourceVersion", "value": found["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/selector", "value": user_selector(selector)},
        {"op": "remove", "path": pointer("metadata", "annotations", PINNED_BY)},
    ])  # fmt: skip
    return True
