"""kopf registration only: watch events wake the scheduler; the scheduler reconciles.

No timers, daemons or mandatory deletion handlers: kopf would put a finalizer on every
Rollout, and a Rollout must stay deletable when the operator is gone. With only event
handlers, kopf writes nothing to Rollouts either: their status is Parachute's alone.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import kopf

from parachute import api, clock, kube
from parachute.engine_loop import reconcile_key
from parachute.scheduler import Key, Scheduler

ROLLOUTS = (api.GROUP, api.VERSION, api.PLURAL)
KOPF_PREFIX = f"kopf.{api.GROUP}"


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.posting.level = logging.ERROR  # Parachute posts its own Events, with reasons
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    memo.scheduler = Scheduler(reconcile_key, clock=clock.now)
    memo.scheduler_task = asyncio.create_task(memo.scheduler.run(), name="parachute-scheduler")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = getattr(memo, "scheduler_task", None)
    if task is not None:
        task.cancel()


@kopf.index(*ROLLOUTS)
def rollouts_by_target(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str | None, str], str]:
    return {(namespace, spec.get("targetRef", {}).get("name", "")): name}


@kopf.index(*ROLLOUTS)
def rollouts_by_config(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str | None, str], str]:
    """Tracked ConfigMaps: a change to one is a release of its Rollout."""
    return {(namespace, ref.get("name", "")): name for ref in spec.get("configRefs") or []}


@kopf.on.event(*ROLLOUTS)
def on_rollout(
    type: str, namespace: str | None, name: str, status: kopf.Status, memo: kopf.Memo, **_: Any
) -> None:
    scheduler: Scheduler = memo.scheduler
    key: Key = (namespace or "", name)
    if type == "DELETED":
        scheduler.forget(key)
        return
    scheduler.wake(key)
    due = status.get("nextCheckAt")
    if due:
        scheduler.wake(key, datetime.fromisoformat(due.replace("Z", "+00:00")))


@kopf.on.event("apps", "v1", "deployments")
def on_deployment(namespace: str | None, name: str, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any) -> None:
    """A target or a canary changed: wake the Rollout it belongs to."""
    index: kopf.Index[tuple[str | None, str], str] = kwargs["rollouts_by_target"]
    scheduler: Scheduler = memo.scheduler
    for rollout in index.get((namespace, name), []):
        scheduler.wake((namespace or "", rollout))
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == api.KIND and owner.get("apiVersion") == api.API_VERSION:
            scheduler.wake((namespace or "", owner["name"]))


@kopf.on.event("", "v1", "configmaps")
def on_config_map(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A tracked ConfigMap changed: wake the Rollouts that track it."""
    index: kopf.Index[tuple[str | None, str], str] = kwargs["rollouts_by_config"]
    scheduler: Scheduler = memo.scheduler
    for rollout in index.get((namespace, name), []):
        scheduler.wake((namespace or "", rollout))


@kopf.on.delete(*ROLLOUTS, optional=True)
async def on_rollout_deleted(namespace: str | None, spec: kopf.Spec, **_: Any) -> None:
    """Best effort (no finalizer): hand the target back unpaused so it rolls on its own again."""
    target = spec.get("targetRef", {}).get("name")
    if namespace and target and await kube.read_deployment(namespace, target):
        await kube.patch_deployment(namespace, target, {"spec": {"paused": False}})
