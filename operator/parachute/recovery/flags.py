"""The release's feature flags in their store: off, on, or on for a percentage of users at the
stage that says so, and off on a rollback (level 1, or the rollback of a release whose flags
Parachute set).

A ConfigMap of plain values, a ConfigMap key of flagd JSON, or an OpenFeature `FeatureFlag`
resource. Before every change the store's content is copied (see `snapshots`), so what it
held can be put back by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from parachute import faults
from parachute.api import FeatureFlags, FlagFormat, FlagState, flag_percent
from parachute.kube_api import KubeApi
from parachute.plan import flags as pure
from parachute.plan.model import FlagsView
from parachute.recovery import snapshots


class FlagStoreError(Exception):
    """The flag store is missing or cannot be read: the flags cannot be set."""


@dataclass(frozen=True)
class Store:
    body: dict[str, Any]
    document: dict[str, Any] | None  # flagd definitions; None for plain data
    key: str | None  # the ConfigMap key holding flagd JSON

    def state(self, names: list[str]) -> str | None:
        if self.document is None:
            return pure.plain_state(self.body.get("data") or {}, names)
        return pure.flagd_state(self.document, names)

    def cannot_switch_on(self, names: list[str]) -> str:
        return "" if self.document is None else pure.flagd_cannot_switch_on(self.document, names)

    def cannot_split(self, names: list[str]) -> str:
        if self.document is None:
            return "a plain ConfigMap holds only true or false, not a percentage"
        return pure.flagd_cannot_split(self.document, names)


async def read(cluster: KubeApi, namespace: str, flags: FeatureFlags) -> Store:
    if flags.feature_flag_ref is not None:
        body = await cluster.read_feature_flag(namespace, flags.feature_flag_ref.name)
        if body is None:
            raise FlagStoreError(
                f"spec.featureFlags.featureFlagRef: FeatureFlag {namespace}/{flags.feature_flag_ref.name} "
                "not found (or its CRD is not installed)"
            )
        return Store(body, ((body.get("spec") or {}).get("flagSpec") or {}), None)
    assert flags.config_map_ref is not None
    name = flags.config_map_ref.name
    body = await cluster.read_config_map(namespace, name)
    if body is None:
        raise FlagStoreError(f"spec.featureFlags.configMapRef: ConfigMap {namespace}/{name} not found")
    if flags.format == FlagFormat.plain:
        return Store(body, None, None)
    data = body.get("data") or {}
    key = flags.key or _only_json_key(data, name)
    try:
        return Store(body, json.loads(data[key]), key)
    except (KeyError, ValueError) as error:
        raise FlagStoreError(
            f"spec.featureFlags: ConfigMap {name} key {key!r} is not flagd JSON: {error}"
        ) from error


def _only_json_key(data: dict[str, str], name: str) -> str:
    keys = [k for k in data if k.endswith(".json")]
    if len(keys) != 1:
        raise FlagStoreError(
            f"spec.featureFlags.key: ConfigMap {name} has {len(keys)} keys ending in .json; name the one to use"
        )
    return keys[0]


async def observe(cluster: KubeApi, namespace: str, flags: FeatureFlags) -> FlagsView:
    """Whether the flags are on or off, or why that cannot be known."""
    try:
        store = await read(cluster, namespace, flags)
    except FlagStoreError as problem:
        return FlagsView(problem=str(problem))
    names = flags.flags
    return FlagsView(state=store.state(names), cannot_switch_on=store.cannot_switch_on(names),
                     cannot_split=store.cannot_split(names))  # fmt: skip


async def ensure(cluster: KubeApi, rollout: dict[str, Any], flags: FeatureFlags, state: str) -> list[str]:
    """Put the flags at `state` (off, on, or a percentage such as "10%"), the store copied
    first; what changed (nothing if they are)."""
    namespace = rollout["metadata"]["namespace"]
    store = await read(cluster, namespace, flags)
    if store.state(flags.flags) == state:
        return []
    names = ", ".join(flags.flags)
    if store.document is None:  # plain ConfigMap
        if flag_percent(state) is not None:  # refused by validation; nothing to write it as
            return [f"flags {names}: {store.cannot_split(flags.flags)}"]
        kept = await snapshots.copy(cluster, rollout, store.body)
        faults.point("flags-copied", namespace)
        data = pure.plain_set(store.body.get("data") or {}, flags.flags, FlagState(state))
        await cluster.patch_config_map(namespace, store.body["metadata"]["name"], {"data": data})
        faults.point("flags-written", namespace)
        return [
            f"flags {names} set to {'true' if state == FlagState.on else 'false'} (previous values kept in {kept})"
        ]
    document, changed = pure.flagd_set(store.document, flags.flags, state)
    if document == store.document:  # what cannot be switched stays as it is: no write, no copy
        return changed
    if store.key is not None:  # flagd JSON in a ConfigMap
        kept = await snapshots.copy(cluster, rollout, store.body)
        faults.point("flags-copied", namespace)
        store.body.setdefault("data", {})[store.key] = json.dumps(document, indent=2)
        await cluster.replace_config_map(namespace, store.body["metadata"]["name"], store.body)
    else:  # an OpenFeature FeatureFlag resource
        kept = await snapshots.copy(
            cluster, rollout, store.body, {"flagSpec.json": json.dumps(store.document)}
        )
        faults.point("flags-copied", namespace)
        store.body["spec"]["flagSpec"] = document
        await cluster.replace_feature_flag(namespace, store.body["metadata"]["name"], store.body)
    faults.point("flags-written", namespace)
    return [*changed, f"previous flag definitions kept in {kept}"]
