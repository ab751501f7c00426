"""The outbox: what it costs a release in status writes, how soon an owed Event follows the
status write that owes it, and how soon a restarted operator sends what a killed one owed.

Releases of three stages with 1-2 s waits and no analysis, on the local control plane. A watch
on the Rollout and one on the namespace's Events time each status write and each Event as the
API server announces them: a write that adds entries to `status.outbox` starts a clock, the
Event named after the Rollout's uid and the entry's id stops it. A write whose status differs
from the one before only in `status.outbox` is a removal of delivered entries, the outbox's
own cost. Then an operator is killed right after the status write that starts a release
(`PARACHUTE_KILL_AT=status-written:Progressing`) and a new one started: the time from its
start to the owed Events posted and the outbox empty (the process's start-up included).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from parachute.notify.outbox import event_name
from testbed.cluster import LocalCluster

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
NAMESPACE = "bench-outbox"
RELEASES = 5
Figure = Callable[..., None]


class Seen:
    """Status writes and Events of one Rollout, as the API server's watches announce them."""

    def __init__(self, api_client: client.ApiClient, name: str) -> None:
        self.custom, self.core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
        self.name = name
        self.writes: list[tuple[float, dict[str, Any]]] = []  # (seen at, status)
        self.events: dict[str, float] = {}  # Event name -> seen at
        self._watches = [watch.Watch(), watch.Watch()]
        self._threads = [threading.Thread(target=self._rollouts, daemon=True),
                         threading.Thread(target=self._events, daemon=True)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def _rollouts(self) -> None:
        with contextlib.suppress(Exception):
            for change in self._watches[0].stream(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                                  NAMESPACE, PLURAL, timeout_seconds=3600):  # fmt: skip
                body = change["object"]
                if body["metadata"]["name"] == self.name:
                    self.writes.append((time.monotonic(), dict(body.get("status") or {})))

    def _events(self) -> None:
        with contextlib.suppress(Exception):
            for change in self._watches[1].stream(self.core.list_namespaced_event, NAMESPACE,
                                                  timeout_seconds=3600):  # fmt: skip
                self.events.setdefault(change["object"].metadata.name, time.monotonic())

    def stop(self) -> None:
        for each in self._watches:
            each.stop()


def _start(kubeconfig: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full = {**os.environ, "KUBECONFIG": str(kubeconfig), **(env or {})}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "parachute", "run"], env=full, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


def _wait(predicate: Callable[[], Any], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - started
        time.sleep(0.05)
    return float("nan")


def _ids(status: dict[str, Any]) -> set[str]:
    return {e["id"] for e in status.get("outbox") or [] if e.get("target") is None}


def bench_outbox(cluster: LocalCluster, kubeconfig: Path, workdir: Path, figure: Figure) -> None:
    api_client = cluster.api_client()
    core, apps, custom = (
        client.CoreV1Api(api_client),
        client.AppsV1Api(api_client),
        client.CustomObjectsApi(api_client),
    )
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    labels = {"app": "shop"}
    apps.create_namespaced_deployment(NAMESPACE, {
        "metadata": {"name": "shop", "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "bench:0"}]}}},
    })  # fmt: skip
    seen = Seen(api_client, "shop")
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Rollout", "metadata": {"name": "shop"},
        "spec": {"targetRef": {"name": "shop"}, "waits": {"min": "1s", "max": "2s"}},
    })  # fmt: skip
    operator = _start(kubeconfig, workdir / "operator-outbox.log")

    def rollout() -> dict[str, Any]:
        return dict(custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "shop"))

    def released(image: str) -> bool:
        status = rollout().get("status") or {}
        release = status.get("release") or {}
        return bool(status.get("phase") == "Healthy" and release.get("stableRevision") == release.get("revision")
                    and status.get("stage") and not status.get("outbox")
                    and apps.read_namespaced_deployment("shop", NAMESPACE).spec.template.spec.containers[0].image == image)  # fmt: skip

    def apply(image: str) -> None:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
        apps.patch_namespaced_deployment("shop", NAMESPACE, patch)

    try:
        _wait(lambda: (rollout().get("status") or {}).get("phase") == "Healthy", 60)
        uid = rollout()["metadata"]["uid"]
        first = len(seen.writes)
        for release in range(1, RELEASES + 1):
            apply(f"bench:{release}")
            _wait(lambda image=f"bench:{release}": released(image), 120)
        time.sleep(1)
        writes = seen.writes[first:]
        removals = sum(
            1 for (_, before), (_, after) in itertools.pairwise(writes)
            if before.get("outbox") != after.get("outbox")
            and {k: v for k, v in before.items() if k != "outbox"} == {k: v for k, v in after.items() if k != "outbox"}
        )  # fmt: skip
        figure(f"outbox: status writes per release, {RELEASES} releases", f"{len(writes) / RELEASES:.1f}",
               f"of which {removals / RELEASES:.1f} only removed delivered entries")  # fmt: skip
        delays = []
        owed_before: set[str] = set()
        for at, status in writes:
            for id_ in _ids(status) - owed_before:
                posted = seen.events.get(event_name("shop", uid, id_))
                if posted is not None:
                    delays.append(max(0.0, posted - at))
            owed_before = _ids(status)
        if delays:
            figure("outbox: status write to its Event seen, p50", f"{statistics.median(delays) * 1000:.0f} ms",
                   f"max {max(delays) * 1000:.0f} ms over {len(delays)} Events (both as watches see them)")  # fmt: skip

        _stop(operator)
        operator = _start(kubeconfig, workdir / "operator-outbox-killed.log",
                          {"PARACHUTE_KILL_AT": "status-written:Progressing"})  # fmt: skip
        apply("bench:killed")
        _wait(lambda: operator.poll() is not None, 60)
        owed = _ids(rollout().get("status") or {})
        started = time.monotonic()
        operator = _start(kubeconfig, workdir / "operator-outbox.log")
        caught_up = _wait(lambda: all(event_name("shop", uid, i) in seen.events for i in owed), 60)
        emptied = _wait(lambda: not _ids(rollout().get("status") or {}) & owed, 60)
        figure("outbox: restart to the killed one's Events", f"{caught_up:.1f} s",
               f"{len(owed)} Events owed; outbox emptied {time.monotonic() - started:.1f} s after start"
               f" ({emptied:.1f} s after the Events)")  # fmt: skip
    finally:
        _stop(operator)
        seen.stop()
