"""Immutable, content-addressed copies of ConfigMaps, owned by the Rollout.

Taken of tracked configuration while it is known to be good, and of anything Parachute is
about to overwrite (a flag store, a ConfigMap being restored), so every change can be undone
by hand: `kubectl get cm -l parachute.dev/rollout=<name>`.
"""

from __future__ import annotations

from typing import Any

from parachute import api, faults, kube
from parachute.kube_api import KubeApi
from parachute.plan.rollback import content_hash, snapshot_name

SOURCE_ANNOTATION = f"{api.GROUP}/snapshot-of"
HASH_ANNOTATION = f"{api.GROUP}/content-hash"
ROLLOUT_LABEL = f"{api.GROUP}/rollout"


def hash_of(config_map: dict[str, Any]) -> str:
    return content_hash(config_map.get("data") or {}, config_map.get("binaryData") or {})


async def hashes(cluster: KubeApi, namespace: str, names: list[str]) -> dict[str, str]:
    """The content hash of each tracked ConfigMap that exists."""
    out = {}
    for name in names:
        found = await cluster.read_config_map(namespace, name)
        if found is not None:
            out[name] = hash_of(found)
    return out


async def copy(
    cluster: KubeApi, rollout: dict[str, Any], source: dict[str, Any], extra: dict[str, str] | None = None
) -> str:
    """An immutable copy of `source` (a ConfigMap, or any data as `extra`), named by its content."""
    meta = rollout["metadata"]
    data, binary = (
        (extra, {}) if extra is not None else (source.get("data") or {}, source.get("binaryData") or {})
    )
    digest = content_hash(data, binary)
    name = snapshot_name(source["metadata"]["name"], digest)
    owner = {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": meta["name"], "uid": meta["uid"]}
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "parachute", ROLLOUT_LABEL: meta["name"]},
            "annotations": {SOURCE_ANNOTATION: source["metadata"]["name"], HASH_ANNOTATION: digest},
            "ownerReferences": [owner],
        },
        "immutable": True,
        "data": data,
        **({"binaryData": binary} if binary else {}),
    }
    if not await cluster.create_config_map(meta["namespace"], body):
        # Already there, with the same bytes, perhaps another Rollout's copy of the same
        # ConfigMap: own it too, so it lives as long as either Rollout needs it.
        existing = await cluster.read_config_map(meta["namespace"], name)
        owners = list((existing or {}).get("metadata", {}).get("ownerReferences") or [])
        if existing is not None and all(o.get("uid") != meta["uid"] for o in owners):
            owners.append(owner)
            await cluster.patch_config_map(meta["namespace"], name, {"metadata": {"ownerReferences": owners}})
    return name


async def take(cluster: KubeApi, rollout: dict[str, Any], wanted: tuple[tuple[str, str], ...]) -> None:
    """Copy each tracked ConfigMap whose content still has the hash the planner saw."""
    namespace = rollout["metadata"]["namespace"]
    for name, digest in wanted:
        found = await cluster.read_config_map(namespace, name)
        if found is not None and hash_of(found) == digest:
            await copy(cluster, rollout, found)
            faults.point("config-snapshot-taken", namespace)


async def restore(cluster: KubeApi, rollout: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> list[str]:
    """Put each ConfigMap's exact bytes back from its snapshot; the current content is copied first."""
    namespace = rollout["metadata"]["namespace"]
    changed = []
    for name, snapshot_of in pairs:
        snapshot = await cluster.read_config_map(namespace, snapshot_of)
        live = await cluster.read_config_map(namespace, name)
        if snapshot is None:
            changed.append(f"ConfigMap {name}: snapshot {snapshot_of} is missing, not restored")
            continue
        if live is not None and hash_of(live) == hash_of(snapshot):
            continue
        data, binary = snapshot.get("data") or {}, snapshot.get("binaryData") or {}
        if live is None:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                    "data": data, **({"binaryData": binary} if binary else {})}  # fmt: skip
            if not await cluster.create_config_map(namespace, body):
                # Made again by someone else since it was read: theirs is copied before it is
                # restored, at the next look.
                raise kube.ConflictError(f"ConfigMap {namespace}/{name} was created meanwhile")
            faults.point("config-restored", namespace)
            changed.append(f"ConfigMap {name} re-created from {snapshot_of}")
            continue
        kept = await copy(cluster, rollout, live)
        faults.point("config-live-copied", namespace)
        live["data"] = data
        live["binaryData"] = binary or None
        await cluster.replace_config_map(namespace, name, live)
        faults.point("config-restored", namespace)
        changed.append(f"ConfigMap {name} restored from {snapshot_of} (what it held is kept in {kept})")
    return changed
