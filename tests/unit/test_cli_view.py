"""What the plugin shows, read from a Rollout: rows, the tree's data, what waits on a person,
the revision a pipeline waits for, and the history of releases."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from parachute.cli import render, view
from parachute.plan.desired_workload import revision_of, with_config
from parachute.plan.rollback import content_hash

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)

# A release of 2.0 half way, with an earlier revision still blocked after its rollback: the state
# the plugin's snapshot is taken of (tests/integration/test_plugin.py writes it to a real Rollout).
KNOWN_STATUS: dict[str, Any] = {
    "observedGeneration": 1,
    "phase": "Progressing",
    "message": "stage 2/3 (partial) at 50%: watching until 2026-11-26T15:30:00Z",
    "risk": "medium",
    "riskReason": "spec.risk",
    "release": {
        "revision": "5d1c0a9e3b",
        "stableRevision": "0f3e9a7c21",
        "images": ["registry.example/checkout:2.0"],
        "stableImages": ["registry.example/checkout:1.0"],
        "startedAt": "2026-11-26T09:00:00Z",
    },
    "plan": [
        {"name": "canary", "weight": 10, "minWait": "2h", "maxWait": "4h"},
        {"name": "partial", "weight": 50, "minWait": "4h", "maxWait": "8h"},
        {"name": "full", "weight": 100},
    ],
    "stageIndex": 1,
    "stage": "2/3",
    "stageStartedAt": "2026-11-26T11:30:00Z",
    "stageReachedAt": "2026-11-26T11:30:40Z",
    "canaryWeight": 50,
    "lastVerdict": "Warning",
    "metrics": [
        {
            "name": "error-rate",
            "value": 0.0031,
            "stableValue": 0.0004,
            "verdict": "Warning",
            "message": "0.31% is in the warning band (0.2%..0.5%)",
            "successful": 40,
            "lastEvaluatedAt": "2026-11-26T11:59:00Z",
        },
        {
            "name": "latency-p95",
            "value": 0.182,
            "stableValue": 0.171,
            "verdict": "Successful",
            "successful": 41,
            "lastEvaluatedAt": "2026-11-26T11:59:00Z",
        },
        {
            "name": "success-rate",
            "value": 0.9969,
            "verdict": "Warning",
            "successful": 38,
            "lastEvaluatedAt": "2026-11-26T11:59:00Z",
        },
    ],
    "gates": [
        {"name": "tests-passed", "met": True, "checkedAt": "2026-11-26T09:00:00Z"},
        {"name": "review-approved", "met": True, "checkedAt": "2026-11-26T09:00:00Z"},
    ],
    "window": {"policy": "playbook", "open": True, "reason": "Thu 10:00-14:00"},
    "incidents": [
        {
            "id": "9a8b7c6d5e-20261125103000",
            "revision": "9a8b7c6d5e",
            "stableRevision": "0f3e9a7c21",
            "reason": "error-rate Failed: 6.1% is above 5% (roll back at once)",
            "startedAt": "2026-11-25T10:30:00Z",
            "immediate": True,
            "level": "flag",
            "levels": [
                {
                    "level": "flag",
                    "startedAt": "2026-11-25T10:30:00Z",
                    "changed": ["flag new-checkout-flow off in configmap/checkout-flags"],
                    "appliedAt": "2026-11-25T10:30:02Z",
                    "healthyAt": "2026-11-25T10:30:41Z",
                    "budget": "1m",
                    "seconds": 41,
                },
            ],
            "recoveredAt": "2026-11-25T10:30:41Z",
            "recoverySeconds": 41,
            "objectiveMet": True,
            "postmortemDueAt": "2026-11-27T10:30:41Z",
            "watchUntil": "2026-11-26T10:30:41Z",
            "revertInGit": "revision 0f3e9a7c21 (registry.example/checkout:1.0)",
        }
    ],
    "blockedRevisions": ["9a8b7c6d5e"],
    "nextAnalysisAt": "2026-11-26T12:01:00Z",
}


def rollout(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "parachute.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "generation": 1,
            "creationTimestamp": "2026-11-20T12:00:00Z",
        },
        "spec": {"targetRef": {"name": "checkout"}, "risk": "medium", **spec},
        "status": copy.deepcopy(KNOWN_STATUS) if status is None else status,
    }


def deployment(name: str, replicas: int, ready: int, revision: str | None = None) -> dict[str, Any]:
    annotations = {"parachute.dev/revision": revision} if revision else {}
    return {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}},
        "status": {"readyReplicas": ready},
    }


@pytest.mark.parametrize(
    ("status", "spec", "waiting_on"),
    [
        pytest.param({"phase": "Progressing"}, {}, [], id="a release that runs by itself"),
        pytest.param(
            {"phase": "Waiting", "window": {"open": False}}, {}, [], id="a closed window opens by itself"
        ),
        pytest.param(
            {"phase": "Paused"}, {"paused": True}, ["paused (kubectl parachute resume checkout)"], id="paused"
        ),
        pytest.param(
            {
                "phase": "Waiting",
                "gates": [
                    {"name": "tests-passed", "met": True},
                    {"name": "review-approved", "met": False},
                    {"name": "on-call-assigned", "met": False},
                ],
            },
            {},
            ["gates unmet: review-approved, on-call-assigned"],
            id="gates unmet",
        ),
        pytest.param(
            {"phase": "Waiting", "blockedRevisions": ["abc"]},
            {},
            ["blocked: abc (kubectl parachute resolve checkout abc)"],
            id="a blocked revision",
        ),
        pytest.param(
            {
                "phase": "RollingBack",
                "incidents": [
                    {"id": "i", "reason": "r", "startedAt": "2026-11-26T11:00:00Z", "level": "config"}
                ],
            },
            {},
            ["rolling back at level config"],
            id="rolling back",
        ),
        pytest.param(
            {"phase": "Aborted"},
            {},
            ["aborted (kubectl parachute retry checkout, or a new revision)"],
            id="aborted",
        ),
        pytest.param({"phase": "Invalid"}, {}, ["invalid spec (see message)"], id="invalid"),
    ],
)
def test_what_waits_on_a_person(status: dict[str, Any], spec: dict[str, Any], waiting_on: list[str]) -> None:
    assert view.attention(rollout(status, **spec)) == waiting_on


def test_a_row_says_phase_stage_weight_verdict_age_and_what_waits() -> None:
    row = view.row(rollout(), NOW)
    assert (row.phase, row.stage, row.weight, row.risk, row.verdict, row.age) == (
        "Progressing",
        "2/3",
        50,
        "medium",
        "Warning",
        "6d",
    )
    assert row.waiting_on == ["blocked: 9a8b7c6d5e (kubectl parachute resolve checkout 9a8b7c6d5e)"]
    assert row.model_dump(by_alias=True)["waitingOn"] == row.waiting_on


def test_the_tree_marks_the_current_stage_and_reads_replicas_from_the_deployments() -> None:
    shown = view.build(
        rollout(), deployment("checkout", 4, 4), deployment("checkout-canary", 4, 3, revision="5d1c0a9e3b")
    )
    assert [s.state for s in shown.stages] == ["done", "current", "next"]
    assert (shown.stable.revision, shown.stable.images, shown.stable.replicas, shown.stable.ready) == (
        "0f3e9a7c21",
        ["registry.example/checkout:1.0"],
        4,
        4,
    )
    assert (shown.canary.revision, shown.canary.deployment, shown.canary.ready) == (
        "5d1c0a9e3b",
        "checkout-canary",
        3,
    )
    # Replica ratio: the applied share is what the ready pods make it (3 of 7).
    assert (shown.routing.backend, shown.routing.desired_weight, shown.routing.applied_weight) == (
        "replicas",
        50,
        43,
    )
    assert shown.incidents[0].recovery_seconds == 41


def test_a_released_rollout_has_every_stage_done_and_no_canary_revision() -> None:
    status = copy.deepcopy(KNOWN_STATUS)
    status.update(phase="Healthy", stageIndex=2, stage="3/3")
    status["release"]["stableRevision"] = status["release"]["revision"]
    shown = view.build(rollout(status), deployment("checkout", 4, 4), None)
    assert [s.state for s in shown.stages] == ["done", "done", "done"]
    assert shown.canary.revision is None and shown.canary.deployment is None
    assert shown.routing.applied_weight == 0


def test_a_rollout_without_status_yet_is_shown_without_failing() -> None:
    shown = view.build(rollout({}), None, None)
    assert (shown.phase, shown.stages, shown.stable.replicas) == ("", [], None)
    text = draw(shown)
    assert "(no status yet)" in text and "no plan yet" in text
    assert "(deployment/checkout not found)" in text and "canary revision -  -  (no Deployment)" in text


def draw(shown: view.RolloutView) -> str:
    console = Console(width=120, record=True, file=None, force_terminal=False)
    with console.capture() as captured:
        console.print(render.rollout_tree(shown, NOW))
    return captured.get()


def test_the_tree_shows_routing_metrics_gates_window_and_incidents() -> None:
    text = draw(
        view.build(rollout(), deployment("checkout", 4, 4), deployment("checkout-canary", 4, 4, "5d1c0a9e3b"))
    )
    assert "▶ 2 partial   50%  wait 4h-8h  started 11:30:00Z (30m ago), in place 11:30:40Z (29m ago)" in text
    assert "replicas: desired 50%, applied 50% (ready pods)" in text
    assert "error-rate" in text and "stable 0.0004" in text
    assert "✔ review-approved" in text
    assert "policy playbook: open (Thu 10:00-14:00)" in text
    assert (
        "level flag: started 2026-11-25 10:30:00Z, in place 2026-11-25 10:30:02Z, health back 2026-11-25 10:30:41Z"
        in text
    )
    assert "recovered in 41s: objective met" in text
    assert "postmortem due 2026-11-27 10:30:41Z (in 22h31m)" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.4, "59s"), (89, "1m"), (119.6, "2m"), (3599, "1h"), (7260, "2h1m"), (86400, "1d"),
     (90000, "1d1h"), (-300, "5m")],
    ids=str,
)  # fmt: skip
def test_spans_are_rounded_to_their_largest_units(seconds: float, text: str) -> None:
    assert view.humanize(seconds) == text


def test_the_revision_a_pipeline_waits_for_is_the_operators() -> None:
    template = {
        "metadata": {"labels": {"app": "checkout"}},
        "spec": {"containers": [{"name": "app", "image": "x:2"}]},
    }
    target = {"metadata": {"name": "checkout"}, "spec": {"template": template}}
    assert view.expected_revision(rollout(), target, {}) == revision_of(template)
    maps = {"checkout-config": {"data": {"a": "1"}}, "gone": None}
    body = rollout(configRefs=[{"name": "checkout-config"}, {"name": "gone"}])
    assert view.config_ref_names(body) == ["checkout-config", "gone"]
    expected = with_config(revision_of(template), {"checkout-config": content_hash({"a": "1"})})
    assert view.expected_revision(body, target, maps) == expected
    assert view.expected_revision(body, None, maps) is None


def event(reason: str, message: str = "") -> dict[str, Any]:
    return {"type": "Normal", "reason": reason, "message": message}


def test_history_pairs_each_release_with_how_it_ended() -> None:
    events = [
        event("ReleaseStarted", "releasing revision a over s"),
        event("StageAdvanced"),
        event("ReleaseCompleted", "revision a released"),
        event("ReleaseStarted", "releasing revision b over a"),
        event("ReleaseSuperseded", "revision c replaces b; starting over"),
        event("RollingBack", "error-rate Failed"),
        event("ReleaseRetried", "retrying revision c from the first stage"),
    ]
    times = [f"2026-11-26T10:0{i}:00Z" for i in range(len(events))]
    shown = view.history(rollout(), events, times)
    assert [(r.started_at[11:16], r.outcome) for r in shown.releases] == [
        ("10:00", "released"),
        ("10:03", "superseded"),
        ("10:04", "rolled back"),
        ("10:06", ""),
    ]
    assert shown.current is not None and shown.current["revision"] == "5d1c0a9e3b"
    assert [i.id for i in shown.incidents] == ["9a8b7c6d5e-20261125103000"]
    assert len(shown.events) == len(events)
