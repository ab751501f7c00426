"""Replica ratio: no router at all. The user's Service selects stable and canary pods alike,
so requests split roughly as ready pods do, and the workload sizes the canary for the weight.

Nothing here writes, and nothing can be read back: which pod a request reached is known to
no object in the cluster, so every answer says it cannot be verified.
"""

from __future__ import annotations

from typing import Any

from parachute.routing.router import Applied, AudienceMatch, check_weight

UNVERIFIED = (
    "replica ratio: the canary's share follows its ready pods behind the Service "
    "(the workload sizes it); no object holds a weight to read back"
)


class ReplicaRouter:
    async def ensure(self) -> list[str]:
        return []

    async def read(self) -> Applied:
        return Applied(None, UNVERIFIED)

    async def set_weight(self, weight: int, audience: AudienceMatch | None = None) -> Applied:
        check_weight(weight)  # no audience comes here: a phased release needs a router (the schema says)
        return Applied(None, UNVERIFIED)

    async def unready(self, canary: bool) -> str:
        return ""  # the workload sizes the share: no Service to wait for

    async def reset(self) -> Applied:
        return Applied(None, UNVERIFIED)

    async def snapshot(self) -> dict[str, Any]:
        return {}

    async def restore(self, snapshot: dict[str, Any]) -> list[str]:
        return []
