"""User reports on the real cluster, with the operator's reports endpoint on: bad or
unauthenticated requests are refused with their status code and nothing is recorded; ten
reports of one issue roll a release back at once (the RollingBack Event and the incident name
them), also across an operator restart, since reports are kept as Events; a single report is a
Warning and the release goes on; and a standby replica records a report the leader counts.

The Rollouts watch `user-reports` alone, so no Prometheus is asked anything: its address is
never called."""

from __future__ import annotations

import json
import re
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from parachute import rbac
from testbed.install import OPERATOR_NAMESPACE, apply
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    assert_never_refused,
    deployment,
    event_reasons,
    eventually,
    free_port,
    rollout,
    rollout_status,
    wait_adopted,
)
from tests.integration.test_ha import Replica

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
TOKEN = secrets.token_hex(24)
NOWHERE = {"address": "http://127.0.0.1:9"}  # never asked: user-reports is not a PromQL query
# One stage that only a rollback ends; analysis rounds a minute apart, so a rollback within
# seconds of the tenth report is the report's doing, not a round's.
ONE_STAGE = [{"name": "canary", "weight": 50, "minWait": "10m"}]
SLOW_ROUNDS = {"prometheus": NOWHERE, "interval": "60s", "metrics": [{"template": "user-reports"}]}


class Reporter:
    """Support tooling: POSTs reports to one operator's endpoint."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/reports"

    def send(self, report: dict[str, Any] | bytes, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
        data = report if isinstance(report, bytes) else json.dumps(report).encode()
        headers = {
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        }
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, dict(json.loads(answer.read()))
        except urllib.error.HTTPError as refused:
            return refused.code, dict(json.loads(refused.read()))

    def up(self) -> bool:
        try:
            return self.send(b"{}", token=None)[0] == 401
        except OSError:
            return False


class Reporting:
    """The operator with its reports endpoint, restartable on the same port."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.kubeconfig, self.workdir = kubeconfig, workdir
        self.token_file = workdir / "reports-token"
        self.token_file.write_text(f"{TOKEN}\n")
        self.port = free_port()
        self.reporter = Reporter(self.port)
        self.started: list[RunningOperator] = []

    def start(self) -> RunningOperator:
        args = [f"--reports-port={self.port}", f"--reports-token-file={self.token_file}"]
        running = RunningOperator(self.kubeconfig, self.workdir / "operator.log", args=args).start()
        self.started.append(running)
        eventually(self.reporter.up, timeout=30, what="the reports endpoint answers")
        return running


@pytest.fixture
def reporting(operator_kubeconfig: Path, tmp_path: Path) -> Iterator[Reporting]:
    operators = Reporting(operator_kubeconfig, tmp_path)
    operators.start()
    yield operators
    for running in operators.started:
        running.stop()
        assert_never_refused(running)
        assert TOKEN not in running.output, "the reports token reached the operator's log"


def adopt(cluster: Cluster, namespace: str, **spec: Any) -> None:
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout("checkout", targetRef={"name": "checkout"}, **spec)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_adopted(cluster, namespace)


def release(cluster: Cluster, namespace: str) -> None:
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
    cluster.apps.patch_namespaced_deployment("checkout", namespace, image)
    eventually(lambda: rollout_status(cluster, namespace).get("phase") == "Progressing", timeout=30,
               what="the release started")  # fmt: skip


def events(cluster: Cluster, namespace: str, reason: str) -> list[Any]:
    """The Rollout's Events of one reason."""
    selector = f"involvedObject.name=checkout,reason={reason}"
    return list(cluster.core.list_namespaced_event(namespace, field_selector=selector).items)


def told_once(cluster: Cluster, namespace: str, reason: str) -> Callable[[], list[Any]]:
    """The Rollout's Events of one reason, once there are any."""
    return lambda: events(cluster, namespace, reason)


def report_events(cluster: Cluster, namespace: str) -> list[Any]:
    return events(cluster, namespace, "UserReport")


def metric(cluster: Cluster, namespace: str) -> dict[str, Any]:
    found = rollout_status(cluster, namespace).get("metrics") or []
    return next((m for m in found if m["name"] == "user-reports"), {})


