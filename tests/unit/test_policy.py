"""A window that cannot work makes the Rollout Invalid, naming the field: in the Rollout's
own window, or in the ReleasePolicy it uses (named too)."""

from __future__ import annotations

from typing import Any

import pytest

from parachute.api import RolloutSpec, Window
from parachute.policy import PolicyError, check_window

NO_HOUR = {"allow": [{"days": ["Mon"], "start": "10:00", "end": "11:00"}],
           "deny": [{"days": ["Mon"], "start": "09:00", "end": "12:00"}]}  # fmt: skip
PEAK = {"peakTraffic": {"query": "sum(rate(http_requests_total[5m]))", "threshold": 100}}
ANALYSED = {
    "targetRef": {"name": "checkout"},
    "analysis": {"prometheus": {"address": "http://prometheus:9090"}},
}
BARE = {"targetRef": {"name": "checkout"}}


@pytest.mark.parametrize(
    ("window", "spec", "policy", "message"),
    [
        pytest.param({"timeZone": "Mars/Olympus"}, ANALYSED, "spec.window",
                     "spec.window.timeZone: unknown time zone 'Mars/Olympus'", id="zone-in-the-rollout"),
        pytest.param({"timeZone": "Mars/Olympus"}, ANALYSED, "playbook",
                     "ReleasePolicy playbook: spec.window.timeZone: unknown time zone 'Mars/Olympus'",
                     id="zone-in-a-policy"),
        pytest.param(NO_HOUR, ANALYSED, "spec.window",
                     "spec.window.allow: never opens: the deny ranges cover every hour it allows", id="never-opens"),
        pytest.param(NO_HOUR, ANALYSED, "office-hours",
                     "ReleasePolicy office-hours: spec.window.allow: never opens", id="never-opens-in-a-policy"),
        pytest.param(PEAK, BARE, "spec.window",
                     "spec.window.peakTraffic: needs a Prometheus to measure it, and this Rollout has no spec.analysis",
                     id="peak-traffic-without-analysis"),
        pytest.param(PEAK, BARE, "playbook", "ReleasePolicy playbook: spec.window.peakTraffic: needs a Prometheus",
                     id="peak-traffic-in-a-policy-without-analysis"),
        pytest.param({"holidays": {"country": "XX"}}, ANALYSED, "spec.window",
                     "spec.window.holidays: no holiday calendar for 'XX'", id="unknown-country"),
        pytest.param({"holidays": {"country": "DE", "subdivision": "XX"}}, ANALYSED, "spec.window",
                     "spec.window.holidays: no holiday calendar for 'DE' subdivision 'XX'", id="unknown-subdivision"),
    ],
)  # fmt: skip
def test_a_window_that_cannot_work_names_the_field(
    window: dict[str, Any], spec: dict[str, Any], policy: str, message: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        check_window(RolloutSpec.model_validate(spec), policy, Window.model_validate(window))
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    "window",
    [
        pytest.param({"timeZone": "Europe/Berlin", **NO_HOUR, "allow": [{"days": ["Tue"], "start": "10:00", "end": "11:00"}]},
                     id="hours-that-open"),
        pytest.param(PEAK, id="peak-traffic-with-analysis"),
        pytest.param({"holidays": {"country": "DE", "subdivision": "BY"}}, id="known-holidays"),
    ],
)  # fmt: skip
def test_a_window_that_can_work_passes(window: dict[str, Any]) -> None:
    check_window(RolloutSpec.model_validate(ANALYSED), "spec.window", Window.model_validate(window))
