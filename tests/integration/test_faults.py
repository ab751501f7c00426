"""Faults, on the operator's side and in the parts it depends on.

A reconcile that keeps failing (here on a status edited by hand into one the engine cannot
follow) sets `ReconcileFailed` naming the exception, with an Event, while the operator keeps
running and retrying; once the cause is gone the next reconcile clears it.

The parts Parachute depends on failing mid-release: the API server restarted, etcd away for a
few seconds (both on a cluster of the test's own, since they stop parts of it), a Prometheus
that answers slowly, and someone else writing the Rollout, its target and its canary all the
while, so that status writes and guarded replaces lose their race (409). Each release ends
where it should, with no rollback, and nothing done twice: each Event of the release once,
and each object Parachute writes at the generation one release gives it.

(Prometheus stopped and started again, and a notification receiver that hangs, are in
test_analysis.py and test_recovery.py.)"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from testbed.cluster import LocalCluster
from testbed.install import install_crd, install_operator_account
from tests.integration.analysed import Analysed
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    event_reasons,
    eventually,
    free_port,
    rollout,
    rollout_status,
    wait_adopted,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def test_a_reconcile_that_keeps_failing_is_reported_in_status_and_cleared_when_it_works(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "10m", "max": "20m"}
    )
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_adopted(crds, namespace)
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
    crds.apps.patch_namespaced_deployment("checkout", namespace, image)
    eventually(lambda: rollout_status(crds, namespace).get("stage") == "1/3", timeout=60, what="stage 1")

    # A status edited by hand into one the engine cannot follow (rolling back with no
    # incident): every reconcile now raises.
    crds.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "checkout",
                                                      {"status": {"phase": "RollingBack"}})  # fmt: skip
    failed = eventually(lambda: condition(rollout_status(crds, namespace), "ReconcileFailed"),
                        timeout=60, what="ReconcileFailed in status")  # fmt: skip
    assert failed["status"] == "True" and failed["reason"] == "AssertionError"
    assert failed["message"].startswith("AssertionError")
    eventually(lambda: "ReconcileFailed" in event_reasons(crds, namespace), what="a ReconcileFailed Event")
    assert operator.process is not None and operator.process.poll() is None  # no crash, no crash loop

    crds.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "checkout",
                                                      {"status": {"phase": "Progressing"}})  # fmt: skip
    cleared = eventually(lambda: (c := condition(rollout_status(crds, namespace), "ReconcileFailed"))
                         and c["status"] == "False" and c, timeout=60, what="ReconcileFailed cleared")  # fmt: skip
    assert cleared["reason"] == "Reconciled" and "AssertionError" in cleared["message"]
    assert rollout_status(crds, namespace)["stage"] == "1/3"


# ---------------------------------------------------------------------------- a release, faulted

NEW_IMAGE = "registry.example/checkout:2.0"
# The Events of one release, each once; a reconcile that failed while a part was away may add a
# ReconcileFailed and, once it works again, a Reconciled: faults told, not actions repeated.
RELEASE = ["Adopted", "ReleaseStarted", "StageAdvanced", "Promoting", "ReleaseCompleted"]
FAULT_TOLD = {"ReconcileFailed", "Reconciled"}


class Release:
    """Deployment `checkout` (2 pods) adopted by a Rollout of three stages, and a new image."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.before: str | None = None  # the stable revision when the last image was applied

    def adopt(self, **spec: Any) -> None:
        self.cluster.apps.create_namespaced_deployment(self.namespace, deployment("checkout", replicas=2))
        body = rollout("checkout", targetRef={"name": "checkout"}, risk="medium", **spec)
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        wait_adopted(self.cluster, self.namespace)

    def apply(self, image: str = NEW_IMAGE) -> None:
        self.before = (self.status().get("release") or {}).get("stableRevision")
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
        self.cluster.apps.patch_namespaced_deployment("checkout", self.namespace, patch)

    def status(self) -> dict[str, Any]:
        return rollout_status(self.cluster, self.namespace)

    def released(self) -> bool:
        """The image applied last is the stable revision (not merely: nothing under way)."""
        status = self.status()
        release = status.get("release") or {}
        stable = release.get("stableRevision")
        return (
            status.get("phase") == "Healthy" and stable == release.get("revision") and stable != self.before
        )

    def deployment(self, name: str) -> Any:
        return self.cluster.apps.read_namespaced_deployment(name, self.namespace)

    def reasons(self) -> list[str]:
        return event_reasons(self.cluster, self.namespace)

    def assert_done_once(self, others: Counter[str] | None = None) -> None:
        """The release's Events each once, nothing rolled back; the target and the canary at the
        generations one release gives them: the target paused on adoption (2), the new image (3),
        unpaused at 100% (4) and paused again once rolled (5); the canary made at 10% (1), grown
        for 50% (2) and retired (3). Each annotation someone else changed is one more."""
        others = others or Counter()
        reasons = eventually(lambda: (r := self.reasons()) and "ReleaseCompleted" in r and r, what="Events")
        assert sorted(r for r in reasons if r not in FAULT_TOLD) == sorted(RELEASE), reasons
        eventually(lambda: self.deployment("checkout-canary").spec.replicas == 0, what="canary retired")
        assert self.deployment("checkout").metadata.generation == 5 + others["Deployment/checkout"]
        assert (
            self.deployment("checkout-canary").metadata.generation == 3 + others["Deployment/checkout-canary"]
        )


