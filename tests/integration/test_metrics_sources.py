"""The built-in templates of every metrics source, against a real Prometheus scraping series
shaped like each data plane's (hand-made by testbed/sources.py: no Istio, NGINX, Envoy Gateway or
Linkerd runs here). The canary fails 10% of its requests and is slow, stable is healthy: each
source's queries must tell them apart, count them right, and find their series."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from parachute.analysis.availability import check
from parachute.analysis.evaluate import evaluate
from parachute.analysis.prometheus import PrometheusProvider
from parachute.api import (
    ConditionStatus,
    GatewayAPIRouting,
    IstioRouting,
    NginxRouting,
    RolloutSpec,
    TrafficRouting,
    Verdict,
)
from parachute.plan.versions import Versions, Where, pod_pattern
from testbed.prometheus import LocalPrometheus, ScrapeTarget
from testbed.sources import SHAPES, SourceExporter, Stream

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

CANARY_PODS, STABLE_PODS = pod_pattern(["checkout-canary-5f7b8c9d4b"]), pod_pattern(["checkout-6d4cf56db6"])
CANARY = Where(pods=CANARY_PODS, workload="checkout-canary", service="checkout-canary", canary_backend=True)
STABLE = Where(pods=STABLE_PODS, workload="checkout", service="checkout-stable")
BAD, GOOD = {"rate": 40.0, "error_rate": 0.1, "latency_ms": 120.0}, {"rate": 80.0, "latency_ms": 20.0}

# Per source: how a Rollout routes (which picks the source), and each version's labels as that
# data plane writes them.
SOURCES: dict[str, tuple[TrafficRouting | None, dict[str, Any], dict[str, str], dict[str, str]]] = {
    "istio": (TrafficRouting.model_construct(istio=IstioRouting(virtual_service="checkout", service="checkout")), {},
              {"destination_workload_namespace": "shop", "destination_workload": "checkout-canary"},
              {"destination_workload_namespace": "shop", "destination_workload": "checkout"}),
    "nginx": (TrafficRouting.model_construct(nginx=NginxRouting(ingress="checkout", service="checkout")), {},
              {"namespace": "shop", "ingress": "checkout", "service": "checkout-stable",
               "canary": "shop-checkout-canary-80"},
              {"namespace": "shop", "ingress": "checkout", "service": "checkout-stable", "canary": ""}),
    "envoyGateway": (TrafficRouting.model_construct(gateway_api=GatewayAPIRouting(http_route="checkout",
                                                                                  service="checkout")), {},
                     {"envoy_cluster_name": "shop/checkout-canary"}, {"envoy_cluster_name": "shop/checkout-stable"}),
    "linkerd": (None, {"source": "linkerd"},
                {"namespace": "shop", "pod": "checkout-canary-5f7b8c9d4b-kq8zt", "deployment": "checkout-canary"},
                {"namespace": "shop", "pod": "checkout-6d4cf56db6-x2v9q", "deployment": "checkout"}),
}  # fmt: skip


def spec(source: str, **analysis: Any) -> RolloutSpec:
    routing, settings, _, _ = SOURCES[source]
    body = {"targetRef": {"name": "checkout"}, "risk": "medium",
            "analysis": {"prometheus": {"address": "http://unused"}, "interval": "10s", "minRequests": 50,
                         **settings, **analysis}}  # fmt: skip
    # The API may still refuse routers the operator does not drive yet: the templates only read them.
    return RolloutSpec.model_validate(body).model_copy(update={"traffic_routing": routing})


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    exporters = [
        SourceExporter(SHAPES[name], [Stream(canary, **BAD), Stream(stable, **GOOD)]).start()  # type: ignore[arg-type]
        for name, (_, _, canary, stable) in SOURCES.items()
    ]
    targets = [ScrapeTarget(name, e.address) for name, e in zip(SOURCES, exporters, strict=True)]
    server = LocalPrometheus(tmp_path_factory.mktemp("sources") / "prometheus", targets).start()
    # Enough samples for a 10s window of every source.
    server.wait_for_value("min(count_over_time(up[12s]))", timeout=30, accept=lambda v: v >= 10)
    yield server
    server.stop()
    for exporter in exporters:
        exporter.stop()


def provider(server: LocalPrometheus) -> PrometheusProvider:
    return PrometheusProvider(server.url)


@pytest.mark.parametrize("source", list(SOURCES))
def test_each_source_s_builtins_tell_the_canary_from_stable(scraped: LocalPrometheus, source: str) -> None:
    round_ = asyncio.run(evaluate(spec(source), namespace="shop", previous=None, provider=provider(scraped),
                                  templates={}, now=datetime.now(UTC), versions=Versions(CANARY, STABLE)))  # fmt: skip
    error_rate, latency, success_rate = round_.metrics
    assert error_rate.comparison is not None, error_rate.message
    # 40 and 80 requests a second for 10s, the canary failing one in ten (the decoys not counted).
    assert error_rate.comparison.requests == pytest.approx(400, rel=0.2)
    assert error_rate.comparison.stable_requests == pytest.approx(800, rel=0.2)
    assert error_rate.value == pytest.approx(0.1, abs=0.02) and error_rate.stable_value == 0.0
    assert error_rate.verdict == Verdict.failed and error_rate.immediate, error_rate.message
    assert success_rate.value == pytest.approx(0.9, abs=0.02)
    # 120ms falls in the 100-250ms bucket, 20ms in the 10-25ms one.
    assert latency.value is not None and 0.1 < latency.value <= 0.25, latency.message
    assert latency.stable_value is not None and 0.01 < latency.stable_value <= 0.025
    assert latency.verdict == Verdict.warning  # far past stable: critical, not yet sustained


@pytest.mark.parametrize("source", list(SOURCES))
def test_after_promotion_each_source_judges_what_serves_as_stable(
    scraped: LocalPrometheus, source: str
) -> None:
    promoted = Versions(judged=STABLE, stable=STABLE, judges_target=True)
    round_ = asyncio.run(evaluate(spec(source), namespace="shop", previous=None, provider=provider(scraped),
                                  templates={}, now=datetime.now(UTC), versions=promoted))  # fmt: skip
    assert [m.verdict for m in round_.metrics] == [Verdict.successful] * 3, [
        m.message for m in round_.metrics
    ]


@pytest.mark.parametrize("source", list(SOURCES))
def test_each_source_s_series_are_found(scraped: LocalPrometheus, source: str) -> None:
    found = asyncio.run(check(spec(source), "shop", provider(scraped), {}, STABLE))
    assert found.status == ConditionStatus.true, found.message


def test_a_source_whose_series_are_not_there_says_what_usually_causes_it(scraped: LocalPrometheus) -> None:
    # Istio's series of another namespace only: nothing for this workload.
    found = asyncio.run(check(spec("istio"), "payments", provider(scraped), {}, STABLE))
    assert found.status == ConditionStatus.false
    assert 'destination_workload_namespace="payments"' in found.message and "sidecar" in found.message
