"""Benchmarks: `make bench` (or `python -m bench`) prints figures; nothing here asserts.

- decide: the pure planner's cost per decision.
- reconcile: one full reconcile (read, decide, write, act) against the real local API server.
- scale: the table at 100 and 1,000 Rollouts on one operator process, analysed every 30 s
  against a real Prometheus, half releasing at once, one failing canary among them: memory, CPU,
  scheduler lag, API requests and PromQL queries, times (bench/scale.py; 10,000 with
  `make bench-large`). Each N on a fresh local cluster.
- breach-to-stable: a canary failing at 6% errors, from the release's start to all traffic
  back on stable (analysis every 2 s), by the code level and by the flag level.
- flag percentage: a bad variant behind a flag on for 10% of users, from the failed verdict to
  every pod's flagd evaluator serving the off variant (bench/flag_percentage.py).
- blue/green: a copy that fails after the switch, from the failed verdict to the active
  Service's EndpointSlices listing only the old version's pods (bench/blue_green.py).
- routing, per router (Gateway API, Istio host- and subset-level, NGINX): the time from a stage
  change to its weight read back from the route (median and p99 over many stages, the canary
  at full size so no pod has to start), and from a failed verdict to the route seen sending
  everything to stable (median and max over a few rollbacks).
- queries: PromQL queries per Rollout per analysis interval (bench/queries.py).
- recovery lane: a failing Rollout's wait for a reconcile slot behind 1,000 and 10,000 others
  due at once, with the priority lane and without (bench/queue.py, in-process).
- outbox: status writes per release, a status write to the Event it owes, and a restarted
  operator sending what a killed one owed (bench/outbox.py).
- fast lane: a canary that starts failing, first 5xx to traffic off the canary at analysis
  intervals of 10, 30 and 60 s with the fast lane and without, and the lane's queries per look
  for 1,000 Rollouts (bench/fastlane.py).

Runs on the local control plane, its data plane and Prometheus from `testbed/`, in its own work
directory: the canary's pods start, are discovered by Prometheus and get their share of the
requests through the Service's endpoints, as in a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench.blue_green import bench_blue_green
from bench.fastlane import bench_fast_lane
from bench.flag_percentage import bench_flag_off
from bench.outbox import bench_outbox
from bench.queries import bench_queries
from bench.queue import bench_queue
from bench.scale import bench_scale_table
from parachute import api
from parachute.api import RolloutSpec, RolloutStatus
from parachute.plan.engine import decide
from parachute.plan.model import CanaryState, Observed, TargetState
from parachute.routing.client import ApiServerClient
from testbed import crds as router_crds
from testbed import routes
from testbed.cluster import LocalCluster
from testbed.dataplane import App, DataPlane
from testbed.demoapp import Behaviour, FlagSource
from testbed.install import install_crd, install_operator_account
from testbed.loadgen import LoadGenerator
from testbed.projector import ConfigMapVolume
from testbed.prometheus import LocalPrometheus, PodDiscovery, PodPrometheus

GROUP, VERSION, PLURAL = api.GROUP, api.VERSION, api.PLURAL


RESULTS = Path(__file__).with_name("results.md")
ROUTING_HEADING = "## Routing"
routing_rows: list[tuple[str, str, str]] = []  # what bench_routing printed, for bench/results.md


def figure(name: str, value: str, note: str = "") -> None:
    print(f"{name:<44} {value:>14}  {note}", flush=True)


def routing_figure(name: str, value: str, note: str = "") -> None:
    figure(name, value, note)
    routing_rows.append((name, value, note))


def write_routing_results(path: Path, rows: list[tuple[str, str, str]], header: str) -> None:
    """Put the routing figures in `path` as its routing section, replacing the one before and
    keeping any other section."""
    table = [f"{ROUTING_HEADING}\n", f"{header}\n", "| figure | value | note |", "|---|---:|---|"]
    table += [f"| {name} | {value} | {note} |" for name, value, note in rows]
    section = "\n".join(table) + "\n"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\n`python -m bench` writes its sections here.\n"
    )
    start = text.find(ROUTING_HEADING + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        after = text.find("\n## ", start + len(ROUTING_HEADING))
        text = text[:start] + section + (text[after:] if after >= 0 else "")
    path.write_text(text)


def bench_decide(rounds: int = 20000) -> None:
    spec = RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, "risk": "high"})
    now = datetime(2026, 11, 24, 10, tzinfo=UTC)
    observed = Observed(TargetState("rev-2", 10, True), CanaryState("rev-2", 1, 1))
    status = decide(spec, RolloutStatus(), Observed(TargetState("rev-1", 10, False)), now).status
    status = decide(spec, status, observed, now).status
    started = time.perf_counter()
    for i in range(rounds):
        decide(spec, status, observed, now + timedelta(seconds=i))
    per_call = (time.perf_counter() - started) / rounds
    figure("decide (pure planner), per decision", f"{per_call * 1e6:.0f} µs", f"{rounds} decisions")


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "bench:1"}]}}},
    }  # fmt: skip


def rollout(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Rollout", "metadata": {"name": name},
            "spec": {"targetRef": {"name": name}, **spec}}  # fmt: skip


class Operator:
    def __init__(self, kubeconfig: Path, log: Path, args: list[str] | None = None) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.process = subprocess.Popen([sys.executable, "-m", "parachute", "run", *(args or [])], env=env,
                                        stdout=log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        """SIGTERM, and SIGKILL when it has not ended in 30 s: an operator busy with 10,000
        Rollouts may not, and the cluster's own teardown comes after this."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def phases(custom: client.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return [dict(i.get("status") or {}) for i in items]


