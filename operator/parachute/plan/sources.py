"""What each metrics source exports, as the built-in templates query it. Pure.

A source is whoever counts the requests: the application itself (`app`, per pod), a mesh's
sidecars (Istio, Linkerd), or the proxy in front (NGINX Ingress, Envoy Gateway). For one version
(`plan.versions.Where`) a source says how to count its requests by outcome in a window, how to
read a latency quantile in seconds, and how to tell whether its series exist at all, with what
usually causes them to be missing. Label and metric names that differ between clusters are
settings (`spec.analysis.labels`, `spec.analysis.app`), never assumptions.

By default the source follows the router (`spec.trafficRouting`): Istio's for istio, NGINX's for
nginx, Envoy Gateway's for gatewayAPI, and the app's own metrics with replica-ratio routing,
where no proxy sees the split. `spec.analysis.source` overrides it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from parachute.api import Analysis, AppMetrics, MetricLabels, MetricsSource, RolloutSpec
from parachute.plan.versions import Where

ISTIO_REQUESTS = "istio_requests_total"
ISTIO_LATENCY = "istio_request_duration_milliseconds"
NGINX_REQUESTS = "nginx_ingress_controller_requests"
NGINX_LATENCY = "nginx_ingress_controller_request_duration_seconds"
ENVOY_REQUESTS = "envoy_cluster_upstream_rq"
ENVOY_LATENCY = "envoy_cluster_upstream_rq_time"
LINKERD_REQUESTS = "response_total"
LINKERD_LATENCY = "response_latency_ms"
# Names a status code label goes by, to say which one an app's series carry.
STATUS_LABELS = ("code", "status", "status_code", "response_code", "http_status", "http_code", "statusCode")


@dataclass(frozen=True)
class Outcomes:
    """A query for a version's requests in a window, one series per value of `label`; the values
    `bad` matches (a full match) are the failed requests."""

    query: str
    label: str
    bad: str

    def is_bad(self, value: str) -> bool:
        return re.fullmatch(self.bad, value) is not None


@dataclass(frozen=True)
class Check:
    """One question about whether a series exists: a query that is empty when it does not, what
    that means, and what usually causes it. With `suggest`, the labels the series carry among
    those names are looked up and named."""

    query: str
    missing: str
    hint: str
    suggest: tuple[str, ...] = ()
    suggest_from: str = ""


@dataclass(frozen=True)
class Source:
    """How one source's series name a version: its request counter, its histogram, and the
    matchers that select the version."""

    kind: MetricsSource
    requests: str
    latency: str  # histogram base name; its _bucket series are read
    latency_unit: float  # seconds per unit of the histogram (0.001 for milliseconds)
    outcome_label: str
    bad_outcomes: str
    labels: MetricLabels = field(default_factory=MetricLabels)
    # What this source's settings name: the app's metric and label names, the route or Ingress.
    ingress: str = ""

    def selector(self, where: Where, namespace: str) -> str:
        ns, pod = self.labels.namespace, self.labels.pod
        if self.kind in (MetricsSource.app, MetricsSource.linkerd):
            inbound = 'direction="inbound",' if self.kind == MetricsSource.linkerd else ""
            return f'{inbound}{ns}="{namespace}",{pod}=~"{where.pods}"'
        if self.kind == MetricsSource.istio:
            return (
                f'reporter="destination",destination_workload_namespace="{namespace}",'
                f'destination_workload="{where.workload}"'
            )
        if self.kind == MetricsSource.nginx:
            # The controller names the canary Ingress's upstream (<namespace>-<service>-<port>) in
            # `canary` for requests it sent there, and leaves it empty for the others.
            canary = f'=~"{namespace}-{where.service}-.+"' if where.canary_backend else '=""'
            return f'{ns}="{namespace}",ingress="{self.ingress}",canary{canary}'
        # Envoy Gateway: one cluster per backendRef, named by its stat name (%BACKEND_REFS%).
        return f'envoy_cluster_name=~"(.*/)?{namespace}/{where.service}"'

    def outcomes(self, where: Where, namespace: str, window: str) -> Outcomes:
        metric = f"{self.requests}_xx" if self.kind == MetricsSource.envoy_gateway else self.requests
        query = (
            f"sum by ({self.outcome_label}) "
            f"(increase({metric}{{{self.selector(where, namespace)}}}[{window}]))"
        )
        return Outcomes(query, self.outcome_label, self.bad_outcomes)

    def latency_query(self, where: Where, namespace: str, window: str, quantile: float) -> str:
        query = (
            f"histogram_quantile({quantile:g}, sum by (le) "
            f"(rate({self.latency}_bucket{{{self.selector(where, namespace)}}}[{window}])))"
        )
        return query if self.latency_unit == 1 else f"{query} * {self.latency_unit:g}"

    def request_checks(self, where: Where, namespace: str) -> list[Check]:
        """Whether the version's request counter exists: questions from the broadest down, each
        narrower than the one before (series for the last are series for all, so it is asked
        first), and the first one that finds nothing says what is wrong."""
        metric = f"{self.requests}_xx" if self.kind == MetricsSource.envoy_gateway else self.requests
        selector = self.selector(where, namespace)
        if self.kind == MetricsSource.app:
            ns, pod, status = self.labels.namespace, self.labels.pod, self.outcome_label
            return [
                Check(
                    f'count({metric}{{{ns}="{namespace}"}})',
                    f"no series of {metric} in namespace {namespace}",
                    f"Prometheus scrapes no pod there that exports {metric}: add a PodMonitor or "
                    "ServiceMonitor (or a scrape job) for these pods, or name the app's request "
                    "counter in spec.analysis.app.requests",
                ),
                Check(
                    f"count({metric}{{{selector}}})",
                    f"{metric} has series in {namespace}, but none whose {pod} label names one of "
                    f"the pods measured ({where.pods})",
                    "the series carry the pod's name in another label (set spec.analysis.labels.pod to "
                    "it), or these pods are not scraped",
                    suggest=("pod", "pod_name", "kubernetes_pod_name"),
                    suggest_from=f'{metric}{{{ns}="{namespace}"}}',
                ),
                Check(
                    f'count({metric}{{{selector},{status}!=""}})',
                    f"the pods' {metric} series have no {status} label",
                    "the app names its status code label otherwise: set spec.analysis.app.statusLabel",
                    suggest=STATUS_LABELS,
                    suggest_from=f"{metric}{{{selector}}}",
                ),
            ]
        return [
            Check(f"count({metric}{{{selector}}})", f"no series of {metric}{{{selector}}}", _HINTS[self.kind])
        ]

    def latency_checks(self, where: Where, namespace: str) -> list[Check]:
        bucket = f"{self.latency}_bucket"
        selector = self.selector(where, namespace)
        if self.kind != MetricsSource.app:
            return [
                Check(
                    f"count({bucket}{{{selector}}})",
                    f"no series of {bucket}{{{selector}}}",
                    _HINTS[self.kind],
                )
            ]
        ns = self.labels.namespace
        return [
            Check(
                f'count({bucket}{{{ns}="{namespace}"}})',
                f"no series of {bucket} in namespace {namespace}",
                "the app's request duration histogram is named otherwise: name it in "
                "spec.analysis.app.latency (its _bucket series are read), or leave latency-p95 out",
            ),
            Check(
                f"count({bucket}{{{selector}}})",
                f"{bucket} has series in {namespace}, but none for the pods measured ({where.pods})",
                "the series carry the pod's name in another label (set spec.analysis.labels.pod), or "
                "these pods are not scraped",
            ),
        ]


_HINTS: dict[MetricsSource, str] = {
    MetricsSource.istio: 'Parachute reads what the destination\'s sidecar reports (reporter="destination", '
    "destination_workload): are the pods in the mesh and Istio's metrics scraped? Or set "
    "spec.analysis.source: app to judge by the app's own metrics",
    MetricsSource.nginx: "is the controller's metrics endpoint scraped (controller.metrics.enabled)? Its "
    "namespace label must hold the Ingress's namespace; a ServiceMonitor without honorLabels renames it "
    "exported_namespace (set spec.analysis.labels.namespace)",
    MetricsSource.envoy_gateway: "Envoy Gateway counts per route rule unless each backendRef has a "
    "cluster of its own, which mixes the versions; Parachute reads per-backend clusters whose stat name "
    "ends in <namespace>/<service> (EnvoyProxy spec.telemetry.metrics.clusterStatName: "
    '"%BACKEND_REFS%"). Or set spec.analysis.source: app to judge by the app\'s own metrics',
    MetricsSource.linkerd: "are the pods meshed (linkerd.io/inject) and the proxies' metrics scraped "
    "with the namespace and pod labels (spec.analysis.labels)?",
}


def source_kind(spec: RolloutSpec) -> MetricsSource:
    """The source the spec names, or the router's, or the app's own."""
    analysis = spec.analysis
    if analysis is not None and analysis.source is not None:
        return analysis.source
    routing = spec.traffic_routing
    if routing is not None and routing.istio is not None:
        return MetricsSource.istio
    if routing is not None and routing.nginx is not None:
        return MetricsSource.nginx
    if routing is not None and routing.gateway_api is not None:
        return MetricsSource.envoy_gateway
    return MetricsSource.app


def routed_service(spec: RolloutSpec) -> str | None:
    """The Service a router splits into `-stable` and `-canary` copies; None with replica ratio."""
    routing = spec.traffic_routing
    if routing is None:
        return None
    for backend in (routing.gateway_api, routing.istio, routing.nginx):
        if backend is not None:
            return backend.service
    return None


def source_for(spec: RolloutSpec) -> Source:
    analysis = spec.analysis or Analysis.model_validate({"prometheus": {"address": "http://unused"}})
    labels = analysis.labels or MetricLabels()
    kind = source_kind(spec)
    if kind == MetricsSource.app:
        app = analysis.app or AppMetrics()
        return Source(kind, app.requests, app.latency, 1, app.status_label, "5..", labels)
    if kind == MetricsSource.istio:
        return Source(kind, ISTIO_REQUESTS, ISTIO_LATENCY, 0.001, "response_code", "5..", labels)
    if kind == MetricsSource.nginx:
        routing = spec.traffic_routing
        ingress = routing.nginx.ingress if routing is not None and routing.nginx is not None else ""
        return Source(kind, NGINX_REQUESTS, NGINX_LATENCY, 1, "status", "5..", labels, ingress=ingress)
    if kind == MetricsSource.envoy_gateway:
        return Source(kind, ENVOY_REQUESTS, ENVOY_LATENCY, 0.001, "envoy_response_code_class", "5", labels)
    return Source(kind, LINKERD_REQUESTS, LINKERD_LATENCY, 0.001, "classification", "failure", labels)
