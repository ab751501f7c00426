"""Fixtures for tests against real parts: a Kubernetes control plane and a Prometheus.

The cluster is started once per session from `testbed.cluster` (etcd, kube-apiserver,
controller-manager, scheduler, kwok). Set PARACHUTE_TEST_KUBECONFIG to run the same tests
against another cluster instead (kind, for `make e2e-kind`). Each test gets its own
namespace. Prometheus (the upstream build, for static targets and pod discovery alike) and the
demo application are started per test; the analysis and recovery tests run `checkout` on the
testbed's data plane (analysed.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from testbed.cluster import LocalCluster
from testbed.demoapp import DemoApp
from testbed.install import install_crd, install_operator_account
from testbed.loadgen import LoadGenerator
from testbed.prometheus import LocalPrometheus, ScrapeTarget

if TYPE_CHECKING:
    from tests.integration.analysed import Analysed


def eventually(check: Callable[[], Any], timeout: float = 30, interval: float = 0.25, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail with the last error or value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (ApiException, AssertionError, KeyError) as error:
            last = error
        time.sleep(interval)
    pytest.fail(f"not within {timeout}s: {what or check}; last: {last!r}")


def told(reasons: Callable[[], list[str]], *wanted: str, timeout: float = 15) -> list[str]:
    """The Rollout's Event reasons once every one of `wanted` is among them. An Event owed by a
    status change is posted right after the write that owes it (the outbox), so a test that has
    just seen the status waits for its Events rather than reading them once."""

    def all_there() -> list[str] | None:
        seen = reasons()
        return seen if all(reason in seen for reason in wanted) else None

    found: list[str] = eventually(all_there, timeout=timeout, what=f"Events {', '.join(wanted)}")
    return found


class Cluster:
    """What a test needs of the cluster: clients, kubeconfigs and a way to mint SA credentials."""

    def __init__(self, kubeconfig: Path, local: LocalCluster | None) -> None:
        self.kubeconfig = kubeconfig
        self.local = local
        self.api = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.extensions = client.ApiextensionsV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    external = os.environ.get("PARACHUTE_TEST_KUBECONFIG")
    if external:
        yield Cluster(Path(external), None)
        return
    # etcd on tmpfs where there is one: fsync-free and fast.
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    workdir = Path(tempfile.mkdtemp(prefix="parachute-cluster-", dir=base))
    local = LocalCluster(workdir)
    try:
        kubeconfig = local.up()
        yield Cluster(kubeconfig, local)
    finally:
        local.down()
        logs = tmp_path_factory.getbasetemp() / "cluster-logs"
        shutil.copytree(workdir / "logs", logs, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    """The generated CRD, installed and Established."""
    install_crd(cluster.api)
    return cluster


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace({"metadata": {"name": name, "labels": {"parachute.dev/test": "true"}}})
    # Pods are refused until the ServiceAccount controller has made `default`.
    eventually(lambda: cluster.core.read_namespaced_service_account("default", name), what="default SA")
    yield name
    cluster.core.delete_namespace(name, propagation_policy="Background")


def deployment(name: str, replicas: int = 3, image: str = "registry.example/checkout:1.0") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # kwok nodes run nothing; this pod is scheduled and marked Ready.
                    "containers": [{"name": "app", "image": image}],
                },
            },
        },
    }


def rollout(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "parachute.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": spec,
    }


def load_example(name: str) -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "examples" / name
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


@pytest.fixture
def demo_app() -> Iterator[DemoApp]:
    app = DemoApp().start()
    yield app
    app.stop()


@pytest.fixture
def load(demo_app: DemoApp) -> Iterator[LoadGenerator]:
    generator = LoadGenerator(demo_app.stable.url, demo_app.canary.url, rate=40, duration=600).start()
    yield generator
    generator.stop()


@pytest.fixture
def prometheus(demo_app: DemoApp, tmp_path: Path) -> Iterator[LocalPrometheus]:
    targets = [
        ScrapeTarget("demoapp", f"127.0.0.1:{version.port}", {"namespace": "shop", "app": "checkout"})
        for version in demo_app.versions.values()
    ]
    server = LocalPrometheus(tmp_path / "prometheus", targets).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def operator_kubeconfig(crds: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Credentials of the operator's own ServiceAccount, bound to the ClusterRole it ships."""
    return install_operator_account(
        crds.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.kubeconfig"
    )