def released(status: dict[str, Any]) -> bool:
    release = status.get("release") or {}
    return status.get("phase") == "Healthy" and release.get("stableRevision") == release.get("revision")


def report(namespace: str, key: str = "CHK-1234", **fields: Any) -> dict[str, Any]:
    return {"namespace": namespace, "rollout": "checkout", "key": key, "message": "checkout page stays blank",
            **fields}  # fmt: skip


def test_bad_or_unauthenticated_requests_are_refused_and_nothing_is_recorded(
    crds: Cluster, namespace: str, reporting: Reporting
) -> None:
    adopt(
        crds,
        namespace,
        risk="medium",
        analysis={"prometheus": NOWHERE, "metrics": [{"template": "user-reports"}]},
    )
    send = reporting.reporter.send
    refused = [
        (send(report(namespace), token=None), 401, "bearer token is required"),
        (send(report(namespace), token="not-" + TOKEN), 403, "not the reports token"),
        (send(report(namespace, rollout="cart")), 404, f"Rollout {namespace}/cart does not exist"),
        (send(report(namespace, message="x" * 8000)), 413, "larger than 4096"),
        (send(report(namespace, key="checkout page")), 400, "key: must be"),
        (send(report(namespace, priority="high")), 400, "priority: unknown field"),
    ]
    for (status, answer), expected, said in refused:
        assert status == expected and said in answer["error"], (status, answer)
    assert report_events(crds, namespace) == []

    # A burst from one source: its bucket holds 20, less the 4 the authenticated refusals above
    # took (each cost a look at the API server), then refills at one every 2 s.
    answers = [send(report(namespace, key=f"burst-{i % 3}"))[0] for i in range(30)]
    accepted = answers.count(202)
    assert answers[:16] == [202] * 16 and answers[-1] == 429 and set(answers) == {202, 429}, answers
    eventually(lambda: len(report_events(crds, namespace)) == accepted, timeout=10,
               what="one Event per accepted report, none for a refused one")  # fmt: skip
    # Counted and shown, though no release runs: three keys, most reported first.
    shown = eventually(lambda: (s := rollout_status(crds, namespace).get("userReports")) and s["total"] == accepted
                       and s, timeout=15, what="status.userReports counts them")  # fmt: skip
    assert [k["key"] for k in shown["keys"]][:1] == ["burst-0"] and len(shown["keys"]) == 3
    event = report_events(crds, namespace)[0]
    assert event.type == "Warning" and event.message.startswith("user report burst-")
    assert event.metadata.labels == {"parachute.dev/user-report": "true"}


def test_ten_reports_of_one_issue_roll_a_release_back_at_once_across_a_restart(
    crds: Cluster, namespace: str, reporting: Reporting
) -> None:
    adopt(crds, namespace, steps=ONE_STAGE, analysis=SLOW_ROUNDS)
    release(crds, namespace)
    eventually(lambda: metric(crds, namespace).get("verdict") == "Successful", timeout=30,
               what="the stage's first round: no reports")  # fmt: skip
    for _ in range(5):
        assert reporting.reporter.send(report(namespace))[0] == 202
    eventually(lambda: "(5 user reports of CHK-1234)" in (metric(crds, namespace).get("message") or ""),
               timeout=15, what="five reports counted between rounds")  # fmt: skip
    assert metric(crds, namespace)["verdict"] == "Warning"

    # The operator dies; reports live on as Events, and its successor counts them.
    reporting.started[-1].kill()
    reporting.start()
    for _ in range(4):
        assert reporting.reporter.send(report(namespace))[0] == 202
    assert reporting.reporter.send(report(namespace, key="slow-search"))[0] == 202  # another issue
    time.sleep(3)
    assert rollout_status(crds, namespace)["phase"] == "Progressing"  # 9 of one issue are watched
    tenth = time.monotonic()
    assert reporting.reporter.send(report(namespace))[0] == 202
    eventually(lambda: rollout_status(crds, namespace)["phase"] in ("RollingBack", "RolledBack"), timeout=20,
               interval=0.2, what="rolled back")  # fmt: skip
    took = time.monotonic() - tenth
    assert took < 15, f"rolled back {took:.1f}s after the tenth report: the round a minute away decided it"

    # The normal rollback: one incident, at the level the Rollout has the means for (the code
    # level: no flags, no tracked configuration), for the reason the metric gave.
    incident = rollout_status(crds, namespace)["incidents"][-1]
    # "for Ns": how long the count had held when judged, a second or so on a busy machine.
    said = re.compile(r"user-reports 10 at or above critical 10, for \d+s \(10 user reports of CHK-1234\)")
    assert said.search(incident["reason"]) and incident["level"] == "code", incident
    for reason in ("MetricFailed", "RollingBack"):
        # Posted right after the write that owes them: waited for, not read once.
        [told] = eventually(told_once(crds, namespace, reason), timeout=15, what=f"the {reason} Event")
        assert said.search(told.message), told.message
    # Health after the rollback is judged on reports made since: none yet (the metric says what
    # serves now, as every metric's verdict does).
    eventually(lambda: (rollout_status(crds, namespace).get("userReports") or {}).get("total") == 0, timeout=15,
               what="counting from the rollback on")  # fmt: skip


