"""`make demo`: Parachute's main job on this machine, with nothing but the project's own files.

Brings up the local control plane, the testbed's data plane (each kwok pod of `checkout`
serves as an app endpoint, behaving as its image says) called through its Service, and a
Prometheus that discovers the pods as a cluster's does; installs the CRD and the operator's
RBAC, runs the operator under its own ServiceAccount, creates a Deployment and applies an
example Rollout, then plays three acts: adoption, a good release, and a bad one recovered by
the flag level. Traffic reaches the canary as its ready pods do (a replica ratio). It prints the Rollout as it
changes (the columns of `kubectl get pr -o wide`), ends with a summary of each act and the
recovery time the Rollout's status reports, and exits 0 when every act went as it should.
Along the way it shows what an SRE reads: `kubectl parachute get` while the good release runs
and after the bad one is rolled back, and the postmortem draft of the bad release.
The cluster stays up afterwards for kubectl; `make cluster-down` stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from parachute import api
from testbed.cluster import DEFAULT_DIR, REPO, LocalCluster
from testbed.dataplane import App, DataPlane
from testbed.demoapp import Behaviour, FlagSource
from testbed.install import install_crd, install_operator_account
from testbed.loadgen import LoadGenerator
from testbed.projector import ConfigMapVolume, Projection
from testbed.prometheus import PodDiscovery, PodPrometheus

NAMESPACE = "shop"


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def ensure(create: Any, *args: Any) -> None:
    with contextlib.suppress(ApiException):
        create(*args)


def prepare_namespace(cluster: LocalCluster) -> None:
    """The namespace, the flag ConfigMap and the Service callers reach `checkout` through."""
    core = client.CoreV1Api(cluster.api_client())
    ensure(core.create_namespace, {"metadata": {"name": NAMESPACE}})
    ensure(core.create_namespaced_config_map, NAMESPACE,
           {"metadata": {"name": "checkout-flags"}, "data": {"new-checkout": "false"}})  # fmt: skip
    ensure(core.create_namespaced_service, NAMESPACE, {
        "metadata": {"name": "checkout"},
        "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })  # fmt: skip


def deploy_checkout(cluster: LocalCluster, prometheus: PodPrometheus) -> None:
    api_client = cluster.api_client()
    apps = client.AppsV1Api(api_client)
    labels = {"app": "checkout"}
    ensure(apps.create_namespaced_deployment, NAMESPACE, {
        "metadata": {"name": "checkout", "labels": labels},
        "spec": {"replicas": 10, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.example/checkout:1.0"}]}}},
    })  # fmt: skip
    # Every pod discovered and scraped with a few seconds of requests, before the Rollout looks.
    prometheus.wait_for_value(
        f'count(sum by (pod) (increase(http_requests_total{{namespace="{NAMESPACE}"}}[5s])) > 0)',
        timeout=90, accept=lambda pods: pods >= 10,
    )  # fmt: skip
    rollout = yaml.safe_load((REPO / "examples" / "demo-rollout.yaml").read_text())
    rollout["spec"]["analysis"]["prometheus"]["address"] = prometheus.url
    custom = client.CustomObjectsApi(api_client)
    try:
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, rollout)
    except ApiException as error:
        if error.status != 409:
            raise
        custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "checkout", rollout
        )


# The columns of `kubectl get pr -o wide`, at fixed widths so that every line lines up.
COLUMNS = (("NAME", 10), ("PHASE", 13), ("STAGE", 7), ("WEIGHT", 8), ("RISK", 8), ("VERDICT", 14), ("AGE", 7))


def header() -> str:
    return line(title for title, _ in COLUMNS) + "MESSAGE"


def line(cells: Any) -> str:
    """Each cell padded to its column, and always one space after it."""
    return "".join(
        f"{'' if cell is None else cell!s:<{width - 1}} "
        for cell, (_, width) in zip(cells, COLUMNS, strict=True)
    )


def row(body: dict[str, Any]) -> str:
    status = body.get("status") or {}
    cells = (body["metadata"]["name"], status.get("phase"), status.get("stage"), status.get("canaryWeight"),
             status.get("risk"), status.get("lastVerdict"), age(body["metadata"].get("creationTimestamp")))  # fmt: skip
    return line(cells) + (status.get("message") or "")


def age(created: str | None) -> str:
    """As kubectl shows it: 71s, 2m11s, 3h4m."""
    if not created:
        return ""
    seconds = int(
        (datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
    )
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60}m"


def start_metrics(
    cluster: LocalCluster, workdir: Path, flags: Projection
) -> tuple[DataPlane, LoadGenerator, PodPrometheus]:
    """The app's pods, callers through the Service, and a Prometheus that discovers the pods."""
    # Every version equally fast, and a p95 (about 24 ms) well inside one histogram bucket, so
    # the comparison with stable is not at the mercy of a few requests' noise. Image 3.0's new
    # code path sits behind the flag new-checkout: while it is on, 6% of its requests fail.
    healthy = Behaviour(error_rate=0.0, latency_ms=15)
    flagged = App(healthy, flag=FlagSource(flags.path("new-checkout"), "new-checkout"),
                  when_flag_on=Behaviour(error_rate=0.06, latency_ms=15))  # fmt: skip
    apps = {"checkout:1.0": App(healthy), "checkout:2.0": App(healthy), "checkout:3.0": flagged}
    plane = DataPlane(cluster.api_client(), NAMESPACE, apps).start()
    load = LoadGenerator(rate=60, picker=plane.service_picker("checkout")).start()
    discovery = PodDiscovery(cluster.admin_kubeconfig, (NAMESPACE,))
    prometheus = PodPrometheus(workdir / "prometheus", discovery)
    prometheus.start()
    return plane, load, prometheus


