"""The leader's listings of names and resourceVersions that confirm the watch's copies
(`parachute.watched`), so that a copy nothing changed is not read again when its time is up.

A copy is trusted `watched.KEEP` seconds after the last sign that it is the object's newest
version: the guard against a deletion the watch missed while it relisted. The watch confirms
only what changes, and at 10,000 Rollouts the targets stood paused for half an hour while
their releases looked minutes apart: half a read of a Deployment and a fifth of a read of a
Rollout a reconcile. One listing of a kind's names and versions answers for every copy at once
(a page of 500 Deployments' metadata is a request where 500 reads were), and finds the copies
of objects deleted unseen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from parachute import kube, watched

logger = logging.getLogger(__name__)

Lister = Callable[[str | None], Awaitable[kube.Versions | None]]

KINDS: tuple[tuple[str, watched.Copies, Lister], ...] = (
    ("Deployments", watched.DEPLOYMENTS, kube.deployment_versions),
    ("Rollouts", watched.ROLLOUTS, kube.rollout_versions),
)


async def confirm(
    namespaces: Sequence[str], kinds: Sequence[tuple[str, watched.Copies, Lister]] = KINDS
) -> None:
    """List each kind whose copies hold anything, in each of `namespaces` (all when empty), and
    confirm its copies by the listing. A listing that fails confirms nothing: the copies are
    read again when their time is up, as without it."""
    for kind, copies, versions in kinds:
        if not len(copies) and not copies.absences:
            continue
        scopes: Sequence[str | None] = namespaces or [None]
        for namespace in scopes:
            asked_at = copies.clock()
            try:
                found = await versions(namespace)
            except Exception as error:  # an ApiException's text carries its headers and body
                logger.warning("listing %s to confirm their copies failed: %s", kind, _reason(error))
                continue
            if found is None:
                continue
            dropped = copies.confirm(found.listed, found.at, asked_at, namespace)
            if dropped:
                logger.info("%d %s gone without a deletion from the watch: no longer kept", dropped, kind)


def _reason(error: Exception) -> str:
    status, reason = getattr(error, "status", None), getattr(error, "reason", None)
    return f"{status} {reason}" if status is not None else type(error).__name__


async def keep_confirming(
    namespaces: Sequence[str], leading: Callable[[], bool], every: float = watched.CONFIRM_EVERY
) -> None:
    """Confirm the copies every `every` seconds while this replica leads (a standby's copies are
    distrusted when it comes to lead)."""
    while True:
        await asyncio.sleep(every)
        try:
            if leading():
                await confirm(namespaces)
        except Exception:  # the copies are read again when their time is up; the next pass may do
            logger.exception("confirming the copies failed")
