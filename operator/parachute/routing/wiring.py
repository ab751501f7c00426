"""How a reconcile drives its Rollout's router: read what the backend holds before the planner
decides, and make the planner's traffic intent true after the decision is written.

Reading refuses a set-up that cannot work (`RoutingSetupError`, naming the field), so the
Rollout is `Invalid` before anything is written. Acting keeps the order that makes it safe:
the routing record (the snapshot of the user's route) first, then what the backend needs
(Services re-pinned to the stable pods, a canary Ingress), then the weight. A weight that
would move traffic onto a backend changed in the same reconcile waits for the next one, so
the new Service's endpoints exist before requests go there, and no weight moves requests onto
a backend whose Service lists no ready endpoint of the pods it should select (a selector
re-pinned to the stable pods is followed by its EndpointSlices a moment later). A phased
audience's rule is requests moving too: to the canary when it comes, back to stable when it goes
or names another audience. What the backend
leaves as it is for now (`Held`: an Istio subset that takes requests keeps its pods until its new
ones are ready endpoints) is looked at again soon, and the weight may still move meanwhile. A
route that someone changed by hand is put back, with a Warning Event saying what was found. A Rollout that no longer routes
as its record says (its `trafficRouting` removed or pointed elsewhere, or an older Rollout of
that name) has its old route given back first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from parachute import api, faults
from parachute.plan.model import Applied, AudienceMatch, Event, EventType, TrafficIntent, TrafficView
from parachute.routing import record, teardown
from parachute.routing.backends import router_for
from parachute.routing.objects import Client, ForbiddenError
from parachute.routing.router import Held, Release, Router, RoutingSetupError

NOT_SET_UP = "the route is not set up for this Rollout yet"
# How long a rollback keeps requests on the canary while the stable side lists no ready endpoint,
# counted from the incident's start: a rollback must never wait on the new version, and a stable
# side that lists none by then (its pods not ready, an endpoint controller stuck) will not be
# helped by waiting longer; requests meet the stable side as it is.
ROLLBACK_HOLD_LIMIT = timedelta(seconds=60)


@dataclass(frozen=True)
class Rollback:
    """The rollback under way while acting: its incident, when it started, and now."""

    incident: str
    started: datetime
    now: datetime

    def limit(self) -> datetime:
        return self.started + ROLLBACK_HOLD_LIMIT


# The incidents whose held traffic was told (namespace, rollout, incident): once each per process.
_told_held: set[tuple[str, str, str]] = set()
GIVING_BACK = "the route is being given back as it was before this routing (a change of spec.trafficRouting)"


@dataclass
class Steered:
    """What acting did: changes for the log, Events to post, and whether to look again soon."""

    changed: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    again: bool = False


def routing_of(spec: api.RolloutSpec) -> api.TrafficRouting | None:
    """The spec's routing when it names a router; None for replica ratio."""
    routing = spec.traffic_routing
    return routing if routing is not None and routing.router() is not None else None


def _release(rollout: dict[str, Any], stable_hash: str = "") -> Release:
    meta = rollout["metadata"]
    return Release(meta["namespace"], meta["name"], meta["uid"], stable_hash=stable_hash)


async def observe(rollout: dict[str, Any], spec: api.RolloutSpec, client: Client) -> TrafficView | None:
    """What the router's backend holds; None without a router. RoutingSetupError when it cannot work."""
    routing = routing_of(spec)
    if routing is None:
        return None
    release = _release(rollout)
    router = router_for(routing, client, release)
    try:
        found = await record.read(client, release.namespace, release.rollout)
        if found is not None and not found.routes(routing, release.rollout_uid):
            # What it made is given back first (act does): judged afterwards, not against it.
            return TrafficView(Applied(None, GIVING_BACK))
        if found is None:
            await router.snapshot()  # checks the set-up, writes nothing
            return TrafficView(Applied(None, NOT_SET_UP))
        try:
            return TrafficView(await router.read())
        except RoutingSetupError as missing:
            # Something the router made is gone (a deleted Service, canary Ingress): ensure
            # makes it again, unless the user's part cannot work either.
            await router.snapshot()
            return TrafficView(Applied(None, missing.message))
    except ForbiddenError as error:
        raise forbidden(routing, error) from error


async def act(
    rollout: dict[str, Any],
    spec: api.RolloutSpec,
    intent: TrafficIntent | None,
    seen: TrafficView | None,
    client: Client,
    *,
    rollback: Rollback | None = None,
) -> Steered:
    """Make the backend hold what `intent` says; give back a route this Rollout no longer drives.
    During a `rollback`, traffic held back from a stable side that lists no ready endpoint is
    told once (a `TrafficHeld` Event), and goes back anyway at `ROLLBACK_HOLD_LIMIT`."""
    release = _release(rollout, (intent.stable or "") if intent is not None else "")
    async with teardown.guard(release.namespace, release.rollout):  # not while its deletion gives back
        return await _act(release, spec, intent, seen, client, rollback=rollback)


