"""Gates and release policies over the in-memory API server: they read what they need, say
what is missing, and write nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from parachute.api import Gate, RolloutSpec
from parachute.gating import check_all
from parachute.kube_fake import FakeKube
from parachute.policy import DEFAULT_POLICY_ENV, PolicyError, policy_for, window_for

NS = "shop"
MONDAY_NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OFFICE_HOURS = {"allow": [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "09:00", "end": "17:00"}]}


def certificate(status: str, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "shop-tls", "namespace": NS, "generation": generation},
        "status": {"conditions": [{"type": "Ready", "status": status, "observedGeneration": observed}]},
    }


CERTIFICATE_READY = Gate.model_validate({
    "name": "tls",
    "condition": {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "name": "shop-tls", "type": "Ready"},
})  # fmt: skip
APPROVED = Gate.model_validate({"name": "approved", "annotation": {"key": "example.com/approved"}})
SPEC = RolloutSpec.model_validate({"targetRef": {"name": "checkout"}})


def gates(
    cluster: FakeKube, *checked: Gate, annotations: dict[str, str] | None = None
) -> list[tuple[bool, str]]:
    results = asyncio.run(check_all(cluster, list(checked), SPEC, NS, annotations or {}))
    return [(r.met, r.message) for r in results]


@pytest.mark.parametrize(
    ("found", "met", "message"),
    [
        pytest.param(certificate("True"), True, "Certificate shop-tls is Ready=True", id="met"),
        pytest.param(certificate("False"), False, "Certificate shop-tls is Ready=False, not True", id="unmet"),
        pytest.param(certificate("True", generation=2), False,
                     "Certificate shop-tls's Ready condition is out of date (generation 1 < 2)", id="stale"),
        pytest.param(None, False, "Certificate shop-tls not found", id="missing"),
    ],
)  # fmt: skip
def test_a_condition_gate_reads_the_one_object_it_names_and_writes_nothing(
    found: dict[str, Any] | None, met: bool, message: str
) -> None:
    cluster = FakeKube([found] if found else [])
    assert gates(cluster, CERTIFICATE_READY) == [(met, message)]
    assert cluster.reads == [("get", "Certificate", NS, "shop-tls")]
    assert cluster.writes == []


def test_a_kind_the_operator_may_not_read_or_that_is_not_served_leaves_the_gate_unmet_saying_why() -> None:
    cluster = FakeKube([certificate("True")])
    cluster.forbidden.add(("cert-manager.io/v1", "Certificate"))
    [(met, message)] = gates(cluster, CERTIFICATE_READY)
    assert not met and message.endswith("grant it with the chart value rbac.extraReadRules")
    cluster.forbidden.clear()
    cluster.unserved.add(("cert-manager.io/v1", "Certificate"))
    assert gates(cluster, CERTIFICATE_READY) == [
        (False, "the API server serves no Certificate in cert-manager.io/v1")
    ]
    assert cluster.writes == []


def test_an_annotation_gate_asks_the_api_server_nothing() -> None:
    cluster = FakeKube()
    assert gates(cluster, APPROVED, annotations={"example.com/approved": "yes"})[0][0] is True
    assert cluster.reads == [] and cluster.writes == []


def release_policy(window: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ReleasePolicy", "metadata": {"name": "office-hours"}, "spec": {"window": window}}


def test_the_named_release_policy_is_read_and_its_window_applies() -> None:
    cluster = FakeKube([release_policy(OFFICE_HOURS)])
    spec = RolloutSpec.model_validate(
        {"targetRef": {"name": "checkout"}, "policyRef": {"name": "office-hours"}}
    )
    view, policy = asyncio.run(window_for(cluster, spec, NS, MONDAY_NOON))
    assert view.open and view.policy == "office-hours"
    assert policy is not None and policy.window is not None
    view, _ = asyncio.run(window_for(cluster, spec, NS, MONDAY_NOON.replace(hour=20)))
    assert not view.open
    assert cluster.reads == [("get", "ReleasePolicy", "", "office-hours")] * 2
    assert cluster.writes == []


def test_a_missing_policy_names_the_field_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeKube()
    spec = RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, "policyRef": {"name": "gone"}})
    with pytest.raises(PolicyError, match=r"^spec.policyRef.name: ReleasePolicy gone not found$"):
        asyncio.run(policy_for(cluster, spec))
    monkeypatch.setenv(DEFAULT_POLICY_ENV, "house-rules")
    with pytest.raises(
        PolicyError, match=rf"^the default policy \({DEFAULT_POLICY_ENV}\): ReleasePolicy house-rules"
    ):
        asyncio.run(policy_for(cluster, SPEC))
    assert cluster.writes == []


def test_the_rollouts_own_window_wins_and_no_policy_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_POLICY_ENV, "office-hours")
    cluster = FakeKube([release_policy({"allow": []})])
    spec = RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, "window": OFFICE_HOURS})
    assert asyncio.run(policy_for(cluster, spec))[0] == "spec.window"
    assert cluster.reads == []
