"""The operator run the way the chart's Pod runs it: the command line, environment, user and
writable paths all read from `helm template`, in-cluster configuration from a ServiceAccount
token and CA mounted where a kubelet mounts them, in a mount namespace of its own whose root
filesystem is read-only. Its liveness and readiness endpoints answer, it takes its Lease, and it
adopts a Rollout as the pod it pretends to be."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from parachute import rbac
from testbed.cluster import tool
from testbed.install import OPERATOR_NAMESPACE, apply
from tests.integration.conftest import Cluster, deployment, eventually, free_port, rollout, rollout_status

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CHART = Path(__file__).resolve().parents[2] / "helm" / "parachute"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
POD_NAME = "parachute-7d9f8c6b5-x2x4q"


def rendered_pod(ports: dict[str, int]) -> dict[str, Any]:
    """The Deployment's pod template as the chart renders it (two replicas: leader election on)."""
    sets = ["replicaCount=2", f"probes.livenessPort={ports['health']}", f"probes.readinessPort={ports['ready']}",
            f"metrics.port={ports['metrics']}"]  # fmt: skip
    text = subprocess.run(
        [str(tool("helm")), "template", "parachute", str(CHART), "--namespace", OPERATOR_NAMESPACE,
         *(item for s in sets for item in ("--set", s))],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "Deployment")
    template: dict[str, Any] = found["spec"]["template"]
    return template


def environment(container: dict[str, Any], api_host: str, api_port: str) -> dict[str, str]:
    """The container's env as a kubelet fills it in, with the Service variables it always adds."""
    fields = {"metadata.name": POD_NAME, "metadata.namespace": OPERATOR_NAMESPACE}
    env = {"KUBERNETES_SERVICE_HOST": api_host, "KUBERNETES_SERVICE_PORT": api_port,
           "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"}  # fmt: skip
    for variable in container.get("env") or []:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def writable_paths(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """Where the container may write: its volumes mounted without readOnly (emptyDirs)."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    paths = []
    for mount in container.get("volumeMounts") or []:
        if not mount.get("readOnly") and "emptyDir" in volumes[mount["name"]]:
            paths.append(mount["mountPath"])
    return paths


def image_python() -> list[str]:
    """An image's Python is readable by every user; one installed under a private home is not.
    Shell steps that show the interpreter's installation, alone, at its own path (read-only)."""
    prefix = Path(sys.base_prefix).resolve()
    blocked = next((p for p in [*reversed(prefix.parents), prefix][1:] if not p.stat().st_mode & 0o001), None)
    if blocked is None:
        return []
    return [
        f"mkdir -p /run/image && mount --bind {shlex.quote(str(prefix))} /run/image",
        f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(blocked))}",
        f"mkdir -p {shlex.quote(str(prefix))} && mount --bind /run/image {shlex.quote(str(prefix))}",
        f"mount -o remount,bind,ro {shlex.quote(str(blocked))}",
    ]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()
    except OSError:
        return 0, b""


class PodProcess:
    """The operator in its own mount namespace, set up as the kubelet and runtime would."""

    def __init__(self, cluster: Cluster, kubeconfig: Path, workdir: Path) -> None:
        self.ports = {"health": free_port(), "ready": free_port(), "metrics": free_port()}
        self.pod = rendered_pod(self.ports)
        self.container = self.pod["spec"]["containers"][0]
        self.workdir = workdir
        account = yaml.safe_load(kubeconfig.read_text())
        server = account["clusters"][0]["cluster"]["server"]
        host, port = server.removeprefix("https://").rsplit(":", 1)
        token_dir = workdir / "serviceaccount"
        token_dir.mkdir()
        (token_dir / "token").write_text(account["users"][0]["user"]["token"])
        (token_dir / "ca.crt").write_bytes(
            base64.b64decode(account["clusters"][0]["cluster"]["certificate-authority-data"])
        )
        (token_dir / "namespace").write_text(OPERATOR_NAMESPACE)
        for file in token_dir.iterdir():
            file.chmod(0o644)  # a kubelet's projected volume is readable by the pod's user
        self.token_dir = token_dir
        self.env = environment(self.container, host, port)
        self.log = workdir / "pod.log"
        self.process: subprocess.Popen[bytes] | None = None

    def script(self) -> str:
        """As root in the new mount namespace: the token's volume, the writable volumes, the
        read-only root; then the pod's user runs the image's entrypoint with the pod's args."""
        security = {
            **self.pod["spec"].get("securityContext", {}),
            **self.container.get("securityContext", {}),
        }
        assert security["runAsNonRoot"] and security["runAsUser"] != 0
        assert security["readOnlyRootFilesystem"] and security["allowPrivilegeEscalation"] is False
        command = [sys.executable, "-m", "parachute", *self.container["args"]]  # ENTRYPOINT ["parachute"]
        steps = [
            "set -e",
            # /var/run is /run here: a fresh tmpfs there holds only what the pod is given.
            "mount -t tmpfs -o mode=755 tmpfs /run",
            *image_python(),
            f"mkdir -p {SERVICE_ACCOUNT_DIR}",
            *(
                f"touch {SERVICE_ACCOUNT_DIR}/{n} && mount --bind -o ro {shlex.quote(str(self.token_dir / n))} "
                f"{SERVICE_ACCOUNT_DIR}/{n}"
                for n in ("token", "ca.crt", "namespace")
            ),
            *(
                f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(p)}"
                for p in writable_paths(self.pod, self.container)
            ),
            "mount -o remount,bind,ro /run",
            "mount -o remount,bind,ro /",
            f"exec setpriv --reuid={security['runAsUser']} --regid={security.get('runAsGroup', security['runAsUser'])}"
            f" --clear-groups --no-new-privs env -i "
            + " ".join(shlex.quote(f"{k}={v}") for k, v in self.env.items())
            + " "
            + " ".join(shlex.quote(c) for c in command),
        ]
        return "\n".join(steps)

    def start(self) -> PodProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", self.script()],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/",
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

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def answers(self, port: str, path: str, timeout: float) -> bytes:
        """The endpoint's body once it answers 200; fails with the pod's log as it is then, and at
        once if the process has ended."""

        def answered() -> bytes | None:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(
                    f"the pod's process ended ({self.process.returncode}); its log:\n{self.output[-3000:]}"
                )
            code, body = get(self.url(port, path))
            return (body or b"-") if code == 200 else None

        try:
            found: bytes = eventually(answered, timeout=timeout, what=f"{port} {path}")
        except pytest.fail.Exception as failed:
            pytest.fail(f"{failed}; the pod's log:\n{self.output[-3000:]}")
        return found