def wait(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(ApiException, IndexError):
            if predicate():
                return time.monotonic() - started
        time.sleep(0.25)
    return float("nan")


def clients(cluster: LocalCluster) -> tuple[client.CoreV1Api, client.AppsV1Api, client.CustomObjectsApi]:
    api_client = cluster.api_client()
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client), client.CustomObjectsApi(api_client)


def new_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace({"metadata": {"name": name}})
    wait(lambda: core.read_namespaced_service_account("default", name), 30)  # pods need it


async def _reconcile_many(namespace: str, name: str, rounds: int) -> list[float]:
    from parachute.kube_api import KubeClient
    from parachute.reconcile import reconcile

    cluster = KubeClient()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await reconcile(namespace, name, datetime.now(UTC), cluster)
        times.append(time.perf_counter() - started)
    return times


def bench_reconcile(cluster: LocalCluster, rounds: int = 100) -> None:
    core, apps, custom = clients(cluster)
    namespace = "bench-reconcile"
    new_namespace(core, namespace)
    apps.create_namespaced_deployment(namespace, deployment("one"))
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("one"))
    os.environ["KUBECONFIG"] = str(cluster.admin_kubeconfig)
    times = asyncio.run(_reconcile_many(namespace, "one", rounds))
    p50, p95 = statistics.median(times), sorted(times)[int(0.95 * len(times)) - 1]
    figure("reconcile (read, decide, write, act), p50", f"{p50 * 1000:.1f} ms", f"{rounds} reconciles")
    figure("reconcile, p95", f"{p95 * 1000:.1f} ms")


def bench_breach(cluster: LocalCluster, operator_kubeconfig: Path, workdir: Path, level: str) -> None:
    """A 6% canary: how long from the bad version being applied to health, by the `level` given."""
    core, apps, custom = clients(cluster)
    namespace = f"bench-breach-{level}"
    new_namespace(core, namespace)
    bad = Behaviour(error_rate=0.06)
    # The canary's pods start, are discovered (up to ~5 s) and get their share through the
    # Service: these figures include a real canary's start-up; the incident's is the operator's part.
    spec: dict[str, Any] = {"waits": {"min": "60s"}}
    new_app = App(bad)
    volume = None
    if level == "flag":  # a canary whose new path is behind a flag it re-reads, on at its stage
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "flags"}, "data": {"new-path": "true"}}
        )
        volume = ConfigMapVolume(core, namespace, "flags", workdir / f"flags-{namespace}").start()
        new_app = App(flag=FlagSource(volume.path("new-path"), "new-path"), when_flag_on=bad)
        spec = {"steps": [{"name": "canary", "weight": 10, "minWait": "60s", "flags": "on"}],
                "featureFlags": {"configMapRef": {"name": "flags"}, "flags": ["new-path"]}}  # fmt: skip
    plane = DataPlane(cluster.api_client(), namespace, {"bench:2": new_app}).start()
    core.create_namespaced_service(namespace, {"metadata": {"name": "checkout"}, "spec": {
        "selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]}})  # fmt: skip
    apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=4))
    discovery = PodDiscovery(cluster.admin_kubeconfig, (namespace,))
    prometheus = PodPrometheus(workdir / f"prometheus-{level}", discovery).start()
    load = LoadGenerator(rate=100, duration=300, picker=plane.service_picker("checkout")).start()
    operator = Operator(operator_kubeconfig, workdir / "operator-breach.log")
    try:
        prometheus.wait_for_value(
            f'sum(increase(http_requests_total{{namespace="{namespace}",app="checkout"}}[2s]))', 60
        )
        analysis = {"prometheus": {"address": prometheus.url}, "interval": "2s"}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               rollout("checkout", analysis=analysis, **spec))  # fmt: skip
        wait(lambda: phases(custom, namespace)[0].get("phase") == "Healthy", 60)
        image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "bench:2"}]}}}}
        started = time.monotonic()
        apps.patch_namespaced_deployment("checkout", namespace, image)
        recovered = wait(lambda: phases(custom, namespace)[0].get("phase") == "RolledBack", 120)
        incident = (phases(custom, namespace)[0].get("incidents") or [{}])[-1]

        def canary_gone() -> bool:
            canary = apps.read_namespaced_deployment_status("checkout-canary", namespace)
            return (canary.status.replicas or 0) == 0

        figure(f"6% errors: applied to recovered, {incident.get('level')} level", f"{recovered:.1f} s",
               f"incident says {incident.get('recoverySeconds')} s from the first critical verdict")  # fmt: skip
        if level == "code":
            wait(canary_gone, 60)
            figure("6% errors: applied to canary pods gone, code level", f"{time.monotonic() - started:.1f} s",
                   "analysis every 2 s")  # fmt: skip
    finally:
        if volume is not None:
            volume.stop()
        operator.stop()
        load.stop()
        prometheus.stop()
        plane.stop()


