"""Giving a target Deployment back, unpaused, when the Rollout that paused it is gone.

Rollouts carry no finalizer (one must stay deletable when the operator is gone), so there is
no deletion hook that is sure to run. Instead a pause carries the Rollout's mark
(`parachute.dev/paused-by`), and the target is handed back when the Rollout's deletion is
seen, or when a Deployment still carries the mark of a Rollout that no longer exists or no
longer targets it. The watch's first listing shows every Deployment, so a deletion while
the operator was down is caught when it starts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from parachute import api, faults, kube

logger = logging.getLogger("parachute.handback")

ATTEMPTS = 5  # a hand-back that fails is retried: nothing else would look again soon


def paused_by(deployment: dict[str, Any]) -> str | None:
    return (deployment["metadata"].get("annotations") or {}).get(api.PAUSED_BY_ANNOTATION)


async def unpause(namespace: str, name: str, rollout: str) -> bool:
    """Unpause Deployment `name` if `rollout` paused it, removing the mark; True if it did.

    Guarded by the resourceVersion just read, so a pause written meanwhile (a new Rollout
    of the same name) is never undone.
    """
    for attempt in range(ATTEMPTS):
        target = await kube.read_deployment(namespace, name)
        if target is None or paused_by(target) != rollout:
            return False
        patch = {
            "metadata": {
                "resourceVersion": target["metadata"]["resourceVersion"],
                "annotations": {api.PAUSED_BY_ANNOTATION: None},
            },
            "spec": {"paused": False},
        }
        try:
            await kube.patch_deployment(namespace, name, patch)
        except Exception as error:  # a conflict or a passing API error: read again and retry
            logger.info("handing back Deployment %s/%s: %s; trying again", namespace, name, error)
            await asyncio.sleep(min(2**attempt, 10))
            continue
        faults.point("handed-back", namespace)
        logger.info("Rollout %s/%s is gone: unpaused Deployment %s", namespace, rollout, name)
        return True
    logger.error("could not hand back Deployment %s/%s (paused by Rollout %s)", namespace, name, rollout)
    return False


async def hand_back_if_orphaned(namespace: str, deployment: dict[str, Any], known: bool) -> bool:
    """Unpause a Deployment whose mark names a Rollout that no longer exists or targets it.

    `known`: the operator's index has that Rollout targeting this Deployment (no read needed).
    """
    rollout = paused_by(deployment)
    if not rollout or known:
        return False
    name = deployment["metadata"]["name"]
    body = await kube.read_rollout(namespace, rollout)
    if body is not None and ((body.get("spec") or {}).get("targetRef") or {}).get("name") == name:
        return False
    return await unpause(namespace, name, rollout)
