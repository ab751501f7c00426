"""The fast lane's race (issue #16): a canary that starts failing 10% of its requests, from its
first 5xx to traffic off the canary (its pods gone from the Service's endpoints), at analysis
intervals of 10 s, 30 s and 60 s, with the lane and without, in one run, on a Prometheus that
scrapes every second. The failure starts at a random moment of the round's cycle, as it would.

Also what the lane costs: PromQL queries per look for 1,000 analysed Rollouts, counted from the
queries it plans (no Prometheus needed).
"""

from __future__ import annotations

import functools
import random
import re
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from parachute.api import Risk, RolloutSpec
from parachute.plan import fastlane as core
from parachute.plan.metrics import definitions
from parachute.plan.sources import source_for
from parachute.plan.versions import Versions, Where, pod_pattern
from testbed.cluster import LocalCluster
from testbed.dataplane import App, DataPlane
from testbed.demoapp import Behaviour
from testbed.loadgen import LoadGenerator
from testbed.prometheus import LocalPrometheus, PodDiscovery, PodPrometheus

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
INTERVALS = (10, 30, 60)
FAILING = Behaviour(error_rate=0.1)
Figure = Callable[..., None]


def bench_lane_cost(figure: Figure, rollouts: int = 1000) -> None:
    spec = RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"}, "risk": "medium",
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}},
    })  # fmt: skip
    watched = []
    for i in range(rollouts):
        versions = Versions(Where(pod_pattern([f"app-{i}-canary-5f7b8c9d4b"]), f"app-{i}-canary"),
                            Where(pod_pattern([f"app-{i}-6d4cf56db6"]), f"app-{i}"))  # fmt: skip
        found = core.enrolment(
            namespace=f"ns-{i % 50}", name=f"app-{i}", server="prometheus", revision="r", source=source_for(spec),
            metrics=definitions(spec, {}, spec.risk or Risk.medium), versions=versions, min_requests=10,
            since=datetime(2026, 11, 24, tzinfo=UTC),
        )  # fmt: skip
        assert found is not None
        watched.append(found)
    asked = core.queries(watched, timedelta(seconds=3))
    figure(f"fast lane: PromQL queries per look, {rollouts} Rollouts", f"{len(asked)}",
           "one Prometheus, the built-ins of medium risk; at a 1 s scrape that is the queries per second")  # fmt: skip


def _race(
    cluster: LocalCluster,
    prometheus: LocalPrometheus,
    namespace: str,
    interval: int,
    rng: random.Random,
    *,
    timelines: list[tuple[str, dict[str, float]]],
    queries: Callable[[], float | None],
) -> float | None:
    """One race in its own namespace: seconds from the canary's first 5xx to its pods gone."""
    api = cluster.api_client()
    core_v1, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    plane = DataPlane(api, namespace, {"bench:2": App(Behaviour())}).start()
    core_v1.create_namespaced_service(namespace, {"metadata": {"name": "checkout"}, "spec": {
        "selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]}})  # fmt: skip
    labels = {"app": "checkout"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "checkout", "labels": labels},
        "spec": {"replicas": 4, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "bench:1"}]}}},
    })  # fmt: skip
    load = LoadGenerator(rate=100, duration=600, picker=plane.service_picker("checkout")).start()
    try:
        prometheus.wait_for_value(
            f'sum(increase(http_requests_total{{namespace="{namespace}",app="checkout"}}[2s]))', 60
        )
        analysis = {"prometheus": {"address": prometheus.url}, "interval": f"{interval}s",
                    "metrics": [{"template": "error-rate"}]}  # fmt: skip
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Rollout", "metadata": {"name": "checkout"},
                "spec": {"targetRef": {"name": "checkout"}, "analysis": analysis,
                         "steps": [{"name": "canary", "weight": 50, "minWait": "10m"}]}}  # fmt: skip
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

        def status() -> dict[str, Any]:
            found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "checkout")
            return dict(found.get("status") or {})

        if not _until(lambda: status().get("phase") == "Healthy", 60):
            return None
        image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "bench:2"}]}}}}
        apps.patch_namespaced_deployment("checkout", namespace, image)

        def judged_with_traffic() -> bool:
            metric: dict[str, Any] = next(
                (m for m in status().get("metrics") or [] if m["name"] == "error-rate"), {}
            )
            return bool(metric.get("requests"))

        # The canary serves and a round has judged it (the first may have come before its traffic).
        if not _until(judged_with_traffic, 3 * interval + 30):
            return None
        watched, asked = time.monotonic(), queries()  # the lane watches it from its first round
        time.sleep(rng.uniform(0, interval))  # anywhere in the round's cycle
        plane.set_app("bench:2", App(FAILING))
        started, wall = time.monotonic(), time.time()
        marks = _timeline(prometheus, apps, namespace, status, started=started, timeout=interval + 60)
        marks["t0"] = wall
        sent = queries()
        if asked is not None and sent is not None:
            marks["queries"], marks["watched"] = sent - asked, time.monotonic() - watched
        timelines.append((namespace, marks))
        return marks.get("gone")
    finally:
        load.stop()
        plane.stop()


# The steps from the first 5xx to traffic off the canary, in order, as the bench sees them:
# a failing sample in Prometheus, the lane's breach (the operator's log), the rollback written
# (the Rollout's phase), the canary scaled to 0, and no canary pod left ready.
STEPS = ("sample", "breach", "rollback", "scaled", "gone")


