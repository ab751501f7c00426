"""The testbed's data plane on the real cluster: traffic goes where the Service's EndpointSlices
say, each kwok pod serves as one app endpoint, and a Prometheus that discovers pods as a
cluster's does counts what routing really did, under the pods' own names and labels."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.dataplane import App, DataPlane
from testbed.demoapp import Behaviour, FlagSource
from testbed.loadgen import LoadGenerator
from testbed.prometheus import PodDiscovery, PodPrometheus
from tests.integration.conftest import Cluster, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

CANARY_ERROR_RATE = 0.1
APPS = {
    "checkout:1.0": Behaviour(latency_ms=5),
    "checkout:2.0": Behaviour(error_rate=CANARY_ERROR_RATE, latency_ms=5),
    "checkout:3.0": App(Behaviour(latency_ms=5), code_label="status"),
}


def deployment(name: str, replicas: int, image: str, canary: bool = False) -> dict[str, Any]:
    """Pods labelled `app: checkout`, as the target and Parachute's canary copy are."""
    labels = {"app": "checkout", "track": "canary" if canary else "stable"}
    pod_labels = {**labels, **({"parachute.dev/canary": "true"} if canary else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": pod_labels}, "spec": {"containers": [{"name": "app", "image": image}]}},
        },
    }  # fmt: skip


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "checkout"},
    "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]},
}


@pytest.fixture
def plane(cluster: Cluster, namespace: str) -> Iterator[DataPlane]:
    running = DataPlane(cluster.api, namespace, APPS).start()
    yield running
    running.stop()


