"""kopf registration only: watch events wake the scheduler; the scheduler reconciles.

No timers, daemons or deletion handlers: kopf would put a finalizer on every Rollout, and a
Rollout must stay deletable when the operator is gone. A Rollout's deletion is seen as its
watch's DELETED event instead: its route is given back (`parachute.routing.teardown`), then
its target is handed back (`parachute.handback`), in that order, so that the target never
rolls while a route still sends to a Service pinned to its old pods.
With only event handlers, kopf writes nothing to Rollouts either: their status is
Parachute's alone. Handlers are coroutines, so that they wake the scheduler on its own
event loop (kopf would run plain functions in threads).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime
from typing import Any

import kopf

from parachute import api, clock, handback, switch
from parachute.engine_loop import ReconcileLoop
from parachute.policy import DEFAULT_POLICY_ENV
from parachute.reconcile import routing_client
from parachute.routing import record, teardown
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
    memo.reconciler = ReconcileLoop()
    memo.scheduler = Scheduler(memo.reconciler, clock=clock.now)
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


@kopf.index(*ROLLOUTS)
def rollouts_by_policy(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[str, Key]:
    """The ReleasePolicy each Rollout uses: its policyRef, or "" for the default (none with its own window)."""
    if spec.get("window"):
        return {}
    return {(spec.get("policyRef") or {}).get("name", ""): (namespace or "", name)}


@kopf.on.event(*ROLLOUTS)
async def on_rollout(
    *,
    type: str,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    status: kopf.Status,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    scheduler: Scheduler = memo.scheduler
    key: Key = (namespace or "", name)
    if type == "DELETED":
        scheduler.forget(key)
        memo.reconciler.forget(key)
        # The route first, then the target: the last state the watch saw names it.
        if namespace:
            await teardown.give_back_if_orphaned(namespace, name)
        active = (body.get("spec", {}).get("blueGreen") or {}).get("activeService")
        if namespace and active:  # a pinned selector would select nothing once the target rolls on
            await switch.give_back(routing_client(), namespace, active, name)
        target = (body.get("spec", {}).get("targetRef") or {}).get("name")
        if namespace and target:
            await handback.unpause(namespace, target, name)
        return
    scheduler.wake(key)
    due = status.get("nextCheckAt")
    if due:
        scheduler.wake(key, datetime.fromisoformat(due.replace("Z", "+00:00")))


@kopf.on.event("apps", "v1", "deployments")
async def on_deployment(
    namespace: str | None, name: str, body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A target or a canary changed: wake the Rollout it belongs to. A target still paused by
    a Rollout that is gone (deleted while the operator was away) is handed back."""
    index: kopf.Index[tuple[str | None, str], str] = kwargs["rollouts_by_target"]
    scheduler: Scheduler = memo.scheduler
    rollouts = list(index.get((namespace, name), []))
    for rollout in rollouts:
        scheduler.wake((namespace or "", rollout))
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == api.KIND and owner.get("apiVersion") == api.API_VERSION:
            scheduler.wake((namespace or "", owner["name"]))
    mark = (meta.get("annotations") or {}).get(api.PAUSED_BY_ANNOTATION)
    if namespace and mark and mark not in rollouts:
        await teardown.give_back_if_orphaned(namespace, mark)  # the route before the target
    if namespace and mark:
        await handback.hand_back_if_orphaned(namespace, dict(body), known=mark in rollouts)


@kopf.on.event("", "v1", "configmaps")
async def on_config_map(
    namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A tracked ConfigMap changed: wake the Rollouts that track it. A routing record whose
    Rollout is gone (deleted while the operator was away) has its route given back."""
    index: kopf.Index[tuple[str | None, str], str] = kwargs["rollouts_by_config"]
    scheduler: Scheduler = memo.scheduler
    for rollout in index.get((namespace, name), []):
        scheduler.wake((namespace or "", rollout))
    found = record.parse(dict(body)) if namespace and record.is_record(dict(body)) else None
    if found is not None and kwargs.get("type") != "DELETED":
        await teardown.give_back_if_orphaned(found.namespace, found.rollout)


@kopf.on.event(api.GROUP, api.VERSION, "releasepolicies")
async def on_release_policy(name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A policy changed: the Rollouts it applies to look again (a fixed policy ends `Invalid`)."""
    index: kopf.Index[str, Key] = kwargs["rollouts_by_policy"]
    scheduler: Scheduler = memo.scheduler
    keys = list(index.get(name, []))
    if name == os.environ.get(DEFAULT_POLICY_ENV):
        keys += index.get("", [])
    for key in keys:
        scheduler.wake(key)
