"""The one seam between a traffic share the planner decided and the backend that makes it true.

The planner says what share of requests the canary should receive; a `Router` makes the
backend hold that share and reports what the backend holds, or says plainly that it cannot
tell. Routers decide nothing about the release: they ensure what their backend needs, write
weights, notice weights someone else wrote, and put everything on stable when told.

Every router raises `RoutingSetupError` for a setup that cannot work (a CRD that is not
installed, a route that does not send to the Service, an object that does not exist), with
the `spec.trafficRouting...` field to blame, before it has written anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from parachute import api

# Re-exported: the answer of every router and the audience it writes, defined where the planner reads them.
from parachute.plan.model import Applied as Applied  # noqa: PLC0414
from parachute.plan.model import AudienceMatch as AudienceMatch  # noqa: PLC0414

POD_TEMPLATE_HASH = "pod-template-hash"
MANAGED_BY = {"app.kubernetes.io/managed-by": "parachute"}
ROLLOUT_LABEL = f"{api.GROUP}/rollout"
# On what a router makes without an owner reference (the stable and canary Services): whose it
# is. They must outlive their Rollout until its route no longer sends to them (see teardown).
ROLLOUT_UID_ANNOTATION = f"{api.GROUP}/rollout-uid"


class RoutingSetupError(Exception):
    """The routing set-up cannot work; `field` names the spec field, `message` what is missing."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Release:
    """What every router is told about the release it routes.

    `stable_hash` is the pod-template-hash of the stable ReplicaSet (stable pods come from
    the paused target); `canary_labels` are the labels only the canary's pods carry.
    """

    namespace: str
    rollout: str
    rollout_uid: str
    stable_hash: str
    canary_labels: Mapping[str, str] = field(default_factory=lambda: {f"{api.GROUP}/canary": "true"})

    def owner_reference(self) -> dict[str, object]:
        return api.owner_reference(self.rollout, self.rollout_uid)

    def labels(self) -> dict[str, str]:
        """Labels of every object a router creates."""
        return {**MANAGED_BY, ROLLOUT_LABEL: self.rollout}

    def marks(self) -> dict[str, str]:
        """Annotations of every object a router creates: the Rollout's uid, as an owner reference would."""
        return {ROLLOUT_UID_ANNOTATION: self.rollout_uid}

    def weight_annotation(self) -> str:
        """The annotation where this Rollout records the canary share it last wrote.

        Keyed by Rollout, so two Rollouts driving rules of one route keep their own record.
        An annotation's name part holds 63 characters; a longer Rollout name is shortened
        with a digest so the key stays unique.
        """
        name = f"weight.{self.rollout}"
        if len(name) > 63:
            digest = hashlib.sha256(self.rollout.encode()).hexdigest()[:8]
            name = f"{name[:54].rstrip('.-')}.{digest}"
        return f"{api.GROUP}/{name}"

    def audience_rule_name(self, index: int) -> str:
        """The name of the rule (or http route) Parachute adds for an audience beside the
        `index`-th rule it manages: a route's rule names are unique and at most 253 characters
        of a DNS subdomain, and the Rollout's name makes it this Rollout's."""
        name = f"parachute-audience-{index}.{self.rollout}"
        if len(name) > 253:
            digest = hashlib.sha256(self.rollout.encode()).hexdigest()[:8]
            name = f"{name[:244].rstrip('.-')}.{digest}"
        return name

    def owns(self, body: Mapping[str, object]) -> bool:
        """Made by this Rollout: owned by it, or marked with its uid."""
        meta = body.get("metadata")
        if not isinstance(meta, Mapping):
            return False
        annotations = meta.get("annotations")
        if isinstance(annotations, Mapping) and annotations.get(ROLLOUT_UID_ANNOTATION) == self.rollout_uid:
            return True
        refs = meta.get("ownerReferences")
        return any(isinstance(r, Mapping) and r.get("uid") == self.rollout_uid for r in refs or [])


class Held(str):
    """What `ensure` left as it is for now, and why (a subset that holds weight is not re-pinned
    to pods the data plane cannot reach yet): not a change, but a reason to look again soon."""

    __slots__ = ()


class Router(Protocol):
    """One traffic backend. Every method is idempotent."""

    async def ensure(self) -> list[str]:
        """Make what the backend needs exist (Services, a canary Ingress); returns what changed,
        and, as `Held`, what it left as it is for now."""
        ...

    async def read(self) -> Applied:
        """The canary share the backend holds now; writes nothing."""
        ...

    async def set_weight(self, weight: int, audience: AudienceMatch | None = None) -> Applied:
        """Make the backend send `weight`% to the canary, and with `audience` (phased) every
        request of that audience; no audience removes Parachute's rule for one. Writes nothing
        when it already does so, and puts back weights someone else changed (`hand_edit`)."""
        ...

    async def unready(self, canary: bool) -> str:
        """Why the canary's (or the stable) backend cannot take requests yet: the Service it
        sends to lists no ready endpoint of the pods it should select (of a subset, the pods its
        labels select now). "" when it can, or when the backend cannot tell. Read before a
        weight moves requests onto that backend."""
        ...

    async def reset(self) -> Applied:
        """Send everything to stable (no audience either)."""
        ...

    async def snapshot(self) -> dict[str, Any]:
        """What the user's objects send to before Parachute first rewrites them, for `restore`;
        checks the set-up as `ensure` does and writes nothing."""
        ...

    async def restore(self, snapshot: dict[str, Any]) -> list[str]:
        """Give the user's objects back: the managed rules send to what the snapshot says (to
        the user's Service where it has nothing, as for a route that named the copies itself),
        then what `ensure` made goes. Tolerates objects already gone; returns what changed."""
        ...


def check_weight(weight: int) -> None:
    if not 0 <= weight <= 100:
        raise ValueError(f"a canary weight is a percentage, not {weight}")
