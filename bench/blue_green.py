"""Blue/green's switch back: the time from a failed verdict after the switch to the active
Service's EndpointSlices listing only the old version's pods, which is what a client (kube-proxy,
a mesh, the testbed's data plane) sends to.

The new copy is healthy on preview and is switched to; once the active Service's endpoints are
the copy's alone it starts failing 30% of the requests it serves. The clock starts when the
Rollout is seen `RollingBack` (the reconcile that reads the Failed verdict writes it, then the
selector) and stops when the EndpointSlices of the active Service, read from the API server,
list ready endpoints and every one is a pod of the old version. What lies between is the
operator's write of the selector and the EndpointSlice controller's rewrite of the slices (it
batches changes); the moment the selector was read back is printed beside it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from testbed.cluster import LocalCluster
from testbed.dataplane import App, DataPlane
from testbed.demoapp import Behaviour
from testbed.loadgen import LoadGenerator
from testbed.prometheus import PodDiscovery, PodPrometheus

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
NAMESPACE = "bench-blue-green"
OLD = "bench:1"
HEALTHY, FAILING = Behaviour(latency_ms=10), Behaviour(error_rate=0.3, latency_ms=10)
# The judged version's share of 5xx (the copy's pods while it is judged).
ERRORS = {
    "name": "errors",
    "query": '(sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{pods}}",code=~"5.."}[{{window}}]))'
    ' or vector(0)) / sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{pods}}"}[{{window}}]))',
    "warning": "5%",
    "critical": "10%",
    "rollbackAt": "20%",
}
Figure = Callable[..., None]


class ActiveService:
    """What the active Service leads to, read from the API server as a client's proxy reads it."""

    def __init__(self, core: client.CoreV1Api, discovery: client.DiscoveryV1Api, name: str) -> None:
        self.core, self.discovery, self.name = core, discovery, name

    def images(self) -> set[str]:
        """The images of the pods behind the Service's ready endpoints (empty: none ready)."""
        slices = self.discovery.list_namespaced_endpoint_slice(
            NAMESPACE, label_selector=f"kubernetes.io/service-name={self.name}"
        ).items
        addresses = {
            address
            for endpoint_slice in slices
            for endpoint in endpoint_slice.endpoints or []
            if not (endpoint.conditions and endpoint.conditions.ready is False)
            for address in endpoint.addresses or []
        }
        pods = self.core.list_namespaced_pod(NAMESPACE).items
        by_ip = {p.status.pod_ip: p.spec.containers[0].image for p in pods if p.status.pod_ip}
        return {by_ip.get(address, "unknown") for address in addresses}

    def selector(self) -> dict[str, str]:
        return dict(self.core.read_namespaced_service(self.name, NAMESPACE).spec.selector or {})


def bench_blue_green(
    cluster: LocalCluster, operator: Callable[[str], Any], workdir: Path, figure: Figure, runs: int = 3
) -> None:
    api = cluster.api_client()
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    active = ActiveService(core, client.DiscoveryV1Api(api), "checkout")
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    images = [f"bench:{run + 2}" for run in range(runs)]
    plane = DataPlane(api, NAMESPACE, {image: App(HEALTHY) for image in images}, default=App(HEALTHY)).start()
    labels = {"app": "checkout"}
    core.create_namespaced_service(NAMESPACE, {"metadata": {"name": "checkout"}, "spec": {
        "selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})  # fmt: skip
    apps.create_namespaced_deployment(NAMESPACE, {"metadata": {"name": "checkout", "labels": labels}, "spec": {
        "replicas": 4, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": OLD}]}}}})  # fmt: skip
    prometheus = PodPrometheus(
        workdir / "prometheus-blue-green", PodDiscovery(cluster.admin_kubeconfig, (NAMESPACE,))
    ).start()
    # Production through the active Service, and testers through the preview one (the copy is
    # judged on preview before the switch, and needs requests for that).
    loads = [
        LoadGenerator(rate=60, duration=900, picker=plane.service_picker("checkout")).start(),
        LoadGenerator(rate=20, duration=900, picker=plane.service_picker("checkout-preview")).start(),
    ]
    running = operator("operator-blue-green.log")
    back: list[float] = []
    selector_back: list[float] = []
    try:
        prometheus.wait_for_value(
            f'sum(increase(http_requests_total{{namespace="{NAMESPACE}",app="checkout"}}[2s]))', 60
        )
        spec = {
            "targetRef": {"name": "checkout"},
            "strategy": "blueGreen",
            "blueGreen": {"activeService": "checkout", "previewWait": "4s", "scaleDownDelay": "5m"},
            "analysis": {"prometheus": {"address": prometheus.url}, "interval": "2s", "metrics": [ERRORS]},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Rollout", "metadata": {"name": "checkout"}, "spec": spec})  # fmt: skip

        def status() -> dict[str, Any]:
            found = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "checkout")
            return dict(found.get("status") or {})

        _until(lambda: status().get("phase") == "Healthy" and "pod-template-hash" in active.selector(), 60)
        pinned = active.selector()
        _until(lambda: active.images() == {OLD}, 30)
        for image in images:
            apps.patch_namespaced_deployment("checkout", NAMESPACE, {"spec": {"template": {"spec": {
                "containers": [{"name": "app", "image": image}]}}}})  # fmt: skip
            # Switched, and every client sees it: the active Service's endpoints are the copy's.
            _until(lambda: active.images() == {image}, 180, interval=0.1)  # noqa: B023 (called here)
            plane.set_app(image, FAILING)
            failed_at = _until(lambda: status().get("phase") == "RollingBack", 120, interval=0.02)
            endpoints_at, selector_at = switched_back(active, pinned, failed_at)
            back.append(endpoints_at - failed_at)
            selector_back.append(selector_at - failed_at)
            _until(lambda: status().get("phase") == "RolledBack", 120)  # the next image starts anew
            incident = (status().get("incidents") or [{}])[-1]
            print(f"  run {len(back)}: endpoints {back[-1]:.2f} s (selector {selector_back[-1]:.2f} s); "
                  f"recovered by the {incident.get('level')} level in {incident.get('recoverySeconds')} s "
                  "from the first critical verdict", flush=True)  # fmt: skip
        figure("blue/green: failed verdict to old pods, median", f"{statistics.median(back):.2f} s",
               f"{runs} switch backs: RollingBack seen to the active Service's EndpointSlices "
               "listing only old-version pods")  # fmt: skip
        figure("blue/green: failed verdict to old pods, max", f"{max(back):.2f} s")
        figure("blue/green: failed verdict to selector back, median", f"{statistics.median(selector_back):.2f} s",
               f"max {max(selector_back):.2f} s: the Service's selector read back pinned to stable")  # fmt: skip
    finally:
        running.stop()
        for load in loads:
            load.stop()
        prometheus.stop()
        plane.stop()


def switched_back(active: ActiveService, pinned: dict[str, str], since: float) -> tuple[float, float]:
    """When the active Service's EndpointSlices listed only old pods, and when its selector was
    read back pinned to stable (each the moment its read came back), polled from one loop."""
    selector_at: float | None = None
    while True:
        if selector_at is None and active.selector() == pinned:
            selector_at = time.monotonic()
        old_only = active.images() == {OLD}
        now = time.monotonic()
        if old_only:
            return now, selector_at if selector_at is not None else now
        if now - since > 60:
            raise TimeoutError("the active Service's endpoints not back on the old pods within 60s")
        time.sleep(0.01)


def _until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    """The monotonic moment `check` first held; raises after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except client.ApiException:
            pass
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout}s: {check}")
