"""The Rollout resource on a real API server: installed from the generated CRD, valid
Rollouts accepted, bad ones refused with a message naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import Cluster, load_example, rollout

pytestmark = pytest.mark.cluster


EXAMPLES = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def create(cluster: Cluster, namespace: str, body: dict[str, Any], **options: Any) -> dict[str, Any]:
    result: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        "parachute.dev", "v1alpha1", namespace, "rollouts", body, **options
    )
    return result


@pytest.mark.parametrize("example", EXAMPLES)
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
            {"targetRef": {"name": "a"}, "analysis": {"prometheus": {"address": "http://prometheus:9090"},
                                                      "interval": "1ms"}},
            "spec.analysis.interval",
            "interval must be at least 1s",
            id="interval-under-a-scrape",
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


# What no code acts on yet is refused, naming the field, until that code exists.
NOT_SUPPORTED = [
    pytest.param({"strategy": "phased", "trafficRouting": {"gatewayAPI": {"httpRoute": "r", "service": "a"}},
                  "phased": {"audiences": [{"name": "internal", "flagTargeting": "staff"}, {"name": "everyone"}]}},
                 "spec.phased.audiences[0].flagTargeting", id="flag-audience"),
    pytest.param({"steps": [{"weight": 100, "audience": "internal"}]}, "spec.steps[0].audience", id="audience"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field"), NOT_SUPPORTED)
def test_what_is_not_supported_yet_is_refused_naming_the_field(
    crds: Cluster, namespace: str, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(crds, namespace, rollout("bad", targetRef={"name": "a"}, **spec))
    assert refused.value.status == 422
    assert f"{field}: Invalid value" in refused.value.body
    assert "is not supported yet" in refused.value.body
    written = field.replace("[0]", "[]")
    assert f"{written} is not supported yet" in refused.value.body


def test_canary_and_blue_green_are_accepted(crds: Cluster, namespace: str) -> None:
    created = create(crds, namespace, rollout("good", targetRef={"name": "a"}, strategy="canary"))
    assert created["spec"]["strategy"] == "canary"
    settings = {"activeService": "a"}
    created = create(crds, namespace, rollout("bg", targetRef={"name": "a"}, strategy="blueGreen",
                                              blueGreen=settings))  # fmt: skip
    # Defaults stay in the models, not the schema: what the user wrote is what is stored.
    assert created["spec"]["blueGreen"] == settings


def test_phased_with_a_router_is_accepted(crds: Cluster, namespace: str) -> None:
    created = create(crds, namespace, rollout("phased", targetRef={"name": "a"}, strategy="phased",
                                              trafficRouting=GATEWAY, phased={"audiences": AUDIENCES}))  # fmt: skip
    assert [a["name"] for a in created["spec"]["phased"]["audiences"]] == ["internal", "beta", "everyone"]


GATEWAY = {"gatewayAPI": {"httpRoute": "r", "service": "a"}}
INTERNAL = {"name": "internal", "header": {"name": "X-Employee", "value": "true"}, "minWait": "1m"}
BETA = {"name": "beta", "cookie": {"name": "beta", "value": "yes"}}
AUDIENCES = [INTERNAL, BETA, {"name": "everyone"}]
PHASED_REFUSED = [
    pytest.param({"strategy": "phased"}, "spec.phased", "set it exactly when spec.strategy is phased",
                 id="no-audiences"),
    pytest.param({"phased": {"audiences": AUDIENCES}, "trafficRouting": GATEWAY}, "spec.phased",
                 "set it exactly when spec.strategy is phased", id="audiences-without-the-strategy"),
    pytest.param({"strategy": "phased", "phased": {"audiences": AUDIENCES}}, "spec.trafficRouting",
                 "a phased release needs a router", id="no-router"),
    pytest.param({"strategy": "phased", "phased": {"audiences": AUDIENCES}, "trafficRouting": {"replicas": {}}},
                 "spec.trafficRouting", "a phased release needs a router", id="replica-ratio"),
    pytest.param({"strategy": "phased", "phased": {"audiences": [INTERNAL, BETA]}, "trafficRouting": GATEWAY},
                 "spec.phased.audiences", "the last is everyone", id="no-everyone"),
    pytest.param({"strategy": "phased", "phased": {"audiences": [{"name": "all"}, INTERNAL, {"name": "everyone"}]},
                  "trafficRouting": GATEWAY},
                 "spec.phased.audiences", "every audience but the last names a header or a cookie", id="everyone-twice"),
    pytest.param({"strategy": "phased", "phased": {"audiences": [INTERNAL, {**BETA, "name": "internal"},
                                                                  {"name": "everyone"}]}, "trafficRouting": GATEWAY},
                 "spec.phased.audiences", "names must be unique", id="same-name"),
    pytest.param({"strategy": "phased", "phased": {"audiences": [{**INTERNAL, "cookie": BETA["cookie"]},
                                                                  {"name": "everyone"}]}, "trafficRouting": GATEWAY},
                 "spec.phased.audiences[0].header", "set at most one of header, cookie", id="header-and-cookie"),
    pytest.param({"strategy": "phased", "phased": {"audiences": [{**INTERNAL, "minWait": "2h", "maxWait": "1h"},
                                                                  {"name": "everyone"}]}, "trafficRouting": GATEWAY},
                 "spec.phased.audiences[0].minWait", "minWait must not be longer than maxWait", id="min-over-max"),
    pytest.param({"strategy": "phased", "phased": {"audiences": AUDIENCES}, "trafficRouting": GATEWAY,
                  "steps": [{"weight": 100}]}, "spec.phased", "spec.steps, spec.waits and spec.watchAfterRelease "
                 "are for canary", id="steps"),
    pytest.param({"strategy": "phased", "phased": {"audiences": AUDIENCES},
                  "trafficRouting": {"nginx": {"ingress": "i", "service": "a"}}},
                 "spec.phased", "with nginx a cookie audience's value is always", id="nginx-cookie"),
    pytest.param({"strategy": "phased", "phased": {"audiences": [{"name": "Internal!", "header": INTERNAL["header"]},
                                                                  {"name": "everyone"}]}, "trafficRouting": GATEWAY},
                 "spec.phased.audiences[0].name", "should match", id="name-not-a-dns-label"),
    pytest.param({"strategy": "phased", "phased": {"audiences": [{**INTERNAL, "header": {"name": "x employee",
                                                                                          "value": "1"}},
                                                                  {"name": "everyone"}]}, "trafficRouting": GATEWAY},
                 "spec.phased.audiences[0].header.name", "should match", id="header-name-not-a-token"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field", "says"), PHASED_REFUSED)
def test_phased_is_refused_where_it_would_not_run_as_written(
    crds: Cluster, namespace: str, spec: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(crds, namespace, rollout("bad", targetRef={"name": "a"}, **spec))
    assert refused.value.status == 422
    assert f"{field}: " in refused.value.body
    assert says in refused.value.body


BLUE_GREEN_REFUSED = [
    pytest.param({"strategy": "blueGreen"}, "set it exactly when spec.strategy is blueGreen", id="no-settings"),
    pytest.param({"blueGreen": {"activeService": "a"}}, "set it exactly when spec.strategy is blueGreen",
                 id="settings-without-the-strategy"),
    pytest.param({"strategy": "blueGreen", "blueGreen": {"activeService": "a"}, "steps": [{"weight": 100}]},
                 "spec.steps and spec.waits are for canary", id="steps"),
    pytest.param({"strategy": "blueGreen", "blueGreen": {"activeService": "a"},
                  "trafficRouting": {"gatewayAPI": {"httpRoute": "r", "service": "a"}}},
                 "switching a router's route is not supported yet", id="router"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "says"), BLUE_GREEN_REFUSED)
def test_blue_green_is_refused_where_it_would_not_run_as_written(
    crds: Cluster, namespace: str, spec: dict[str, Any], says: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(crds, namespace, rollout("bad", targetRef={"name": "a"}, **spec))
    assert refused.value.status == 422
    assert "spec.blueGreen: Invalid value" in refused.value.body
    assert says in refused.value.body


def test_the_smi_backend_is_gone(crds: Cluster, namespace: str) -> None:
    """An unknown field: refused where validation is strict (kubectl's default), pruned elsewhere."""
    spec = {"targetRef": {"name": "a"}, "trafficRouting": {"smi": {"rootService": "checkout"}}}
    with pytest.raises(ApiException) as refused:
        create(crds, namespace, rollout("bad", **spec), field_validation="Strict")
    assert 'unknown field \\"spec.trafficRouting.smi\\"' in refused.value.body
    created = create(crds, namespace, rollout("pruned", **spec))
    assert created["spec"]["trafficRouting"] == {}


BAD_PLANS = [
    pytest.param({"trafficRouting": {"canaryScale": "full"}}, "spec.trafficRouting.canaryScale",
                 "canaryScale full needs a router", id="full-canary-without-a-router"),
    pytest.param({"steps": [{"weight": 50}, {"weight": 10}, {"weight": 100}]},
                 "spec.steps", "weights must not decrease", id="decreasing-weights"),
    pytest.param({"steps": [{"weight": 10, "minWait": "1m"}], "waits": {"min": "5s"}},
                 "spec.waits", "is ignored with spec.steps: give each step its own minWait and maxWait",
                 id="waits-with-steps"),
    pytest.param({"steps": [{"weight": 100, "minWait": "1m"}], "watchAfterRelease": "1h"},
                 "spec.watchAfterRelease", "is ignored with spec.steps: give the last step its own minWait",
                 id="watch-after-release-with-steps"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field", "says"), BAD_PLANS)
def test_a_plan_that_would_not_run_as_written_is_refused(
    crds: Cluster, namespace: str, spec: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(crds, namespace, rollout("bad", targetRef={"name": "a"}, **spec))
    assert refused.value.status == 422
    assert f"{field}: Invalid value" in refused.value.body
    assert says in refused.value.body


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"steps": [{"weight": 10}, {"weight": 50}, {"weight": 100}]}, id="rising-weights"),
        pytest.param({"steps": [{"weight": 100}, {"weight": 100}]}, id="equal-weights"),
        pytest.param({"waits": {"min": "5s"}, "watchAfterRelease": "1h"}, id="waits-on-the-risk-plan"),
        pytest.param({"trafficRouting": {"replicas": {}}}, id="replica-ratio"),
        pytest.param(
            {"trafficRouting": {"gatewayAPI": {"httpRoute": "r", "service": "s", "port": 8080}}},
            id="gateway-api",
        ),
        pytest.param(
            {
                "trafficRouting": {
                    "istio": {"virtualService": "v", "service": "s", "destinationRule": {"name": "d"}},
                    "canaryScale": "full",
                }
            },
            id="istio-subsets-full-canary",
        ),
        pytest.param({"trafficRouting": {"nginx": {"ingress": "i", "service": "s"}}}, id="nginx"),
    ],
)
def test_plans_that_run_as_written_are_accepted(crds: Cluster, namespace: str, spec: dict[str, Any]) -> None:
    created = create(crds, namespace, rollout("good", targetRef={"name": "a"}, **spec))
    assert created["spec"]["targetRef"]["name"] == "a"
