"""Make the rollback levels' intent real, fastest change first: configuration, then restarts
of the pods that cannot reload, then the target's template. The flags (level 1, and the
stages that set them) go first of all, through `set_flags`."""

from __future__ import annotations

import logging
from typing import Any

from parachute import faults
from parachute.api import RolloutSpec
from parachute.kube_api import KubeApi
from parachute.plan.model import FlagsView, RecoveryIntent
from parachute.recovery import flags, restarts, snapshots, template

logger = logging.getLogger("parachute.recovery")


async def act(
    cluster: KubeApi,
    rollout: dict[str, Any],
    target: dict[str, Any],
    canary: dict[str, Any] | None,
    intent: RecoveryIntent,
) -> list[str]:
    namespace = rollout["metadata"]["namespace"]
    changed: list[str] = []
    if intent.restore_configs:
        changed += await snapshots.restore(cluster, rollout, intent.restore_configs)
        faults.point("configs-restored", namespace)
    if intent.restart_stamp is not None:
        if canary is not None:
            changed += await restarts.restart(cluster, namespace, canary, intent.restart_stamp)
            faults.point("canary-pods-restarted", namespace)
        if intent.restart_target:
            changed += await restarts.restart(cluster, namespace, target, intent.restart_stamp)
            faults.point("target-pods-restarted", namespace)
    if intent.restore_template is not None:
        changed += await template.restore(cluster, rollout, target, intent.restore_template)
    return changed


async def set_flags(cluster: KubeApi, rollout: dict[str, Any], spec: RolloutSpec, state: str) -> list[str]:
    """The release's flags at `state`, off, on or a percentage (copied first); a store that
    cannot be read is left to the planner, which sees it in the next observation and says so."""
    if spec.feature_flags is None:
        return []
    try:
        return await flags.ensure(cluster, rollout, spec.feature_flags, state)
    except flags.FlagStoreError as problem:
        logger.warning("flags cannot be switched %s: %s", state, problem)
        return []


async def observe_flags(cluster: KubeApi, namespace: str, spec: RolloutSpec) -> FlagsView:
    if spec.feature_flags is None:
        return FlagsView()
    return await flags.observe(cluster, namespace, spec.feature_flags)
