"""The scale table (issues #18 and #16): N Rollouts on one operator process, each with its
Deployment (1 or 2 replicas, kwok pods) in a few namespaces, analysed every 30 s against one real
Prometheus. All are adopted, then half release at once; one more Rollout's canary fails while
they do (its pods answer 20% of requests with 500), and once more after all have settled.

Prometheus scrapes one synthetic exporter that serves the request counter and latency histogram
of every pod (`testbed.exporter`), so every analysed query returns data. The figures come from
the operator's own metrics endpoint and from /proc: resident memory, CPU seconds (utime +
stime), scheduler lag (due -> run), Kubernetes API requests per reconcile and per second, PromQL
queries per second against the bound of one per metric per version per interval, and the times.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from parachute import api
from testbed.cluster import LocalCluster
from testbed.exporter import ExporterPrometheus, PodExporter
from testbed.install import install_crd, install_operator_account

GROUP, VERSION, PLURAL = api.GROUP, api.VERSION, api.PLURAL
INTERVAL = 30  # analysis interval, s
LARGE_CLUSTER_WORKERS = 50  # the testbed's Deployment controller's workers at 10,000
STEPS = [
    {"name": "canary", "weight": 10, "minWait": "60s"},
    {"name": "full", "weight": 100, "minWait": "30s"},
]
# The testbed's controller manager makes the canaries' pods at its own pace: at 10,000 on two
# cores some took longer than the default 10 minutes, and a release aborted for it measures the
# testbed, not the operator.
PROGRESS_DEADLINE = "30m"
METRICS = 3  # the built-ins medium risk watches: error-rate, latency-p95, success-rate
FAILING = "failing"  # the one Rollout whose canary fails
FAILING_SHARE = 0.2  # of its canary's requests answered with 500 (error-rate rolls back at 5%)
HEADING = "## Scale"
# The testbed's two kwok nodes hold 500 pods each; the fleet's pods, its canaries at full size
# and the failing one's need more: nodes of this many pods are added (kwok manages every node).
NODE_PODS = 1000
LAST_LAG_BUCKET = 60.0  # parachute_scheduler_lag_seconds' largest finite bucket
PROFILE_SECONDS = 90  # the API server's CPU profile covers the releases' first stage and a half
Figure = Callable[..., None]


class Process(Protocol):
    process: Any

    def stop(self) -> None: ...


StartOperator = Callable[[Path, list[str], str], Process]  # kubeconfig, extra args, log name


# ---------------------------------------------------------------------------- what is measured


@dataclass
class Sample:
    """The operator's counters and histograms at one moment, and its CPU seconds."""

    at: float
    cpu: float
    values: dict[str, float] = field(default_factory=dict)

    def total(self, prefix: str) -> float:
        return sum(v for k, v in self.values.items() if k.startswith(prefix))

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """The histogram's cumulative buckets, summed over its other labels (an outcome)."""
        found: dict[float, float] = {}
        for key, value in self.values.items():
            match = re.fullmatch(rf'{name}_bucket\{{(?:[^}}]*,)?le="([^"]+)"(?:,[^}}]*)?\}}', key)
            if match:
                le = float(match.group(1))
                found[le] = found.get(le, 0.0) + value
        return sorted(found.items())


def cpu_seconds(pid: int) -> float:
    return _cpu_of(Path(f"/proc/{pid}/stat").read_text())


def _cpu_of(stat: str) -> float:
    """utime + stime, in seconds, from a /proc/<pid>/stat line (the name may hold spaces)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class MachineCpu:
    """Busy CPU seconds of the whole machine, and of each process by name (utime + stime)."""

    busy: float
    by_process: dict[int, tuple[str, float]]

    @classmethod
    def now(cls) -> MachineCpu:
        busy = cls.busy_now()
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = stat.read_text()
                found[int(stat.parent.name)] = (text[text.index("(") + 1 : text.rindex(")")], _cpu_of(text))
        return cls(busy, found)

    @staticmethod
    def busy_now() -> float:
        """The machine's busy CPU seconds alone (no per-process walk)."""
        fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait

    def since(self, before: MachineCpu, names: dict[int, str]) -> dict[str, float]:
        """CPU seconds by process name since `before` (`names` renames some pids)."""
        spent: dict[str, float] = {}
        for pid, (name, seconds) in self.by_process.items():
            earlier = before.by_process.get(pid)
            used = seconds - (earlier[1] if earlier is not None else 0.0)
            key = names.get(pid, name.split("/", 1)[0])  # kernel threads: kworker/1:0 -> kworker
            spent[key] = spent.get(key, 0.0) + used
        return spent


