"""Giving a user's route back when its Rollout stops routing: deleted, or its `trafficRouting`
removed or pointed elsewhere.

The route is given back first (the managed rules send to what the routing record's snapshot
says, or to the user's Service), and only then do the stable and canary Services (and the
canary Ingress, the DestinationRule's subsets) go, and last the record. So a route never
sends to a Service that is gone, whatever the order in which the operator stops or starts.

The deletion path runs without a finalizer, like the hand-back of the target: the Rollout
watch's DELETED event, and the first listing of ConfigMaps and Deployments after a start,
which shows the record (and the paused target) of a Rollout deleted while the operator was
away. A record whose Rollout still exists, with the same uid, is that Rollout's business:
its reconcile gives the route back when its routing changes.

A reconcile that read its Rollout just before the deletion may still be acting on the router
when the DELETED event comes: the two take turns on the Rollout's `guard`, so what the
reconcile makes is given back after it, never made again behind the give-back. (A reconcile
that runs after the give-back finds no record and writes one: that record's own watch event
brings the give-back once more.)
"""

from __future__ import annotations

import asyncio
import logging

from parachute import faults, kube
from parachute.routing import record
from parachute.routing.backends import router_for
from parachute.routing.client import ApiServerClient
from parachute.routing.objects import Client, ForbiddenError
from parachute.routing.record import Record

logger = logging.getLogger("parachute.routing.teardown")

ATTEMPTS = 5  # a give-back that fails is retried: nothing else would look again soon
_guards: dict[tuple[str, str], asyncio.Lock] = {}


def guard(namespace: str, rollout: str) -> asyncio.Lock:
    """The turn of Rollout `rollout` at its router: held by its reconcile while acting, and by
    the give-back after its deletion."""
    return _guards.setdefault((namespace, rollout), asyncio.Lock())


async def give_back(client: Client, found: Record) -> list[str]:
    """Restore the route the record names, remove what the router made, then the record."""
    router = router_for(found.routing, client, found.release())
    changed = await router.restore(found.snapshot)
    faults.point("route-restored", found.namespace)
    if await record.remove(client, found):
        changed.append(f"removed the routing record of Rollout {found.rollout}")
    return changed


async def give_back_if_orphaned(namespace: str, rollout: str, client: Client | None = None) -> list[str]:
    """Give back the route of Rollout `rollout` if it no longer exists (or another Rollout of
    that name replaced it). Safe to call for any name, any number of times."""
    client = client or ApiServerClient()
    for attempt in range(ATTEMPTS):
        try:
            async with guard(namespace, rollout):
                found = await record.read(client, namespace, rollout)
                if found is None:
                    return []
                body = await kube.read_rollout(namespace, rollout)
                if body is not None and body["metadata"].get("uid") == found.rollout_uid:
                    return []
                changed = await give_back(client, found)
        except ForbiddenError as error:
            logger.error("cannot give back the route of Rollout %s/%s: %s", namespace, rollout, error)
            return []
        except Exception as error:  # a conflict or a passing API error: read again and retry
            logger.info("giving back the route of Rollout %s/%s: %s; trying again", namespace, rollout, error)
            await asyncio.sleep(min(2**attempt, 10))
            continue
        if changed:
            logger.info("Rollout %s/%s is gone: %s", namespace, rollout, "; ".join(changed))
        return changed
    logger.error("could not give back the route of Rollout %s/%s", namespace, rollout)
    return []
