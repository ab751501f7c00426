"""`make demo`: Parachute's main job on this machine, with nothing but the project's own files.

Brings up the local control plane and a Prometheus scraping the demo app under load,
installs the CRD and the operator's RBAC, runs the operator under its own ServiceAccount,
creates a Deployment and applies an example Rollout, then shows what a user sees. It keeps
running (printing the Rollout as it changes) until Ctrl-C; `--once` stops after the first
view. The cluster stays up afterwards for kubectl; `make cluster-down` stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from parachute import api
from testbed.cluster import DEFAULT_DIR, REPO, LocalCluster
from testbed.demoapp import Behaviour, DemoApp, FlagSource
from testbed.install import install_crd, install_operator_account
from testbed.loadgen import LoadGenerator
from testbed.projector import ConfigMapVolume
from testbed.prometheus import LocalPrometheus, ScrapeTarget

NAMESPACE = "shop"


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def ensure(create: Any, *args: Any) -> None:
    with contextlib.suppress(ApiException):
        create(*args)


def deploy_checkout(cluster: LocalCluster, prometheus_url: str) -> None:
    api_client = cluster.api_client()
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    ensure(core.create_namespace, {"metadata": {"name": NAMESPACE}})
    ensure(core.create_namespaced_config_map, NAMESPACE,
           {"metadata": {"name": "checkout-flags"}, "data": {"new-checkout": "false"}})  # fmt: skip
    labels = {"app": "checkout"}
    ensure(apps.create_namespaced_deployment, NAMESPACE, {
        "metadata": {"name": "checkout", "labels": labels},
        "spec": {"replicas": 10, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.example/checkout:1.0"}]}}},
    })  # fmt: skip
    rollout = yaml.safe_load((REPO / "examples" / "demo-rollout.yaml").read_text())
    rollout["spec"]["analysis"]["prometheus"]["address"] = prometheus_url
    custom = client.CustomObjectsApi(api_client)
    try:
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, rollout)
    except ApiException as error:
        if error.status != 409:
            raise
        custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "checkout", rollout
        )


def show(cluster: LocalCluster) -> str:
    """`kubectl get pr -n shop -o wide` when kubectl is here; the same columns otherwise."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        result = subprocess.run(
            [kubectl, f"--kubeconfig={cluster.admin_kubeconfig}", "get", "pr", "-n", NAMESPACE, "-o", "wide"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return result.stdout or result.stderr
    body: dict[str, Any] = client.CustomObjectsApi(cluster.api_client()).get_namespaced_custom_object(  # type: ignore[assignment]
        api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "checkout"
    )
    status = body.get("status", {})
    row = [body["metadata"]["name"], status.get("phase", ""), status.get("stage", ""),
           str(status.get("canaryWeight", "")), status.get("risk", ""), status.get("lastVerdict", ""),
           status.get("message", "")]  # fmt: skip
    return "NAME  PHASE  STAGE  WEIGHT  RISK  VERDICT  MESSAGE\n" + "  ".join(row) + "\n"


def start_metrics(workdir: Path) -> tuple[DemoApp, LoadGenerator, LocalPrometheus]:
    app = DemoApp().start()
    app.canary.set_behaviour(Behaviour(error_rate=0.0, latency_ms=25))
    load = LoadGenerator(app.stable.url, app.canary.url, rate=60, canary_percent=weight.canary_share).start()
    targets = [ScrapeTarget("demoapp", f"127.0.0.1:{v.port}", {"namespace": NAMESPACE, "app": "checkout"})
               for v in app.versions.values()]  # fmt: skip
    return app, load, LocalPrometheus(workdir / "prometheus", targets).start()


def release_story(cluster: LocalCluster, stopped: Any, once: bool) -> bool:
    """Wait for adoption, apply a new image, and watch it go through the stages."""
    adopted: dict[str, Any] = {}

    def healthy(status: dict[str, Any]) -> bool:
        adopted.update(status.get("release") or {})
        return status.get("phase") == "Healthy"

    watch(cluster, stopped, until=healthy, timeout=60)
    say(
        "releasing a new image: kubectl -n shop set image deployment/checkout app=registry.example/checkout:2.0"
    )
    client.AppsV1Api(cluster.api_client()).patch_namespaced_deployment("checkout", NAMESPACE, {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/checkout:2.0"}]}}}
    })  # fmt: skip
    say("kubectl get pr -n shop -o wide --watch   (the demo app's traffic follows WEIGHT)")

    def done(status: dict[str, Any]) -> bool:
        weight.value = float(status.get("canaryWeight") or 0)
        stable = (status.get("release") or {}).get("stableRevision")
        # Done is a new stable revision: the first reads may predate the new template.
        return status.get("phase") == "Healthy" and stable not in (None, adopted.get("stableRevision"))

    released = watch(cluster, stopped, until=done, timeout=300)
    if released:
        say(
            "released: the Deployment runs the new image and the canary is retired (kubectl -n shop get deploy)"
        )
        released = bad_release_story(cluster, stopped)
    while not stopped() and not once:
        time.sleep(1)
    return released


def bad_release_story(cluster: LocalCluster, stopped: Any) -> bool:
    """Image 3.0 with its new code path switched on goes bad; the flag level recovers it."""
    api_client = cluster.api_client()
    say("a release that goes bad: image 3.0, its new code path behind flag new-checkout, switched on")
    client.CoreV1Api(api_client).patch_namespaced_config_map(
        "checkout-flags", NAMESPACE, {"data": {"new-checkout": "true"}}
    )
    client.AppsV1Api(api_client).patch_namespaced_deployment("checkout", NAMESPACE, {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/checkout:3.0"}]}}}
    })  # fmt: skip

    def recovered(status: dict[str, Any]) -> bool:
        weight.value = float(status.get("canaryWeight") or 0)
        return status.get("phase") == "RolledBack"

    if not watch(cluster, stopped, until=recovered, timeout=180):
        return False
    body: dict[str, Any] = client.CustomObjectsApi(api_client).get_namespaced_custom_object(  # type: ignore[assignment]
        api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "checkout"
    )
    incident = (body["status"].get("incidents") or [{}])[-1]
    flags = client.CoreV1Api(api_client).read_namespaced_config_map("checkout-flags", NAMESPACE).data
    say(f"recovered by the {incident.get('level')} level in {incident.get('recoverySeconds')} s "
        f"(first critical verdict to health); flags now {flags}")  # fmt: skip
    print(f"    why: {incident.get('reason')}")
    print(f"    revision {incident.get('revision')} stays blocked until its root cause is marked fixed:")
    print(f"    kubectl -n shop annotate pr checkout parachute.dev/resolved={incident.get('revision')}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--once", action="store_true", help="show the first view and stop")
    args = parser.parse_args(argv)

    say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    cluster = LocalCluster(args.dir)
    cluster.up()
    print(f"    export KUBECONFIG={cluster.admin_kubeconfig}")

    say("starting the demo app (stable + canary), its load, and Prometheus scraping it every second")
    app, load, prometheus = start_metrics(args.dir)
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
    deploy_checkout(cluster, prometheus.url)
    # The canary reads the flag ConfigMap as a mounted volume; with it on, 6% of requests fail.
    flags = ConfigMapVolume(client.CoreV1Api(cluster.api_client()), NAMESPACE, "checkout-flags",
                            args.dir / "flags").start()  # fmt: skip
    app.canary.follow_flag(FlagSource(flags.path("new-checkout"), "new-checkout"), Behaviour(error_rate=0.06))

    stop = False

    def interrupt(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    released = False
    try:
        released = release_story(cluster, lambda: stop, args.once)
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=20)
        log.close()
        flags.stop()
        load.stop()
        prometheus.stop()
        app.stop()
    say("stopped the operator, Prometheus and the demo app; the cluster is still up (`make cluster-down`)")
    return 0 if released else 1


class Weight:
    """The canary share the load generator sends, following the Rollout."""

    value = 0.0

    def canary_share(self) -> float:
        # Once promoted, the new version runs as the target: its traffic is "stable" traffic.
        return self.value if self.value < 100 else 0.0


weight = Weight()


def watch(cluster: LocalCluster, stopped: Any, until: Any, timeout: float) -> bool:
    """Print the Rollout's line whenever it changes, until `until(status)` or the timeout."""
    last = ""
    deadline = time.monotonic() + timeout
    custom = client.CustomObjectsApi(cluster.api_client())
    while not stopped() and time.monotonic() < deadline:
        body: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[assignment]
            api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "checkout"
        )
        status = dict(body.get("status") or {})
        state = repr([status.get(k) for k in ("phase", "stage", "canaryWeight", "message")])
        if state != last:  # AGE changes every second; print when the state does
            view = show(cluster)
            print(view.splitlines()[-1] if last else view.rstrip(), flush=True)
            last = state
        if until(status):
            return True
        time.sleep(1)
    return False


if __name__ == "__main__":
    sys.exit(main())