@dataclass
class Act:
    """One act of the demo and how it went, for the summary."""

    name: str
    ok: bool = False
    outcome: str = "did not finish"


def read_rollout(cluster: LocalCluster) -> dict[str, Any]:
    body: dict[str, Any] = client.CustomObjectsApi(cluster.api_client()).get_namespaced_custom_object(  # type: ignore[assignment]
        api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "checkout"
    )
    return body


def set_image(cluster: LocalCluster, image: str) -> None:
    client.AppsV1Api(cluster.api_client()).patch_namespaced_deployment("checkout", NAMESPACE, {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}
    })  # fmt: skip


def adoption(cluster: LocalCluster, stopped: Any) -> Act:
    act = Act("adopt Deployment checkout")
    say("the Rollout adopts checkout: it pauses the Deployment and records what serves now")
    started = time.monotonic()
    if watch(cluster, stopped, until=lambda status: status.get("phase") == "Healthy", timeout=60):
        revision = (read_rollout(cluster).get("status") or {}).get("release", {}).get("stableRevision")
        act.ok, act.outcome = (
            True,
            f"Healthy in {time.monotonic() - started:.0f}s, serving revision {revision}",
        )
    return act


def good_release(cluster: LocalCluster, stopped: Any) -> Act:
    """A new image goes through the stages; the canary's share of traffic is its ready pods'."""
    act = Act("release image 2.0")
    before = (read_rollout(cluster).get("status") or {}).get("release", {}).get("stableRevision")
    say(
        "releasing a new image: kubectl -n shop set image deployment/checkout app=registry.example/checkout:2.0"
    )
    set_image(cluster, "registry.example/checkout:2.0")
    started = time.monotonic()
    say("the Rollout, as kubectl get pr -n shop -o wide --watch shows it (traffic follows the ready pods)")

    def done(status: dict[str, Any]) -> bool:
        stable = (status.get("release") or {}).get("stableRevision")
        # Done is a new stable revision: the first reads may predate the new template.
        return status.get("phase") == "Healthy" and stable not in (None, before)

    shown = False

    def done_or_show(status: dict[str, Any]) -> bool:
        nonlocal shown
        if not shown and status.get("phase") == "Progressing" and (status.get("canaryWeight") or 0) > 0:
            shown = True
            say("mid-release, as kubectl parachute get checkout -n shop shows it")
            plugin(cluster, "get", "checkout", "-n", NAMESPACE)
            say("the Rollout, watched again")
        return done(status)

    if watch(cluster, stopped, until=done_or_show, timeout=300):
        status = read_rollout(cluster).get("status") or {}
        say(
            "released: the Deployment runs the new image and the canary is retired (kubectl -n shop get deploy)"
        )
        act.ok = True
        act.outcome = (f"released through {len(status.get('plan') or [])} stages in {time.monotonic() - started:.0f}s; "
                       f"stable revision {status['release']['stableRevision']}")  # fmt: skip
    return act


def bad_release(cluster: LocalCluster, stopped: Any) -> Act:
    """Image 3.0 with its new code path switched on goes bad; the flag level recovers it."""
    act = Act("release image 3.0, flag on")
    api_client = cluster.api_client()
    say("a release that goes bad: image 3.0, its new code path behind flag new-checkout, switched on")
    client.CoreV1Api(api_client).patch_namespaced_config_map(
        "checkout-flags", NAMESPACE, {"data": {"new-checkout": "true"}}
    )
    set_image(cluster, "registry.example/checkout:3.0")

    def recovered(status: dict[str, Any]) -> bool:
        return status.get("phase") == "RolledBack"

    if not watch(cluster, stopped, until=recovered, timeout=180):
        return act
    body = read_rollout(cluster)
    incident = ((body.get("status") or {}).get("incidents") or [{}])[-1]
    objective = (body["spec"].get("recovery") or {}).get("objective", "5m")
    flags = client.CoreV1Api(api_client).read_namespaced_config_map("checkout-flags", NAMESPACE).data
    level = (incident.get("levels") or [{}])[-1]
    seconds = round(incident.get("recoverySeconds") or 0)
    say(f"recovered by the {incident.get('level')} level in {seconds}s (first critical verdict to health); "
        f"flags now {flags}")  # fmt: skip
    print(f"    why: {incident.get('reason')}")
    print(f"    {since(incident, level.get('appliedAt'))} flags off; "
          f"{since(incident, level.get('healthyAt'))} health confirmed on a window that began after that")  # fmt: skip
    print(f"    revision {incident.get('revision')} stays blocked until its root cause is marked fixed:")
    print(f"    kubectl -n shop annotate pr checkout parachute.dev/resolved={incident.get('revision')}")
    say("rolled back, as kubectl parachute get checkout -n shop shows it")
    plugin(cluster, "get", "checkout", "-n", NAMESPACE)
    say("the postmortem draft: kubectl parachute postmortem checkout -n shop")
    plugin(cluster, "postmortem", "checkout", "-n", NAMESPACE)
    act.ok = incident.get("level") == "flag" and flags == {"new-checkout": "false"}
    met = "met" if incident.get("objectiveMet") else "missed"
    act.outcome = (
        f"recovered by the {incident.get('level')} level in {seconds}s (objective {objective} {met})"
    )
    return act