def _timeline(
    prometheus: LocalPrometheus,
    apps: client.AppsV1Api,
    namespace: str,
    status: Callable[[], dict[str, Any]],
    *,
    started: float,
    timeout: float,
) -> dict[str, float]:
    """Seconds from `started` to each step the bench can see itself, polled until the canary is gone."""
    marks: dict[str, float] = {}
    errors = f'sum(http_requests_total{{namespace="{namespace}",pod=~"checkout-canary-.*",code="500"}})'
    checks: dict[str, Callable[[], bool]] = {
        "sample": lambda: any(float(r["value"][1]) > 0 for r in prometheus.query(errors)),
        "rollback": lambda: status().get("phase") in ("RollingBack", "RolledBack"),
        "scaled": lambda: apps.read_namespaced_deployment("checkout-canary", namespace).spec.replicas == 0,
        "gone": lambda: (
            not apps.read_namespaced_deployment_status("checkout-canary", namespace).status.ready_replicas
        ),
    }
    deadline = started + timeout
    while "gone" not in marks and time.monotonic() < deadline:
        for step, check in checks.items():
            if step in marks:
                continue
            try:
                if check():
                    marks[step] = time.monotonic() - started
            except Exception:  # not there yet
                pass
        time.sleep(0.02)
    return marks


LOGGED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*fast lane: (\S+)/checkout \S+ \S+ \((\d+) of "
)


def _breaches(log: Path, timelines: list[tuple[str, dict[str, float]]]) -> None:
    """The lane's first breach of each race after its failure started, and the failed requests
    it was judged on, from the operator's log (its lines carry the local time to the millisecond)."""
    logged: dict[str, list[tuple[float, int]]] = {}
    for line in log.read_text(errors="replace").splitlines():
        found = LOGGED.match(line)
        if found:
            at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            logged.setdefault(found.group(2), []).append((at, int(found.group(3))))
    for name, marks in timelines:
        after = [(at - marks["t0"], errors) for at, errors in logged.get(name, []) if at >= marks["t0"]]
        if after:
            marks["breach"], errors = min(after)
            marks["errors"] = float(errors)


def _until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # not there yet
            pass
        time.sleep(interval)
    return False


def bench_fast_lane(
    cluster: LocalCluster,
    start_operator: Callable[[list[str], str], Any],
    workdir: Path,
    figure: Figure,
    races: int = 3,
    *,
    lanes: tuple[bool, ...] = (True, False),
    intervals: tuple[int, ...] = INTERVALS,
) -> dict[tuple[int, bool], list[float]]:
    """Every interval with the lane and without; returns the times per (interval, lane)."""
    bench_lane_cost(figure)
    core_v1 = client.CoreV1Api(cluster.api_client())
    names = {(interval, lane, i): f"lane-{'on' if lane else 'off'}-{interval}s-{i}"
             for interval in intervals for lane in lanes for i in range(races)}  # fmt: skip
    for name in names.values():
        core_v1.create_namespace({"metadata": {"name": name}})
    _until(lambda: all(core_v1.read_namespaced_service_account("default", n) for n in names.values()), 60)
    prometheus = PodPrometheus(workdir / "prometheus-lane", PodDiscovery(cluster.admin_kubeconfig,
                                                                         tuple(names.values()))).start()  # fmt: skip
    rng = random.Random(16)
    results: dict[tuple[int, bool], list[float]] = {}
    try:
        for lane in lanes:
            port = _free_port()
            log = f"operator-lane-{lane}.log"
            operator = start_operator(
                ["--metrics-port", str(port)] + ([] if lane else ["--no-fast-lane"]), log
            )
            looked: list[dict[str, float]] = []
            try:
                for interval in intervals:
                    times: list[float] = []
                    timelines: list[tuple[str, dict[str, float]]] = []
                    for i in range(races):
                        name = names[(interval, lane, i)]
                        took = _race(cluster, prometheus, name, interval, rng, timelines=timelines,
                                     queries=functools.partial(_lane_queries, port))  # fmt: skip
                        if took is not None:
                            times.append(took)
                    if lane:
                        _breaches(workdir / log, timelines)
                    results[(interval, lane)] = times
                    _report(figure, interval, lane, times, races)
                    _report_steps(figure, interval, lane, [marks for _, marks in timelines])
                    looked += [marks for _, marks in timelines if "watched" in marks]
                if lane and looked:
                    sent, watched = sum(m["queries"] for m in looked), sum(m["watched"] for m in looked)
                    figure("fast lane: PromQL queries per second, sent", f"{sent / watched:.2f}",
                           f"while a Rollout with one template is under release ({watched:.0f} s); "
                           "the target is at most one per template per cadence (1 s)")  # fmt: skip
            finally:
                operator.stop()
    finally:
        prometheus.stop()
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lane_queries(port: int) -> float | None:
    """The operator's count of the lane's PromQL queries, from its metrics endpoint."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("parachute_fast_lane_queries_total{"))  # fmt: skip
        except OSError:
            time.sleep(0.25)
    return None


def _report(figure: Figure, interval: int, lane: bool, times: list[float], races: int) -> None:
    label = f"first 5xx to canary off, {interval}s analysis, lane {'on' if lane else 'off'}"
    if not times:
        figure(label, "n/a", f"no rollback seen in {races} races")
        return
    figure(
        label,
        f"{statistics.median(times):.1f} s",
        f"p99 {_p99(times):.1f} s over {len(times)} of {races} races",
    )


def _p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _report_steps(figure: Figure, interval: int, lane: bool, timelines: list[dict[str, float]]) -> None:
    """Where the time went: the median moment of each step, from the first 5xx."""
    shown = []
    for step in STEPS:
        seen = [marks[step] for marks in timelines if step in marks]
        if seen:
            shown.append(f"{step} {statistics.median(seen):.2f}")
    errors = [marks["errors"] for marks in timelines if "errors" in marks]
    if errors:
        shown.append(f"(breach on {statistics.median(errors):g} failed requests)")
    if shown:
        figure(f"  steps, {interval}s analysis, lane {'on' if lane else 'off'}", "median s", ", ".join(shown))
