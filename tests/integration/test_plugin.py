"""`kubectl parachute` on the real cluster: `get` draws a known state exactly, and a release is
followed and steered through the plugin alone — `status` waits and exits by how it ended,
`pause`/`resume`/`promote`/`abort`/`retry`/`resolve` act through spec and annotations, and
`history` and `postmortem` tell what happened."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.demoapp import Behaviour
from tests.integration.analysed import NEW, Analysed
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)
from tests.unit.test_cli_view import KNOWN_STATUS

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
PLUGIN = Path(sys.executable).with_name("kubectl-parachute")
# The moment the known state is looked at (PARACHUTE_CLOCK_START), so relative times are fixed.
LOOKED_AT = "2026-11-26T12:00:00Z"

SNAPSHOT = """\
Rollout {ns}/checkout  Progressing  risk medium (spec.risk)
├── stage 2/3 (partial) at 50%: watching until 2026-11-26T15:30:00Z
├── waiting on a person: blocked: 9a8b7c6d5e (kubectl parachute resolve checkout 9a8b7c6d5e)
├── Stages
│   ├── ✔ 1 canary    10%  wait 2h-4h
│   ├── ▶ 2 partial   50%  wait 4h-8h  started 11:30:00Z (30m ago), in place 11:30:40Z (29m ago)
│   └── · 3 full     100%
├── Versions
│   ├── stable revision 0f3e9a7c21  registry.example/checkout:1.0  4/4 ready  deployment/checkout
│   └── canary revision 5d1c0a9e3b  registry.example/checkout:2.0  4/4 ready  deployment/checkout-canary
├── Routing  replicas: desired 50%, applied 50% (ready pods)
├── Metrics  last verdict Warning  next 12:01:00Z
│   ├── error-rate            0.0031  stable 0.0004  Warning  0.31% is in the warning band (0.2%..0.5%)
│   ├── latency-p95            0.182  stable 0.171  Successful
│   └── success-rate          0.9969  Warning
├── Gates
│   ├── ✔ tests-passed
│   └── ✔ review-approved
├── Window  policy playbook: open (Thu 10:00-14:00)
├── Incidents
│   └── 9a8b7c6d5e-20261125103000  error-rate Failed: 6.1% is above 5% (roll back at once)
│       ├── started 2026-11-25 10:30:00Z, revision 9a8b7c6d5e, stable 0f3e9a7c21
│       ├── level flag: started 2026-11-25 10:30:00Z, in place 2026-11-25 10:30:02Z, health back 2026-11-25 10:30:41Z (budget 1m)
│       ├── recovered in 41s: objective met
│       ├── revert in git to revision 0f3e9a7c21 (registry.example/checkout:1.0)
│       ├── postmortem due 2026-11-27 10:30:41Z (in 22h31m)
│       └── root cause not yet marked fixed
└── Blocked revisions  9a8b7c6d5e
"""


def plugin(
    cluster: Cluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLUGIN), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True, text=True, timeout=240, check=False, env={**os.environ, "COLUMNS": "160", **(env or {})},
    )  # fmt: skip


def started(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    # A suite started in the background by a shell without job control runs with SIGINT
    # ignored, and a child inherits that: its Ctrl-C would be lost. A person's terminal
    # delivers it, so the child starts with the default.
    # PYTHONFAULTHANDLER: a SIGABRT makes it print where every thread is (see `interrupted`).
    before = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return subprocess.Popen(
            [str(PLUGIN), "--kubeconfig", str(cluster.kubeconfig), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "160", "PYTHONFAULTHANDLER": "1"},
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, before)


def interrupted(process: subprocess.Popen[str], timeout: float = 30) -> str:
    """Ctrl-C, as a person stops a live view; its output. One that does not stop is ended, and
    where it was stuck is the failure's message."""
    process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _, err = process.communicate(timeout=30)
        pytest.fail(f"still running {timeout:.0f} s after SIGINT; where it was:\n{err[-4000:]}")
    return out


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- a known state


