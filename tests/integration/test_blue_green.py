"""Blue/green on the traffic-following testbed (issue #17): requests go where the active and
preview Services' EndpointSlices lead, and Prometheus counts what each pod served. The new copy
runs at full size behind `checkout-preview` while `checkout` selects stable; the switch is one
write of the active Service's selector; a failure after it is one write back, by the code level.

Production's requests and the testers' (through `checkout-preview`) each name their group in
the testbed's `x-testbed-audience` header, and each app counts what it served by group, so who
got the new version is what Prometheus counted from the pods that run its image (by their
pod-template-hash), never Parachute's status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.dataplane import AUDIENCE_COUNTER, AUDIENCE_HEADER, App
from testbed.demoapp import Behaviour
from testbed.loadgen import LoadGenerator
from tests.integration.conftest import Cluster, RunningOperator, eventually, told
from tests.integration.measured import Measured

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

HEALTHY = Behaviour(latency_ms=15)
FAILING = Behaviour(error_rate=0.3, latency_ms=15)
ACTIVE_RATE, PREVIEW_RATE = 60.0, 20.0
NEW = "checkout:2.0"
MEASURE = 8  # seconds of requests counted at each point
# The judged version's share of 5xx (its pods: the copy's, then the target's once it rolled).
ERRORS = {
    "name": "errors",
    "query": '(sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{pods}}",code=~"5.."}[{{window}}]))'
    ' or vector(0)) / sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{pods}}"}[{{window}}]))',
    "warning": "5%",
    "critical": "10%",
    "rollbackAt": "20%",
}
COPY = 'pod=~"checkout-canary-.*"'
STABLE = 'pod!~"checkout-canary-.*"'


class BlueGreenWorld(Measured):
    def __init__(self, cluster: Cluster, namespace: str, workdir: Path) -> None:
        apps = {"checkout:1.0": App(HEALTHY), "checkout:2.0": App(HEALTHY)}
        super().__init__(cluster, namespace, workdir, apps, replicas=2, rate=ACTIVE_RATE)
        # Production's load again, each request naming its group for the apps' count.
        self.load.stop()
        self.load = LoadGenerator(rate=ACTIVE_RATE, duration=900, picker=self.plane.service_picker("checkout"),
                                  mix=(({AUDIENCE_HEADER: "active"}, 1),)).start()  # fmt: skip
        self.preview = LoadGenerator(rate=PREVIEW_RATE, duration=900,
                                     picker=self.plane.service_picker("checkout-preview"),
                                     mix=(({AUDIENCE_HEADER: "preview"}, 1),)).start()  # fmt: skip

    def stop(self) -> None:
        self.preview.stop()
        super().stop()

    def selector(self) -> dict[str, str]:
        service = self.cluster.core.read_namespaced_service("checkout", self.namespace)
        return dict(service.spec.selector or {})

    def served(self, pods: str) -> float:
        """Requests a second the pods served over the last 5 s, as Prometheus counts them."""
        result = self.prometheus.query(
            f'sum(rate(http_requests_total{{namespace="{self.namespace}",{pods}}}[5s])) or vector(0)'
        )
        return float(result[0]["value"][1]) if result else 0.0

    def active_images(self) -> set[str]:
        """The images behind the active Service's ready endpoints, as the data plane sees them
        (its EndpointSlices): where production's next request can go."""
        urls = set(self.plane.service_endpoints("checkout"))
        return {e.image for e in self.plane.endpoints() if e.url in urls}

    def new_hashes(self) -> set[str]:
        """pod-template-hashes of the ReplicaSets (the copy's and the target's) that run the new image."""
        sets = self.cluster.apps.list_namespaced_replica_set(self.namespace).items
        return {rs.metadata.labels["pod-template-hash"] for rs in sets
                if rs.metadata.labels and rs.spec.template.spec.containers[0].image == NEW}  # fmt: skip

    def copy_counted(self) -> bool:
        """Whether Prometheus has every pod of the copy's count (it finds a new pod within about
        five seconds): until then a window would miss some of their requests."""
        query = f'count({AUDIENCE_COUNTER}{{namespace="{self.namespace}",pod=~"checkout-canary-.*"}})'
        result = self.prometheus.query(query)
        return bool(result) and float(result[0]["value"][1]) >= self.replicas

    def new_share_by_group(self, seconds: int = MEASURE) -> dict[str, tuple[float, float]]:
        """Each group's share of requests the new version served over the next `seconds`, and how
        many requests the group sent, as Prometheus counted them from the pods (every pod's count
        over the same window: `increase` at one evaluation time)."""
        time.sleep(1)  # the data plane has seen the last change: the window starts after it
        time.sleep(seconds + 1)  # and ends after a scrape of every pod
        result = self.prometheus.query(
            f"sum by (pod_template_hash, audience) "
            f'(increase({AUDIENCE_COUNTER}{{namespace="{self.namespace}"}}[{seconds}s]))'
        )
        new = self.new_hashes()
        out = {}
        for group in ("active", "preview"):
            counted = [(r["metric"].get("pod_template_hash"), float(r["value"][1]))
                       for r in result if r["metric"].get("audience") == group]  # fmt: skip
            total = sum(v for _, v in counted)
            out[group] = (
                100 * sum(v for h, v in counted if h in new) / total if total else float("nan"),
                total,
            )
        return out

    def stage(self) -> str:
        status = self.status()
        plan, index = status.get("plan") or [], status.get("stageIndex")
        return str(plan[index]["name"]) if index is not None and index < len(plan) else ""

    def applied(self) -> Any:
        return (self.status().get("traffic") or {}).get("applied")


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[BlueGreenWorld]:
    running = BlueGreenWorld(crds, namespace, tmp_path)
    yield running
    running.stop()


