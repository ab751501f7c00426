"""A Deployment `checkout` whose two versions are the demo app, measured by a real Prometheus
while a load generator calls it: the world of the analysis and recovery tests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from testbed.demoapp import DemoApp
from testbed.loadgen import LoadGenerator
from testbed.prometheus import LocalPrometheus, ScrapeTarget, WebConfig
from tests.integration.conftest import (
    Cluster,
    deployment,
    event_reasons,
    eventually,
    rollout,
    rollout_status,
)

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
INTERVAL = "3s"


class Analysed:
    """A Deployment `checkout` whose two versions are the demo app, measured by Prometheus."""

    def __init__(self, cluster: Cluster, namespace: str, workdir: Path, web: WebConfig | None = None) -> None:
        self.cluster, self.namespace = cluster, namespace
        # With `web` (TLS, basic auth), the fields of spec.analysis.prometheus that reach it.
        self.prometheus_access: dict[str, Any] = {}
        self.app = DemoApp().start()
        self.canary_share = 60.0
        # With `follow_weight`, the canary gets the share the Rollout gives it, as a router would.
        self.follow_weight = False
        self._weight = 0.0
        self._stopped = threading.Event()
        self.load = LoadGenerator(self.app.stable.url, self.app.canary.url, rate=150,
                                  canary_percent=self.share, duration=600).start()  # fmt: skip
        labels = {"namespace": namespace, "app": "checkout"}
        targets = [
            ScrapeTarget("checkout", f"127.0.0.1:{v.port}", labels) for v in self.app.versions.values()
        ]
        self.prometheus = LocalPrometheus(workdir / "prometheus", targets, web=web).start()
        # A Prometheus that has just started has too few samples for a 3s window yet.
        self.prometheus.wait_for_value(
            f'sum(increase(http_requests_total{{app="checkout"}}[{INTERVAL}]))', 20
        )

    def share(self) -> float:
        return self._weight if self.follow_weight else self.canary_share

    def route(self) -> None:
        """Send the canary the weight the Rollout says, until stopped."""
        self.follow_weight = True

        def follow() -> None:
            while not self._stopped.wait(0.25):
                try:
                    canary = self.cluster.apps.read_namespaced_deployment("checkout-canary", self.namespace)
                    # Traffic reaches ready pods only, as it does through a Service.
                    ready = (canary.status.ready_replicas or 0) > 0 and (canary.spec.replicas or 0) > 0
                    self._weight = float(self.status().get("canaryWeight") or 0) if ready else 0.0
                except ApiException as error:
                    if error.status == 404:  # no canary Deployment: nothing to send it to
                        self._weight = 0.0
                except Exception:  # an API blip: keep the last weight
                    continue

        threading.Thread(target=follow, name="router", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        self.load.stop()
        self.prometheus.stop()
        self.app.stop()

    def release(self, metrics: list[dict[str, Any]] | None = None, spec: dict[str, Any] | None = None,
                **waits: str) -> None:  # fmt: skip
        """Adopt `checkout`, then apply a new image: the release starts."""
        self.adopt(metrics, spec, **waits)
        self.apply_image("checkout:2.0")

    def adopt(self, metrics: list[dict[str, Any]] | None = None, spec: dict[str, Any] | None = None,
              **waits: str) -> None:  # fmt: skip
        self.cluster.apps.create_namespaced_deployment(self.namespace, deployment("checkout", replicas=4))
        analysis: dict[str, Any] = {
            "prometheus": {"address": self.prometheus.url, **self.prometheus_access},
            "interval": INTERVAL,
        }
        if metrics is not None:
            analysis["metrics"] = metrics
        fields = {"risk": "medium", **(spec or {})}
        if "steps" not in fields:  # steps carry their own waits: the API refuses both
            fields["waits"] = waits or {"min": "6s", "max": "15s"}
        body = rollout("checkout", targetRef={"name": "checkout"}, analysis=analysis, **fields)
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        eventually(lambda: self.status().get("phase") == "Healthy", timeout=60, what="adopted")

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
