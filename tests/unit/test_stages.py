"""Risk decides the plan (spec §2); every wait is a field a demo can shorten."""

from __future__ import annotations

import pytest

from parachute.plan.engine import stages_for
from parachute.plan.stages import plan_for
from tests.unit.world import spec


def shape(stages: list) -> list[tuple[int, str, str]]:
    return [(s.weight, s.min_wait, s.max_wait) for s in stages]


@pytest.mark.parametrize(
    ("risk", "expected"),
    [
        pytest.param("zero", [(100, "0s", "0s")], id="zero-straight-to-full"),
        pytest.param("low", [(100, "1h", "1h")], id="low-full-with-flags-off-for-an-hour"),
        pytest.param("medium", [(10, "2h", "4h"), (50, "4h", "8h"), (100, "24h", "24h")], id="medium-10-50-100"),
        pytest.param(
            "high",
            [(5, "8h", "24h"), (10, "4h", "8h"), (25, "4h", "8h"), (50, "4h", "8h"), (75, "4h", "8h"),
             (100, "24h", "24h")],
            id="high-five-then-long-first-wait",
        ),
    ],
)  # fmt: skip
def test_each_risk_has_the_playbook_plan(risk: str, expected: list[tuple[int, str, str]]) -> None:
    assert shape(plan_for(spec(risk=risk))) == expected


def test_no_risk_means_medium() -> None:
    assert shape(plan_for(spec())) == shape(plan_for(spec(risk="medium")))


def test_low_risk_keeps_flags_off() -> None:
    assert plan_for(spec(risk="low"))[0].flags_on is False


def test_a_flag_gated_feature_gets_the_five_stage_sequence() -> None:
    flags = {"configMapRef": {"name": "flags"}, "flags": ["new-checkout"]}
    stages = stages_for(spec(risk="medium", featureFlags=flags))
    assert [s.name for s in stages] == ["infrastructure", "integration", "canary", "partial", "full"]
    assert [s.flags_on for s in stages] == [False, False, True, True, True]
    assert shape(stages)[:2] == [(100, "0s", "0s"), (100, "1h", "1h")]


def test_explicit_steps_replace_the_plan() -> None:
    steps = [{"weight": 20, "minWait": "30s"}, {"name": "all", "weight": 100}]
    stages = plan_for(spec(risk="high", steps=steps))
    assert shape(stages) == [(20, "30s", "30s"), (100, "0s", "0s")]
    assert [s.name for s in stages] == ["step-1", "all"]


def test_waits_shorten_every_stage_for_demos_and_tests() -> None:
    stages = plan_for(spec(risk="medium", waits={"min": "5s", "max": "20s", "firstStageMin": "2s"}))
    assert shape(stages) == [(10, "2s", "20s"), (50, "5s", "20s"), (100, "5s", "20s")]


def test_overriding_only_the_maximum_never_leaves_min_above_max() -> None:
    stages = plan_for(spec(risk="medium", waits={"max": "1m"}))
    assert all(s.min_wait == "1m" and s.max_wait == "1m" for s in stages)


def test_watch_after_release_sets_the_closing_wait() -> None:
    assert shape(plan_for(spec(risk="medium", watchAfterRelease="1h")))[-1] == (100, "1h", "1h")
