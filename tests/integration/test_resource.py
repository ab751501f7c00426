"""The Rollout resource on a real API server: installed from the generated CRD, valid
Rollouts accepted, bad ones refused with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import Cluster, load_example, rollout

pytestmark = pytest.mark.cluster


def create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        "parachute.dev", "v1alpha1", namespace, "rollouts", body
    )
    return result


@pytest.mark.parametrize("example", ["rollout-minimal.yaml", "rollout-full.yaml"])
def test_the_examples_are_accepted(crds: Cluster, namespace: str, example: str) -> None:
    body = load_example(example)
    body["metadata"]["namespace"] = namespace
    created = create(crds, namespace, body)
    assert created["spec"]["targetRef"]["name"] == "checkout"


def test_the_short_name_and_printer_columns_are_served(crds: Cluster) -> None:
    resources = crds.custom.get_api_resources("parachute.dev", "v1alpha1").resources
    rollouts = next(r for r in resources if r.name == "rollouts")
    assert rollouts.short_names == ["pr"]
    assert rollouts.namespaced is True
    assert "parachute" in rollouts.categories
    status = next(r for r in resources if r.name == "rollouts/status")
    assert "patch" in status.verbs


def test_unquoted_integers_and_units_are_both_thresholds(crds: Cluster, namespace: str) -> None:
    metric = {"name": "payments", "query": "up", "warning": 1, "critical": "400ms"}
    body = rollout("thresholds", targetRef={"name": "checkout"}, analysis={
        "prometheus": {"address": "http://prometheus:9090"}, "metrics": [metric]})  # fmt: skip
    created = create(crds, namespace, body)
    assert created["spec"]["analysis"]["metrics"][0]["warning"] == 1


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        pytest.param({"targetRef": {"name": "a"}, "risk": "extreme"}, "spec.risk", "Unsupported value", id="unknown-risk"),
        pytest.param(
            {"targetRef": {"name": "a"}, "steps": [{"weight": 150}]},
            "spec.steps[0].weight",
            "less than or equal to 100",
            id="weight-150",
        ),
        pytest.param({"risk": "low"}, "spec.targetRef", "Required value", id="missing-target"),
        pytest.param(
            {"targetRef": {"name": "a"}, "steps": [{"weight": 10, "minWait": "2h", "maxWait": "1h"}]},
            "spec.steps[0]",
            "minWait must not be longer than maxWait",
            id="min-over-max-wait",
        ),
        pytest.param(
            {"targetRef": {"name": "a"}, "waits": {"min": "soon"}}, "spec.waits.min", "should match", id="bad-duration"
        ),
        pytest.param(
            {"targetRef": {"name": "a"}, "strategy": "blueGreen"},
            "spec",
            "strategy blueGreen needs spec.blueGreen",
            id="blue-green-without-services",
        ),
        pytest.param(
            {"targetRef": {"name": "a"}, "trafficRouting": {"istio": {"virtualService": "v", "service": "s"},
                                                            "nginx": {"ingress": "i", "service": "s"}}},
            "spec.trafficRouting",
            "set at most one of",
            id="two-routers",
        ),
        pytest.param(
            {"targetRef": {"name": "a"}, "analysis": {"prometheus": {"address": "http://p"},
                                                     "metrics": [{"template": "error-rate", "query": "up"}]}},
            "spec.analysis.metrics[0]",
            "set exactly one of template, templateRef, query",
            id="metric-template-and-query",
        ),
        pytest.param(
            {"targetRef": {"name": "a"}, "analysis": {"prometheus": {"address": "http://p"},
                                                     "metrics": [{"name": "m", "query": "up", "critical": 0.5}]}},
            "spec.analysis.metrics[0].critical",
            "must be of type",
            id="unquoted-decimal-threshold",
        ),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_field(
    crds: Cluster, namespace: str, spec: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(crds, namespace, rollout("bad", **spec))
    assert refused.value.status == 422
    assert field in refused.value.body
    assert says in refused.value.body