def adopt(world: BlueGreenWorld, **settings: str) -> None:
    blue_green = {"activeService": "checkout", "previewWait": "9s", "scaleDownDelay": "10s", **settings}
    world.adopt({"metrics": [ERRORS]}, strategy="blueGreen", blueGreen=blue_green)
    eventually(lambda: "pod-template-hash" in world.selector(), timeout=30, what="active pinned to stable")


def test_a_release_through_preview_and_the_switch(world: BlueGreenWorld, operator: RunningOperator) -> None:
    adopt(world, previewWait="40s")  # the preview outlasts a count of its requests
    before = (world.status().get("release") or {}).get("stableRevision")
    world.apply_image(NEW)
    eventually(lambda: world.stage() == "preview" and "watching" in (world.status().get("message") or ""),
               timeout=60, what="the preview reached")  # fmt: skip
    assert "pod-template-hash" in world.selector() and world.applied() == 0
    # On preview: the copy serves only the preview's requests, stable all of the active Service's.
    eventually(lambda: abs(world.served(COPY) - PREVIEW_RATE) < 6 and abs(world.served(STABLE) - ACTIVE_RATE) < 10,
               timeout=30, what="preview traffic on the copy, active traffic on stable")  # fmt: skip
    eventually(world.copy_counted, timeout=15, what="the copy's pods counted by Prometheus")
    shares = world.new_share_by_group()
    print(f"on preview: {shares}")
    (active, sent), (preview, tested) = shares["active"], shares["preview"]
    assert sent >= 0.8 * ACTIVE_RATE * MEASURE and tested >= 0.8 * PREVIEW_RATE * MEASURE, shares
    assert preview == pytest.approx(100) and active == 0, shares  # testers on the new version, no one else
    assert world.stage() == "preview" and world.applied() == 0  # the count was of the preview alone

    eventually(lambda: world.applied() == 100, timeout=60, what="the switch")
    assert world.selector().get("parachute.dev/canary") == "true"
    assert "pod-template-hash" not in world.selector()
    eventually(lambda: world.served(STABLE) < 1 and world.served(COPY) > ACTIVE_RATE, timeout=30,
               what="every request on the copy after the switch")  # fmt: skip
    eventually(
        lambda: world.active_images() == {NEW}, timeout=15, what="the active Service's endpoints the copy's"
    )
    shares = world.new_share_by_group()
    print(f"after the switch: {shares}")
    assert shares["active"][0] == pytest.approx(100) and shares["preview"][0] == pytest.approx(100), shares

    eventually(lambda: world.released(before), timeout=120, what="checkout:2.0 released")
    assert "RollingBack" not in told(world.reasons, "Promoting", "ReleaseCompleted")
    assert "pod-template-hash" in world.selector()  # the target's pods, now running 2.0
    eventually(lambda: world.served(COPY) < 1 and world.served(STABLE) > ACTIVE_RATE - 10, timeout=30,
               what="the target serves again, the copy gone")  # fmt: skip
    shares = world.new_share_by_group()
    print(f"released: {shares}")
    assert shares["active"][0] == pytest.approx(100), shares  # the target's pods, on the new version
    assert shares["active"][1] >= 0.8 * ACTIVE_RATE * MEASURE, shares


def test_a_rollback_after_the_switch_is_one_switch_back(
    world: BlueGreenWorld, operator: RunningOperator
) -> None:
    adopt(world, scaleDownDelay="5m")
    stable_pods = {p.metadata.name for p in world.cluster.core.list_namespaced_pod(world.namespace).items}
    pinned = world.selector()
    world.apply_image(NEW)
    eventually(lambda: world.applied() == 100, timeout=90, what="the switch")
    eventually(lambda: world.served(STABLE) < 1, timeout=30, what="every request on the copy")
    eventually(
        lambda: world.active_images() == {NEW}, timeout=15, what="the active Service's endpoints the copy's"
    )
    shares = world.new_share_by_group()
    print(f"after the switch: {shares}")
    assert shares["active"][0] == pytest.approx(100), shares

    world.plane.set_app(NEW, FAILING)  # the copy fails on active traffic
    eventually(lambda: world.status().get("phase") == "RollingBack", timeout=60, what="RollingBack")
    eventually(lambda: world.selector() == pinned, timeout=10, what="the active Service switched back")
    eventually(lambda: world.served(COPY) < PREVIEW_RATE + 5 and world.served(STABLE) > ACTIVE_RATE - 10,
               timeout=30, what="active traffic back on the old pods")  # fmt: skip
    eventually(lambda: world.active_images() == {"checkout:1.0"}, timeout=15,
               what="the active Service's endpoints the old pods'")  # fmt: skip
    shares = world.new_share_by_group()
    print(f"after the switch back: {shares}")
    assert shares["active"][0] == 0 and shares["active"][1] >= 0.8 * ACTIVE_RATE * MEASURE, shares
    eventually(lambda: world.status().get("phase") == "RolledBack", timeout=90, what="RolledBack")

    incident = world.status()["incidents"][-1]
    assert incident["level"] == "code" and incident["recoverySeconds"] > 0
    assert incident["levels"][-1]["trafficBackAt"]
    told(world.reasons, "TrafficBackOnStable", "RolledBack")
    # The old pods were kept, not restarted: the switch back needed nothing to start.
    now = {p.metadata.name for p in world.cluster.core.list_namespaced_pod(world.namespace).items}
    assert {p for p in stable_pods if not p.startswith("checkout-canary")} <= now