@pytest.fixture(scope="module")
def own() -> Iterator[Cluster]:
    """A control plane of this module's own: its tests stop parts of it."""
    if os.environ.get("PARACHUTE_TEST_KUBECONFIG"):
        pytest.skip("stops parts of a local control plane")
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    workdir = Path(tempfile.mkdtemp(prefix="parachute-faults-", dir=base))
    local = LocalCluster(workdir)
    try:
        kubeconfig = local.up()
        install_crd(local.api_client())
        yield Cluster(kubeconfig, local)
    finally:
        local.down()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def on_own(own: Cluster, tmp_path: Path) -> Iterator[tuple[Release, RunningOperator]]:
    """A namespace on the module's cluster, and the operator running there under its ServiceAccount."""
    name = f"t-{os.urandom(4).hex()}"
    own.core.create_namespace({"metadata": {"name": name}})
    eventually(lambda: own.core.read_namespaced_service_account("default", name), what="default SA")
    account = install_operator_account(own.kubeconfig, tmp_path / "operator.kubeconfig")
    running = RunningOperator(account, tmp_path / "operator.log").start()
    yield Release(own, name), running
    running.stop()


def test_a_release_ends_where_it_should_when_the_api_server_restarts_mid_release(
    own: Cluster, on_own: tuple[Release, RunningOperator]
) -> None:
    release, operator = on_own
    release.adopt(waits={"min": "8s", "max": "16s"})
    release.apply()
    eventually(lambda: release.status().get("stage") == "1/3", timeout=60, what="stage 1/3")
    assert own.local is not None
    own.local.restart("kube-apiserver", down_for=3)

    eventually(release.released, timeout=180, what="released after the API server came back")
    release.assert_done_once()
    assert operator.process is not None and operator.process.poll() is None


def test_a_release_ends_where_it_should_when_etcd_is_away_for_a_few_seconds(
    own: Cluster, on_own: tuple[Release, RunningOperator]
) -> None:
    release, operator = on_own
    release.adopt(waits={"min": "8s", "max": "16s"})
    release.apply()
    eventually(lambda: release.status().get("stage") == "2/3", timeout=90, what="stage 2/3")
    # Away from 5 s into the stage until past its minimum wait: the reconcile that ends it waits
    # on an API server with no storage behind it.
    time.sleep(5)
    assert own.local is not None
    own.local.restart("etcd", down_for=6)

    eventually(release.released, timeout=180, what="released after etcd came back")
    release.assert_done_once()
    assert operator.process is not None and operator.process.poll() is None


# ---------------------------------------------------------------------------- someone else writes too


class Writer:
    """Someone else annotating the Rollout, its target and its canary over and over, so that
    Parachute's reads are often out of date by the time it writes. Counts what it wrote: an
    annotation changed is a generation of a Deployment."""

    OBJECTS = (("Rollout", "checkout"), ("Deployment", "checkout"), ("Deployment", "checkout-canary"))

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.written: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        jitter = random.Random(18)
        while not self._done.is_set():
            patch = {
                "metadata": {
                    "annotations": {"test.parachute.dev/someone-else": str(sum(self.written.values()))}
                }
            }
            for kind, name in self.OBJECTS:
                try:
                    if kind == "Rollout":
                        self.cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                           name, patch)  # fmt: skip
                    else:
                        self.cluster.apps.patch_namespaced_deployment(name, self.namespace, patch)
                    self.written[f"{kind}/{name}"] += 1
                except Exception as error:  # the canary is not made yet, or a passing failure: counted
                    self.refused[f"{kind}/{name}: {getattr(error, 'status', type(error).__name__)}"] += 1
            self._done.wait(jitter.uniform(0.02, 0.15))


