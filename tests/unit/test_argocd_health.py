"""The Argo CD health check the chart ships (Lua), run by a real Lua runtime on Rollouts
captured from real runs (tests/integration/test_gitops.py writes them): Progressing while a
release runs or waits, Suspended when paused, Degraded on rollback, abort or Invalid,
Healthy when released."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from testbed.argocd_health import health

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rollout-phases"


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return body


CASES = [
    ("healthy-adopted", "Healthy"),
    ("healthy-released", "Healthy"),
    ("progressing", "Progressing"),
    ("progressing-resumed", "Progressing"),
    ("waiting-for-gates", "Progressing"),
    ("paused", "Suspended"),
    ("rolling-back", "Degraded"),
    ("rolled-back", "Degraded"),
    ("aborted", "Degraded"),
    ("invalid-missing-target", "Degraded"),
]


@pytest.mark.parametrize(("name", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_phase_from_a_real_run(name: str, expected: str) -> None:
    body = fixture(name)
    status, message = health(body)
    assert status == expected
    assert message.startswith(body["status"]["phase"])


def test_every_captured_phase_is_covered() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} >= {name for name, _ in CASES}


def test_a_spec_the_operator_has_not_seen_yet_is_progressing_whatever_the_phase_says() -> None:
    body = fixture("healthy-released")
    body["metadata"]["generation"] += 1
    assert health(body) == (
        "Progressing",
        f"Waiting for the Parachute operator to observe generation {body['metadata']['generation']}",
    )


def test_a_rollout_without_status_yet_is_progressing() -> None:
    body = fixture("progressing")
    del body["status"]
    assert health(body)[0] == "Progressing"


def test_a_phase_it_does_not_know_is_unknown_rather_than_healthy() -> None:
    body = copy.deepcopy(fixture("progressing"))
    body["status"]["phase"] = "SomethingNew"
    assert health(body)[0] == "Unknown"


def test_the_chart_documents_the_snippet_for_argocd_cm() -> None:
    chart = Path(__file__).resolve().parents[2] / "helm" / "parachute"
    readme = (chart / "README.md").read_text()
    assert "resource.customizations.health.parachute.dev_Rollout" in readme
    script = (chart / "files" / "argocd-health.lua").read_text()
    # The README's snippet is the shipped script, indented under the key.
    indented = "\n".join(f"    {line}" if line else "" for line in script.rstrip("\n").splitlines())
    assert indented in readme