# Each router as the bench sets it up: spec.trafficRouting, and the testbed backend that makes
# the user's objects and reads the weights from the raw object.
ROUTERS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("Gateway API", {"gatewayAPI": {"httpRoute": "checkout", "service": "checkout", "ruleName": "main"}},
     "gateway-north-south"),
    ("Istio", {"istio": {"virtualService": "checkout", "service": "checkout"}}, "istio"),
    ("Istio subsets", {"istio": {"virtualService": "checkout", "service": "checkout",
                                 "destinationRule": {"name": "checkout"}}}, "istio-subsets"),
    ("NGINX", {"nginx": {"ingress": "shop", "service": "checkout"}}, "nginx"),
)  # fmt: skip
ROUTE_STAGES = [{"weight": w, "minWait": "1s"} for w in range(4, 100, 4)]  # 24 stage changes


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def poll_until(predicate: Any, timeout: float, interval: float = 0.05) -> float | None:
    """The monotonic time at which `predicate()` was first seen true, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiException, KeyError, IndexError, TypeError):
            if predicate():
                return time.monotonic()
        time.sleep(interval)
    return None


class RoutedBench:
    """One router's namespace: the user's Service and route, `checkout`, and an operator granted that router."""

    def __init__(
        self, cluster: LocalCluster, workdir: Path, routing: dict[str, Any], backend_id: str
    ) -> None:
        self.core, self.apps, self.custom = clients(cluster)
        self.namespace = "bench-route-" + backend_id
        new_namespace(self.core, self.namespace)
        self.backend = next(b for b in routes.BACKENDS if b.id == backend_id)
        self.routing = routing
        router_crds.install(cluster.api_client(), *router_crds.GATEWAY_API, *router_crds.ISTIO)
        self.rest = ApiServerClient(cluster.api_client())
        for body in (routes.service(self.namespace), routes.service(self.namespace, routes.OTHER),
                     *self.backend.user_objects(self.namespace, "checkout")):  # fmt: skip
            asyncio.run(self.rest.create(body))
        toggle = next(iter(routing))
        account = f"bench-{toggle.lower()}"
        kubeconfig = install_operator_account(
            cluster.admin_kubeconfig, workdir / f"{account}.kubeconfig", account=account, backends=(toggle,)
        )
        self.operator = Operator(kubeconfig, workdir / f"operator-{backend_id}.log")

    def status(self) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "checkout")
        return dict(body.get("status") or {})

    def route_weight(self) -> int | None:
        """The canary's share as the route object holds it, read from the cluster."""
        found = asyncio.run(self.rest.get(self.backend.weighted(self.namespace)))
        return self.backend.weights(found)[1] if found else None

    def stage_changes(self) -> list[float]:
        """A release through every stage: from each stage change to its weight read back."""
        self.apps.create_namespaced_deployment(self.namespace, deployment("checkout", replicas=4))
        steps = [*ROUTE_STAGES, {"weight": 100, "minWait": "1s"}]
        spec = {"steps": steps, "trafficRouting": {**self.routing, "canaryScale": "full"}}
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, rollout("checkout", **spec)
        )
        poll_until(lambda: (self.status().get("traffic") or {}).get("applied") == 0, 60)
        self.apps.patch_namespaced_deployment("checkout", self.namespace, image_patch("bench:2"))
        changed: dict[str, float] = {}
        read_back: dict[str, float] = {}
        last = f"{len(steps)}/{len(steps)}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiException):
                current = self.status()
                now, stage, traffic = time.monotonic(), current.get("stage"), current.get("traffic") or {}
                if stage:
                    changed.setdefault(stage, now)
                    weight = steps[int(stage.split("/")[0]) - 1]["weight"]
                    if weight != 100 and traffic.get("applied") == weight and traffic.get("verified"):
                        read_back.setdefault(stage, now)
                if current.get("phase") == "Healthy" and stage == last:
                    break
            time.sleep(0.05)
        # The first stage waits for the canary's pods to start: not a routing figure.
        return [read_back[s] - changed[s] for s in read_back if s in changed and not s.startswith("1/")]

    def rollbacks(self, prometheus: LocalPrometheus, count: int = 3) -> list[float]:
        """Failing releases: from the failed verdict (the phase turning RollingBack) to the route seen at 0%."""
        analysis = {
            "prometheus": {"address": prometheus.url},
            "interval": "2s",
            "source": "app",  # the testbed's apps export their own counter, not the router's
            "metrics": [{"template": "error-rate"}],
        }
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "checkout", {
            "spec": {"analysis": analysis, "steps": [{"weight": 10, "minWait": "5m"}, {"weight": 100}]}})  # fmt: skip
        times = []
        for attempt in range(count):
            self.apps.patch_namespaced_deployment(
                "checkout", self.namespace, image_patch(f"bench:{3 + attempt}")
            )
            poll_until(lambda: (self.route_weight() or 0) > 0, 120)  # the canary gets its share
            failed = poll_until(lambda: self.status().get("phase") == "RollingBack", 120)
            stable = poll_until(lambda: self.route_weight() == 0, 60) if failed else None
            if failed is not None and stable is not None:
                times.append(stable - failed)
            poll_until(lambda: self.status().get("phase") == "RolledBack", 120, interval=0.25)
        return times


