"""kopf registration only: watch events wake the scheduler; the scheduler reconciles.

No timers, daemons or deletion handlers: kopf would put a finalizer on every Rollout, and a
Rollout must stay deletable when the operator is gone. A Rollout's deletion is seen as its
watch's DELETED event instead: its route is given back (`parachute.routing.teardown`), then
its target is handed back (`parachute.handback`), in that order, so that the target never
rolls while a route still sends to a Service pinned to its old pods.
With only event handlers, kopf writes nothing to Rollouts either: their status is
Parachute's alone. Handlers are coroutines, so that they wake the scheduler on its own
event loop (kopf would run plain functions in threads).

With leader election every replica runs these handlers, so a standby's heap is as warm as
the leader's; only the scheduler is gated, and a hand-back seen by a standby is remembered and
done when it leads. With a label selector, a Rollout outside it is let go (this replica serves
another shard's Rollouts nowhere, not even from a Deployment's event).

With the reports endpoint on (`parachute.reports`), every replica serves it, and Events
recording user reports are watched (only those: a server-side label selector) so that a report
wakes its Rollout ahead of routine work, whichever replica recorded it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from parachute import (
    api,
    canary_sets,
    clock,
    confirmation,
    handback,
    heap,
    kube,
    listings,
    readiness,
    sharding,
    switch,
    telemetry,
    watched,
)
from parachute.analysis import fastlane
from parachute.engine_loop import ReconcileLoop
from parachute.kube_api import KubeClient
from parachute.leadership import Elector, KubeLease, Timing, identity
from parachute.notify import outbox, statuspage
from parachute.plan.desired_workload import canary_name
from parachute.policy import DEFAULT_POLICY_ENV
from parachute.reconcile import reconcile, routing_client
from parachute.reports import counting as user_reports
from parachute.reports import record as report_events
from parachute.reports import server as reports_server
from parachute.rollout_index import RolloutIndex
from parachute.routing import record, teardown, wiring
from parachute.scheduler import Key, Scheduler, Woken

ROLLOUTS = (api.GROUP, api.VERSION, api.PLURAL)
REPLICA_SETS = ("apps", "v1", "replicasets")
KOPF_PREFIX = f"kopf.{api.GROUP}"

logger = logging.getLogger("parachute.handlers")

# Reconciles under way at once, and threads for the blocking clients (Kubernetes, Prometheus)
# they wait on. A reconcile mostly waits for answers; asyncio's default executor has cores + 4
# threads (6 on two cores), which held every reconcile behind a few slow answers.
RECONCILE_SLOTS = 16
IO_THREADS = 32


@dataclass(frozen=True)
class Election:
    """The Lease that decides which replica acts."""

    namespace: str
    name: str
    timing: Timing = field(default_factory=Timing)


@dataclass(frozen=True)
class Options:
    """What `parachute run` was told, handed to the handlers in kopf's memo."""

    namespaces: tuple[str, ...] = ()
    selector: sharding.Selector = sharding.EVERYTHING
    election: Election | None = None
    readiness: str | None = None
    fast_lane: fastlane.Settings = field(default_factory=fastlane.Settings)
    reports: reports_server.Settings | None = None  # None: the reports endpoint is off


def _serves(memo: kopf.Memo, key: Key) -> bool:
    """A Rollout of this shard (every Rollout the watch shows, without a selector)."""
    options: Options = memo.options
    return options.selector is sharding.EVERYTHING or key in memo.served


def _wake_tracking(memo: kopf.Memo, key: Key) -> None:
    """Something the Rollout tracks changed (a ConfigMap, its routing record, its policy)."""
    if _serves(memo, key):
        memo.scheduler.wake(key, woken=Woken.TRACKED)


def _leading(memo: kopf.Memo) -> bool:
    elector: Elector | None = memo.elector
    return elector is None or elector.leading


async def _hand_back(
    memo: kopf.Memo, namespace: str, target: str, hand_back: Callable[[], Awaitable[bool]]
) -> None:
    """Hand back now when leading; a standby remembers the Deployment, to look again when it leads."""
    if _leading(memo):
        await hand_back()
    else:
        memo.deferred_hand_backs.add((namespace, target))


async def _give_back_route(memo: kopf.Memo, namespace: str, rollout: str) -> None:
    """Give back a gone Rollout's route now when leading; a standby remembers it for when it leads."""
    if _leading(memo):
        await teardown.give_back_if_orphaned(namespace, rollout)
    else:
        memo.deferred_routes.add((namespace, rollout))


