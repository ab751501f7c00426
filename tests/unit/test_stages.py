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


FLAGS = {"configMapRef": {"name": "flags"}, "flags": ["new-checkout"]}


def test_low_risk_keeps_flags_off() -> None:
    assert plan_for(spec(risk="low", featureFlags=FLAGS))[0].flags == "off"


def test_a_plan_never_names_flags_the_rollout_has_no_store_for() -> None:
    assert [s.flags for s in plan_for(spec(risk="low"))] == [None]


def test_a_flag_gated_feature_gets_the_playbook_sequence() -> None:
    stages = stages_for(spec(risk="medium", featureFlags=FLAGS))
    assert [s.name for s in stages] == ["infrastructure", "integration", "full"]
    # The code reaches everyone with its flags OFF, then the flags go ON: the weight is the
    # code's share, the flags what it exposes.
    assert [(s.weight, s.flags) for s in stages] == [(100, "off"), (100, "off"), (100, "on")]
    assert shape(stages) == [(100, "0s", "0s"), (100, "1h", "1h"), (100, "24h", "24h")]


def test_watch_after_release_sets_the_closing_wait_of_the_flag_gated_plan_too() -> None:
    stages = stages_for(spec(risk="high", featureFlags=FLAGS, watchAfterRelease="2h"))
    assert shape(stages)[-1] == (100, "2h", "2h") and stages[-1].flags == "on"


def test_a_step_says_what_its_flags_are() -> None:
    steps = [{"weight": 100, "flags": "off"}, {"weight": 100}, {"weight": 100, "flags": "on"}]
    assert [s.flags for s in plan_for(spec(steps=steps, featureFlags=FLAGS))] == ["off", None, "on"]


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


def test_watch_after_release_wins_over_the_generic_waits() -> None:
    stages = plan_for(spec(risk="medium", waits={"min": "5s", "max": "20s"}, watchAfterRelease="2m"))
    assert shape(stages) == [(10, "5s", "20s"), (50, "5s", "20s"), (100, "2m", "2m")]
