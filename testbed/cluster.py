"""A real Kubernetes control plane as local processes: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods turn Ready).

Used by the pytest fixtures, `make cluster-up`/`cluster-down` and `make demo`. No Docker:
the binaries come from `testbed/install-binaries.sh` (release download or a build from the
Go module proxy, cached by version). Every process runs in its own session with its PID in
the work directory, so a cluster started by one command is stopped by another.

    python -m testbed.cluster up [--dir DIR]     prints the admin kubeconfig path; also writes
                                                 operator.kubeconfig (the operator's ServiceAccount)
    python -m testbed.cluster down [--dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / ".cluster"
SERVICE_CIDR = "10.96.0.0/16"
# The controllers' default client rate (20 requests/s) paces a test cluster, not Parachute:
# fifty Deployments rolling at once would wait on it.
CLIENT_RATE = ("--kube-api-qps=200", "--kube-api-burst=400")


# The Deployment controller's workers wait on the API server for each sync: at 10,000
# Deployments on two busy cores, with its default 5, a sync took 179 ms, all 5 were busy all the
# time, and a change waited 249 s in its queue on average (13,600 queued), so the canaries'
# ReplicaSets and their status came minutes late and paced the releases, not Parachute. A cluster
# that size runs its control plane on its own machines, with more workers; a cluster of this size
# may be given them (`deployment_workers`). At 1,000 the 5 keep up, and 50 only take the cores
# from the API server in the releases' bursts. The ReplicaSet controller keeps its 5: with 50 at
# 10,000 it made pods faster than kwok marked them running on the same cores, and 661 canaries'
# pods stayed Pending past their Rollouts' 30-minute progress deadline.
def deployment_workers(workers: int | None) -> tuple[str, ...]:
    if workers is None:
        return ()
    return (f"--concurrent-deployment-syncs={workers}",)


FAKE_NODES = ("kwok-node-1", "kwok-node-2")


class ClusterError(RuntimeError):
    """The control plane did not come up; the message says which part and where its log is."""


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def free(cls) -> Ports:
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(socket.socket()) for _ in range(6)]
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in socks))


def install_binaries() -> Path:
    """Run the installer (a no-op when cached) and return the directory of versioned binaries."""
    result = subprocess.run(
        ["bash", str(REPO / "testbed" / "install-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(result.stdout.strip().splitlines()[-1])


def tool(name: str) -> Path:
    """A cached tool binary (`helm`, `kwok`, ...) at the version `versions.env` pins."""
    version = _versions()[f"{name.upper()}_VERSION"]
    return install_binaries() / f"{name}-v{version}" / name


def _versions() -> dict[str, str]:
    lines = (REPO / "testbed" / "versions.env").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A CA, the apiserver's serving certificate, an admin client certificate and SA keys.

    The CA carries keyUsage: strict X.509 verification (Python 3.13's default, used by
    kopf's aiohttp) refuses a CA without it.
    """
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650", "-subj", "/CN=parachute-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", "ca.crt", cwd=pki)  # fmt: skip
    sans = ",".join(
        ["IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
         "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local"]
    )  # fmt: skip
    leafs = {
        "apiserver": ("/CN=kube-apiserver", "serverAuth", f"subjectAltName={sans}"),
        "admin": ("/O=system:masters/CN=parachute-admin", "clientAuth", None),
    }
    for name, (subject, usage, san) in leafs.items():
        _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
        ext = [
            "basicConstraints=CA:FALSE",
            "keyUsage=digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ]
        (pki / f"{name}.ext").write_text("\n".join([*ext, *([san] if san else [])]) + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-sha256", "-days", "365", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for leftover in [*pki.glob("*.csr"), *pki.glob("*.ext"), *pki.glob("*.srl")]:
        leftover.unlink()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, ca: Path, user: dict[str, str], name: str = "parachute-local") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    hint = f"; its log: {log}" if log else ""
    tail = ""
    if log and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise ClusterError(f"{what} was not ready within {timeout:.0f}s{hint}{tail}")


def _http_ok(url: str, context: ssl.SSLContext | None = None, expect: str | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        body: str = response.read().decode()
        return response.status == 200 and (expect is None or expect in body)


class LocalCluster:
    """One local control plane rooted at a work directory (its state, logs and PIDs)."""

    def __init__(
        self, workdir: Path = DEFAULT_DIR, profiling: bool = False, deployment_workers: int | None = None
    ) -> None:
        self.dir = workdir.resolve()
        self.profiling = profiling  # the API server serves /debug/pprof (benchmarks: where its CPU goes)
        self.deployment_workers = deployment_workers  # None: the controller's default (5)
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.admin_kubeconfig = self.dir / "admin.kubeconfig"
        self._state = self.dir / "cluster.json"
        # Children started by this process, reaped on down(); a cluster started by another
        # process (`make cluster-up`) is stopped through its recorded PIDs alone.
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._commands: dict[str, tuple[list[str], dict[str, str] | None]] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._state.exists() and all(self._alive(p) for p in self._pids().values())

    @property
    def server(self) -> str:
        return str(json.loads(self._state.read_text())["server"])

    def up(self, timeout: float = 120) -> Path:
        """Start every component and wait until a Deployment could become ready. Idempotent."""
        if self.running:
            return self.admin_kubeconfig
        self.down()
        bins = install_binaries()
        v = _versions()
        kube = bins / f"kubernetes-v{v['KUBE_VERSION']}"
        etcd = bins / f"etcd-v{v['ETCD_VERSION']}" / "etcd"
        kwok_dir = bins / f"kwok-v{v['KWOK_VERSION']}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        make_pki(self.pki)
        ports = Ports.free()
        server = f"https://127.0.0.1:{ports.apiserver}"
        self._state.write_text(json.dumps({"server": server, "ports": asdict(ports), "pids": {}}))
        admin = kubeconfig(
            server,
            self.pki / "ca.crt",
            {
                "client-certificate-data": _b64(self.pki / "admin.crt"),
                "client-key-data": _b64(self.pki / "admin.key"),
            },
        )
        self.admin_kubeconfig.write_text(yaml.safe_dump(admin))
        self.admin_kubeconfig.chmod(0o600)
        ca_context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        insecure = ssl._create_unverified_context()  # components' own self-signed health endpoints

        self._start("etcd", [
            str(etcd), "--name=parachute", f"--data-dir={self.dir / 'etcd'}", "--log-level=warn", "--logger=zap",
            f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-cluster=parachute=http://127.0.0.1:{ports.etcd_peer}",
            "--unsafe-no-fsync=true", "--auto-compaction-retention=1", "--quota-backend-bytes=2147483648",
        ])  # fmt: skip
        wait_for("etcd", lambda: _http_ok(f"http://127.0.0.1:{ports.etcd_client}/health", expect="true"),
                 30, self.logs / "etcd.log")  # fmt: skip

        self._start("kube-apiserver", [
            str(kube / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}", f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--client-ca-file={self.pki / 'ca.crt'}", "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
            "--enable-priority-and-fairness=false", f"--profiling={str(self.profiling).lower()}", "--v=1",
        ])  # fmt: skip
        wait_for("kube-apiserver", lambda: _http_ok(f"{server}/readyz", ca_context), 90,
                 self.logs / "kube-apiserver.log")  # fmt: skip

        self._start("kube-controller-manager", [
            str(kube / "kube-controller-manager"), f"--kubeconfig={self.admin_kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            f"--root-ca-file={self.pki / 'ca.crt'}", f"--service-account-private-key-file={self.pki / 'sa.key'}",
            "--leader-elect=false", "--v=1", *CLIENT_RATE, *deployment_workers(self.deployment_workers),
        ])  # fmt: skip
        self._start("kube-scheduler", [
            str(kube / "kube-scheduler"), f"--kubeconfig={self.admin_kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics", "--leader-elect=false", "--v=1",
            *CLIENT_RATE,
        ])  # fmt: skip
        self._start("kwok", [
            str(kwok_dir / "kwok"), f"--kubeconfig={self.admin_kubeconfig}", f"--config={kwok_dir / 'stages.yaml'}",
            "--manage-all-nodes=true", "--node-ip=10.250.0.1", "--cidr=10.244.0.0/16",
            "--node-lease-duration-seconds=40", f"--server-address=127.0.0.1:{ports.kwok}",
        ], env={"KWOK_WORKDIR": str(self.dir / "kwok")})  # fmt: skip
        cm_url = f"https://127.0.0.1:{ports.controller_manager}/healthz"
        wait_for("kube-controller-manager", lambda: _http_ok(cm_url, insecure), 60,
                 self.logs / "kube-controller-manager.log")  # fmt: skip
        wait_for("kube-scheduler", lambda: _http_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", insecure),
                 60, self.logs / "kube-scheduler.log")  # fmt: skip
        wait_for(
            "kwok", lambda: _http_ok(f"http://127.0.0.1:{ports.kwok}/healthz"), 60, self.logs / "kwok.log"
        )
        self._add_fake_nodes(timeout)
        return self.admin_kubeconfig

    def down(self) -> None:
        """Stop every component (newest first) and forget the state; keeps logs for a post-mortem."""
        pids = self._pids()
        for name in reversed(list(pids)):
            self._stop(pids[name])
        self._state.unlink(missing_ok=True)
        for stale in ("etcd", "kwok"):
            subprocess.run(["rm", "-rf", str(self.dir / stale)], check=False)

    def restart(self, name: str, down_for: float = 0.0, timeout: float = 90) -> None:
        """Stop one component started by this process (`etcd`, `kube-apiserver`) and start it
        again as it was, its state kept; return once it serves again. For the fault tests."""
        argv, env = self._commands[name]
        self._stop(self._pids()[name])
        time.sleep(down_for)
        self._start(name, argv, env)
        ports = json.loads(self._state.read_text())["ports"]
        ca_context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        serving = {
            "etcd": lambda: _http_ok(f"http://127.0.0.1:{ports['etcd_client']}/health", expect="true"),
            "kube-apiserver": lambda: _http_ok(f"{self.server}/readyz", ca_context),
        }
        wait_for(name, serving[name], timeout, self.logs / f"{name}.log")

    # ------------------------------------------------------------------ clients

    def api_client(self, kubeconfig_path: Path | None = None) -> Any:
        return config.new_client_from_config(str(kubeconfig_path or self.admin_kubeconfig))

    def api_server_profile(self, seconds: int) -> bytes:
        """The API server's CPU profile over the next `seconds` (pprof's format; `go tool pprof`
        reads it). The cluster must have been started with `profiling`."""
        return self.api_server_get("/debug/pprof/profile", seconds + 60, seconds=str(seconds))

    def api_server_get(self, path: str, timeout: float, **query: str) -> bytes:
        """The API server's own answer at `path` as it sent it (its /metrics, its profiles)."""
        answer = self.api_client().call_api(
            path, "GET", query_params=list(query.items()), auth_settings=["BearerToken"],
            _preload_content=False, _request_timeout=timeout,
        )  # fmt: skip
        response = answer[0] if isinstance(answer, tuple) else answer
        return bytes(response.data)

    # ------------------------------------------------------------------ internals

    def _add_fake_nodes(self, timeout: float) -> None:
        api = client.CoreV1Api(self.api_client())
        for name in FAKE_NODES:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                },
                "status": {
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                },
            }
            with contextlib.suppress(client.ApiException):
                api.create_node(node)  # type: ignore[arg-type]  # the client accepts plain dicts

        def nodes_ready() -> bool:
            for item in api.list_node().items:
                ready = [c for c in (item.status and item.status.conditions) or [] if c.type == "Ready"]
                # The node-lifecycle controller lifts the not-ready taint once kwok reports Ready.
                tainted = any(
                    t.key == "node.kubernetes.io/not-ready" for t in (item.spec and item.spec.taints) or []
                )
                if not ready or ready[0].status != "True" or tainted:
                    return False
            return True

        wait_for("kwok fake nodes", nodes_ready, timeout, self.logs / "kwok.log")
        wait_for(
            "the default ServiceAccount (controller-manager serving)",
            lambda: api.read_namespaced_service_account("default", "default") is not None,
            timeout,
            self.logs / "kube-controller-manager.log",
        )

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **(env or {})},
            )  # fmt: skip
        self._children[process.pid] = process
        self._commands[name] = (argv, env)
        state = json.loads(self._state.read_text())
        state["pids"][name] = process.pid
        self._state.write_text(json.dumps(state))

    def _pids(self) -> dict[str, int]:
        if not self._state.exists():
            return {}
        return dict(json.loads(self._state.read_text()).get("pids", {}))

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie (exited, not yet reaped by its parent) counts as dead.
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return False
        return True

    def _stop(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="work directory (default: .cluster)")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir)
    if args.command == "up":
        started = time.monotonic()
        try:
            path = cluster.up()
        except (ClusterError, subprocess.CalledProcessError) as error:
            print(f"cluster: {error}", file=sys.stderr)
            cluster.down()
            return 1
        # The CRD and the operator's own account, so the operator can run here with least privilege.
        from testbed.install import install_crd, install_operator_account

        install_crd(cluster.api_client())
        operator = install_operator_account(path, cluster.dir / "operator.kubeconfig")
        print(f"cluster: up in {time.monotonic() - started:.1f}s at {cluster.server}", file=sys.stderr)
        print(f"cluster: admin kubeconfig {path}", file=sys.stderr)
        print(
            f"cluster: operator kubeconfig {operator} (ServiceAccount parachute-system/parachute)",
            file=sys.stderr,
        )
        print(path)
    elif args.command == "down":
        cluster.down()
    else:
        print("running" if cluster.running else "stopped")
        return 0 if cluster.running else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
