"""What Flux (and kpt) conclude of a Rollout: kstatus, the Go library they use, run on
Rollouts captured from real runs. kstatus reads `observedGeneration`, then `Reconciling` and
`Stalled`, then `Ready`: a release running or waiting is InProgress, a release that ended
without releasing (rolled back, aborted) or a spec that cannot work is Failed, released is
Current.

Builds a small Go program from the module proxy on first use (cached), hence slow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from testbed import kstatus

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rollout-phases"

CASES = [
    ("healthy-adopted", "Current"),
    ("healthy-released", "Current"),
    ("progressing", "InProgress"),
    ("progressing-resumed", "InProgress"),
    ("waiting-for-gates", "InProgress"),
    ("paused", "InProgress"),
    ("rolling-back", "InProgress"),
    ("rolled-back", "Failed"),
    ("aborted", "Failed"),
    ("invalid-missing-target", "Failed"),
]


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return body


@pytest.fixture(scope="module", autouse=True)
def harness() -> None:
    if shutil.which("go") is None and not any(kstatus.cache_dir().glob("kstatus-*/kstatus")):
        pytest.skip("the kstatus harness is built with Go, and there is none here")
    kstatus.binary()


def test_each_phase_from_a_real_run() -> None:
    answers = kstatus.compute([fixture(name) for name, _ in CASES])
    assert [(name, a["status"]) for (name, _), a in zip(CASES, answers, strict=True)] == CASES


def test_a_spec_the_operator_has_not_seen_yet_is_in_progress() -> None:
    body = fixture("healthy-released")
    body["metadata"]["generation"] += 1
    assert kstatus.compute([body])[0]["status"] == "InProgress"


def test_without_stalled_a_rollback_would_read_as_still_in_progress() -> None:
    """Why the operator sets Stalled: Ready=False alone is InProgress, and Flux would wait out
    its whole timeout on a release that has already been rolled back."""
    body = fixture("rolled-back")
    body["status"]["conditions"] = [c for c in body["status"]["conditions"] if c["type"] != "Stalled"]
    assert kstatus.compute([body])[0]["status"] == "InProgress"


def test_a_rollout_the_operator_has_not_written_status_for_reads_as_current() -> None:
    """kstatus's own rule for a resource that reports nothing: no observedGeneration and no
    conditions mean Current. Only the operator's first status write (within a reconcile of
    the Rollout's creation) corrects it; nothing in the conditions can."""
    body = fixture("progressing")
    del body["status"]
    assert kstatus.compute([body])[0]["status"] == "Current"