@pytest.fixture
def known(crds: Cluster, namespace: str) -> str:
    """A Rollout whose status is written by hand (no operator runs), beside real Deployments."""
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=4))
    canary = deployment("checkout-canary", replicas=4, image="registry.example/checkout:2.0")
    canary["metadata"]["annotations"] = {"parachute.dev/revision": "5d1c0a9e3b"}
    crds.apps.create_namespaced_deployment(namespace, canary)
    body = rollout("checkout", targetRef={"name": "checkout"}, risk="medium")
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    crds.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "checkout", {"status": KNOWN_STATUS}
    )

    def ready() -> bool:
        return all(
            crds.apps.read_namespaced_deployment(name, namespace).status.ready_replicas == 4
            for name in ("checkout", "checkout-canary")
        )

    eventually(ready, timeout=60, what="4 ready pods in each Deployment")
    return namespace


def test_get_draws_a_known_state_as_the_snapshot(crds: Cluster, known: str) -> None:
    shown = plugin(crds, "get", "checkout", "-n", known, env={"PARACHUTE_CLOCK_START": LOOKED_AT})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == SNAPSHOT.format(ns=known)


def test_get_and_list_print_json(crds: Cluster, known: str) -> None:
    shown = plugin(crds, "get", "checkout", "-n", known, "-o", "json")
    document = json.loads(shown.stdout)
    assert (document["phase"], document["stage"], document["routing"]["appliedWeight"]) == (
        "Progressing",
        "2/3",
        50,
    )
    assert [s["state"] for s in document["stages"]] == ["done", "current", "next"]
    assert document["canary"] == {"role": "canary", "deployment": "checkout-canary", "revision": "5d1c0a9e3b",
                                  "images": ["registry.example/checkout:2.0"], "replicas": 4, "ready": 4}  # fmt: skip
    assert document["incidents"][0]["recoverySeconds"] == 41
    rows = json.loads(plugin(crds, "list", "-n", known, "-o", "json").stdout)
    assert [(r["name"], r["phase"], r["waitingOn"]) for r in rows] == [
        ("checkout", "Progressing", ["blocked: 9a8b7c6d5e (kubectl parachute resolve checkout 9a8b7c6d5e)"])
    ]


def test_list_covers_every_namespace_by_default(crds: Cluster, known: str) -> None:
    listed = plugin(crds, "list")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split()[:4] == ["NAMESPACE", "NAME", "PHASE", "STAGE"]
    ours = next(line for line in lines if line.startswith(known))
    assert ours.split()[1:6] == ["checkout", "Progressing", "2/3", "50%", "medium"]
    assert "blocked: 9a8b7c6d5e" in ours
    only = plugin(crds, "list", "-n", known).stdout
    assert only.splitlines()[0].split()[0] == "NAME"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
def test_kubectl_finds_the_plugin_on_the_path(crds: Cluster, known: str) -> None:
    path = f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    shown = subprocess.run(
        ["kubectl", "parachute", "list", "-n", known, "--kubeconfig", str(crds.kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "PATH": path},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].split()[:2] == ["checkout", "Progressing"]


def test_a_missing_rollout_is_an_error_not_a_traceback(crds: Cluster, namespace: str) -> None:
    missing = plugin(crds, "get", "nothing", "-n", namespace)
    assert missing.returncode == 1
    assert missing.stderr == f"error: Rollout {namespace}/nothing not found\n"


# ---------------------------------------------------------------------------- steering a release


class Release:
    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return plugin(self.cluster, *args, "-n", self.namespace)

    def status(self) -> dict[str, Any]:
        return rollout_status(self.cluster, self.namespace)

    def body(self) -> dict[str, Any]:
        found: dict[str, Any] = self.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, "checkout"
        )
        return found

    def create(self, **spec: Any) -> None:
        self.cluster.apps.create_namespaced_deployment(self.namespace, deployment("checkout", replicas=2))
        body = rollout("checkout", targetRef={"name": "checkout"}, **spec)
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        wait_adopted(self.cluster, self.namespace)

    def new_image(self, image: str = "registry.example/checkout:2.0") -> None:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
        self.cluster.apps.patch_namespaced_deployment("checkout", self.namespace, patch)


@pytest.fixture
def release(crds: Cluster, namespace: str) -> Release:
    return Release(crds, namespace)


