"""An application nobody here wrote, measured as a cluster measures it: the world of the
test_metrics_* tests.

`checkout` runs on the testbed's data plane: every kwok pod is an app endpoint that behaves as
its image says, exports `http_requests_total` with the status code under the label its image's
app uses (`code`, or `status`), with no version label and no series for a code it never served,
and is found by a Prometheus that discovers pods (namespace, pod and pod labels, nothing else).
Callers reach it through its Service, so the canary's share is what its ready pods are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.dataplane import App, DataPlane
from testbed.loadgen import LoadGenerator
from testbed.prometheus import PodDiscovery, PodPrometheus
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
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "checkout"},
    "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]},
}


class Measured:
    """`checkout` (`replicas` pods of `image`) behind its Service, called `rate` times a second."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        workdir: Path,
        apps: Mapping[str, App],
        *,
        image: str = "checkout:1.0",
        replicas: int = 4,
        rate: float = 100.0,
    ) -> None:
        self.cluster, self.namespace, self.replicas, self.rate = cluster, namespace, replicas, rate
        self.plane = DataPlane(cluster.api, namespace, dict(apps)).start()
        cluster.core.create_namespaced_service(namespace, SERVICE)
        cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas, image))
        self.prometheus = PodPrometheus(
            workdir / "prometheus", PodDiscovery(cluster.kubeconfig, (namespace,))
        ).start()
        eventually(lambda: len(self.plane.service_endpoints("checkout")) == replicas, timeout=60,
                   what=f"{replicas} ready endpoints behind Service checkout")  # fmt: skip
        self.load = LoadGenerator(
            rate=rate, duration=900, picker=self.plane.service_picker("checkout")
        ).start()
        # Every pod discovered and scraped, with a window's worth of requests.
        self.prometheus.wait_for_value(
            f'count(sum by (pod) (increase(http_requests_total{{namespace="{namespace}"}}[{INTERVAL}])) > 0)',
            timeout=60, accept=lambda pods: pods >= replicas,
        )  # fmt: skip

    def stop(self) -> None:
        self.load.stop()
        self.prometheus.stop()
        self.plane.stop()

    def adopt(self, analysis: Mapping[str, Any] | None = None, **spec: Any) -> None:
        """A Rollout of `checkout`, judged by this Prometheus with the built-ins unless told otherwise."""
        body: dict[str, Any] = {"prometheus": {"address": self.prometheus.url}, "interval": INTERVAL,
                                **(analysis or {})}  # fmt: skip
        fields = {"risk": "medium", **spec}
        created = rollout("checkout", targetRef={"name": "checkout"}, analysis=body, **fields)
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, created)
        wait_adopted(self.cluster, self.namespace)

    def patch(self, spec: Mapping[str, Any]) -> None:
        self.cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "checkout",
                                                           {"spec": dict(spec)})  # fmt: skip

    def apply_image(self, image: str) -> None:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
        self.cluster.apps.patch_namespaced_deployment("checkout", self.namespace, patch)

    def status(self) -> dict[str, Any]:
        return rollout_status(self.cluster, self.namespace)

    def condition(self, kind: str) -> dict[str, Any]:
        return next((c for c in self.status().get("conditions") or [] if c["type"] == kind), {})

    def metric(self, name: str) -> dict[str, Any]:
        return next((m for m in self.status().get("metrics") or [] if m["name"] == name), {})

    def reasons(self) -> list[str]:
        return event_reasons(self.cluster, self.namespace)

    def released(self, before: str | None) -> bool:
        status = self.status()
        stable = (status.get("release") or {}).get("stableRevision")
        return status.get("phase") == "Healthy" and stable not in (None, before)