class Timeline:
    """The operator's metrics and the machine's CPU every `every` seconds while the releases run:
    the table's p99 is one figure for the whole of them, and whether its tail comes from the
    burst at their start or later, and whether the machine was saturated then, is what decides
    the next lever."""

    # Only the series the lines read are kept: the operator serves series per Rollout, and at
    # 10,000 Rollouts a whole sample every 10 s for half an hour is a few hundred of them.
    KEPT = ("parachute_scheduler_lag_seconds_bucket", "parachute_reconcile_duration_seconds_count",
            "parachute_fast_lane_look_seconds", "parachute_reconciles_in_vain_total",
            "parachute_api_requests_total")  # fmt: skip

    def __init__(self, pid: int, port: int, api_server: Callable[[], float], every: float = 10.0) -> None:
        self.pid, self.port, self.every, self.api_server = pid, port, every, api_server
        self.samples: list[tuple[Sample, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            # A sample lost (either endpoint slow under the load) only widens a window.
            with contextlib.suppress(OSError, ApiException, urllib3.exceptions.HTTPError):
                whole = sample(self.pid, self.port)
                kept = {k: v for k, v in whole.values.items() if k.startswith(self.KEPT)}
                served = self.api_server()
                self.samples.append((Sample(whole.at, whole.cpu, kept), MachineCpu.busy_now(), served))
            if self._stop.wait(self.every):
                return

    def stop(self) -> list[str]:
        """One line a window: reconciles a second (and those in vain, by what woke them), lag
        median and p99, the fast lane's looks and their median hold on the event loop, the
        machine busy, and the requests the API server served a second, every client's and the
        operator's."""
        self._stop.set()
        self._thread.join(60)
        lines, cores = [], os.cpu_count() or 1
        first = self.samples[0][0].at if self.samples else 0.0
        lag, count = "parachute_scheduler_lag_seconds", "parachute_reconcile_duration_seconds_count"
        look = "parachute_fast_lane_look_seconds"
        for (before, busy, served), (after, busy_after, served_after) in zip(
            self.samples, self.samples[1:], strict=False
        ):
            grew = growth(before, after)
            span, done, looks = after.at - before.at, grew(count), grew(f"{look}_count")
            asked = grew("parachute_api_requests_total")
            held = f", held median {quantile(before, after, look, 0.5):.2f} s" if looks else ""
            lines.append(
                f"{before.at - first:4.0f}-{after.at - first:4.0f} s: {done / span:5.1f} reconciles/s, "
                f"lag median {_lag(quantile(before, after, lag, 0.5))} p99 {_lag(quantile(before, after, lag, 0.99))}, "
                f"lane {looks:.0f} looks{held}, machine {(busy_after - busy) / (span * cores):.0%} busy, "
                f"API server {(served_after - served) / span:.0f} requests/s ({asked / span:.0f} the operator's); "
                f"{in_vain(before, after)}"
            )
        return lines


def growth(before: Sample, after: Sample) -> Callable[[str], float]:
    """How much the series whose names begin with the name asked grew from `before` to `after`."""
    return lambda name: after.total(name) - before.total(name)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample(pid: int, port: int) -> Sample:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("parachute_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return Sample(time.monotonic(), cpu_seconds(pid), values)


@dataclass(frozen=True)
class ApiServerCount:
    """What the API server has served (its own counts, from its /metrics)."""

    requests: float  # every client's, watches not counted (one is a connection, not a request)
    status_writes: float  # of Rollouts' status

    @classmethod
    def now(cls, cluster: LocalCluster) -> ApiServerCount:
        requests = writes = 0.0
        for line in cluster.api_server_get("/metrics", 60).decode().splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            value = float(line.rsplit(" ", 1)[1])
            if 'verb="WATCH"' not in line and 'verb="CONNECT"' not in line:
                requests += value
            if (
                'resource="rollouts"' in line
                and 'subresource="status"' in line
                and ('verb="PATCH"' in line or 'verb="UPDATE"' in line)
            ):
                writes += value
        return cls(requests, writes)


def by_resource(before: Sample, after: Sample, reconciles: float) -> str:
    """The operator's API requests per reconcile by method and resource, the most first."""
    grown: dict[str, float] = {}
    for key, value in after.values.items():
        found = re.fullmatch(
            r'parachute_api_requests_total\{code="[^"]*",method="([^"]+)",resource="([^"]+)"\}', key
        )
        if found:
            what = f"{found.group(1)} {found.group(2)}"
            grown[what] = grown.get(what, 0.0) + value - before.values.get(key, 0.0)
    top = sorted(grown.items(), key=lambda item: -item[1])[:6]
    return ", ".join(f"{what} {count / reconciles:.2f}" for what, count in top if count > 0)


VAIN = "parachute_reconciles_in_vain_total"


def by_label(before: Sample, after: Sample, name: str, label: str) -> dict[str, float]:
    """How much a counter grew between two samples, by one of its labels, the most first."""
    grown: dict[str, float] = {}
    for key, value in after.values.items():
        found = re.fullmatch(rf'{name}\{{(?:[^}}]*,)?{label}="([^"]*)"(?:,[^}}]*)?\}}', key)
        if found:
            grown[found.group(1)] = grown.get(found.group(1), 0.0) + value - before.values.get(key, 0.0)
    return dict(sorted(((k, v) for k, v in grown.items() if v > 0), key=lambda item: -item[1]))


def in_vain(before: Sample, after: Sample) -> str:
    """The reconciles that wrote and changed nothing, by what made them due."""
    causes = by_label(before, after, VAIN, "woken_by")
    shares = ", ".join(f"{cause} {count:,.0f}" for cause, count in causes.items())
    return f"{sum(causes.values()):,.0f} wrote and changed nothing" + (
        f" (woken by {shares})" if shares else ""
    )


def quantile(before: Sample, after: Sample, name: str, q: float) -> float:
    """The q-quantile of a histogram's observations between two samples, interpolated within
    its bucket as PromQL's histogram_quantile does."""
    old = dict(before.buckets(name))
    counts = [(le, value - old.get(le, 0.0)) for le, value in after.buckets(name)]
    if not counts or counts[-1][1] <= 0:
        return float("nan")
    rank, lower, below = q * counts[-1][1], 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(cumulative - below, 1e-9)
        lower, below = le, cumulative
    return lower


# ---------------------------------------------------------------------------- the cluster's objects


def _deployment(name: str, replicas: int, image: str = "bench:1") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": image}]}}},
    }  # fmt: skip


def _rollout(name: str, prometheus: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Rollout", "metadata": {"name": name},
            "spec": {"targetRef": {"name": name}, "risk": "medium", "steps": STEPS,
                     "progressDeadline": PROGRESS_DEADLINE,
                     "analysis": {"prometheus": {"address": prometheus}, "interval": f"{INTERVAL}s"}}}  # fmt: skip


def _image(image: str) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}


def _released(status: dict[str, Any]) -> bool:
    release = status.get("release") or {}
    return (
        status.get("phase") == "Healthy"
        and bool(status.get("stage"))
        and release.get("stableRevision") == release.get("revision")
    )


def _until(predicate: Callable[[], bool], timeout: float, every: float = 1.0) -> float | None:
    """Seconds until `predicate()` held, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(ApiException, OSError, KeyError, IndexError):
            if predicate():
                return time.monotonic() - started
        time.sleep(every)
    return None


class Fleet:
    """N Deployments and their Rollouts across a few namespaces, made and read in parallel."""

    def __init__(self, cluster: LocalCluster, count: int) -> None:
        api_client = cluster.api_client()
        api_client.configuration.connection_pool_maxsize = 16
        self.core, self.apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.count = count
        self.namespaces = [f"scale-{i}" for i in range(max(1, min(10, count // 100)))]
        self.names = [(self.namespaces[i % len(self.namespaces)], f"app-{i}") for i in range(count)]
        self.pool = ThreadPoolExecutor(8)

    def add_nodes(self) -> None:
        for i in range(math.ceil(self.count * 5 / 2 / NODE_PODS)):
            capacity = {"cpu": "1000", "memory": "4Ti", "pods": str(NODE_PODS)}
            self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": f"kwok-scale-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": f"kwok-scale-{i}", "kubernetes.io/os": "linux", "type": "kwok"}},
                "status": {"allocatable": capacity, "capacity": capacity}})  # fmt: skip

    def create(self, prometheus: str) -> None:
        self.add_nodes()
        for namespace in [*self.namespaces, FAILING]:
            self.core.create_namespace({"metadata": {"name": namespace}})
        for namespace in [*self.namespaces, FAILING]:  # pods need the default ServiceAccount
            _until(
                lambda ns=namespace: bool(self.core.read_namespaced_service_account("default", ns)), 60, 0.2
            )

        def one(index: int) -> None:
            namespace, name = self.names[index]
            self.apps.create_namespaced_deployment(namespace, _deployment(name, 1 + index % 2))
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _rollout(name, prometheus)
            )

        list(self.pool.map(one, range(self.count)))
        self.apps.create_namespaced_deployment(FAILING, _deployment(FAILING, 2))
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, FAILING, PLURAL, _rollout(FAILING, prometheus)
        )

    def rollouts(self) -> Iterator[dict[str, Any]]:
        """Every Rollout, from the API server's watch cache (resourceVersion 0): a quorum read of
        10,000 every few seconds would load the etcd the operator shares."""
        for namespace in self.namespaces:
            yield from self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, resource_version="0"
            )["items"]

    def statuses(self) -> Iterator[dict[str, Any]]:
        for item in self.rollouts():
            yield dict(item.get("status") or {})

    def release(self, names: list[tuple[str, str]], image: str) -> None:
        list(
            self.pool.map(
                lambda key: self.apps.patch_namespaced_deployment(key[1], key[0], _image(image)), names
            )
        )

    def failing(self) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(GROUP, VERSION, FAILING, PLURAL, FAILING)
        return dict(found.get("status") or {})

    def canary_replicas(self) -> int:
        canary = self.apps.read_namespaced_deployment(f"{FAILING}-canary", FAILING)
        return int(canary.spec.replicas or 0)


# ---------------------------------------------------------------------------- the run


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Breach:
    """The failing canary's timeline, in seconds from its first 500 as Prometheus can see it."""

    rolling_back: float | None = None  # the Rollout's phase turned RollingBack
    canary_off: float | None = None  # its canary Deployment scaled to 0
    rolled_back: float | None = None  # RolledBack


def _breach(fleet: Fleet, exporter: PodExporter, image: str, timeout: float = 300) -> Breach:
    """Release the failing Rollout to `image` and follow it until RolledBack."""
    prefix = f"{FAILING}-canary-"
    exporter.first_failure.pop(prefix, None)
    exporter.fail(prefix, FAILING_SHARE)
    fleet.release([(FAILING, FAILING)], image)
    found = Breach()
    progressing = False  # the release under way: a RolledBack seen before is the last one's
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and found.rolled_back is None:
        with contextlib.suppress(ApiException):
            first = exporter.first_failure.get(prefix)
            phase = fleet.failing().get("phase")
            progressing = progressing or phase == "Progressing"
            if first is not None and progressing:
                since = time.time() - first
                if phase in ("RollingBack", "RolledBack") and found.rolling_back is None:
                    found.rolling_back = since
                if (
                    found.canary_off is None
                    and found.rolling_back is not None
                    and fleet.canary_replicas() == 0
                ):
                    found.canary_off = since
                if phase == "RolledBack":
                    found.rolled_back = since
        time.sleep(0.25)
    return found


def _lag(value: float) -> str:
    """A quantile of the lag histogram; past its last bucket (60 s) only a bound is known."""
    return f"> {value:.0f} s" if value >= LAST_LAG_BUCKET else f"{value:.3f} s"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


class Run:
    """One column of the table: N Rollouts on a fresh local cluster, and the figures it prints."""

    def __init__(
        self,
        count: int,
        workdir: Path,
        figure: Figure,
        rows: dict[str, dict[int, str]],
        cluster: LocalCluster,
    ) -> None:
        self.count, self.workdir, self.figure, self.rows = count, workdir, figure, rows
        self.cluster = cluster
        self.profiling: threading.Thread | None = None
        self.peak = 0.0  # resident memory, MiB, sampled while waiting
        self.pid = self.port = 0

    def put(self, name: str, value: str, note: str = "") -> None:
        self.figure(f"scale {self.count:,}: {name}", value, note)
        self.rows.setdefault(name, {})[self.count] = value

    def every(self, seconds: float) -> float:
        """How often the fleet's statuses are listed: every Rollout in one listing is load on the
        API server the operator shares, so at 10,000 it is listed every 10 s."""
        return max(seconds, self.count / 1000)

    def rss(self) -> float:
        self.peak = max(self.peak, rss_mib(self.pid))
        return self.peak

    def prepare(self, fleet: Fleet, exporter: PodExporter, prometheus: ExporterPrometheus) -> None:
        served, started = ApiServerCount.now(self.cluster).requests, time.monotonic()
        fleet.create(prometheus.url)
        exporter.start()
        prometheus.start()
        self.put("create Deployments and Rollouts", _seconds(time.monotonic() - started), "8 client threads")
        pods = _until(lambda: exporter.pods() >= self.count * 3 // 2 + 2, 900, 2)
        # What this machine's API server serves with the cores to itself and the controllers:
        # no operator runs yet, and the fleet's creation is the most writes it sees.
        rate = (ApiServerCount.now(self.cluster).requests - served) / (time.monotonic() - started)
        self.put("all pods listed", _seconds(pods),
                 f"{exporter.pods():,} pods; the API server served {rate:,.0f} requests/s from the first create")  # fmt: skip

    def profile_api_server(self, seconds: int) -> None:
        """Save the API server's CPU profile of the next `seconds` beside the operator's log."""
        path = self.workdir / f"apiserver-{self.count}.pprof"

        def save() -> None:
            try:
                path.write_bytes(self.cluster.api_server_profile(seconds))
            except Exception as error:  # a figure lost, not the run
                print(f"scale {self.count:,}: no API server profile: {error}", flush=True)
                return
            print(f"scale {self.count:,}: API server CPU profile of the releases' first {seconds} s: "
                  f"{path} (go tool pprof -top {path.name})", flush=True)  # fmt: skip

        self.profiling = threading.Thread(target=save, name="api-server-profile", daemon=True)
        self.profiling.start()

    def adopt(self, fleet: Fleet) -> None:
        def healthy() -> bool:
            self.rss()
            return sum(s.get("phase") == "Healthy" for s in fleet.statuses()) == self.count

        # Releases started before every Rollout is adopted are lost to the figures: a Rollout
        # adopted after its image changed takes the new one as its stable, with no release.
        # 10,000 took 19 minutes on two cores, before a Rollout coming to rest recorded its
        # delivered Events with one more status write.
        took = _until(healthy, max(900.0, self.count * 0.2), self.every(2))
        self.put("adopted by a fresh operator", _seconds(took))
        _until(lambda: fleet.failing().get("phase") == "Healthy", 60, 0.5)  # the failing one too

    def release(self, fleet: Fleet, exporter: PodExporter) -> None:
        """Half release at once, the failing Rollout with them."""
        releasing = fleet.names[::2]
        keys = {f"{ns}/{name}" for ns, name in releasing}
        before, machine = sample(self.pid, self.port), MachineCpu.now()
        served = ApiServerCount.now(self.cluster)
        started = time.monotonic()
        if self.cluster.profiling:
            self.profile_api_server(PROFILE_SECONDS)
        # Each look reads the operator's whole metrics endpoint: at 10,000 one every 50 s.
        timeline = Timeline(
            self.pid,
            self.port,
            lambda: ApiServerCount.now(self.cluster).requests,
            every=max(10.0, self.count / 200),
        )
        timeline.start()
        fleet.release(releasing, "bench:2")
        busy = _breach(fleet, exporter, "bench:2")

        def all_released() -> bool:
            self.rss()
            done = sum(f"{i['metadata']['namespace']}/{i['metadata']['name']}" in keys
                       and _released(i.get("status") or {}) for i in fleet.rollouts())  # fmt: skip
            return done == len(keys)

        done = _until(all_released, 1800, self.every(3))
        wall = time.monotonic() - started
        for line in timeline.stop():
            print(f"scale {self.count:,}: releases, {line}", flush=True)
        after, machine_after = sample(self.pid, self.port), MachineCpu.now()
        served_after = ApiServerCount.now(self.cluster)
        written = served_after.status_writes - served.status_writes
        span = after.at - before.at

        grew = growth(before, after)

        reconciles = grew("parachute_reconcile_duration_seconds_count")
        requests, queries = grew("parachute_api_requests_total"), grew("parachute_promql_queries_total")
        lane = grew("parachute_fast_lane_queries_total")
        self.put("half of them released at once: all complete", _seconds(None if done is None else wall),
                 f"2 stages: 10% for 60 s, 100% for 30 s; analysis every {INTERVAL} s")  # fmt: skip
        lag = "parachute_scheduler_lag_seconds"
        self.put("scheduler lag during the releases, median", _lag(quantile(before, after, lag, 0.5)))
        self.put("scheduler lag during the releases, p99", _lag(quantile(before, after, lag, 0.99)))
        conflicts = grew('parachute_reconcile_duration_seconds_count{outcome="conflict"}')
        self.put("reconciles per second during the releases", f"{reconciles / span:.1f}",
                 f"{reconciles:,.0f} in all, {conflicts:,.0f} of them refused a stale write (409) and run again, "
                 f"{in_vain(before, after)}")  # fmt: skip
        took = "parachute_reconcile_duration_seconds"
        self.put("reconcile duration, median / p99",
                 f"{quantile(before, after, took, 0.5):.3f} / {quantile(before, after, took, 0.99):.3f} s",
                 "a slot is held for the whole reconcile, its PromQL queries included")  # fmt: skip
        asked = "parachute_promql_query_duration_seconds"
        self.put(
            "PromQL query duration, median / p99",
            f"{quantile(before, after, asked, 0.5):.3f} / {quantile(before, after, asked, 0.99):.3f} s",
        )
        self.put("Rollout status writes per release", f"{written / (len(releasing) + 1):.1f}",
                 f"{written:,.0f} in all, as the API server counted them; the failing one's rollback included")  # fmt: skip
        self.put("API requests per reconcile", f"{requests / max(reconciles, 1):.2f}",
                 by_resource(before, after, max(reconciles, 1)))  # fmt: skip
        self.put("API requests per second during the releases", f"{requests / span:.1f}",
                 f"of {(served_after.requests - served.requests) / span:,.0f} the API server served, every client's")  # fmt: skip
        bound = len(releasing) * METRICS * 2 / INTERVAL
        self.put("PromQL queries per second during the releases", f"{queries / span:.1f}",
                 f"the fast lane's {lane / span:.2f}/s included; one per metric per version per interval "
                 f"for every release under way would be {bound:.0f}/s")  # fmt: skip
        self.held(before, after)
        # Whether the operator or the machine is the bound: the control plane, Prometheus and the
        # bench's exporter share the cores with it.
        spent = machine_after.since(machine, {self.pid: "operator", os.getpid(): "bench and exporter"})
        top = sorted(spent.items(), key=lambda item: -item[1])[:7]
        self.put("machine CPU busy during the releases",
                 f"{(machine_after.busy - machine.busy) / (span * (os.cpu_count() or 1)):.0%}",
                 ", ".join(f"{name} {seconds:.0f} s" for name, seconds in top))  # fmt: skip
        self.put("failing canary, busy: first 500 to RollingBack", _seconds(busy.rolling_back),
                 f"while {len(releasing):,} others release")  # fmt: skip
        self.put("failing canary, busy: first 500 to canary at 0", _seconds(busy.canary_off))
        self.put("failing canary, busy: first 500 to RolledBack", _seconds(busy.rolled_back))

    def held(self, before: Sample, after: Sample) -> None:
        """What held the operator during the releases: the fast lane's looks, its CPU, and the
        garbage collector's pauses (each stops every reconcile due)."""
        span, grew = after.at - before.at, growth(before, after)
        looks, look = grew("parachute_fast_lane_look_seconds_count"), "parachute_fast_lane_look_seconds"
        held = (
            f", {quantile(before, after, look, 0.5):.2f} / {quantile(before, after, look, 0.99):.2f} s"
            if looks
            else ""
        )
        self.put("fast lane: looks during the releases, hold on the event loop median / p99", f"{looks:,.0f}{held}",
                 f"one every {span / max(looks, 1):.1f} s; the next comes no sooner than 3x the hold after one began")  # fmt: skip
        self.put("CPU seconds during the releases", f"{after.cpu - before.cpu:.0f} s", f"over {span:.0f} s")
        pause, full = "parachute_gc_pause_seconds", '{generation="2"}'
        self.put("garbage collector during the releases: full collections, their pause",
                 f"{grew(f'{pause}_count{full}'):,.0f}, {grew(f'{pause}_sum{full}'):.1f} s",
                 f"every generation: {grew(f'{pause}_count'):,.0f} collections, {grew(f'{pause}_sum'):.1f} s")  # fmt: skip

    def idle(self, fleet: Fleet, exporter: PodExporter) -> None:
        time.sleep(10)  # the last status writes' watch events
        quiet = sample(self.pid, self.port)
        time.sleep(60)
        end = sample(self.pid, self.port)

        def per_second(name: str) -> float:
            return (end.total(name) - quiet.total(name)) / (end.at - quiet.at)

        self.put("idle: CPU seconds over a quiet minute", f"{end.cpu - quiet.cpu:.2f} s",
                 f"{per_second('parachute_api_requests_total'):.2f} API requests/s, "
                 f"{per_second('parachute_promql_queries_total'):.2f} PromQL queries/s")  # fmt: skip
        idle = _breach(fleet, exporter, "bench:3")
        self.put("failing canary, idle: first 500 to RollingBack", _seconds(idle.rolling_back),
                 "the others settled")  # fmt: skip
        self.put("failing canary, idle: first 500 to canary at 0", _seconds(idle.canary_off))
        self.put("failing canary, idle: first 500 to RolledBack", _seconds(idle.rolled_back))
        self.put(
            "resident memory, peak",
            f"{self.rss():.0f} MiB",
            f"sampled every {self.every(2):.0f}-{self.every(3):.0f} s",
        )
        self.put("resident memory, at the end", f"{rss_mib(self.pid):.0f} MiB")


def run_scale(
    count: int,
    start_operator: StartOperator,
    workdir: Path,
    figure: Figure,
    rows: dict[str, dict[int, str]],
    *,
    profile: bool = False,
) -> None:
    """One column of the table: N Rollouts on a fresh local cluster (its API server profiled
    during the releases when `profile`)."""
    # At 10,000 the Deployment controller's default workers, not Parachute, paced the releases
    # (testbed.cluster).
    workers = LARGE_CLUSTER_WORKERS if count >= 10_000 else None
    cluster = LocalCluster(workdir / f"cluster-{count}", profiling=profile, deployment_workers=workers)
    cluster.up()
    run = Run(count, workdir, figure, rows, cluster)
    fleet = Fleet(cluster, count)
    exporter = PodExporter(cluster.api_client(), (*fleet.namespaces, FAILING))
    prometheus = ExporterPrometheus(workdir / f"prometheus-{count}", exporter, scrape_interval="5s")
    operator: Process | None = None
    try:
        install_crd(cluster.api_client())
        kubeconfig = install_operator_account(
            cluster.admin_kubeconfig, workdir / f"operator-{count}.kubeconfig"
        )
        run.prepare(fleet, exporter, prometheus)
        run.port = _free_port()
        operator = start_operator(
            kubeconfig, ["--metrics-port", str(run.port)], f"operator-scale-{count}.log"
        )
        run.pid = operator.process.pid
        run.adopt(fleet)
        run.release(fleet, exporter)
        run.idle(fleet, exporter)
    finally:
        if operator is not None:
            operator.stop()
        if run.profiling is not None:  # a column shorter than the profile: its end is still saved
            run.profiling.join(PROFILE_SECONDS + 60)
        prometheus.stop()
        exporter.stop()
        cluster.down()


def write_results(path: Path, rows: dict[str, dict[int, str]], counts: list[int], header: str) -> None:
    """Put the table in `path` as its scale section, replacing the table before and keeping its
    notes (its ### subsections) and every other section."""
    table = [f"{HEADING}\n", f"{header}\n", "| figure | " + " | ".join(f"{n:,}" for n in counts) + " |",
             "|---|" + "---:|" * len(counts)]  # fmt: skip
    table += [f"| {name} | " + " | ".join(by.get(n, "") for n in counts) + " |" for name, by in rows.items()]
    section = "\n".join(table) + "\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(HEADING + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        after = text.find("\n## ", start + len(HEADING))
        end = after if after >= 0 else len(text)
        notes = text.find("\n### ", start, end)  # what was written about the table stays
        kept = text[notes:end].rstrip("\n") + "\n" if notes >= 0 else ""
        text = text[:start] + section + kept + text[end:]
    path.write_text(text)


def bench_scale_table(
    counts: list[int],
    start_operator: StartOperator,
    workdir: Path,
    figure: Figure,
    results: Path,
    *,
    profile: bool = False,
) -> None:
    rows: dict[str, dict[int, str]] = {}
    for count in counts:
        run_scale(count, start_operator, workdir, figure, rows, profile=profile)
    header = (
        f"{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, local control plane (kwok pods), "
        f"Prometheus scraping every 5 s; one operator process"
        + ("; the API server profiled during the releases (a load of its own)" if profile else "")
    )
    existing = _columns(results)
    for name, by in existing.items():  # keep the columns of another run (e.g. bench-large's 10,000)
        for n, value in by.items():
            rows.setdefault(name, {}).setdefault(n, value)
    write_results(results, rows, sorted({n for by in rows.values() for n in by}), header)


def _columns(path: Path) -> dict[str, dict[int, str]]:
    """The scale section's table as written before, by figure and N."""
    if not path.exists():
        return {}
    text = path.read_text()
    start = text.find(HEADING + "\n")
    if start < 0:
        return {}
    # The table only: the notes' own tables (### subsections) are not columns of it.
    lines = text[start:].split("\n## ", 1)[0].split("\n### ", 1)[0].splitlines()
    header = next((line for line in lines if line.startswith("| figure |")), None)
    if header is None:
        return {}
    counts = [int(c.strip().replace(",", "")) for c in header.strip("|").split("|")[1:]]
    found: dict[str, dict[int, str]] = {}
    for line in lines:
        if line.startswith("| ") and not line.startswith(("| figure", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            found[cells[0]] = {n: v for n, v in zip(counts, cells[1:], strict=False) if v}
    return found
