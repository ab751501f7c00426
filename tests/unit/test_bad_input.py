"""What the bad-input test at scale found wrong, one case each: a duration no clock holds was
accepted (and could not be parsed), a confidence no sample reaches was accepted, and three
messages did not name the field they were about."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from parachute import api, crd, kube
from parachute.analysis.connect import AnalysisSetupError, templates_for
from parachute.api import MetricTemplateSpec, RolloutSpec
from parachute.plan.metrics import UnknownTemplateError, resolve
from parachute.reconcile import describe_validation_error


@pytest.mark.parametrize(
    ("model", "document", "field"),
    [
        pytest.param(RolloutSpec, {"targetRef": {"name": "a"}, "watchAfterRelease": "100000000000h"},
                     "spec.watchAfterRelease", id="past-any-clock"),
        pytest.param(RolloutSpec, {"targetRef": {"name": "a"}, "progressDeadline": "8761h"},
                     "spec.progressDeadline", id="a-year-and-an-hour"),
        pytest.param(RolloutSpec, {"targetRef": {"name": "a"}, "steps": [{"weight": 100, "maxWait": "9" * 31 + "h"}]},
                     "spec.steps[0].maxWait", id="in-a-step"),
        pytest.param(MetricTemplateSpec, {"query": "up", "critical": 1, "sustainFor": "2562048h"},
                     "spec.sustainFor", id="in-a-template"),
    ],
)  # fmt: skip
def test_a_duration_longer_than_a_year_is_refused_naming_the_field(
    model: type[BaseModel], document: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(document)
    assert describe_validation_error(refused.value) == f"{field}: Value error, at most 8760h (a year)"


def test_a_year_is_still_a_duration() -> None:
    assert RolloutSpec.model_validate({"targetRef": {"name": "a"}, "watchAfterRelease": "8760h"})


def test_a_duration_no_timedelta_holds_is_a_value_error_not_an_overflow() -> None:
    with pytest.raises(ValueError, match="longer than any clock holds"):
        api.parse_duration("100000000000h")


def _durations(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if node.get("pattern") == api.DURATION_PATTERN:
        yield node
    for child in (node.get("properties") or {}).values():
        yield from _durations(child)
    if isinstance(node.get("items"), dict):
        yield from _durations(node["items"])


@pytest.mark.parametrize("document", crd.all_crds(), ids=lambda d: d["spec"]["names"]["kind"])
def test_the_api_server_refuses_every_duration_longer_than_a_year(document: dict[str, Any]) -> None:
    # In spec: status is Parachute's, and its lists have no bound a CEL rule's cost needs.
    schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    found = list(_durations(schema))
    assert found
    for node in found:
        rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        assert any("duration(self) <= duration('8760h')" in rule for rule in rules), node


@pytest.mark.parametrize(
    ("confidence", "accepted"),
    [("95%", True), ("99.9%", True), ("0.5%", True), ("100%", False), ("150%", False), ("100.5%", False)],
)
def test_a_confidence_is_below_100_percent(confidence: str, accepted: bool) -> None:
    """At 100% or more the comparison never finds the canary worse: the metric could never fail."""
    document = {"targetRef": {"name": "a"}, "analysis": {"prometheus": {"address": "http://p:9090"},
                "metrics": [{"template": "error-rate", "confidence": confidence}]}}  # fmt: skip
    if accepted:
        assert RolloutSpec.model_validate(document)
        return
    with pytest.raises(ValidationError) as refused:
        RolloutSpec.model_validate(document)
    assert describe_validation_error(refused.value).startswith("spec.analysis.metrics[0].confidence: ")


def test_a_template_without_thresholds_is_refused_naming_them() -> None:
    schema = crd.structural(MetricTemplateSpec.model_json_schema(by_alias=True))
    (rule,) = schema["x-kubernetes-validations"]
    assert all(name in rule["message"] for name in ("warning", "critical", "rollbackAt"))


def test_an_unknown_template_is_named_by_the_field_that_names_it() -> None:
    metric = api.Metric.model_validate({"templateRef": {"name": "checkout-errors"}})
    with pytest.raises(UnknownTemplateError) as unknown:
        resolve(metric, {}, field="spec.analysis.metrics[2]")
    assert str(unknown.value).startswith("spec.analysis.metrics[2].templateRef.name: no template named")


# A template the CRD refuses now, stored before it did (a duration of 99999h).
STORED = {
    "MetricTemplate/old": {"metadata": {"name": "old"}, "spec": {"query": "up", "critical": 1, "sustainFor": "99999h"}},
    "MetricTemplate/good": {"metadata": {"name": "good"}, "spec": {"query": "up", "critical": 1}},
}  # fmt: skip


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> None:
    async def listed(namespace: str) -> dict[str, dict[str, Any]]:
        return STORED

    monkeypatch.setattr(kube, "list_metric_templates", listed)


def _using(name: str) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "targetRef": {"name": "a"},
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "metrics": [{"templateRef": {"name": name}}]},
    })  # fmt: skip


def test_a_template_the_models_refuse_is_named_with_its_field(stored: None) -> None:
    with pytest.raises(AnalysisSetupError) as refused:
        asyncio.run(templates_for(_using("old"), "shop"))
    assert str(refused.value) == "MetricTemplate old: spec.sustainFor: Value error, at most 8760h (a year)"


def test_a_broken_template_no_metric_uses_is_not_the_rollout_s_problem(stored: None) -> None:
    assert set(asyncio.run(templates_for(_using("good"), "shop"))) == {"MetricTemplate/good"}