def bench_routing(
    cluster: LocalCluster, workdir: Path, label: str, routing: dict[str, Any], backend_id: str
) -> None:
    """Stage changes and rollbacks through one router, timed from outside by polling every 50 ms.

    The requests go where the route says (the data plane follows it), to pods Prometheus
    discovers: the failing versions' errors reach analysis only through the route's weights.
    """
    bench = RoutedBench(cluster, workdir, routing, backend_id)
    failing = {f"bench:{3 + attempt}": App(Behaviour(error_rate=0.3)) for attempt in range(3)}
    kind = {"gatewayAPI": ("httproutes",), "istio": ("virtualservices", "destinationrules"),
            "nginx": ("ingresses",)}[next(iter(routing))]  # fmt: skip
    plane = DataPlane(cluster.api_client(), bench.namespace, failing).start().follow(*kind)
    if "gatewayAPI" in routing:
        picker: Any = plane.route_picker(lambda: plane.object("httproutes", "checkout") or {}, "main")
    elif "istio" in routing:
        picker = plane.virtual_service_picker("checkout")
    else:
        picker = plane.ingress_picker("shop", "shop-canary")
    load = LoadGenerator(rate=60, duration=900, picker=picker).start()
    prometheus = PodPrometheus(
        workdir / f"prometheus-{backend_id}", PodDiscovery(cluster.admin_kubeconfig, (bench.namespace,))
    ).start()
    try:
        times = bench.stage_changes()
        if times:
            routing_figure(f"route {label}: stage change to weight read back, p50", f"{statistics.median(times):.2f} s",
                           f"{len(times)} stage changes, canary at full size")  # fmt: skip
            routing_figure(
                f"route {label}: stage change to weight read back, p99", f"{percentile(times, 0.99):.2f} s"
            )
        else:
            routing_figure(
                f"route {label}: stage change to weight read back", "n/a", "no weight read back in time"
            )
        prometheus.wait_for_value(
            f'sum(increase(http_requests_total{{namespace="{bench.namespace}",app="checkout"}}[2s]))', 60
        )
        rollbacks = bench.rollbacks(prometheus)
        if rollbacks:
            routing_figure(f"route {label}: failed verdict to 100% stable, p50", f"{statistics.median(rollbacks):.2f} s",
                           f"{len(rollbacks)} rollbacks; the route read from the cluster every 50 ms")  # fmt: skip
            routing_figure(f"route {label}: failed verdict to 100% stable, max", f"{max(rollbacks):.2f} s")
        else:
            routing_figure(f"route {label}: failed verdict to 100% stable", "n/a", "no rollback seen")
    finally:
        bench.operator.stop()
        load.stop()
        prometheus.stop()
        plane.stop()


