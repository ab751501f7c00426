"""The Rollout API models: what a user may write, and what is refused before it reaches a cluster."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from parachute.api import FlagFormat, Risk, Rollout, RolloutSpec, Strategy, parse_duration
from parachute.reconcile import describe_validation_error

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("30s", timedelta(seconds=30), id="seconds"),
        pytest.param("5m", timedelta(minutes=5), id="minutes"),
        pytest.param("2h", timedelta(hours=2), id="hours"),
        pytest.param("1h30m", timedelta(hours=1, minutes=30), id="compound"),
        pytest.param("250ms", timedelta(milliseconds=250), id="milliseconds"),
        pytest.param("1.5s", timedelta(seconds=1.5), id="fraction"),
        pytest.param("0s", timedelta(0), id="zero"),
    ],
)
def test_durations_are_go_style(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "-5s", "5 m", "1d", "s", "5mm"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_a_valid_rollout(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("kind") == "Rollout":
            Rollout.model_validate(document)


def test_the_smallest_rollout_takes_the_documented_defaults() -> None:
    spec = RolloutSpec.model_validate({"targetRef": {"name": "checkout"}})
    assert spec.target_ref.kind == "Deployment"
    assert spec.strategy is Strategy.canary
    assert spec.risk is None  # decided later: from the change annotation, else medium
    assert spec.progress_deadline == "10m"
    assert not spec.hotfix and not spec.paused


def test_the_full_example_reads_as_the_spec_sketches_it() -> None:
    rollout = Rollout.model_validate(yaml.safe_load((EXAMPLES / "rollout-full.yaml").read_text()))
    spec = rollout.spec
    assert spec.risk is Risk.high
    assert spec.traffic_routing is None  # replica ratio: the only routing there is
    assert spec.feature_flags and spec.feature_flags.format is FlagFormat.flagd
    assert spec.analysis and spec.analysis.metrics and spec.analysis.metrics[1].critical == "400ms"
    assert spec.recovery and spec.recovery.budgets and spec.recovery.budgets.flag == "5m"


def test_the_wire_format_is_camel_case() -> None:
    spec = RolloutSpec.model_validate(
        {"targetRef": {"name": "a"}, "steps": [{"weight": 10, "minWait": "1m"}]}
    )
    dumped = spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["targetRef"]["name"] == "a"
    assert dumped["steps"][0]["minWait"] == "1m"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"targetRef": {"name": "a"}, "risk": "extreme"}, "spec.risk", id="unknown-risk"),
        pytest.param(
            {"targetRef": {"name": "a"}, "steps": [{"weight": 150}]}, "spec.steps[0].weight", id="weight-150"
        ),
        pytest.param({"risk": "low"}, "spec.targetRef", id="missing-target"),
        pytest.param(
            {"targetRef": {"name": "a"}, "waits": {"min": "soon"}}, "spec.waits.min", id="bad-duration"
        ),
    ],
)
def test_bad_input_names_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate(spec)
    assert describe_validation_error(caught.value).startswith(field)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        pytest.param({"trafficRouting": {"canaryScale": "full"}},
                     "spec.trafficRouting: Value error, canaryScale full needs a router", id="full-canary-no-router"),
        pytest.param({"trafficRouting": {"scaleDownDelay": "10s"}},
                     "spec.trafficRouting: Value error, scaleDownDelay needs a router", id="drain-no-router"),
        pytest.param({"trafficRouting": {"gatewayAPI": {"httpRoute": "r", "service": "s"}, "scaleDownDelay": "2h"}},
                     "spec.trafficRouting: Value error, scaleDownDelay is at most 1h", id="drain-too-long"),
        pytest.param({"strategy": "phased", "trafficRouting": {"gatewayAPI": {"httpRoute": "r", "service": "s"}},
                      "phased": {"audiences": [{"name": "beta", "flagTargeting": "beta-users"}, {"name": "all"}]}},
                     "spec.phased.audiences[0]: Value error, flagTargeting is not supported yet", id="flag-audience"),
        pytest.param({"steps": [{"weight": 100, "audience": "beta"}]},
                     "spec.steps[0]: Value error, audience is not supported yet", id="audience"),
    ],
)  # fmt: skip
def test_what_the_api_server_would_refuse_as_not_supported_the_operator_marks_invalid(
    spec: dict[str, object], says: str
) -> None:
    """For a Rollout stored before the CRD refused these (or a CRD an upgrade left behind)."""
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate({"targetRef": {"name": "a"}, **spec})
    assert describe_validation_error(caught.value).startswith(says)


@pytest.mark.parametrize(
    ("routing", "router"),
    [
        pytest.param({"gatewayAPI": {"httpRoute": "r", "service": "s"}}, "gatewayAPI", id="gateway-api"),
        pytest.param({"istio": {"virtualService": "v", "service": "s", "destinationRule": {"name": "d"}}}, "istio",
                     id="istio-subsets"),
        pytest.param({"nginx": {"ingress": "i", "service": "s"}, "canaryScale": "full"}, "nginx", id="nginx-full"),
        pytest.param({"replicas": {}}, None, id="replica-ratio"),
    ],
)  # fmt: skip
def test_every_router_is_accepted_and_named(routing: dict[str, object], router: str | None) -> None:
    spec = RolloutSpec.model_validate({"targetRef": {"name": "a"}, "trafficRouting": routing})
    assert spec.traffic_routing is not None and spec.traffic_routing.router() == router


def test_what_is_refused_is_only_refused_when_written() -> None:
    spec = RolloutSpec.model_validate({"targetRef": {"name": "a"}, "trafficRouting": {"replicas": {}}})
    assert spec.strategy is Strategy.canary and spec.blue_green is None and spec.phased is None
