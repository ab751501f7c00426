"""kopf registration: thin handlers that delegate to `parachute.reconcile`.

No timers or daemons: kopf puts a finalizer on every object that has one, and a Rollout
must stay deletable when the operator is gone. A Rollout is reconciled when it changes and
when its target Deployment changes (found through an in-memory index of targets).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from parachute import api, kube
from parachute.reconcile import reconcile

ROLLOUTS = (api.GROUP, api.VERSION, api.PLURAL)
# kopf's own bookkeeping goes to annotations under this prefix, so `status` is Parachute's alone.
KOPF_PREFIX = f"kopf.{api.GROUP}"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    # Parachute posts its own Events with meaningful reasons; kopf's are log lines.
    settings.posting.level = logging.ERROR
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.index(*ROLLOUTS)
def rollouts_by_target(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str | None, str], str]:
    target = spec.get("targetRef", {}).get("name", "")
    return {(namespace, target): name}


@kopf.on.resume(*ROLLOUTS)
@kopf.on.create(*ROLLOUTS)
@kopf.on.update(*ROLLOUTS, field="spec")
async def on_rollout(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    new = await _next_status(dict(body))
    if new is not None:
        patch.status.update(new)


@kopf.on.event("apps", "v1", "deployments")
async def on_target(namespace: str | None, name: str, **kwargs: Any) -> None:
    index: kopf.Index[tuple[str | None, str], str] = kwargs["rollouts_by_target"]
    if namespace is None:
        return
    for rollout_name in index.get((namespace, name), []):
        body = await kube.read_rollout(namespace, rollout_name)
        new = await _next_status(body) if body else None
        if new is not None:
            await kube.patch_rollout_status(namespace, rollout_name, new)


async def _next_status(body: dict[str, Any]) -> dict[str, Any] | None:
    """The status to write, or None when nothing changed (no write, no new resourceVersion)."""
    status = await reconcile(body, datetime.now(UTC))
    new = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return None if new == dict(body.get("status") or {}) else new