def reconciles(port: int, outcome: str) -> float:
    """How many reconciles the operator counted with this outcome (its own metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    key = f'parachute_reconcile_duration_seconds_count{{outcome="{outcome}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(key))


def test_a_release_completes_while_someone_else_writes_every_object_it_writes(
    crds: Cluster, namespace: str, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    port = free_port()
    operator = RunningOperator(operator_kubeconfig, tmp_path / "operator.log",
                               {"PARACHUTE_METRICS_PORT": str(port)}).start()  # fmt: skip
    writer = Writer(crds, namespace)
    try:
        release = Release(crds, namespace)
        release.adopt(waits={"min": "3s", "max": "6s"})
        writer.start()
        release.apply()
        eventually(release.released, timeout=180, what="released despite the other writer")
        writer.stop()
        # Writes interleaved with the whole release (how many depends on how fast the API server answers).
        assert writer.written["Rollout/checkout"] > 20, (writer.written, writer.refused)
        release.assert_done_once(writer.written)
        # The other writer won races: status writes were refused (409) and decided again.
        print(f"someone else wrote {dict(writer.written)}; reconciles lost to a conflict: "
              f"{reconciles(port, 'conflict'):.0f}, ok: {reconciles(port, 'ok'):.0f}")  # fmt: skip
        assert reconciles(port, "conflict") > 0, operator.output[-2000:]
        assert reconciles(port, "error") == 0
    finally:
        writer.stop()
        operator.stop()


def test_a_canary_replaced_while_someone_else_writes_it_is_replaced_once(
    crds: Cluster, namespace: str, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    """A second image mid-release moves the canary to it by a replace guarded by the canary's
    resourceVersion, while someone else writes the canary too: the release supersedes once and
    ends on the second image."""
    port = free_port()
    operator = RunningOperator(operator_kubeconfig, tmp_path / "operator.log",
                               {"PARACHUTE_METRICS_PORT": str(port)}).start()  # fmt: skip
    writer = Writer(crds, namespace)
    try:
        release = Release(crds, namespace)
        release.adopt(waits={"min": "4s", "max": "8s"})
        writer.start()
        release.apply()
        eventually(lambda: release.status().get("stage") == "2/3", timeout=60, what="stage 2/3 of 2.0")
        release.apply("registry.example/checkout:3.0")
        eventually(release.released, timeout=180, what="3.0 released despite the other writer")
        writer.stop()
        canary = release.deployment("checkout-canary")
        assert canary.spec.template.spec.containers[0].image == "registry.example/checkout:3.0"
        # The Event is posted right after the status write that owes it: a moment after "released".
        eventually(lambda: "ReleaseCompleted" in release.reasons(), what="ReleaseCompleted")
        reasons = [r for r in release.reasons() if r not in FAULT_TOLD]
        assert reasons.count("ReleaseSuperseded") == 1 and reasons.count("ReleaseCompleted") == 1, reasons
        assert "RollingBack" not in reasons
        assert reconciles(port, "conflict") > 0
        assert reconciles(port, "error") == 0
    finally:
        writer.stop()
        operator.stop()


# ---------------------------------------------------------------------------- a slow Prometheus


class SlowProxy:
    """Prometheus's HTTP API behind a proxy that holds every answer for `delay` seconds."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream, self.delay, self.requests = upstream.rstrip("/"), delay, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _forward(self, body: bytes | None) -> None:
                proxy.requests += 1
                time.sleep(proxy.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                request = urllib.request.Request(proxy.upstream + self.path, data=body, headers=headers,
                                                 method=self.command)  # fmt: skip
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, payload, kind = (
                            answer.status,
                            answer.read(),
                            answer.headers.get("Content-Type"),
                        )
                except urllib.error.HTTPError as error:
                    status, payload, kind = error.code, error.read(), error.headers.get("Content-Type")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind or "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting: that is the point

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_prometheus_that_answers_slowly_holds_the_release_and_never_rolls_it_back(
    analysed: Analysed, operator: RunningOperator
) -> None:
    proxy = SlowProxy(analysed.prometheus.url, delay=4.0)
    try:
        # Slower than the Rollout waits for an answer: every query times out.
        analysed.prometheus_access = {"address": proxy.url, "timeout": "2s"}
        analysed.release(min="6s", max="12s")
        held = eventually(lambda: (s := analysed.status()).get("lastVerdict") == "Error" and s,
                          timeout=90, what="Error verdicts while every answer is late")  # fmt: skip
        assert held["phase"] == "Progressing"
        time.sleep(15)  # past the stage's maximum wait: held, neither promoted nor rolled back
        status = analysed.status()
        assert (status["phase"], status["stage"], status["lastVerdict"]) == ("Progressing", "1/3", "Error")
        assert "held" in status["message"], status["message"]

        # Slow, but within the timeout: judged on what Prometheus says, and released.
        proxy.delay = 0.5
        eventually(analysed.released, timeout=180, what="released once answers come in time")
        assert proxy.requests > 0
        reasons = analysed.reasons()
        assert "RollingBack" not in reasons and "RolledBack" not in reasons
        assert all(m["failed"] == 0 for m in analysed.status()["metrics"])
    finally:
        proxy.stop()
