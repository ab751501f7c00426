"""The routing record: what it takes to give a user's route back, kept where it outlives the Rollout.

One ConfigMap per routed Rollout, `parachute-routing-<rollout>` in its namespace, labelled
with the Rollout and carrying its uid, its `spec.trafficRouting` (so the router can be made
again when the Rollout is gone) and the snapshot of the user's route taken before Parachute
first rewrote it. It is written before anything of the route changes and removed only once
the route is given back (`routing.teardown`). It has no owner reference: the garbage
collector would delete it with the Rollout, before the route is given back. Like the
configuration snapshots, it is listed by `kubectl get cm -l parachute.dev/rollout=<name>`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from parachute import api
from parachute.routing.objects import Body, Client, ConflictError, Ref
from parachute.routing.router import MANAGED_BY, ROLLOUT_LABEL, ROLLOUT_UID_ANNOTATION, Release

KIND_LABEL = f"{api.GROUP}/record"
KIND = "routing"
ROLLOUT_ANNOTATION = f"{api.GROUP}/rollout"  # the full name (a label value holds 63 characters)
PREFIX = "parachute-routing-"
MAX_NAME = 253


def record_name(rollout: str) -> str:
    name = PREFIX + rollout
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(rollout.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - 11].rstrip('.-')}-{digest}"


def record_ref(namespace: str, rollout: str) -> Ref:
    return Ref("v1", "ConfigMap", namespace, record_name(rollout))


def identity(routing: api.TrafficRouting) -> dict[str, Any]:
    """What picks the route and the Services (the canary's size does not)."""
    return routing.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"canary_scale"})


@dataclass(frozen=True)
class Record:
    namespace: str
    rollout: str
    rollout_uid: str
    routing: api.TrafficRouting
    snapshot: dict[str, Any]
    uid: str  # the ConfigMap's own

    def release(self) -> Release:
        """The release as far as giving back needs it (no stable pods to select)."""
        return Release(self.namespace, self.rollout, self.rollout_uid, stable_hash="")

    def routes(self, routing: api.TrafficRouting | None, rollout_uid: str) -> bool:
        """Whether this record is the one of a Rollout (by uid) routing as `routing` says."""
        return (
            routing is not None
            and rollout_uid == self.rollout_uid
            and identity(routing) == identity(self.routing)
        )


SELECTOR = f"{KIND_LABEL}={KIND}"


def is_record(body: Body) -> bool:
    return ((body.get("metadata") or {}).get("labels") or {}).get(KIND_LABEL) == KIND


class Known:
    """The routing records that exist, as far as this process has seen: one listing at start,
    the ConfigMaps' watch, and its own writes. A Rollout without routing looks for a record (a
    route to give back) only where one may exist, not with a read at every reconcile; until the
    listing is in, one may exist anywhere.

    Kept by name with the record's uid: kopf orders events per object, so the deletion of an
    earlier record of a name may be handled after the creation of the next one, and removes the
    name only if the uid is the one kept. A name wrongly kept costs a read that finds nothing,
    and that read forgets it. A record written elsewhere (a former leader) and not yet seen is
    found when its watch event arrives, which wakes its Rollout."""

    UNKNOWN = ""  # a record of that name exists, its uid unknown: no deletion event removes it

    def __init__(self) -> None:
        self._uids: dict[tuple[str, str], str] = {}
        self.listed = False

    def seen(self, body: Body, gone: bool = False) -> None:
        """A ConfigMap from the watch or a listing; `gone` when deleted."""
        meta = body.get("metadata") or {}
        key, uid = (meta.get("namespace") or "", meta.get("name") or ""), meta.get("uid") or self.UNKNOWN
        if is_record(body) and not gone:
            self._uids[key] = uid
        elif not gone or self._uids.get(key) == uid:
            self._uids.pop(key, None)

    def listing(self, bodies: list[Body]) -> None:
        """Every record there was when listed: from now on a name not seen is a record absent."""
        for body in bodies:
            if is_record(body):
                self.seen(body)
        self.listed = True

    def written(self, namespace: str, rollout: str, uid: str = UNKNOWN) -> None:
        self._uids[(namespace, record_name(rollout))] = uid

    def removed(self, namespace: str, rollout: str) -> None:
        """Gone: removed by this process, or found absent by a read."""
        self._uids.pop((namespace, record_name(rollout)), None)

    def may_exist(self, namespace: str, rollout: str) -> bool:
        return not self.listed or (namespace, record_name(rollout)) in self._uids


KNOWN = Known()


def parse(body: Body) -> Record | None:
    """The record in a ConfigMap; None when it is not one, or not readable as one."""
    if not is_record(body):
        return None
    meta, data = body["metadata"], body.get("data") or {}
    annotations = meta.get("annotations") or {}
    try:
        routing = api.TrafficRouting.model_validate(json.loads(data.get("trafficRouting", "{}")))
        snapshot = json.loads(data.get("snapshot", "{}"))
    except (ValueError, ValidationError):
        return None
    rollout, uid = annotations.get(ROLLOUT_ANNOTATION), annotations.get(ROLLOUT_UID_ANNOTATION)
    if not rollout or not uid or not isinstance(snapshot, dict):
        return None
    return Record(meta["namespace"], rollout, uid, routing, snapshot, meta.get("uid", ""))


async def read(client: Client, namespace: str, rollout: str) -> Record | None:
    found = await client.get(record_ref(namespace, rollout))
    return parse(found) if found is not None else None


async def write(
    client: Client, release: Release, routing: api.TrafficRouting, snapshot: dict[str, Any]
) -> str:
    """Keep the record before the route is first rewritten; returns what was written."""
    ref = record_ref(release.namespace, release.rollout)
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ref.name,
            "namespace": ref.namespace,
            "labels": {**MANAGED_BY, ROLLOUT_LABEL: release.rollout, KIND_LABEL: KIND},
            "annotations": {ROLLOUT_ANNOTATION: release.rollout, ROLLOUT_UID_ANNOTATION: release.rollout_uid},
        },
        "data": {
            "trafficRouting": json.dumps(routing.model_dump(by_alias=True, exclude_none=True, mode="json")),
            "snapshot": json.dumps(snapshot, sort_keys=True),
        },
    }
    try:
        made = await client.create(body)
    except ConflictError:
        KNOWN.written(release.namespace, release.rollout)
        return ""  # written meanwhile: the next reconcile reads it
    KNOWN.written(
        release.namespace, release.rollout, (made.get("metadata") or {}).get("uid") or Known.UNKNOWN
    )
    return f"kept what {_what(routing)} sends to in ConfigMap {ref.namespace}/{ref.name}"


async def remove(client: Client, record: Record) -> bool:
    try:
        removed = await client.delete(record_ref(record.namespace, record.rollout), record.uid)
    except ConflictError:
        return False  # a new record of that name: not this one
    KNOWN.removed(record.namespace, record.rollout)  # gone: removed now, or before
    return removed


def _what(routing: api.TrafficRouting) -> str:
    if routing.gateway_api is not None:
        return f"HTTPRoute {routing.gateway_api.http_route}"
    if routing.istio is not None:
        return f"VirtualService {routing.istio.virtual_service}"
    if routing.nginx is not None:
        return f"Ingress {routing.nginx.ingress}"
    return "the route"
