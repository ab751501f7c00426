"""A Deployment `checkout` on the testbed's data plane, called through its Service and measured
by a Prometheus that discovers its pods: the world of the analysis and recovery tests.

Each kwok pod serves as one app endpoint, behaving as its image says (`set_app`): the tests
say "checkout:2.0 fails 6% of its requests", never what a version's process does. The load
generator sends each request to a ready endpoint of the Service's EndpointSlices, so the new
version's share is what its ready pods are (Parachute's canary is a replica ratio), and
Prometheus counts what routing really did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed.dataplane import App, DataPlane
from testbed.demoapp import Behaviour
from testbed.loadgen import LoadGenerator
from testbed.prometheus import PodDiscovery, PodPrometheus, ScrapeTarget, WebConfig
from tests.integration.conftest import (
    Cluster,
    deployment,
    event_reasons,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
INTERVAL = "3s"
REPLICAS = 4
STABLE = "registry.example/checkout:1.0"  # what the Deployment runs at first
NEW = "checkout:2.0"  # what a release applies
RATE = 150  # requests per second through the Service
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "checkout"},
    # The canary's pods carry the target's labels too: one Service reaches both.
    "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]},
}


class Analysed:
    """`checkout` (4 pods of checkout:1.0 unless told) behind its Service, under load, measured
    by Prometheus."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        workdir: Path,
        web: WebConfig | None = None,
        replicas: int = REPLICAS,
        *,
        scraped: list[ScrapeTarget] | None = None,
    ) -> None:
        self.cluster, self.namespace = cluster, namespace
        # With `web` (TLS, basic auth), the fields of spec.analysis.prometheus that reach it.
        self.prometheus_access: dict[str, Any] = {}
        # Every image is healthy until a test says otherwise.
        self.plane = DataPlane(cluster.api, namespace, {STABLE: Behaviour(), NEW: Behaviour()}).start()
        cluster.core.create_namespaced_service(namespace, SERVICE)
        cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas, STABLE))
        discovery = PodDiscovery(cluster.kubeconfig, (namespace,))
        self.prometheus = PodPrometheus(workdir / "prometheus", discovery, scraped, web=web).start()
        self.load = self._callers()
        eventually(lambda: len(self.plane.service_endpoints("checkout")) == replicas, timeout=60,
                   what=f"{replicas} ready endpoints behind Service checkout")  # fmt: skip
        # Discovered, scraped, and enough samples for a window of one interval.
        self.prometheus.wait_for_value(self.requests(), timeout=60, accept=lambda served: served > 0)

    def requests(self) -> str:
        """PromQL: requests `checkout` served in the last interval."""
        return (
            f'sum(increase(http_requests_total{{namespace="{self.namespace}",app="checkout"}}[{INTERVAL}]))'
        )

    def set_app(self, image: str, app: App | Behaviour) -> None:
        """What the pods of `image` do, from now on and for every pod that starts later."""
        self.plane.set_app(image, app)

    def _callers(self) -> LoadGenerator:
        return LoadGenerator(rate=RATE, duration=600, picker=self.plane.service_picker("checkout")).start()

    def busy(self) -> None:
        """Callers send requests to the Service again."""
        self.load.stop()
        self.load = self._callers()

    def quiet(self) -> None:
        """Nobody calls `checkout` any more."""
        self.load.stop()

    def stop(self) -> None:
        self.load.stop()
        self.prometheus.stop()
        self.plane.stop()

    def release(self, metrics: list[dict[str, Any]] | None = None, spec: dict[str, Any] | None = None,
                **waits: str) -> None:  # fmt: skip
        """Adopt `checkout`, then apply a new image: the release starts."""
        self.adopt(metrics, spec, **waits)
        self.apply_image(NEW)

    def adopt(self, metrics: list[dict[str, Any]] | None = None, spec: dict[str, Any] | None = None,
              **waits: str) -> None:  # fmt: skip
        analysis: dict[str, Any] = {
            "prometheus": {"address": self.prometheus.url, **self.prometheus_access},
            "interval": INTERVAL,
        }
        if metrics is not None:
            analysis["metrics"] = metrics
        given = spec or {}
        # Steps carry their own waits; `risk: None` leaves the risk to its default.
        defaults = {
            "risk": "medium",
            **({} if "steps" in given else {"waits": waits or {"min": "6s", "max": "15s"}}),
        }
        fields = {k: v for k, v in {**defaults, **given}.items() if v is not None}
        body = rollout("checkout", targetRef={"name": "checkout"}, analysis=analysis, **fields)
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        wait_adopted(self.cluster, self.namespace)

    def apply_image(self, image: str, starts: bool = True) -> None:
        """A new image in the target's template: a release starts (unless something holds it)."""
        before = (self.status().get("release") or {}).get("startedAt")
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
        self.cluster.apps.patch_namespaced_deployment("checkout", self.namespace, patch)
        if not starts:
            return
        # Not "phase == Progressing": a bad canary may be rolled back before anyone looks.
        eventually(
            lambda: (
                (self.status().get("release") or {}).get("startedAt") not in (None, before)
                or self.status().get("phase") == "Waiting"
            ),
            timeout=30,
            what="release started",
        )

    def status(self) -> dict[str, Any]:
        return rollout_status(self.cluster, self.namespace)

    def metric(self, name: str) -> dict[str, Any]:
        return next((m for m in self.status().get("metrics") or [] if m["name"] == name), {})

    def released(self) -> bool:
        status = self.status()
        release = status.get("release") or {}
        return status.get("phase") == "Healthy" and release.get("stableRevision") == release.get("revision")

    def reasons(self) -> list[str]:
        return event_reasons(self.cluster, self.namespace)

    def messages(self, reason: str) -> list[str]:
        """The messages of the Rollout's Events with `reason`."""
        about = f"involvedObject.name=checkout,involvedObject.kind=Rollout,reason={reason}"
        events = self.cluster.core.list_namespaced_event(self.namespace, field_selector=about).items
        return [e.message or "" for e in events]