def unshare_works() -> str | None:
    """Why this machine cannot run the test, or None."""
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return "needs unshare and setpriv (util-linux)"
    if os.geteuid() != 0:
        return "a mount namespace with bind mounts needs root"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare --mount is refused here: {probe.stderr.decode().strip()}"
    return None


@pytest.fixture
def pod(crds: Cluster, operator_kubeconfig: Path, tmp_path: Path) -> Iterator[PodProcess]:
    reason = unshare_works()
    if reason:
        pytest.skip(reason)
    for document in rbac.leader_election_documents(
        OPERATOR_NAMESPACE, name="parachute-parachute-leader-election"
    ):
        apply(crds.api, document)
    running = PodProcess(crds, operator_kubeconfig, tmp_path).start()
    yield running
    running.stop()
    lease = next(
        a.split("=", 1)[1] for a in running.container["args"] if a.startswith("--leader-election-id=")
    )
    try:  # a process that never led never made its Lease
        client.CoordinationV1Api(crds.api).delete_namespaced_lease(lease, OPERATOR_NAMESPACE)
    except ApiException as error:
        if error.status != 404:
            raise
    assert "Traceback" not in running.output, running.output[-3000:]


def test_the_operator_runs_as_the_chart_pod_runs_it(pod: PodProcess, crds: Cluster, namespace: str) -> None:
    # Liveness, then readiness once its first listing is in (a standby is ready too); it is the
    # only replica, so it takes the Lease and leads.
    pod.answers("health", "/healthz", timeout=60)
    ready = json.loads(pod.answers("ready", "/readyz", timeout=60))
    assert ready["ready"] is True
    eventually(lambda: json.loads(pod.answers("ready", "/readyz", timeout=10))["leading"], timeout=30,
               what="leading")  # fmt: skip
    # unshare, sh, setpriv and env each exec the next: the process started is the operator. It
    # runs as the pod's user, and its root filesystem is read-only.
    assert pod.process is not None
    pid = pod.process.pid
    uid = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
    )
    assert uid.split()[1] == str(pod.pod["spec"]["securityContext"]["runAsUser"])
    mounts = [line.split() for line in Path(f"/proc/{pid}/mounts").read_text().splitlines()]
    assert "ro" in next(m for m in mounts if m[1] == "/")[3].split(",")
    token_dir = os.path.realpath(SERVICE_ACCOUNT_DIR)  # /var/run is /run
    assert {m[1] for m in mounts} >= {f"{token_dir}/token", f"{token_dir}/ca.crt", f"{token_dir}/namespace"}
    # It found the cluster from inside, as the pod's ServiceAccount, and acts under the Lease.
    metrics = eventually(lambda: (m := get(pod.url("metrics", "/metrics")))[0] == 200 and m[1].decode())
    assert "parachute_leader 1.0" in metrics

    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "6s", "max": "20s"}
    )
    crds.custom.create_namespaced_custom_object("parachute.dev", "v1alpha1", namespace, "rollouts", body)
    eventually(lambda: rollout_status(crds, namespace).get("phase") == "Healthy", timeout=60, what="adopted")
    events = eventually(  # the Events follow the status that owes them
        lambda: (
            crds.core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=checkout,involvedObject.kind=Rollout"
            ).items
        ),
        timeout=20,
        what="the Adopted Event",
    )
    assert {(e.reporting_instance or "").split("_")[0] for e in events} == {POD_NAME}
    assert "Read-only file system" not in pod.output
