"""Which Rollouts name each Deployment (as target), each tracked ConfigMap, and each ReleasePolicy:
what a change to one of those wakes. Fed by every Rollout the watch and the first listing show,
of every shard (a Deployment paused by another shard's Rollout is not an orphan).

kopf's own indexes hold every handler of every kind until each indexed object has been seen
once, and each object seen wakes every waiting handler: at start-up with 10,000 Rollouts and
their 20,000 Deployments the operator's loop did nothing else for minutes. This index blocks
nothing; what a handler must not decide before it is complete waits for `complete`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parachute.watched import version

Key = tuple[str, str]  # namespace, name


@dataclass(frozen=True)
class Refs:
    """What one Rollout names."""

    target: str
    configs: tuple[str, ...]
    policy: str | None  # "" for the default policy; None: a window of its own, no policy

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Refs:
        configs = tuple(str(ref.get("name", "")) for ref in spec.get("configRefs") or [])
        policy = None if spec.get("window") else str((spec.get("policyRef") or {}).get("name", ""))
        return cls(str((spec.get("targetRef") or {}).get("name", "")), configs, policy)


class RolloutIndex:
    def __init__(self) -> None:
        self._complete = False  # every Rollout that existed at start-up has been seen
        self._refs: dict[Key, tuple[int | None, Refs]] = {}
        # Until complete: the version each Rollout was deleted at, so that the first listing,
        # read before the deletion and handled after it, does not bring it back.
        self._deleted: dict[Key, int | None] = {}
        self._by_target: dict[Key, set[str]] = {}
        self._by_config: dict[Key, set[str]] = {}
        self._by_policy: dict[str, set[Key]] = {}

    @property
    def complete(self) -> bool:
        return self._complete

    def completed(self) -> None:
        """The first listing is in: every Rollout that existed before the watch began is known."""
        self._complete = True
        self._deleted.clear()

    def saw(self, body: Mapping[str, Any]) -> None:
        """A Rollout as the watch or a listing showed it (an older version than one seen is ignored)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        number = version(body)
        kept = self._refs.get(key)
        if kept is not None and kept[0] is not None and number is not None and number < kept[0]:
            return
        if key in self._deleted and not _newer(number, self._deleted[key]):
            return
        self._drop(key)
        refs = Refs.of(body.get("spec") or {})
        self._refs[key] = (number, refs)
        namespace, name = key
        self._by_target.setdefault((namespace, refs.target), set()).add(name)
        for config in refs.configs:
            self._by_config.setdefault((namespace, config), set()).add(name)
        if refs.policy is not None:
            self._by_policy.setdefault(refs.policy, set()).add(key)

    def gone(self, body: Mapping[str, Any]) -> None:
        """A Rollout deleted, as its watch event showed it."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if not self._complete:
            self._deleted[key] = version(body)
        self._drop(key)

    def _drop(self, key: Key) -> None:
        namespace, name = key
        kept = self._refs.pop((namespace, name), None)
        if kept is None:
            return
        refs = kept[1]
        _discard(self._by_target, (namespace, refs.target), name)
        for config in refs.configs:
            _discard(self._by_config, (namespace, config), name)
        if refs.policy is not None:
            _discard(self._by_policy, refs.policy, (namespace, name))

    def by_target(self, namespace: str, deployment: str) -> list[str]:
        return sorted(self._by_target.get((namespace, deployment), ()))

    def by_config(self, namespace: str, config_map: str) -> list[str]:
        return sorted(self._by_config.get((namespace, config_map), ()))

    def by_policy(self, policy: str) -> list[Key]:
        """Rollouts that use `policy` by name ("" : those on the default policy)."""
        return sorted(self._by_policy.get(policy, ()))


def _newer(number: int | None, deleted: int | None) -> bool:
    """Whether a body of version `number` came after a deletion at `deleted` (not known: no)."""
    return number is not None and deleted is not None and number > deleted


def _discard(index: dict[Any, set[Any]], key: Any, value: Any) -> None:
    found = index.get(key)
    if found is not None:
        found.discard(value)
        if not found:
            del index[key]