def image_patch(image: str) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", default="100,1000",
                        help="Rollouts of each column of the scale table, e.g. 100,1000 or 10000")  # fmt: skip
    parser.add_argument(
        "--only",
        choices=["routing", "fastlane", "flags", "bluegreen", "outbox", "queue", "scale"],
        help="run only these figures",
    )
    parser.add_argument("--races", type=int, default=3, help="races per interval for the fast lane's figures")
    parser.add_argument("--lane", choices=["both", "on", "off"], default="both",
                        help="the fast lane's races with the lane, without it, or both (the default)")  # fmt: skip
    parser.add_argument(
        "--intervals", default="10,30,60", help="analysis intervals of the fast lane's races, s"
    )
    parser.add_argument("--profile-api-server", action="store_true",
                        help="save the API server's CPU profile of each scale column's releases")  # fmt: skip
    args = parser.parse_args(argv)
    if args.profile_api_server and args.only not in (None, "scale"):
        parser.error(
            "--profile-api-server profiles the scale columns: run it with --only scale or without --only"
        )
    print(
        f"Parachute benchmarks — {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True
    )
    if args.only != "scale":
        bench_decide()
        bench_queries(figure)
    if args.only in (None, "queue"):
        bench_queue(figure)
    if args.only == "queue":
        return 0
    workdir = Path(
        tempfile.mkdtemp(prefix="parachute-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    try:
        return _run(args, workdir)
    finally:
        _keep_only_logs(workdir)


def _keep_only_logs(workdir: Path) -> None:
    """The clusters' etcd and Prometheus data are gone with the run (at 10,000 about a gigabyte,
    in memory when under /dev/shm); the operators' logs, and the API server's profiles, stay for a look."""
    for path in workdir.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    print(f"logs kept in {workdir}", flush=True)


def _run(args: argparse.Namespace, workdir: Path) -> int:
    if args.only in (None, "scale"):
        counts = [int(n) for n in args.rollouts.split(",")]
        start = lambda kubeconfig, extra, log: Operator(kubeconfig, workdir / log, extra)  # noqa: E731
        if args.only == "scale":
            bench_scale_table(counts, start, workdir, figure, RESULTS, profile=args.profile_api_server)
            return 0
    cluster = LocalCluster(workdir / "cluster")
    try:
        started = time.monotonic()
        cluster.up()
        figure("local control plane start (warm binaries)", f"{time.monotonic() - started:.1f} s")
        install_crd(cluster.api_client())
        operator_kubeconfig = install_operator_account(
            cluster.admin_kubeconfig, workdir / "operator.kubeconfig"
        )
        _in_cluster(args, cluster, operator_kubeconfig, workdir)
    finally:
        cluster.down()
    if args.only is None:  # each N on a cluster of its own, after the others are done
        bench_scale_table(counts, start, workdir, figure, RESULTS, profile=args.profile_api_server)
    return 0


def _in_cluster(args: argparse.Namespace, cluster: LocalCluster, kubeconfig: Path, workdir: Path) -> None:
    lanes = {"both": (True, False), "on": (True,), "off": (False,)}[args.lane]
    intervals = tuple(int(i) for i in args.intervals.split(","))
    sections: dict[str, Callable[[], None]] = {
        "outbox": lambda: bench_outbox(cluster, kubeconfig, workdir, figure),
        "fastlane": lambda: bench_fast_lane(
            cluster, lambda extra, log: Operator(kubeconfig, workdir / log, extra), workdir, figure,
            args.races, lanes=lanes, intervals=intervals,
        ),
        "flags": lambda: bench_flag_off(cluster, lambda log: Operator(kubeconfig, workdir / log), workdir, figure),
        "bluegreen": lambda: bench_blue_green(
            cluster, lambda log: Operator(kubeconfig, workdir / log), workdir, figure
        ),
    }  # fmt: skip
    if args.only in sections:
        sections[args.only]()
        return
    if args.only is None:
        for section in sections.values():
            section()
        bench_reconcile(cluster)
        bench_breach(cluster, kubeconfig, workdir, "code")
        bench_breach(cluster, kubeconfig, workdir, "flag")
    for label, routing, backend_id in ROUTERS:
        bench_routing(cluster, workdir, label, routing, backend_id)
    header = (
        f"{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, local control plane (kwok pods)"
    )
    write_routing_results(RESULTS, routing_rows, header)
    print(f"routing figures written to {RESULTS.name}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