class RunningOperator:
    """`python -m parachute` as a real process, under the operator's ServiceAccount."""

    def __init__(
        self, kubeconfig: Path, log: Path, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> None:
        self.kubeconfig, self.log, self.env, self.args = kubeconfig, log, env or {}, args or []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RunningOperator:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "parachute", "run", "--verbose", *self.args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Die at once, mid-whatever, as a crashed or evicted operator would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def operator(operator_kubeconfig: Path, tmp_path: Path) -> Iterator[RunningOperator]:
    running = RunningOperator(operator_kubeconfig, tmp_path / "operator.log").start()
    yield running
    running.stop()
    assert_never_refused(running)


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def operator_with_metrics(
    operator_kubeconfig: Path, tmp_path: Path, metrics_port: int
) -> Iterator[RunningOperator]:
    """The operator serving its own /metrics on `metrics_port`."""
    running = RunningOperator(operator_kubeconfig, tmp_path / "operator.log",
                              args=[f"--metrics-port={metrics_port}"]).start()  # fmt: skip
    yield running
    running.stop()
    assert_never_refused(running)


def free_port() -> int:
    """A port nothing on this machine listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def operator_at(operator_kubeconfig: Path, tmp_path: Path) -> Iterator[Callable[[str], RunningOperator]]:
    """Start the operator with its clock at a given moment (PARACHUTE_CLOCK_START), at real speed after."""
    started: list[RunningOperator] = []

    def start(moment: str) -> RunningOperator:
        running = RunningOperator(
            operator_kubeconfig, tmp_path / "operator.log", {"PARACHUTE_CLOCK_START": moment}
        )
        started.append(running.start())
        return running

    yield start
    for running in started:
        running.stop()
        assert_never_refused(running)


def assert_never_refused(running: RunningOperator) -> None:
    # Least privilege must still be enough: an RBAC refusal fails the test that caused it.
    # (A 403 for a namespace being deleted is not one: nothing may be created there.)
    for refusal in ('is forbidden: User "system:serviceaccount:', "Not enough permissions"):
        assert refusal not in running.output, f"operator was refused ({refusal}); log: {running.log}"


def rollout_status(cluster: Cluster, namespace: str, name: str = "checkout") -> dict[str, Any]:
    body = cluster.custom.get_namespaced_custom_object(
        "parachute.dev", "v1alpha1", namespace, "rollouts", name
    )
    return dict(body.get("status") or {})


def event_reasons(cluster: Cluster, namespace: str, name: str = "checkout") -> list[str]:
    """Reasons of the Events about a Rollout, oldest first (to the second: same-second order is arbitrary)."""
    events = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=Rollout"
    ).items
    return [e.reason for e in sorted(events, key=lambda e: e.metadata.creation_timestamp)]


def wait_adopted(cluster: Cluster, namespace: str, name: str = "checkout", timeout: float = 60) -> None:
    """Healthy with its stable revision recorded, and the target paused. The pause follows the
    status write: an image applied between the two would roll the target by itself, no canary."""
    eventually(
        lambda: (
            rollout_status(cluster, namespace, name).get("phase") == "Healthy"
            and (rollout_status(cluster, namespace, name).get("release") or {}).get("stableRevision")
            and cluster.apps.read_namespaced_deployment(name, namespace).spec.paused
        ),
        timeout=timeout,
        what=f"{name} adopted",
    )


def start_release(cluster: Cluster, namespace: str, **spec: Any) -> None:
    """Adopt Deployment `checkout` under a Rollout with short waits, then apply a new image."""
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout("checkout", targetRef={"name": "checkout"}, waits={"min": "3s", "max": "6s"}, **spec)
    cluster.custom.create_namespaced_custom_object("parachute.dev", "v1alpha1", namespace, "rollouts", body)
    wait_adopted(cluster, namespace)
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
    cluster.apps.patch_namespaced_deployment("checkout", namespace, image)


@pytest.fixture
def analysed(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Analysed]:
    """`checkout` on the data plane, called through its Service, measured by a Prometheus that
    discovers its pods."""
    from tests.integration.analysed import Analysed  # it builds on this module's helpers

    world = Analysed(crds, namespace, tmp_path)
    yield world
    world.stop()