async def _act(
    release: Release,
    spec: api.RolloutSpec,
    intent: TrafficIntent | None,
    seen: TrafficView | None,
    client: Client,
    *,
    rollback: Rollback | None,
) -> Steered:
    out = Steered()
    routing = routing_of(spec)
    try:
        # Without routing, a record is looked for only where one may exist (a route to give back).
        maybe = routing is not None or record.KNOWN.may_exist(release.namespace, release.rollout)
        found = await record.read(client, release.namespace, release.rollout) if maybe else None
        if found is None and routing is None:
            record.KNOWN.removed(release.namespace, release.rollout)  # only this reconcile writes one
        if found is not None and (routing is None or not found.routes(routing, release.rollout_uid)):
            out.changed += await teardown.give_back(client, found)
            out.again = True  # the new set-up is checked and made on the next reconcile
            return out
        if routing is None or intent is None or not release.stable_hash:
            return out  # no router, or no stable pods to select yet: nothing to send anywhere
        router = router_for(routing, client, release)
        if found is None:
            written = await record.write(client, release, routing, await router.snapshot())
            out.changed += [written] if written else []
            faults.point("route-record-written", release.namespace)
        ensured = await router.ensure()
        made = [change for change in ensured if not isinstance(change, Held)]
        out.changed += ensured
        out.again = len(ensured) > len(made)  # something waits for endpoints: look again soon
        if made:
            faults.point("route-backends-made", release.namespace)
            out.again = True  # their endpoints follow in a moment; the weight moves next time
            return out
        await _set(router, intent, seen, out, release, rollback=rollback)
    except ForbiddenError as error:
        if routing is None:
            raise
        raise forbidden(routing, error) from error
    return out


async def _set(
    router: Router,
    intent: TrafficIntent,
    seen: TrafficView | None,
    out: Steered,
    release: Release,
    *,
    rollback: Rollback | None,
) -> None:
    weight, audience = intent.weight, intent.rule
    applied = seen.applied if seen is not None else None
    if applied is not None and applied.holds(weight, audience) and applied.hand_edit is None:
        return  # read just now: nothing to write
    for canary in _gaining(weight, audience, applied):
        if why := await router.unready(canary):
            held = _holds(applied)
            if not canary and rollback is not None:
                if rollback.now >= rollback.limit():
                    out.changed.append(f"route sent back to stable though {why}: a rollback waits for it "
                                       f"{ROLLBACK_HOLD_LIMIT.seconds}s at most")  # fmt: skip
                    continue
                _tell_held(out, release, rollback, held, why)
            out.changed.append(
                f"route kept {held} until it can send {_sends(weight, audience, applied)}: {why}"
            )
            out.again = True
            return
    result = await router.set_weight(weight, audience)
    if result.wrote:
        also = f" and {audience} to it" if audience is not None else ""
        out.changed.append(f"route set to send {weight}% to the canary{also}")
        faults.point("route-weight-set", release.namespace, weight)
        out.again = True  # read it back soon
    if result.hand_edit:
        out.events.append(Event(EventType.warning, "WeightsPutBack", result.hand_edit))


def _holds(applied: Applied | None) -> str:
    """What the route holds, as the messages of a held write say it."""
    if applied is None or applied.weight is None:
        return "as it is"
    also = f" and {applied.audience} to the canary" if applied.audience is not None else ""
    return f"{applied.weight}%{also}"


def _sends(weight: int, audience: AudienceMatch | None, applied: Applied | None) -> str:
    """What a write would make the route send, as the messages of a held write say it."""
    if audience is not None:
        return f"{weight}% to the canary and {audience} to it"
    dropped = " and no audience" if applied is not None and applied.audience is not None else ""
    return f"{weight}% to the canary{dropped}"


def forget(namespace: str, name: str) -> None:
    """The Rollout is gone: the incidents whose held traffic was told go with it."""
    _told_held.difference_update({key for key in _told_held if key[:2] == (namespace, name)})


def _tell_held(out: Steered, release: Release, rollback: Rollback, held: str, why: str) -> None:
    """A Warning, once per incident: the rollback keeps traffic on the canary, and until when."""
    key = (release.namespace, release.rollout, rollback.incident)
    if key in _told_held:
        return
    _told_held.add(key)
    until = rollback.limit().strftime("%H:%M:%S UTC")
    out.events.append(Event(
        EventType.warning, "TrafficHeld",
        f"The rollback keeps the canary's share ({held}) while {why}; it goes back to stable by {until} "
        f"({ROLLBACK_HOLD_LIMIT.seconds}s after the rollback started) even so",
    ))  # fmt: skip


def _gaining(weight: int, audience: AudienceMatch | None, applied: Applied | None) -> list[bool]:
    """The backends a write would send more requests to: the canary's (True), the stable (False).
    Unknown what the route holds, either may gain what the weight gives it. An audience is
    requests of their own: the canary gains them when its rule comes or names another audience,
    and the stable side, unless the weight sends everyone to the canary, gains the requests of
    the audience the route holds when its rule goes or names another (a rollback or an abort at
    an audience's stage, the next audience)."""
    held = applied.weight if applied is not None else None
    held_audience = applied.audience if applied is not None else None
    audience_moves = applied is not None and held_audience != audience
    canary = (weight > 0 or audience is not None) and (
        held is None or weight > held or (audience is not None and audience_moves)
    )  # fmt: skip
    stable = weight < 100 and (
        held is None or weight < held or (held_audience is not None and audience_moves)
    )  # fmt: skip
    return [side for side, gains in ((True, canary), (False, stable)) if gains]


def forbidden(routing: api.TrafficRouting, error: ForbiddenError) -> RoutingSetupError:
    """A refused call as the set-up problem it is: the install does not grant this router."""
    backend = routing.router() or "replicas"
    return RoutingSetupError(
        f"spec.trafficRouting.{backend}",
        f"{error}: the install does not grant this router; enable it with the chart value "
        f"rbac.{backend}=true (or the rules of manifests/operator.yaml)",
    )
