"""The built-ins read what each data plane exports, picked from the router in use unless the
spec says otherwise, with the label names a cluster's scrape configuration gives."""

from __future__ import annotations

from typing import Any

import pytest

from parachute.api import MetricsSource, RolloutSpec
from parachute.plan.metrics import MetricSpecError, definitions
from parachute.plan.sources import source_for, source_kind
from parachute.plan.versions import Where

CANARY = Where(pods="checkout-canary-5f7b8c9d4b-[a-z0-9]{5}", workload="checkout-canary",
               service="checkout-canary", canary_backend=True)  # fmt: skip
STABLE = Where(pods="checkout-6d4cf56db6-[a-z0-9]{5}", workload="checkout", service="checkout-stable")
ROUTERS: dict[str, dict[str, Any]] = {
    "gatewayAPI": {"gatewayAPI": {"httpRoute": "checkout", "service": "checkout"}},
    "istio": {"istio": {"virtualService": "checkout", "service": "checkout"}},
    "nginx": {"nginx": {"ingress": "checkout", "service": "checkout"}},
    "replicas": {"replicas": {}},
}


def spec(routing: str | None = None, **analysis: Any) -> RolloutSpec:
    body: dict[str, Any] = {
        "targetRef": {"name": "checkout"}, "risk": "medium",
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, **analysis},
    }  # fmt: skip
    # The API may still refuse routers the operator does not drive yet: the sources only read them.
    return RolloutSpec.model_validate(body).model_copy(
        update={"traffic_routing": _routing(ROUTERS[routing] if routing else None)}
    )


def _routing(body: dict[str, Any] | None) -> Any:
    from parachute.api import GatewayAPIRouting, IstioRouting, NginxRouting, TrafficRouting

    if body is None:
        return None
    models = {"gatewayAPI": GatewayAPIRouting, "istio": IstioRouting, "nginx": NginxRouting}
    fields = {("gateway_api" if k == "gatewayAPI" else k): models[k].model_validate(v) for k, v in body.items()
              if k in models}  # fmt: skip
    return TrafficRouting.model_construct(**fields)


@pytest.mark.parametrize(
    ("routing", "source"),
    [
        pytest.param(None, MetricsSource.app, id="no-router-app"),
        pytest.param("replicas", MetricsSource.app, id="replica-ratio-app"),
        pytest.param("istio", MetricsSource.istio, id="istio"),
        pytest.param("nginx", MetricsSource.nginx, id="nginx"),
        pytest.param("gatewayAPI", MetricsSource.envoy_gateway, id="gateway-api-envoy-gateway"),
    ],
)
def test_the_source_follows_the_router_in_use(routing: str | None, source: MetricsSource) -> None:
    assert source_kind(spec(routing)) == source


def test_a_setting_overrides_the_router_s_source() -> None:
    assert source_kind(spec("istio", source="app")) == MetricsSource.app
    assert source_kind(spec(None, source="linkerd")) == MetricsSource.linkerd


@pytest.mark.parametrize(
    ("routing", "settings", "canary", "stable"),
    [
        pytest.param(None, {}, f'sum by (code) (increase(http_requests_total{{namespace="shop",pod=~"{CANARY.pods}"}}[1m]))',
                     f'sum by (code) (increase(http_requests_total{{namespace="shop",pod=~"{STABLE.pods}"}}[1m]))',
                     id="app"),
        pytest.param(None, {"app": {"requests": "requests_total", "statusLabel": "status"},
                            "labels": {"namespace": "kubernetes_namespace", "pod": "kubernetes_pod_name"}},
                     f'sum by (status) (increase(requests_total{{kubernetes_namespace="shop",kubernetes_pod_name=~"{CANARY.pods}"}}[1m]))',
                     f'sum by (status) (increase(requests_total{{kubernetes_namespace="shop",kubernetes_pod_name=~"{STABLE.pods}"}}[1m]))',
                     id="app-with-its-own-names"),
        pytest.param("istio", {},
                     'sum by (response_code) (increase(istio_requests_total{reporter="destination",destination_workload_namespace="shop",destination_workload="checkout-canary"}[1m]))',
                     'sum by (response_code) (increase(istio_requests_total{reporter="destination",destination_workload_namespace="shop",destination_workload="checkout"}[1m]))',
                     id="istio"),
        pytest.param("nginx", {},
                     'sum by (status) (increase(nginx_ingress_controller_requests{namespace="shop",ingress="checkout",canary=~"shop-checkout-canary-.+"}[1m]))',
                     'sum by (status) (increase(nginx_ingress_controller_requests{namespace="shop",ingress="checkout",canary=""}[1m]))',
                     id="nginx"),
        pytest.param("gatewayAPI", {},
                     'sum by (envoy_response_code_class) (increase(envoy_cluster_upstream_rq_xx{envoy_cluster_name=~"(.*/)?shop/checkout-canary"}[1m]))',
                     'sum by (envoy_response_code_class) (increase(envoy_cluster_upstream_rq_xx{envoy_cluster_name=~"(.*/)?shop/checkout-stable"}[1m]))',
                     id="envoy-gateway"),
        pytest.param(None, {"source": "linkerd"},
                     f'sum by (classification) (increase(response_total{{direction="inbound",namespace="shop",pod=~"{CANARY.pods}"}}[1m]))',
                     f'sum by (classification) (increase(response_total{{direction="inbound",namespace="shop",pod=~"{STABLE.pods}"}}[1m]))',
                     id="linkerd"),
    ],
)  # fmt: skip
def test_requests_are_counted_by_outcome_where_each_source_counts_them(
    routing: str | None, settings: dict[str, Any], canary: str, stable: str
) -> None:
    source = source_for(spec(routing, **settings))
    assert source.outcomes(CANARY, "shop", "1m").query == canary
    assert source.outcomes(STABLE, "shop", "1m").query == stable


@pytest.mark.parametrize(
    ("source", "bad", "good"),
    [
        pytest.param("app", ["500", "503"], ["200", "404", "429"], id="app-5xx"),
        pytest.param("linkerd", ["failure"], ["success"], id="linkerd-classification"),
        pytest.param("envoyGateway", ["5"], ["2", "4"], id="envoy-response-code-class"),
    ],
)
def test_only_server_errors_count_as_bad(source: str, bad: list[str], good: list[str]) -> None:
    routing = "gatewayAPI" if source == "envoyGateway" else None
    outcomes = source_for(spec(routing, source=source)).outcomes(CANARY, "shop", "1m")
    assert all(outcomes.is_bad(v) for v in bad) and not any(outcomes.is_bad(v) for v in good)


def test_latency_is_read_in_seconds_whatever_the_histogram_s_unit() -> None:
    app = source_for(spec()).latency_query(CANARY, "shop", "1m", 0.95)
    assert app.startswith("histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{")
    assert not app.endswith("0.001")
    istio = source_for(spec("istio")).latency_query(CANARY, "shop", "1m", 0.95)
    assert "istio_request_duration_milliseconds_bucket" in istio and istio.endswith(" * 0.001")


@pytest.mark.parametrize(
    ("source", "says"),
    [
        pytest.param("nginx", "needs spec.trafficRouting.nginx", id="nginx-needs-its-ingress"),
        pytest.param(
            "envoyGateway", "needs spec.trafficRouting.gatewayAPI", id="envoy-needs-backend-services"
        ),
    ],
)
def test_a_source_that_cannot_tell_the_versions_apart_without_its_router_is_refused(
    source: str, says: str
) -> None:
    with pytest.raises(MetricSpecError, match=says):
        definitions(spec(None, source=source), {}, spec().risk)  # type: ignore[arg-type]
