"""A Deployment `checkout` behind a real route, with the testbed's data plane sending every
request where that route says, and a Prometheus that discovers the pods counting them: the
world of the routing integration tests.

One world per backend: the user's Service `checkout` and route (an HTTPRoute, a VirtualService
with or without a DestinationRule, or an Ingress; testbed/routes.py), the operator running
under a ServiceAccount granted the core rules and that router's toggle only, and a load
generator whose picker reads the route's current weights from the cluster (never Parachute's
status). The new version's share of requests is what Prometheus counted from the pods that
run its image, whatever Deployment they belong to.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from parachute.routing.client import ApiServerClient
from testbed import crds as router_crds
from testbed import routes
from testbed.dataplane import DataPlane, IngressPicker, RoutePicker, VirtualServicePicker
from testbed.demoapp import Behaviour
from testbed.install import install_operator_account
from testbed.loadgen import LoadGenerator
from testbed.prometheus import PodDiscovery, PodPrometheus
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
OLD, NEW = "checkout:1.0", "checkout:2.0"
RATE = 100  # requests per second
# Enough of RATE counted for a share to mean something; the load falls behind on a busy machine.
ENOUGH = 0.6


@dataclass(frozen=True)
class Setup:
    """One backend as a test sets it up."""

    id: str
    backend: str  # the toggle: gatewayAPI, istio, nginx
    routing: dict[str, Any]  # spec.trafficRouting
    kinds: tuple[str, ...]  # what the data plane follows; the first holds the weights
    crds: tuple[str, ...]
    route_backend: str  # its testbed.routes.Backend, which reads the weights from the raw object

    def user_objects(self, namespace: str) -> list[dict[str, Any]]:
        if self.backend == "gatewayAPI":
            return [routes.http_route(namespace, routes.gateway_parent())]
        if self.backend == "istio":
            subsets = "destinationRule" in self.routing["istio"]
            return [
                routes.virtual_service(namespace),
                *([routes.destination_rule(namespace)] if subsets else []),
            ]
        return [routes.ingress(namespace)]


# A canary sent nothing drains this long before it is scaled down: short, so the suite stays short.
DRAIN = {"scaleDownDelay": "2s"}
SETUPS = (
    Setup("gateway-api", "gatewayAPI", {"gatewayAPI": {"httpRoute": "checkout", "service": "checkout", "ruleName": "main"}, **DRAIN},
          ("httproutes",), router_crds.GATEWAY_API, "gateway-north-south"),
    Setup("istio", "istio", {"istio": {"virtualService": "checkout", "service": "checkout"}, **DRAIN},
          ("virtualservices",), router_crds.ISTIO, "istio"),
    Setup("istio-subsets", "istio",
          {"istio": {"virtualService": "checkout", "service": "checkout", "destinationRule": {"name": "checkout"}}, **DRAIN},
          ("virtualservices", "destinationrules"), router_crds.ISTIO, "istio-subsets"),
    Setup("nginx", "nginx", {"nginx": {"ingress": "shop", "service": "checkout"}, **DRAIN}, ("ingresses",), (), "nginx"),
)  # fmt: skip


class Sampler:
    """What the route sends the canary and how many canary pods are asked for, every 100 ms:
    a record of the order in which traffic and capacity moved."""

    def __init__(self, read: Callable[[], tuple[int | None, int]]) -> None:
        self.read = read
        self.samples: list[tuple[float, int | None, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                weight, replicas = self.read()
            except Exception:  # an object not there yet, or an API blip
                continue
            self.samples.append((time.monotonic(), weight, replicas))


class Routed:
    # The load's header sets and their weights (a phased release's audience and everyone else);
    # none: plain requests. The HTTPRoute rule the picker follows; None: Gateway API's precedence.
    mix: tuple[tuple[dict[str, str], int], ...] = ()
    rule_name: str | None = "main"

    def __init__(self, cluster: Cluster, namespace: str, workdir: Path, setup: Setup, new: Behaviour) -> None:
        self.cluster, self.namespace, self.setup = cluster, namespace, setup
        if setup.crds:
            router_crds.install(cluster.api, *setup.crds)
        self.client = ApiServerClient(cluster.api)
        for body in (
            routes.service(namespace),
            routes.service(namespace, routes.OTHER),
            *setup.user_objects(namespace),
        ):
            asyncio.run(self.client.create(body))
        apps = {OLD: Behaviour(latency_ms=5), NEW: new}
        self.plane = DataPlane(cluster.api, namespace, apps).start().follow(*setup.kinds)
        self.prometheus = PodPrometheus(
            workdir / "prometheus", PodDiscovery(cluster.kubeconfig, (namespace,))
        ).start()
        account = f"parachute-{setup.backend.lower()}"
        kubeconfig = install_operator_account(
            cluster.kubeconfig, workdir / "operator.kubeconfig", account=account, backends=(setup.backend,)
        )
        self.operator = RunningOperator(kubeconfig, workdir / "operator.log").start()
        self.load = LoadGenerator(rate=RATE, duration=900, picker=self.picker(), mix=self.mix).start()
        self.sampler = Sampler(self.canary_weight_and_replicas).start()

    def picker(self) -> RoutePicker | VirtualServicePicker | IngressPicker:
        plane = self.plane
        if self.setup.backend == "gatewayAPI":
            return plane.route_picker(lambda: plane.object("httproutes", "checkout") or {}, self.rule_name)
        if self.setup.backend == "istio":
            return plane.virtual_service_picker("checkout")
        return plane.ingress_picker("shop", "shop-canary")

    def canary_weight_and_replicas(self) -> tuple[int | None, int]:
        """The canary's share as the route holds it (read from the cluster), and its Deployment's size."""
        backend = next(b for b in routes.BACKENDS if b.id == self.setup.route_backend)
        where = backend.weighted(self.namespace)
        found = self.plane.object(self.setup.kinds[0], where.name)
        weight = backend.weights(found)[1] if found is not None else None
        try:
            replicas = self.cluster.apps.read_namespaced_deployment(
                "checkout-canary", self.namespace
            ).spec.replicas
        except Exception:
            replicas = 0
        return weight, int(replicas or 0)

    def misses_since(self, started: float) -> list[str]:
        """The requests that found no backend since `started`: when (seconds after it), why, and
        what the route sent the canary and how many canary pods were asked for just before."""
        out = []
        for at, why in self.load.misses:
            if at >= started:
                before = [(w, r) for t, w, r in self.sampler.samples if t <= at][-1:]
                wall = datetime.fromtimestamp(time.time() - (time.monotonic() - at), UTC)
                out.append(
                    f"{wall:%H:%M:%S.%f} (+{at - started:.2f}s): {why}; canary weight, replicas before: {before}"
                )
        return out

    def stop(self) -> None:
        self.sampler.stop()
        self.load.stop()
        self.operator.stop()
        self.prometheus.stop()
        self.plane.stop()

    # ------------------------------------------------------------------ the release

    def adopt(self, **spec: Any) -> None:
        self.cluster.apps.create_namespaced_deployment(
            self.namespace, deployment("checkout", replicas=4, image=OLD)
        )
        body = rollout("checkout", targetRef={"name": "checkout"}, trafficRouting=self.setup.routing, **spec)
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        eventually(
            lambda: self.status().get("phase") == "Healthy" and (self.status().get("traffic") or {}).get("applied") == 0,
            timeout=60, what="adopted, the route set up at 0%",
        )  # fmt: skip
        wait_adopted(self.cluster, self.namespace)
        # The Deployment's pods may still be starting: until the route reaches one, a request
        # finds no backend. The release's own requests are counted from here.
        picker = self.picker()
        eventually(
            lambda: all(picker() is not None for _ in range(50)), timeout=60, what="every request routed"
        )

    def apply_new_image(self) -> None:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": NEW}]}}}}
        self.cluster.apps.patch_namespaced_deployment("checkout", self.namespace, patch)

    def status(self) -> dict[str, Any]:
        return rollout_status(self.cluster, self.namespace)

    # ------------------------------------------------------------------ what Prometheus counted

    def new_hashes(self) -> set[str]:
        """pod-template-hashes of the ReplicaSets (target's and canary's) that run the new image."""
        sets = self.cluster.apps.list_namespaced_replica_set(self.namespace).items
        return {
            rs.metadata.labels["pod-template-hash"]
            for rs in sets
            if rs.metadata.labels and rs.spec.template.spec.containers[0].image == NEW
        }

    def new_share(self, seconds: int) -> tuple[float, float]:
        """The new version's share of the requests Prometheus counted over the next `seconds`,
        and how many.

        Every pod's count covers the same window: `increase` over it at one evaluation time.
        Two instant readings of the counters would not: each pod's value is from its own last
        scrape, so with 1 s scrapes each pod's span is a whole second longer or shorter than
        another's (±7% of a 14 s window), enough to move a 50% share by more than 3 points.
        """
        time.sleep(1)  # the data plane has seen the route's change: the window starts after it
        time.sleep(seconds + 1)  # and ends after a scrape of every pod
        result = self.prometheus.query(
            f'sum by (pod_template_hash) (increase(http_requests_total{{namespace="{self.namespace}"}}[{seconds}s]))'
        )
        counted = {r["metric"].get("pod_template_hash", ""): float(r["value"][1]) for r in result}
        new = sum(v for h, v in counted.items() if h in self.new_hashes())
        total = sum(counted.values())
        return (100 * new / total if total else float("nan")), total