def test_a_single_report_is_a_warning_and_the_release_goes_on(
    crds: Cluster, namespace: str, reporting: Reporting
) -> None:
    adopt(crds, namespace, risk="medium", waits={"min": "2s", "max": "5s"},
          analysis={"prometheus": NOWHERE, "interval": "2s", "metrics": [{"template": "user-reports"}]})  # fmt: skip
    release(crds, namespace)
    assert reporting.reporter.send(report(namespace, key="login-typo", message="may be user error"))[0] == 202
    warned = eventually(lambda: metric(crds, namespace).get("verdict") == "Warning" and metric(crds, namespace),
                        timeout=15, what="a Warning")  # fmt: skip
    assert warned["message"] == "user-reports 1 at or above warning 1: watching (1 user report of login-typo)"
    eventually(lambda: released(rollout_status(crds, namespace)), timeout=60, what="released")
    # The Events a status change owes are posted after its write.
    reasons = eventually(lambda: (r := event_reasons(crds, namespace)) and "ReleaseCompleted" in r and r,
                         timeout=15, what="the ReleaseCompleted Event")  # fmt: skip
    assert "RollingBack" not in reasons
    assert "MetricWarning" in reasons


def test_a_standby_records_a_report_and_the_leader_counts_it(
    crds: Cluster, namespace: str, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    """A report is a fact, not an action: every replica behind the Service records one, and the
    leader (which alone writes status) counts it."""
    for document in rbac.leader_election_documents(OPERATOR_NAMESPACE):
        apply(crds.api, document)
    lease = f"parachute-{namespace}"
    token_file = tmp_path / "reports-token"
    token_file.write_text(TOKEN)
    ports = {"a": free_port(), "b": free_port()}
    replicas = [
        Replica(operator_kubeconfig, tmp_path, name, lease, f"--reports-port={port}",
                f"--reports-token-file={token_file}").start()
        for name, port in ports.items()
    ]  # fmt: skip
    try:
        coordination = client.CoordinationV1Api(crds.api)
        holder = eventually(lambda: (coordination.read_namespaced_lease(lease, OPERATOR_NAMESPACE).spec.holder_identity),
                            timeout=30, what="a leader")  # fmt: skip
        standby = next(name for name in ports if not holder.startswith(f"{name}_"))
        reporter = Reporter(ports[standby])
        eventually(reporter.up, timeout=30, what="the standby's reports endpoint")
        adopt(
            crds,
            namespace,
            risk="medium",
            analysis={"prometheus": NOWHERE, "metrics": [{"template": "user-reports"}]},
        )
        status, answer = reporter.send(report(namespace, key="from-the-standby"))
        assert status == 202, answer
        eventually(lambda: ((rollout_status(crds, namespace).get("userReports") or {}).get("keys") or [{}])[0]
                   .get("key") == "from-the-standby", timeout=15, what="the leader counted it")  # fmt: skip
    finally:
        for replica in replicas:
            replica.signal(signal.SIGCONT)
            replica.stop()
            assert_never_refused(replica)
        client.CoordinationV1Api(crds.api).delete_namespaced_lease(lease, OPERATOR_NAMESPACE)