def plugin(cluster: LocalCluster, *args: str) -> None:
    """Run `kubectl parachute ARGS` (the installed plugin's module) and print what it prints."""
    ran = subprocess.run(
        [sys.executable, "-m", "parachute.cli", *args], check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "KUBECONFIG": str(cluster.admin_kubeconfig), "COLUMNS": "110"},
    )  # fmt: skip
    for text in (ran.stdout + ran.stderr).rstrip().splitlines():
        print(f"    {text}")


def since(incident: dict[str, Any], moment: str | None) -> str:
    """`+3s`: a moment of the incident, counted from its first critical verdict."""
    if not moment:
        return "?"
    start = datetime.fromisoformat(incident["startedAt"].replace("Z", "+00:00"))
    return f"+{(datetime.fromisoformat(moment.replace('Z', '+00:00')) - start).total_seconds():.0f}s"


def summary(acts: list[Act]) -> None:
    say("summary")
    if not acts:
        print("    nothing ran")
        return
    width = max(len(a.name) for a in acts) + 2
    for number, act in enumerate(acts, 1):
        print(f"    {number}. {act.name.ljust(width)}{'ok  ' if act.ok else 'FAIL'}  {act.outcome}")


def play(cluster: LocalCluster, stopped: Any) -> list[Act]:
    """The three acts, each only if the one before went as it should."""
    acts = [adoption(cluster, stopped)]
    for following in (good_release, bad_release):
        if not acts[-1].ok:
            break
        acts.append(following(cluster, stopped))
    return acts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)

    say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    cluster = LocalCluster(args.dir)
    cluster.up()
    print(f"    export KUBECONFIG={cluster.admin_kubeconfig}")

    say(
        "starting the data plane (each pod of checkout serves as its image says), callers through "
        "Service checkout, and Prometheus discovering the pods"
    )
    prepare_namespace(cluster)
    # The pods read the flag ConfigMap as a mounted volume; with it on, image 3.0's new path fails.
    flags = ConfigMapVolume(client.CoreV1Api(cluster.api_client()), NAMESPACE, "checkout-flags",
                            args.dir / "flags").start()  # fmt: skip
    plane, load, prometheus = start_metrics(cluster, args.dir, flags)
    print(f"    Prometheus at {prometheus.url}")

    say("installing the Rollout CRD and the operator's least-privilege RBAC")
    install_crd(cluster.api_client())
    operator_kubeconfig = install_operator_account(
        cluster.admin_kubeconfig, cluster.dir / "operator.kubeconfig"
    )

    say("starting the operator under its own ServiceAccount")
    log = (args.dir / "logs" / "operator.log").open("ab")
    operator = subprocess.Popen(
        [sys.executable, "-m", "parachute", "run"], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(operator_kubeconfig)},
    )  # fmt: skip
    print(f"    operator log: {args.dir / 'logs' / 'operator.log'}")

    say("creating Deployment shop/checkout (10 replicas) and applying examples/demo-rollout.yaml")
    deploy_checkout(cluster, prometheus)

    stop = False

    def interrupt(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    acts: list[Act] = []
    try:
        acts = play(cluster, lambda: stop)
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=20)
        log.close()
        flags.stop()
        load.stop()
        prometheus.stop()
        plane.stop()
    say("stopped the operator, Prometheus and the data plane; the cluster is still up (`make cluster-down`)")
    summary(acts)
    return 0 if len(acts) == 3 and all(a.ok for a in acts) else 1


def watch(cluster: LocalCluster, stopped: Any, until: Any, timeout: float) -> bool:
    """Print the Rollout's line whenever it changes, until `until(status)` or the timeout."""
    last = ""
    deadline = time.monotonic() + timeout
    while not stopped() and time.monotonic() < deadline:
        body = read_rollout(cluster)
        status = dict(body.get("status") or {})
        state = repr([status.get(k) for k in ("phase", "stage", "canaryWeight", "lastVerdict", "message")])
        if status.get("phase") and state != last:  # AGE changes every second; print when the state does
            if not last:
                print(header(), flush=True)
            print(row(body), flush=True)
            last = state
        if until(status):
            return True
        time.sleep(1)
    return False


if __name__ == "__main__":
    sys.exit(main())