async def _deferred_hand_backs(memo: kopf.Memo) -> None:
    """Now leading: the routes and Deployments a standby saw to be given back, looked at afresh
    (routes first, as for a Rollout deleted while leading)."""
    routes, memo.deferred_routes = memo.deferred_routes, set()
    for namespace, rollout in sorted(routes):
        await teardown.give_back_if_orphaned(namespace, rollout)  # logs and gives up on its own
    pending, memo.deferred_hand_backs = memo.deferred_hand_backs, set()
    for namespace, name in sorted(pending):
        try:
            deployment = await kube.read_deployment(namespace, name)
            if deployment is not None and handback.paused_by(deployment):
                await handback.hand_back_if_orphaned(namespace, deployment, known=False)
        except Exception:
            logger.exception("could not look at Deployment %s/%s to hand it back", namespace, name)
            memo.deferred_hand_backs.add((namespace, name))


def _on_leadership(memo: kopf.Memo, leading: bool) -> None:
    watched.ROLLOUTS.distrust()  # read afresh: the watch may be behind what the last leader wrote
    watched.DEPLOYMENTS.distrust()
    listings.REPLICA_SETS.clear()
    if not leading:
        memo.scheduler.stand_down()
        if fastlane.LANE is not None:
            fastlane.LANE.stand_down()
    elif memo.deferred_hand_backs or memo.deferred_routes:
        task = asyncio.create_task(_deferred_hand_backs(memo), name="parachute-hand-backs")
        memo.background.add(task)
        task.add_done_callback(memo.background.discard)


async def _first_listing(memo: kopf.Memo) -> None:
    """Every Rollout, indexed, and those this replica serves due now: then it is ready (see
    `parachute.readiness`), and the Deployments seen meanwhile whose pausing Rollout was not
    indexed yet are looked at again."""
    options: Options = memo.options
    delay = 1.0
    while True:
        try:
            found = await kube.list_rollouts(list(options.namespaces))
            records = await kube.list_config_maps(list(options.namespaces), record.SELECTOR)
            break
        except Exception as error:
            logger.warning("listing Rollouts and routing records failed (%s); again in %gs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    record.KNOWN.listing(records)
    index: RolloutIndex = memo.index
    for body in found:
        index.saw(body)
    index.completed()
    for body in found:
        meta = body.get("metadata") or {}
        if options.selector.matches(meta.get("labels")):
            # The first reconciles may come before the watch's first events: without the
            # listing's copy each of them read its Rollout again. An older state than the watch
            # showed (a deletion included) is not taken. (A leader distrusts copies it did not
            # read: with leader election, the leader's first look of each Rollout still reads it.)
            watched.ROLLOUTS.seen(body)
            memo.scheduler.wake((meta.get("namespace") or "", meta.get("name") or ""), woken=Woken.LISTING)
    del found
    memo.listed = True
    unchecked, memo.unchecked = memo.unchecked, {}
    for (namespace, name), deployment in sorted(unchecked.items()):
        try:
            await _orphaned(memo, namespace, name, deployment)
        except Exception:  # its next event looks again; the others are looked at now
            logger.exception("could not look at Deployment %s/%s to hand it back", namespace, name)


def _readiness(memo: kopf.Memo) -> dict[str, Any]:
    task: asyncio.Task[None] = memo.scheduler_task
    elector: Elector | None = memo.elector
    return {
        "ready": bool(memo.listed) and not task.done(),
        "leading": _leading(memo),
        **({"identity": elector.identity} if elector else {}),
    }


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled state: with event handlers only, kopf compares no old and new states, yet
    it builds one (a deep copy of the object) at every watch event of every kind; at 10,000
    Rollouts that was a tenth of the operator's time. Nothing is stored on any object."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    heap.tune()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.posting.level = logging.ERROR  # Parachute posts its own Events, with reasons
    settings.watching.server_timeout = 300
    # Only canaries' ReplicaSets: the API server applies the selector.
    settings.watching.label_selectors[REPLICA_SETS] = canary_sets.LABEL
    settings.watching.client_timeout = 330
    options: Options = getattr(memo, "options", None) or Options()
    memo.options = options
    memo.served, memo.deferred_hand_backs, memo.background, memo.listed = set(), set(), set(), False
    memo.deferred_routes = set()
    memo.index, memo.unchecked = RolloutIndex(), {}
    memo.reconciler = ReconcileLoop(functools.partial(reconcile, cluster=KubeClient()))
    elector = memo.elector = None
    if options.election is not None:
        lease = KubeLease(options.election.namespace, options.election.name)
        elector = memo.elector = Elector(lease, identity(), options.election.timing)
        kube.fence(lambda: elector.leading)
        kube.identify(elector.identity)
        telemetry.leadership(lambda: elector.leading)
        logger.info("standing by for Lease %s/%s as %s", lease.namespace, lease.name, elector.identity)
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="parachute-io")
    )
    memo.scheduler = Scheduler(memo.reconciler, clock=clock.now, concurrency=RECONCILE_SLOTS, gate=elector)
    telemetry.scheduler(lambda: memo.scheduler.pending)
    memo.scheduler_task = asyncio.create_task(memo.scheduler.run(), name="parachute-scheduler")
    if elector is not None:
        elector.on_change(lambda leading: _on_leadership(memo, leading))
        memo.elector_task = asyncio.create_task(elector.run(), name="parachute-leader-election")
    memo.listing_task = asyncio.create_task(_first_listing(memo), name="parachute-first-listing")
    memo.confirming_task = asyncio.create_task(
        confirmation.keep_confirming(list(options.namespaces), lambda: _leading(memo)),
        name="parachute-copies-confirmed",
    )
    _start_fast_lane(memo, options.fast_lane)
    memo.readiness = None
    if options.readiness:
        memo.readiness = await readiness.serve(options.readiness, lambda: _readiness(memo))
    memo.reports = None
    if options.reports is not None:
        memo.reports = await _serve_reports(options)


