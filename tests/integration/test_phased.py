"""A phased release on the real cluster, with traffic that follows the route (issue #17): the
audience, the requests with the header `x-employee: true`, reaches the new version at its stage
while everyone else stays on stable, then everyone does; and a failing new version is rolled
back at the audience's stage with the audience's rule removed before the canary's pods go.

The load generator sends a quarter of its requests with the audience's header, and each
request names its group in the testbed's `x-testbed-audience` header; the data plane sends it
where the router's objects say, header matches honoured as the proxies do, and each app counts
what it served by group. So who got the new version is what Prometheus counted from the pods
that run its image, never Parachute's status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.dataplane import AUDIENCE_COUNTER, AUDIENCE_HEADER
from testbed.demoapp import Behaviour
from testbed.routes import audience_rule
from tests.integration.conftest import Cluster, assert_never_refused, eventually
from tests.integration.routed import ENOUGH, RATE, SETUPS, Routed, Sampler, Setup

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

MEASURE = 10  # seconds of requests counted per stage
AUDIENCE = "header x-employee: true"
INTERNAL = {"name": "internal", "header": {"name": "x-employee", "value": "true"}}
# A quarter of the requests are the audience's, each group named for the apps' count.
MIX = (({"x-employee": "true", AUDIENCE_HEADER: "internal"}, 1), ({AUDIENCE_HEADER: "everyone"}, 3))


class Phased(Routed):
    mix = MIX
    rule_name = None  # the audience's rule is taken by Gateway API's precedence, as a gateway does

    def audience_held(self) -> bool:
        """Whether the route's objects (read by the data plane's watch) send the audience anywhere
        of Parachute's: its rule in the HTTPRoute or VirtualService, its annotations on the canary
        Ingress."""
        if self.setup.backend == "nginx":
            canary = self.plane.object("ingresses", "shop-canary") or {}
            annotations = (canary.get("metadata") or {}).get("annotations") or {}
            return any("canary-by-" in key for key in annotations)
        kind, key = (
            ("httproutes", "rules") if self.setup.backend == "gatewayAPI" else ("virtualservices", "http")
        )
        route = self.plane.object(kind, "checkout") or {}
        return any(audience_rule(r) for r in (route.get("spec") or {}).get(key) or [])

    def counted_on_canary(self) -> bool:
        """Whether Prometheus has the canary's pods' count of the audience's requests (it finds a
        new pod within about five seconds): until then a window would miss some of them."""
        query = f'{AUDIENCE_COUNTER}{{namespace="{self.namespace}",audience="internal",pod=~"checkout-canary-.*"}}'
        return bool(self.prometheus.query(query))

    def new_share_by_group(self, seconds: int) -> dict[str, tuple[float, float]]:
        """Each group's share of requests the new version served over the next `seconds`, and how
        many requests the group sent, as Prometheus counted them from the pods."""
        time.sleep(1)  # the data plane has seen the route's change: the window starts after it
        time.sleep(seconds + 1)  # and ends after a scrape of every pod
        result = self.prometheus.query(
            f"sum by (pod_template_hash, audience) "
            f'(increase({AUDIENCE_COUNTER}{{namespace="{self.namespace}"}}[{seconds}s]))'
        )
        new = self.new_hashes()
        out = {}
        for group in ("internal", "everyone"):
            counted = [(r["metric"].get("pod_template_hash"), float(r["value"][1]))
                       for r in result if r["metric"].get("audience") == group]  # fmt: skip
            total = sum(v for _, v in counted)
            share = 100 * sum(v for h, v in counted if h in new) / total if total else float("nan")
            out[group] = (share, total)
        return out


PHASED_SETUPS = [s for s in SETUPS if s.id in ("gateway-api", "nginx")]


@pytest.fixture(params=PHASED_SETUPS, ids=[s.id for s in PHASED_SETUPS])
def setup(request: pytest.FixtureRequest) -> Setup:
    chosen: Setup = request.param
    return chosen


def world(cluster: Cluster, namespace: str, workdir: Path, setup: Setup, new: Behaviour) -> Iterator[Phased]:
    started = Phased(cluster, namespace, workdir, setup, new)
    yield started
    started.stop()
    assert_never_refused(started.operator)


@pytest.fixture
def healthy(crds: Cluster, namespace: str, tmp_path: Path, setup: Setup) -> Iterator[Phased]:
    yield from world(crds, namespace, tmp_path, setup, Behaviour(latency_ms=5))


@pytest.fixture
def failing(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Phased]:
    gateway = next(s for s in SETUPS if s.id == "gateway-api")
    yield from world(crds, namespace, tmp_path, gateway, Behaviour(error_rate=0.3, latency_ms=5))


def reached(world: Phased, stage: str) -> dict[str, Any]:
    found: dict[str, Any] = eventually(
        lambda: (s := world.status()).get("stage") == stage and "watching" in (s.get("message") or "") and s,
        timeout=90, interval=0.2, what=f"stage {stage} reached",
    )  # fmt: skip
    return found


def test_the_audience_gets_the_new_version_first_then_everyone(healthy: Phased) -> None:
    world = healthy
    hold = f"{MEASURE + 20}s"  # each stage is held past its measurement (and its pods counted) once reached
    world.adopt(strategy="phased", phased={"audiences": [{**INTERNAL, "minWait": hold},
                                                         {"name": "everyone", "minWait": hold}]})  # fmt: skip
    unrouted = world.load.unrouted
    started = time.monotonic()
    world.apply_new_image()

    status = reached(world, "1/2")
    assert status["message"].startswith(f"stage 1/2 (internal) for {AUDIENCE}: watching until")
    traffic = status["traffic"]
    assert traffic["verified"] and traffic["applied"] == 0 and traffic["appliedAudience"] == AUDIENCE
    eventually(world.counted_on_canary, timeout=15, what="the canary's pods counted by Prometheus")
    shares = world.new_share_by_group(MEASURE)
    print(f"{world.setup.id} stage 1/2: {shares}")
    (internal, asked), (everyone, rest) = shares["internal"], shares["everyone"]
    assert asked >= ENOUGH * RATE * MEASURE / 4 and rest >= ENOUGH * RATE * MEASURE * 3 / 4
    assert internal == pytest.approx(100) and everyone == 0, (
        shares
    )  # the audience on the new version, no one else

    status = reached(world, "2/2")
    assert status["traffic"]["applied"] == 0 and status["traffic"].get("appliedAudience") is None
    shares = world.new_share_by_group(MEASURE)
    print(f"{world.setup.id} stage 2/2: {shares}")
    assert shares["internal"][0] == pytest.approx(100) and shares["everyone"][0] == pytest.approx(100), shares
    eventually(
        lambda: (s := world.status()).get("phase") == "Healthy"
        and (s.get("release") or {}).get("stableRevision") == (s.get("release") or {}).get("revision"),
        timeout=60, what="released",
    )  # fmt: skip
    eventually(
        lambda: world.cluster.apps.read_namespaced_deployment("checkout-canary", world.namespace).spec.replicas
        == 0,
        timeout=30, what="the canary retired",
    )  # fmt: skip
    assert not world.audience_held()
    assert world.load.unrouted == unrouted, f"requests found no backend: {world.misses_since(started)}"


def test_a_failing_audience_stage_is_rolled_back_with_the_audience_rule_removed_first(
    failing: Phased,
) -> None:
    world = failing
    analysis = {"prometheus": {"address": world.prometheus.url}, "interval": "2s", "source": "app",
                "metrics": [{"template": "error-rate"}]}  # fmt: skip
    world.adopt(strategy="phased", analysis=analysis,
                phased={"audiences": [{**INTERNAL, "minWait": "3m"}, {"name": "everyone"}]})  # fmt: skip
    unrouted = world.load.unrouted
    held = Sampler(lambda: (int(world.audience_held()), world.canary_weight_and_replicas()[1])).start()
    try:
        world.apply_new_image()
        eventually(lambda: world.status().get("phase") == "RolledBack", timeout=120, interval=0.5,
                   what="rolled back")  # fmt: skip
        # The canary is asked to shrink once the route reads back no audience; a busy machine may
        # record the rollback before the sampler sees it, so wait for the sampler's own record.
        eventually(
            lambda: bool(held.samples) and held.samples[-1][2] == 0, timeout=60, what="the canary shrunk"
        )
    finally:
        held.stop()
    status = world.status()
    level = status["incidents"][-1]["levels"][-1]
    assert level["level"] == "code" and level.get("trafficBackAt"), level
    assert status["traffic"]["applied"] == 0 and status["traffic"].get("appliedAudience") is None
    assert not world.audience_held()
    shares = world.new_share_by_group(6)
    assert shares["internal"][1] > 0 and shares["internal"][0] == 0, shares  # the audience is back on stable
    assert shares["everyone"][0] == 0, shares
    # The audience's rule went before the canary was asked to shrink, never after.
    samples = held.samples
    sent = [t for t, audience, _ in samples if audience]
    assert sent, "the audience was never sent to the canary"
    shrunk = [t for t, _, replicas in samples if replicas == 0 and t > sent[0]]
    assert shrunk and max(sent) < min(shrunk)
    assert world.load.unrouted == unrouted