@pytest.fixture
def prometheus(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[PodPrometheus]:
    discovery = PodDiscovery(cluster.kubeconfig, (namespace,))
    server = PodPrometheus(tmp_path / "prometheus", discovery).start()
    yield server
    server.stop()


def pod_names(cluster: Cluster, namespace: str, track: str | None = None) -> set[str]:
    selector = "app=checkout" + (f",track={track}" if track else "")
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
    return {p.metadata.name for p in pods if p.metadata.deletion_timestamp is None}


def scraped_pods(prometheus: PodPrometheus) -> set[str]:
    """Pods among Prometheus's active targets that it has scraped successfully."""
    return {t["labels"]["pod"] for t in prometheus.active_targets() if t["health"] == "up"}


def settled(cluster: Cluster, namespace: str, plane: DataPlane, prometheus: PodPrometheus, pods: int) -> None:
    """Wait until `pods` pods are ready endpoints of the Service and all are scraped."""

    def ready() -> bool:
        names = pod_names(cluster, namespace)
        return (
            len(names) == pods
            and len(plane.service_endpoints("checkout")) == pods
            and scraped_pods(prometheus) == names
        )

    eventually(ready, timeout=60, what=f"{pods} ready endpoints, each scraped")


def counts(prometheus: PodPrometheus, namespace: str, by: str) -> dict[str, float]:
    result = prometheus.query(f'sum by ({by}) (http_requests_total{{namespace="{namespace}"}})')
    return {r["metric"].get(by, ""): float(r["value"][1]) for r in result}


def send(prometheus: PodPrometheus, namespace: str, plane: DataPlane, seconds: float) -> dict[str, float]:
    """Requests through the Service for `seconds`; what Prometheus counted, by the pods' track."""
    before = counts(prometheus, namespace, "track")
    load = LoadGenerator(rate=150, duration=seconds, picker=plane.service_picker("checkout")).start()
    time.sleep(seconds + 0.5)
    load.stop()
    time.sleep(3)  # every endpoint scraped again after its last request
    after = counts(prometheus, namespace, "track")
    counted = {v: after.get(v, 0.0) - before.get(v, 0.0) for v in ("stable", "canary")}
    assert load.unrouted == 0
    assert 0.98 * load.sent <= sum(counted.values()) <= load.sent  # only queued requests are cancelled
    return counted


def canary_share(counted: dict[str, float]) -> float:
    return 100 * counted["canary"] / (counted["canary"] + counted["stable"])


def test_traffic_follows_the_ready_endpoints_and_prometheus_counts_it_by_pod(
    cluster: Cluster, namespace: str, plane: DataPlane, prometheus: PodPrometheus
) -> None:
    cluster.core.create_namespaced_service(namespace, SERVICE)
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", 3, "checkout:1.0"))
    cluster.apps.create_namespaced_deployment(
        namespace, deployment("checkout-canary", 1, "checkout:2.0", canary=True)
    )
    settled(cluster, namespace, plane, prometheus, pods=4)

    assert canary_share(send(prometheus, namespace, plane, 20)) == pytest.approx(25, abs=3)

    # Every series carries what discovery found: the namespace, the pod and the pod's labels.
    series = prometheus.query(f'http_requests_total{{namespace="{namespace}",code="200"}}')
    labels = {s["metric"]["pod"]: s["metric"] for s in series}
    assert set(labels) == pod_names(cluster, namespace)
    for pod, metric in labels.items():
        canary = pod in pod_names(cluster, namespace, "canary")
        assert metric["app"] == "checkout" and metric["pod_template_hash"] in pod
        assert metric["track"] == ("canary" if canary else "stable")
        assert metric.get("parachute_dev_canary") == ("true" if canary else None)
        assert "version" not in metric  # the app does not know which version it is

    # The failing image's errors are its pod's own.
    served = counts(prometheus, namespace, "pod")
    failing = prometheus.query(
        f'sum by (pod) (http_requests_total{{namespace="{namespace}",code="500"}}) > 0'
    )
    assert {r["metric"]["pod"] for r in failing} == pod_names(cluster, namespace, "canary")
    (canary_pod,) = pod_names(cluster, namespace, "canary")
    assert float(failing[0]["value"][1]) / served[canary_pod] == pytest.approx(CANARY_ERROR_RATE, abs=0.01)

    # Scaling the canary moves the share: three of six ready endpoints.
    cluster.apps.patch_namespaced_deployment_scale("checkout-canary", namespace, {"spec": {"replicas": 3}})
    settled(cluster, namespace, plane, prometheus, pods=6)
    assert canary_share(send(prometheus, namespace, plane, 20)) == pytest.approx(50, abs=3)


def test_pods_that_come_and_go_appear_and_vanish_as_targets(
    cluster: Cluster, namespace: str, plane: DataPlane, prometheus: PodPrometheus, tmp_path: Path
) -> None:
    cluster.core.create_namespaced_service(namespace, SERVICE)
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", 2, "checkout:3.0"))
    settled(cluster, namespace, plane, prometheus, pods=2)
    send(prometheus, namespace, plane, 2)  # a code's series appears with its first request
    # This image's app names its status code label `status`.
    assert prometheus.query(f'http_requests_total{{namespace="{namespace}",status="200"}}')
    assert not prometheus.query(f'http_requests_total{{namespace="{namespace}",code="200"}}')

    gone = sorted(pod_names(cluster, namespace))[0]
    endpoint = plane.endpoint(gone)
    assert endpoint is not None
    cluster.core.delete_namespaced_pod(gone, namespace)
    eventually(lambda: gone not in {t["labels"]["pod"] for t in prometheus.active_targets()}, timeout=30,
               what="the deleted pod's target gone")  # fmt: skip
    assert plane.endpoint(gone) is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(endpoint.url, timeout=2)
    settled(cluster, namespace, plane, prometheus, pods=2)  # its replacement is discovered
    assert gone not in scraped_pods(prometheus)

    # A test may change what an image does while its pods run: here, fail while a flag is on.
    flags = tmp_path / "flags"
    flags.write_text("new-code-path=true")
    failing = Behaviour(error_rate=1.0, latency_ms=0)
    plane.set_app(
        "checkout:3.0",
        App(code_label="status", flag=FlagSource(flags, "new-code-path"), when_flag_on=failing),
    )
    survivor = plane.endpoint(sorted(pod_names(cluster, namespace))[0])
    assert survivor is not None
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(survivor.url, timeout=5)
    assert failure.value.code == 500
    failure.value.close()
    flags.write_text("new-code-path=false")
    with urllib.request.urlopen(survivor.url, timeout=5) as response:
        assert response.status == 200