async def _serve_reports(options: Options) -> Any:
    """The reports endpoint, and the token the reconcile verifies reports with."""
    assert options.reports is not None
    token = reports_server.TokenFile(options.reports.token_file)
    user_reports.install(token)

    def served(rollout: dict[str, Any]) -> bool:
        return options.selector.matches((rollout.get("metadata") or {}).get("labels"))

    endpoint = reports_server.Endpoint(
        token, served, rates=options.reports.rates, namespaces=options.namespaces
    )
    return await reports_server.serve(endpoint, options.reports)


def _start_fast_lane(memo: kopf.Memo, settings: fastlane.Settings) -> None:
    """The watcher of critical conditions between rounds: it looks only while this replica
    leads, and a breach wakes its Rollout ahead of routine work."""
    logger.info("%s", fastlane.describe(settings))
    if not settings.enabled:
        fastlane.install(None)
        return
    lane = fastlane.FastLane(
        settings, lambda key: memo.scheduler.wake(key, urgent=True, woken=Woken.LANE), lambda: _leading(memo)
    )
    fastlane.install(lane)
    memo.fast_lane_task = asyncio.create_task(lane.run(), name="parachute-fast-lane")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop acting first, then give the Lease up: a standby takes over without waiting for it to expire."""
    for name in ("listing_task", "confirming_task", "elector_task", "scheduler_task", "fast_lane_task"):
        task: asyncio.Task[None] | None = getattr(memo, name, None)
        if task is not None:
            task.cancel()
    scheduler: Scheduler | None = getattr(memo, "scheduler", None)
    if scheduler is not None:
        scheduler.stand_down()
    elector: Elector | None = getattr(memo, "elector", None)
    if elector is not None:
        await elector.release()
    for name in ("readiness", "reports"):
        runner = getattr(memo, name, None)
        if runner is not None:
            await runner.cleanup()


@kopf.on.probe(id="scheduler")
def scheduler_alive(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """kopf's liveness endpoint fails (HTTP 500) when the scheduler's loop or the election has died."""
    for name in ("scheduler_task", "elector_task"):
        task: asyncio.Task[None] | None = getattr(memo, name, None)
        if task is not None and task.done():
            raise kopf.PermanentError(f"{name.replace('_', ' ')} has stopped")
    return {"pending": memo.scheduler.pending, "leading": _leading(memo)}


@kopf.on.event(*ROLLOUTS)
async def on_rollout(
    *,
    type: str,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    status: kopf.Status,
    memo: kopf.Memo,
    event: kopf.RawEvent,
    **_: Any,
) -> None:
    scheduler: Scheduler = memo.scheduler
    key: Key = (namespace or "", name)
    options: Options = memo.options
    index: RolloutIndex = memo.index
    if type == "DELETED":
        index.gone(event["object"])
    else:
        index.saw(event["object"])  # every shard's: what a Deployment's mark names is known
    if type == "DELETED" or not options.selector.matches(body.get("metadata", {}).get("labels")):
        scheduler.forget(key)
        memo.reconciler.forget(key)
        fastlane.leave(key)
        outbox.forget(key)
        user_reports.forget(key)
        statuspage.forget(*key)
        wiring.forget(*key)
        kube.forget_writes(*key)
        if type == "DELETED":  # kept as gone: the first listing may still bring its last state
            watched.ROLLOUTS.deleted(event["object"])
        else:
            watched.ROLLOUTS.gone(*key)
        memo.served.discard(key)
        telemetry.gone(*key)
        if type != "DELETED":
            return  # another shard's (or no longer this one's)
        # The route first, then the target: the last state the watch saw names it.
        if namespace:
            await _give_back_route(memo, namespace, name)
        active = (body.get("spec", {}).get("blueGreen") or {}).get("activeService")
        # A pinned selector would select nothing once the target rolls on; the leader gives it back.
        if namespace and active and _leading(memo):
            await switch.give_back(routing_client(), namespace, active, name)
        target = (body.get("spec", {}).get("targetRef") or {}).get("name")
        if namespace and target:
            await _hand_back(memo, namespace, target, lambda: handback.unpause(namespace, target, name))
        return
    memo.served.add(key)
    watched.ROLLOUTS.seen(event["object"])  # before the wake: the reconcile reads this copy
    telemetry.observed(namespace or "", name, status.get("phase"))
    scheduler.recovering(key, _recovering(status))
    version = body.get("metadata", {}).get("resourceVersion")
    if kube.own_write(*key, version):
        return  # no news: the reconcile that wrote it said when to look again
    # A change by someone else; or, while its reconcile runs, maybe that reconcile's own write,
    # seen before the write's answer: it is asked once that reconcile ends.
    scheduler.wake(key, news=lambda: not kube.own_write(*key, version), woken=Woken.ROLLOUT)
    due = status.get("nextCheckAt")
    if due:  # written by another replica: this one's heap is warm if it comes to lead
        scheduler.wake(key, datetime.fromisoformat(due.replace("Z", "+00:00")))


def _recovering(status: kopf.Status) -> bool:
    """Rolling back, or a failed verdict about to start one: ahead of routine work for a slot."""
    return status.get("phase") == api.Phase.rolling_back or status.get("lastVerdict") == api.Verdict.failed


@kopf.on.event("apps", "v1", "deployments")
async def on_deployment(
    namespace: str | None, name: str, body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A target or a canary changed: wake the Rollout it belongs to. A target still paused by
    a Rollout that is gone (deleted while the operator was away) is handed back."""
    index: RolloutIndex = memo.index
    rollouts = index.by_target(namespace or "", name)
    owners = [owner["name"] for owner in meta.get("ownerReferences") or []
              if owner.get("kind") == api.KIND and owner.get("apiVersion") == api.API_VERSION]  # fmt: skip
    # Before the wakes: the reconcile reads this copy. Only this shard's targets and canaries are kept.
    ours = [r for r in [*rollouts, *owners] if _serves(memo, (namespace or "", r))]
    gone = kwargs.get("type") == "DELETED" or not ours
    news = None
    if gone:
        if kwargs.get("type") == "DELETED" and ours:
            watched.DEPLOYMENTS.deleted(kwargs["event"]["object"])  # absent: the next look asks nothing
        else:
            watched.DEPLOYMENTS.gone(namespace or "", name)
        watched.DEPLOYMENT_NEWS.gone(namespace or "", name)
    else:
        watched.DEPLOYMENTS.seen(kwargs["event"]["object"])
        news = watched.DEPLOYMENT_NEWS.event(kwargs["event"]["object"])
    # No news (the echo of this process's own write, or a change of nothing Parachute reads)
    # wakes nothing: the reconcile that wrote it said when to look again. One Rollout's write is
    # news to another on the same Deployment.
    shared = len(ours) > 1
    for rollout in ours if gone or shared or news is not None else ():
        memo.scheduler.wake((namespace or "", rollout), news=None if shared else news, woken=Woken.DEPLOYMENT)
    mark = (meta.get("annotations") or {}).get(api.PAUSED_BY_ANNOTATION)
    if not namespace or not mark or mark in rollouts:
        return
    if not index.complete:  # its Rollout may not have been seen yet: look once every one has
        memo.unchecked[(namespace, name)] = {"metadata": dict(meta)}
        return
    await _orphaned(memo, namespace, name, dict(body))