def test_a_release_waited_on_and_steered_through_the_plugin(
    release: Release, operator: RunningOperator
) -> None:
    release.create(risk="medium", waits={"min": "60s", "max": "120s"})
    adopted = release.run("status", "checkout", "--timeout", "20s")
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr  # nothing to release: released
    release.new_image()
    waiting = release.run("status", "checkout", "--timeout", "3s", "--interval", "1")
    assert waiting.returncode == 6, waiting.stdout + waiting.stderr
    assert waiting.stdout.splitlines()[-1].startswith("timed out: timed out after 3s")

    # A pipeline waits while a person steers.
    pipeline = started(release.cluster, "status", "checkout", "-n", release.namespace, "--timeout", "3m",
                       "--interval", "1", "-o", "json")  # fmt: skip
    eventually(lambda: release.status().get("stage") == "1/3", timeout=60, what="first stage")
    assert release.run("pause", "checkout").returncode == 0
    assert release.body()["spec"]["paused"] is True
    eventually(lambda: release.status().get("phase") == "Paused", what="paused")
    rows = json.loads(release.run("list", "-o", "json").stdout)
    assert rows[0]["waitingOn"] == ["paused (kubectl parachute resume checkout)"]
    assert "Paused" in release.run("get", "checkout").stdout
    assert release.run("resume", "checkout").returncode == 0
    eventually(lambda: release.status().get("phase") == "Progressing", what="resumed")

    def promoted_to(stage: str) -> bool:
        if release.status().get("stage") != stage:
            said = release.run("promote", "checkout")
            assert said.returncode == 0 and "promote requested (parachute.dev/promote=" in said.stdout
            time.sleep(1)
        return release.status().get("stage") == stage

    eventually(lambda: promoted_to("2/3"), timeout=60, interval=0.5, what="promoted to 2/3")
    eventually(lambda: promoted_to("3/3"), timeout=60, interval=0.5, what="promoted to 3/3")

    def released() -> bool:
        status = release.status()
        if status.get("phase") == "Progressing" and "watching until" in (status.get("message") or ""):
            release.run("promote", "checkout")
        return status.get("phase") == "Healthy"

    eventually(released, timeout=90, interval=1, what="released")
    out, err = pipeline.communicate(timeout=60)
    assert pipeline.returncode == 0, out + err
    lines = json_lines(out)
    assert lines[-1]["result"] == "released" and lines[-1]["exitCode"] == 0
    phases = [line.get("phase") for line in lines[:-1]]
    assert {"Progressing", "Paused", "Healthy"} <= set(phases)
    assert all(line["revision"] == lines[-1]["revision"] for line in lines)

    history = json.loads(release.run("history", "checkout", "-o", "json").stdout)
    assert history["releases"][-1]["outcome"] == "released"
    assert history["current"]["revision"] == history["current"]["stableRevision"]
    text = release.run("history", "checkout").stdout
    assert "Releases" in text and "ReleaseCompleted" in text


def test_an_abort_ends_the_wait_with_its_own_exit_code_and_a_retry_starts_again(
    release: Release, operator: RunningOperator
) -> None:
    release.create(risk="medium", waits={"min": "60s", "max": "120s"})
    release.new_image()
    eventually(lambda: release.status().get("stage") == "1/3", timeout=60, what="first stage")
    pipeline = started(release.cluster, "status", "checkout", "-n", release.namespace, "--interval", "1")
    said = release.run("abort", "checkout", "-o", "json")
    assert json.loads(said.stdout)["action"] == "abort"
    out, err = pipeline.communicate(timeout=60)
    assert pipeline.returncode == 4, out + err
    assert out.splitlines()[-1].startswith("aborted: aborted by parachute.dev/abort")
    assert "aborted (kubectl parachute retry checkout" in release.run("list").stdout
    assert release.run("retry", "checkout").returncode == 0
    eventually(lambda: release.status().get("phase") == "Progressing", what="retried")


def test_a_spec_that_cannot_work_ends_the_wait_as_invalid(crds: Cluster, namespace: str,
                                                          operator: RunningOperator) -> None:  # fmt: skip
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                rollout("checkout", targetRef={"name": "absent"}))  # fmt: skip
    waited = plugin(crds, "status", "checkout", "-n", namespace, "--timeout", "60s", "--interval", "1")
    assert waited.returncode == 5, waited.stdout + waited.stderr
    assert "Deployment" in waited.stdout and "not found" in waited.stdout


