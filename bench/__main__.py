"""Benchmarks: `make bench` (or `python -m bench`) prints figures; nothing here asserts.

- decide: the pure planner's cost per decision.
- reconcile: one full reconcile (read, decide, write, act) against the real local API server.
- scale: N Rollouts adopted, then released at once, by one operator process; its memory.
- breach-to-stable: a canary failing at 6% errors, from the release's start to all traffic
  back on stable (analysis every 2 s), by the code level and by the flag level.

Runs on the local control plane, its data plane and Prometheus from `testbed/`, in its own work
directory: the canary's pods start, are discovered by Prometheus and get their share of the
requests through the Service's endpoints, as in a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from parachute import api
from parachute.api import RolloutSpec, RolloutStatus
from parachute.plan.engine import decide
from parachute.plan.model import CanaryState, Observed, TargetState
from testbed.cluster import LocalCluster
from testbed.dataplane import App, DataPlane
from testbed.demoapp import Behaviour, FlagSource
from testbed.install import install_crd, install_operator_account
from testbed.loadgen import LoadGenerator
from testbed.projector import ConfigMapVolume
from testbed.prometheus import PodDiscovery, PodPrometheus

GROUP, VERSION, PLURAL = api.GROUP, api.VERSION, api.PLURAL


def figure(name: str, value: str, note: str = "") -> None:
    print(f"{name:<44} {value:>14}  {note}", flush=True)


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
    def __init__(self, kubeconfig: Path, log: Path) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.process = subprocess.Popen([sys.executable, "-m", "parachute", "run"], env=env,
                                        stdout=log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
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


def bench_scale(cluster: LocalCluster, operator_kubeconfig: Path, workdir: Path, count: int) -> None:
    core, apps, custom = clients(cluster)
    namespace = "bench-scale"
    new_namespace(core, namespace)
    for i in range(count):
        apps.create_namespaced_deployment(namespace, deployment(f"app-{i}"))
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               rollout(f"app-{i}", waits={"min": "1s", "max": "2s"}))  # fmt: skip
    operator = Operator(operator_kubeconfig, workdir / "operator-scale.log")
    try:
        adopted = wait(
            lambda: sum(s.get("phase") == "Healthy" for s in phases(custom, namespace)) == count, 300
        )
        figure(f"scale: {count} Rollouts adopted by a fresh operator", f"{adopted:.1f} s")
        image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "bench:2"}]}}}}
        started = time.monotonic()
        for i in range(count):
            apps.patch_namespaced_deployment(f"app-{i}", namespace, image)

        def all_released() -> bool:
            statuses = phases(custom, namespace)
            done = [s for s in statuses if s.get("phase") == "Healthy"
                    and (s.get("release") or {}).get("stableRevision") == (s.get("release") or {}).get("revision")
                    and s.get("stage")]  # fmt: skip
            return len(done) == count

        released = wait(all_released, 600)
        figure(f"scale: {count} releases of 3 stages, all at once", f"{released:.1f} s",
               f"{time.monotonic() - started:.1f} s wall; 3 x 1 s waits each")  # fmt: skip
        figure("scale: operator memory (RSS) after", f"{operator.rss_mib():.0f} MiB")
    finally:
        operator.stop()


async def _reconcile_many(namespace: str, name: str, rounds: int) -> list[float]:
    from parachute.reconcile import reconcile

    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await reconcile(namespace, name, datetime.now(UTC))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=100, help="Rollouts for the scale figure")
    args = parser.parse_args(argv)
    print(
        f"Parachute benchmarks — {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True
    )
    bench_decide()
    workdir = Path(
        tempfile.mkdtemp(prefix="parachute-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    cluster = LocalCluster(workdir / "cluster")
    try:
        started = time.monotonic()
        cluster.up()
        figure("local control plane start (warm binaries)", f"{time.monotonic() - started:.1f} s")
        install_crd(cluster.api_client())
        operator_kubeconfig = install_operator_account(
            cluster.admin_kubeconfig, workdir / "operator.kubeconfig"
        )
        bench_reconcile(cluster)
        bench_breach(cluster, operator_kubeconfig, workdir, "code")
        bench_breach(cluster, operator_kubeconfig, workdir, "flag")
        bench_scale(cluster, operator_kubeconfig, workdir, args.rollouts)
    finally:
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
