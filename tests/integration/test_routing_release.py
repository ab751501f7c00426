"""A release through each router on the real cluster, with traffic that follows the route: the
share of requests Prometheus counted for the new version is each stage's weight (±3 points),
10 → 50 → 100; and a canary that fails is rolled back with traffic back on stable before its
pods go. The load generator reads the route's weights from the cluster (HTTPRoute backendRefs,
VirtualService destinations and DestinationRule subsets, the canary Ingress's annotation) and
sends each request to a ready endpoint of the Service (or subset) they name; Parachute's
status is never where the traffic comes from. The operator runs under a ServiceAccount granted
the core rules and that router's toggle only.

Prometheus counts every stage's share on the primary router (Gateway API); on the others each
stage is held only a few seconds and its share is what the data plane sends by the route and
the ready endpoints it reads from the cluster, computed exactly (the same data plane whose
requests Prometheus counts). Every router's rollback is counted by Prometheus: the failing
version's errors reach analysis only through the route, and none reach it once rolled back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.demoapp import Behaviour
from tests.integration.conftest import Cluster, assert_never_refused, eventually
from tests.integration.routed import ENOUGH, RATE, SETUPS, Routed, Setup

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

MEASURE = 12  # seconds of requests counted per stage
AFTER_ROLLBACK = 6  # seconds of requests counted once rolled back: a leak of 10% is ~60 of them


@pytest.fixture(params=SETUPS, ids=[s.id for s in SETUPS])
def setup(request: pytest.FixtureRequest) -> Setup:
    chosen: Setup = request.param
    return chosen


def started(cluster: Cluster, namespace: str, workdir: Path, setup: Setup, new: Behaviour) -> Routed:
    return Routed(cluster, namespace, workdir, setup, new)


@pytest.fixture
def healthy(crds: Cluster, namespace: str, tmp_path: Path, setup: Setup) -> Iterator[Routed]:
    world = started(crds, namespace, tmp_path, setup, Behaviour(latency_ms=5))
    yield world
    world.stop()
    assert_never_refused(world.operator)


@pytest.fixture
def failing(crds: Cluster, namespace: str, tmp_path: Path, setup: Setup) -> Iterator[Routed]:
    world = started(crds, namespace, tmp_path, setup, Behaviour(error_rate=0.3, latency_ms=5))
    yield world
    world.stop()
    assert_never_refused(world.operator)


def never_to_a_canary_without_pods(world: Routed) -> None:
    """Every sample: the route sent the canary nothing whenever its Deployment asked for no pods."""
    starved = [(w, r) for _, w, r in world.sampler.samples if w and r == 0]
    assert not starved, f"the route sent the canary traffic while it had no pods: {starved[:5]}"


def test_a_release_moves_the_new_versions_share_of_requests_stage_by_stage(healthy: Routed) -> None:
    world = healthy
    # A stage's wait runs from its start, its pods starting included, and each stage must be seen
    # watching: a stage is held well past its measurement (1 s + MEASURE + 1 s once reached).
    hold = f"{MEASURE + 12}s"
    world.adopt(steps=[{"name": "canary", "weight": 10, "minWait": hold},
                       {"name": "partial", "weight": 50, "minWait": hold},
                       {"name": "full", "weight": 100, "minWait": "10s"}])  # fmt: skip
    unrouted = world.load.unrouted  # before the Deployment's pods were ready, nothing could serve
    started = time.monotonic()
    world.apply_new_image()
    for index, weight in enumerate((10, 50, 100)):
        stage = f"{index + 1}/3"
        status = eventually(
            lambda stage=stage: (s := world.status()).get("stage") == stage and "watching" in (s.get("message") or "")
            and s,
            timeout=120, interval=0.2, what=f"stage {stage} reached",
        )  # fmt: skip
        traffic = status["traffic"]
        # Reached means read back: the stage's share for the canary, or (100%) all traffic on a
        # stable backend that now runs the new version.
        assert traffic["verified"] and traffic["applied"] == (0 if weight == 100 else weight)
        # Counted by Prometheus from the pods' own request counters: what the route really did.
        share, requests = world.new_share(MEASURE)
        assert requests >= ENOUGH * RATE * MEASURE
        print(f"{world.setup.id} stage {stage}: new version {share:.1f}% of {requests:.0f} requests")
        assert share == pytest.approx(weight, abs=3), (
            f"stage {stage}: {share:.1f}% of {requests:.0f} requests"
        )
    eventually(
        lambda: (s := world.status()).get("phase") == "Healthy"
        and (s.get("release") or {}).get("stableRevision") == (s.get("release") or {}).get("revision"),
        timeout=90, what="released",
    )  # fmt: skip
    assert (
        world.cluster.apps.read_namespaced_deployment("checkout-canary", world.namespace).spec.replicas == 0
    )
    never_to_a_canary_without_pods(world)
    assert world.load.unrouted == unrouted, (
        f"some requests found no backend to go to: {world.misses_since(started)}"
    )


def test_a_failing_canary_is_rolled_back_with_traffic_back_on_stable_first(failing: Routed) -> None:
    world = failing
    # The testbed's apps export their own request counter, not the gateway's or the mesh's.
    analysis = {"prometheus": {"address": world.prometheus.url}, "interval": "2s", "source": "app",
                "metrics": [{"template": "error-rate"}]}  # fmt: skip
    world.adopt(steps=[{"name": "canary", "weight": 10, "minWait": "3m"}, {"name": "full", "weight": 100}],
                analysis=analysis)  # fmt: skip
    unrouted = world.load.unrouted
    world.apply_new_image()
    eventually(
        lambda: world.status().get("phase") == "RolledBack", timeout=150, interval=0.5, what="rolled back"
    )
    status = world.status()
    incident = status["incidents"][-1]
    level = incident["levels"][-1]
    assert level["level"] == "code" and level.get("trafficBackAt"), level
    assert status["traffic"]["applied"] == 0 and status["traffic"]["verified"]
    share, counted = world.new_share(AFTER_ROLLBACK)
    assert counted >= ENOUGH * RATE * AFTER_ROLLBACK
    assert share == 0, f"{share:.1f}% of the requests still reached the failing version"
    # The route went back to stable before the canary was asked to shrink, never after.
    eventually(
        lambda: world.sampler.samples[-1][2] == 0, timeout=60, what="the sampler saw the canary shrunk"
    )
    samples = world.sampler.samples
    sent = [t for t, w, _ in samples if w]
    assert sent, "the canary never got its share"
    shrunk = [t for t, w, r in samples if r == 0 and t > sent[0]]
    assert shrunk and max(sent) < min(shrunk)
    never_to_a_canary_without_pods(world)
    assert world.load.unrouted == unrouted