async def _orphaned(memo: kopf.Memo, namespace: str, name: str, deployment: dict[str, Any]) -> None:
    """A Deployment paused by a Rollout the index does not have targeting it: give back the
    route, then the target, if that Rollout is gone (both read to make sure)."""
    mark = handback.paused_by(deployment)
    index: RolloutIndex = memo.index
    if not mark or mark in index.by_target(namespace, name):
        return
    await _give_back_route(memo, namespace, mark)  # the route before the target
    await _hand_back(memo, namespace, name,
                     lambda: handback.hand_back_if_orphaned(namespace, deployment, known=False))  # fmt: skip


@kopf.on.event(*REPLICA_SETS, labels={canary_sets.LABEL: kopf.PRESENT})
async def on_canary_replica_set(
    namespace: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A canary's ReplicaSet has more pods ready: a grace later, its Rollout is woken if its
    canary Deployment does not say so yet (`parachute.canary_sets`)."""
    ready = canary_sets.READY.rose(body, deleted=kwargs.get("type") == "DELETED")
    target = canary_sets.target_of(body)
    if ready is None or not namespace or target is None:
        return
    name = body.get("metadata", {}).get("name") or ""
    asyncio.get_running_loop().call_later(
        canary_sets.GRACE, functools.partial(_wake_if_canary_behind, memo, namespace, name, target, ready)
    )


def _wake_if_canary_behind(memo: kopf.Memo, namespace: str, name: str, target: str, ready: int) -> None:
    if canary_sets.READY.ready(namespace, name) < ready:
        return  # fewer since (the canary scaled down or retired): its Deployment's event says that
    if canary_sets.caught_up(watched.DEPLOYMENTS.get(namespace, canary_name(target)), ready):
        return  # its event said so, and woke the Rollout if that was news
    listings.REPLICA_SETS.drop((namespace, target))  # a kept listing would not show these pods
    index: RolloutIndex = memo.index
    for rollout in index.by_target(namespace, target):
        if _serves(memo, (namespace, rollout)):
            memo.scheduler.wake((namespace, rollout), woken=Woken.REPLICA_SET)


@kopf.on.event("", "v1", "configmaps")
async def on_config_map(
    namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A tracked ConfigMap changed: wake the Rollouts that track it. A routing record wakes its
    Rollout (one that routes no longer gives its route back), and one whose Rollout is gone
    (deleted while the operator was away) has its route given back."""
    index: RolloutIndex = memo.index
    for rollout in index.by_config(namespace or "", name):
        _wake_tracking(memo, (namespace or "", rollout))
    plain = dict(body)
    record.KNOWN.seen(plain, gone=kwargs.get("type") == "DELETED")
    found = record.parse(plain) if namespace and record.is_record(plain) else None
    if found is not None and kwargs.get("type") != "DELETED":
        _wake_tracking(memo, (found.namespace, found.rollout))
        await _give_back_route(memo, found.namespace, found.rollout)


@kopf.on.event(api.GROUP, api.VERSION, "releasepolicies")
async def on_release_policy(name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A policy changed: the Rollouts it applies to look again (a fixed policy ends `Invalid`)."""
    index: RolloutIndex = memo.index
    keys = index.by_policy(name)
    if name == os.environ.get(DEFAULT_POLICY_ENV):
        keys += index.by_policy("")
    for key in keys:
        _wake_tracking(memo, key)


EVENTS = ("", "v1", "events")


def watch_user_reports(settings: kopf.OperatorSettings) -> None:
    """With the reports endpoint on: watch the Events that record user reports, and only those
    (the label selector is applied by the API server, so no other Event reaches the operator)."""
    settings.watching.label_selectors[EVENTS] = report_events.LABEL
    kopf.on.event(*EVENTS, labels={report_events.LABEL: kopf.PRESENT})(on_user_report)


async def on_user_report(*, type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A user report was recorded, by this replica or another: its Rollout counts it now, ahead
    of routine work (a critical count rolls back without waiting for the next round)."""
    involved = body.get("involvedObject") or {}
    if type == "DELETED" or body.get("reason") != report_events.REASON or involved.get("kind") != api.KIND:
        return
    key: Key = (involved.get("namespace") or "", involved.get("name") or "")
    if _serves(memo, key):
        user_reports.arrived(key, clock.now())
        # A new report is urgent; the watch's (re)listing of older ones is not.
        memo.scheduler.wake(key, urgent=type == "ADDED", woken=Woken.REPORT)
