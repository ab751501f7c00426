"""Make the rollback levels' intent real, fastest change first: flags, then configuration,
then restarts of the pods that cannot reload, then the target's template."""

from __future__ import annotations

import logging
from typing import Any

from parachute.api import RolloutSpec
from parachute.plan.model import RecoveryIntent
from parachute.recovery import flags, restarts, snapshots, template

logger = logging.getLogger("parachute.recovery")


async def act(
    rollout: dict[str, Any],
    spec: RolloutSpec,
    target: dict[str, Any],
    canary: dict[str, Any] | None,
    intent: RecoveryIntent,
) -> list[str]:
    namespace = rollout["metadata"]["namespace"]
    changed: list[str] = []
    if intent.flags_off and spec.feature_flags is not None:
        try:
            changed += await flags.switch_off(rollout, spec.feature_flags)
        except flags.FlagStoreError as problem:  # the planner sees it too, and moves on
            logger.warning("flag level cannot act: %s", problem)
    if intent.restore_configs:
        changed += await snapshots.restore(rollout, intent.restore_configs)
    if intent.restart_stamp is not None:
        if canary is not None:
            changed += await restarts.restart(namespace, canary, intent.restart_stamp)
        if intent.restart_target:
            changed += await restarts.restart(namespace, target, intent.restart_stamp)
    if intent.restore_template is not None:
        changed += await template.restore(rollout, target, intent.restore_template)
    return changed


async def observe_flags(namespace: str, spec: RolloutSpec) -> tuple[bool | None, str]:
    if spec.feature_flags is None:
        return None, ""
    return await flags.observe(namespace, spec.feature_flags)