def test_get_watch_follows_changes(release: Release, operator: RunningOperator) -> None:
    release.create(risk="medium", waits={"min": "60s", "max": "120s"})
    watching = started(release.cluster, "get", "checkout", "-n", release.namespace, "--watch", "-o", "json",
                       "--interval", "1")  # fmt: skip
    assert watching.stdout is not None
    first = watching.stdout.readline()  # it is watching before the release starts
    release.new_image()
    eventually(lambda: release.status().get("stage") == "1/3", timeout=60, what="first stage")
    time.sleep(2)
    out = interrupted(watching)
    assert watching.returncode == 130
    phases = [document["phase"] for document in json_lines(first + out)]
    assert phases[0] == "Healthy" and "Progressing" in phases
    # On a terminal-less output the live view draws its last frame when stopped.
    drawing = started(release.cluster, "get", "checkout", "-n", release.namespace, "--watch")
    time.sleep(3)
    out = interrupted(drawing)
    assert f"Rollout {release.namespace}/checkout  Progressing" in out


# ---------------------------------------------------------------------------- a rollback


@pytest.mark.prometheus
def test_a_rollback_fails_the_wait_and_is_written_up_and_resolved_through_the_plugin(
    analysed: Analysed, operator: RunningOperator
) -> None:
    cluster, ns = analysed.cluster, analysed.namespace
    analysed.set_app(NEW, Behaviour(error_rate=0.06))
    analysed.adopt(spec={"steps": [{"name": "canary", "weight": 50, "minWait": "5m"}]})
    analysed.apply_image("checkout:2.0", starts=False)
    waited = plugin(cluster, "status", "checkout", "-n", ns, "--timeout", "2m", "--interval", "1")
    assert waited.returncode == 3, waited.stdout + waited.stderr
    assert waited.stdout.splitlines()[-1].startswith("rolled back: ")
    incident = eventually(lambda: (analysed.status().get("incidents") or [{}])[-1].get("recoveredAt")
                          and analysed.status()["incidents"][-1], timeout=120, what="recovered")  # fmt: skip
    revision = incident["revision"]

    draft = plugin(cluster, "postmortem", "checkout", "-n", ns)
    assert draft.returncode == 0, draft.stderr
    text = draft.stdout
    assert text.startswith(f"# Postmortem: {ns}/checkout, revision {revision} rolled back")
    for heading in ("## What happened", "## Timeline (UTC)", "## Recovery time", "## Metrics",
                    "## What was reverted, and where", "## Root cause", "## Actions"):  # fmt: skip
        assert heading in text
    assert f"first critical verdict: {incident['reason']}" in text and "level code started" in text
    assert f"against the objective of 5m: {'met' if incident['objectiveMet'] else 'missed'}" in text
    assert f"**In git**, revert to {incident['revertInGit']}" in text
    assert f"**Due by {incident['postmortemDueAt'].replace('T', ' ')}.**" in text
    assert "- [ ] **Fix root cause** (before re-deployment attempt)" in text
    assert "RollingBack:" in text  # the timeline has the Events too
    as_json = json.loads(
        plugin(cluster, "postmortem", "checkout", "-n", ns, "--incident", "1", "-o", "json").stdout
    )
    assert as_json["incident"]["id"] == incident["id"] and as_json["markdown"].startswith("# Postmortem")

    history = plugin(cluster, "history", "checkout", "-n", ns, "-o", "json")
    assert json.loads(history.stdout)["releases"][-1]["outcome"] == "rolled back"

    wrong = plugin(cluster, "resolve", "checkout", "nosuchrevision", "-n", ns)
    assert wrong.returncode == 1 and f"(blocked: {revision})" in wrong.stderr
    fixed = plugin(cluster, "resolve", "checkout", revision, "-n", ns)
    assert fixed.returncode == 0, fixed.stderr
    eventually(lambda: not analysed.status().get("blockedRevisions"), what="unblocked")
    assert analysed.status()["incidents"][-1]["resolved"] is True
