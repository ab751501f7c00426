"""The testbed's data plane: what kubelets, kube-proxy and a gateway would do for kwok's pods,
which run nothing.

- Every pod of one namespace gets an app endpoint: the demo app's `Version` on a free loopback
  port, behaving as the pod's container image says (a table a test sets, and may change while
  it runs). Like most apps it does not know which version it is: its series carry no version
  label, only what discovery adds (namespace, pod, the pod's labels), and a status code's series
  appears with its first request (a healthy app has no 500 series). The pod is annotated
  `testbed.parachute.dev/port: "<port>"` (testbed only), which is how the test Prometheus,
  discovering pods as a cluster's does (testbed/prometheus.py), finds it. A deleted pod's
  endpoint stops. An app may follow a flag file (re-read on every request, as a
  flag SDK watching its mounted file does), evaluate a flagd flag per request for the
  request's user (OpenFeature's SDK with the flagd provider, reading the file), or read a
  setting once when its pod starts, from the ConfigMap as it is then (as an app reads its
  configuration at start-up).
- Pickers say where each request of the load generator goes, from what the cluster says and
  the request's headers (a phased release's audience is a header or a cookie):
  `ServicePicker` sends to a ready endpoint of a Service's EndpointSlices, uniformly at random
  as kube-proxy does (the addresses are pod IPs: each leads to its pod, and so to its port).
  `RoutePicker` first picks an HTTPRoute backendRef by weight (smooth weighted round-robin:
  a backend's count is its share to within a request), then an endpoint of its Service; the
  rule is the one Gateway API's precedence gives the request (an exact path before a prefix,
  then a method, then the most header matches, then the rule's place).
  `VirtualServicePicker` does the same for an Istio VirtualService's first http route that
  matches (a host is a Service; a subset is the pods of that Service with the DestinationRule's
  subset labels), and `IngressPicker` for an NGINX Ingress and its canary Ingress, as
  ingress-nginx asks: `canary-by-header` (its value, or "always"/"never"), then
  `canary-by-cookie` ("always"/"never"), then `canary-weight` of `canary-weight-total`. Each
  reads the real objects, kept current by a watch (`DataPlane.follow`).
- Each app also counts the requests it served by the testbed's own request header
  `x-testbed-audience` (`testbed_audience_requests_total{audience}`), which the load generator
  sets: so Prometheus tells who, among the requests of an audience and everyone else's, got
  which version, as the pod's series say.

So what Prometheus counts is what routing did, never a copy of what the operator reports.
The choice itself is pure (`choose`, `ready_targets`, `route_backends`) and unit-tested.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from testbed.demoapp import Behaviour, FlagdFlag, FlagSource, Version, flag_value

PORT_ANNOTATION = "testbed.parachute.dev/port"
CANARY_LABEL = "parachute.dev/canary"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Body = Mapping[str, Any]
Headers = Mapping[str, str]  # a request's headers, their names in lower case
# The testbed's own request header: which group of the load a request belongs to, counted by the app.
AUDIENCE_HEADER = "x-testbed-audience"
AUDIENCE_COUNTER = "testbed_audience_requests_total"


# ---------------------------------------------------------------------------- what a pod runs


@dataclass(frozen=True)
class StartupSetting:
    """A setting an app reads once, when its pod starts, from a key of a ConfigMap mounted into
    it, as the kubelet mounts it then. A pod started before the ConfigMap changed keeps what it
    read; a restarted pod reads it again. `name` is read from the key's text as a flag is
    (`flag_value`: `name=true` lines, a bare boolean, or flagd JSON)."""

    config_map: str
    key: str
    name: str


@dataclass(frozen=True)
class App:
    """What the app of one image does: its behaviour, the name of its status code label (`code`,
    or `status` as some apps have it), and optionally a flag or setting that, while on, makes it
    behave as `when_flag_on` says: a `FlagSource` is followed while the pod runs, a `FlagdFlag`
    is evaluated per request for the request's user (OpenFeature's SDK, the flagd provider
    in-process), a `StartupSetting` is read when it starts."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    code_label: str = "code"
    flag: FlagSource | FlagdFlag | StartupSetting | None = None
    when_flag_on: Behaviour | None = None


def as_app(entry: App | Behaviour) -> App:
    return entry if isinstance(entry, App) else App(behaviour=entry)


def app_for(image: str, table: Mapping[str, App], default: App) -> App:
    """The table's entry for `image`, by the full reference or by its last path segment
    (`registry.example/checkout:1.0` matches `checkout:1.0`), else the default."""
    return table.get(image) or table.get(image.rsplit("/", 1)[-1]) or default


def pod_image(pod: Body) -> str:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("image", ""))


def pod_version(pod: Body) -> str:
    """Which version a pod runs, by Parachute's mark on the canary's pods (for names in logs:
    nothing the app exports says it)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return "canary" if labels.get(CANARY_LABEL) == "true" else "stable"


def pod_runs(pod: Body) -> bool:
    """Whether the pod's app runs: not yet finished (a pod being deleted still serves)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


# ---------------------------------------------------------------------------- where a request goes


@dataclass(frozen=True)
class Backend:
    """One place traffic may go: its weight and the endpoints (URLs) that serve it now."""

    weight: int
    endpoints: tuple[str, ...]


class SmoothWeights:
    """Which weighted backend takes the next request: smooth weighted round-robin, as NGINX
    balances weighted upstreams. Each backend's count after any number of requests is its
    weighted share to within a request, so a share Prometheus counts tells whether the route's
    weights were right, not how the dice fell (at 50% of 1,200 random picks, one run in twenty
    is 3 points off). Backends are known by their place in the route; weights may change
    between requests (a stage moving on) and the balance goes on from there."""

    def __init__(self) -> None:
        self._current: list[int] = []
        self._lock = threading.Lock()  # the load generator's workers share one picker

    def next(self, weights: Sequence[int]) -> int | None:
        total = sum(w for w in weights if w > 0)
        if total == 0:
            return None
        with self._lock:
            if len(self._current) != len(weights):
                self._current = [0] * len(weights)
            for index, weight in enumerate(weights):
                self._current[index] += max(weight, 0)
            chosen = max(range(len(weights)), key=lambda i: (weights[i] > 0, self._current[i]))
            self._current[chosen] -= total
            return chosen


def choose(
    backends: Sequence[Backend], rng: random.Random, balance: SmoothWeights | None = None
) -> str | None:
    """A backend by weight (by `balance`, else at random), then one of its endpoints uniformly;
    None when the chosen backend has no endpoint or no backend has weight (the request fails,
    as it would at a proxy: traffic meant for an empty backend is not moved to another)."""
    if balance is not None:
        index = balance.next([b.weight for b in backends])
        chosen = backends[index] if index is not None else None
    else:
        chosen = _at_random(backends, rng)
    if chosen is None or not chosen.endpoints:
        return None
    return rng.choice(chosen.endpoints)


def _at_random(backends: Sequence[Backend], rng: random.Random) -> Backend | None:
    weighted = [b for b in backends if b.weight > 0]
    total = sum(b.weight for b in weighted)
    if total == 0:
        return None
    point = rng.randrange(total)
    for backend in weighted:
        if point < backend.weight:
            return backend
        point -= backend.weight
    raise AssertionError("unreachable: point < total")


def ready_addresses(slices: Iterable[Body]) -> list[str]:
    """Addresses of the ready endpoints of EndpointSlices (an unset `ready` means ready),
    each once: an endpoint may sit in two slices while the controller moves it."""
    return [address for address, _ in ready_targets(slices)]


def ready_targets(slices: Iterable[Body]) -> list[tuple[str, str]]:
    """(address, pod name) of the ready endpoints of EndpointSlices, each address once; the pod
    is the one the endpoint names (`targetRef`), "" when it names none."""
    seen: dict[str, str] = {}
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            target = endpoint.get("targetRef") or {}
            pod = str(target.get("name") or "") if target.get("kind", "Pod") == "Pod" else ""
            for address in endpoint.get("addresses") or []:
                seen.setdefault(address, pod)
    return list(seen.items())


def route_rule(route: Body, rule_name: str | None = None, headers: Headers | None = None) -> Body | None:
    """The rule of an HTTPRoute that a `GET /` with `headers` takes: the named one if given,
    else by Gateway API's precedence among the rules whose matches accept it: an exact `/`
    before a prefix, then a method, then the most header matches, then the rule's place."""
    rules: list[Body] = list((route.get("spec") or {}).get("rules") or [])
    if rule_name is not None:
        return next((r for r in rules if r.get("name") == rule_name), None)
    ranked = [
        (rank, i) for i, rule in enumerate(rules) if (rank := _root_rank(rule, headers or {})) is not None
    ]
    return rules[min(ranked)[1]] if ranked else None


def _root_rank(rule: Body, headers: Headers) -> tuple[int, int, int] | None:
    """How specifically `rule` matches the request (lower is more specific); None: it does not."""
    ranks = []
    for match in rule.get("matches") or [{}]:
        path = match.get("path") or {"type": "PathPrefix", "value": "/"}
        if match.get("queryParams") or match.get("method", "GET") != "GET":
            continue
        conditions = match.get("headers") or []
        if not all(_header_matches(condition, headers) for condition in conditions):
            continue
        kind, value = path.get("type", "PathPrefix"), path.get("value", "/")
        if value == "/" and kind in ("Exact", "PathPrefix"):
            ranks.append((0 if kind == "Exact" else 1, 0 if "method" in match else 1, -len(conditions)))
    return min(ranks) if ranks else None


def _header_matches(condition: Body, headers: Headers) -> bool:
    """A Gateway API header match: the header present with the exact value, or (RegularExpression)
    a value the expression matches whole, as Envoy matches it."""
    found = headers.get(str(condition.get("name", "")).lower())
    if found is None:
        return False
    if condition.get("type", "Exact") == "RegularExpression":
        return re.fullmatch(str(condition.get("value", "")), found) is not None
    return bool(found == condition.get("value"))


@dataclass(frozen=True)
class Target:
    """Where a weighted destination leads: a Service's ready endpoints, only the pods with `labels`
    among them (an Istio subset), or nowhere this data plane reaches (`service` None)."""

    service: str | None
    labels: tuple[tuple[str, str], ...] = ()


def host_service(host: str, namespace: str | None) -> str | None:
    """The Service an Istio host names in `namespace` (short name or FQDN), if it names one."""
    name, _, rest = host.partition(".")
    if not rest:
        return name or None
    other, _, tail = rest.partition(".")
    in_cluster = tail in {"", "svc"} or tail.startswith("svc.")
    return name if other == namespace and in_cluster else None


def virtual_service_http(vs: Body, headers: Headers | None = None) -> Body | None:
    """The http route of a VirtualService that a `GET /` with `headers` takes: the first whose
    match accepts it (no match at all accepts everything; a method or other path does not, a
    header condition only a request that meets it)."""
    for http in (vs.get("spec") or {}).get("http") or []:
        matches = http.get("match") or [{}]
        if any(_istio_takes_root(m, headers or {}) for m in matches):
            return dict(http)
    return None


def _istio_takes_root(match: Body, headers: Headers) -> bool:
    if set(match) - {"name", "uri", "ignoreUriCase", "headers"}:
        return False
    conditions = match.get("headers") or {}
    if not all(_istio_string_matches(c, headers.get(str(k).lower())) for k, c in conditions.items()):
        return False
    uri = match.get("uri") or {"prefix": "/"}
    return uri.get("exact") == "/" or uri.get("prefix") == "/" or uri.get("regex") in (".*", "/.*")


def _istio_string_matches(condition: Body, value: str | None) -> bool:
    """An Istio StringMatch: exact, prefix, or a regex (RE2) that matches the value whole."""
    if value is None:
        return False
    if "exact" in condition:
        return value == str(condition["exact"])
    if "prefix" in condition:
        return value.startswith(str(condition["prefix"]))
    if "regex" in condition:
        return re.fullmatch(str(condition["regex"]), value) is not None
    return False


def virtual_service_backends(
    vs: Body, destination_rules: Iterable[Body] = (), headers: Headers | None = None
) -> list[tuple[Target, int]]:
    """The destinations of the http route a `GET /` with `headers` takes, as (Target, weight). An
    unset weight is all the traffic for a lone destination and none beside others, as Istio
    reads it."""
    namespace = (vs.get("metadata") or {}).get("namespace")
    http = virtual_service_http(vs, headers)
    route = (http or {}).get("route") or []
    rules = list(destination_rules)
    out: list[tuple[Target, int]] = []
    for destination in route:
        target = destination.get("destination") or {}
        service = host_service(str(target.get("host", "")), namespace)
        weight = int(destination.get("weight", 100 if len(route) == 1 else 0))
        subset = target.get("subset")
        if service is not None and subset is not None:
            labels = _subset_labels(rules, service, namespace, str(subset))
            out.append((Target(service, labels) if labels is not None else Target(None), weight))
        else:
            out.append((Target(service), weight))
    return out


def _subset_labels(
    rules: list[Body], service: str, namespace: str | None, subset: str
) -> tuple[tuple[str, str], ...] | None:
    """The labels of `subset` in the DestinationRule for the Service's host; None if there is none
    (Istio answers such a request with an error: it goes nowhere)."""
    for rule in rules:
        if host_service(str((rule.get("spec") or {}).get("host", "")), namespace) != service:
            continue
        for entry in (rule.get("spec") or {}).get("subsets") or []:
            if entry.get("name") == subset:
                return tuple(sorted((entry.get("labels") or {}).items()))
    return None


CANARY_ANNOTATION = "nginx.ingress.kubernetes.io/canary"
CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"
CANARY_WEIGHT_TOTAL = "nginx.ingress.kubernetes.io/canary-weight-total"
CANARY_BY_HEADER = "nginx.ingress.kubernetes.io/canary-by-header"
CANARY_BY_HEADER_VALUE = "nginx.ingress.kubernetes.io/canary-by-header-value"
CANARY_BY_COOKIE = "nginx.ingress.kubernetes.io/canary-by-cookie"


def ingress_service(ingress: Body, host: str | None = None, path: str = "/") -> str | None:
    """The Service an Ingress sends a request for `path` on `host` to: the longest matching
    Prefix (or an Exact equal) path of the first rule for the host (any host when None)."""
    best: tuple[int, str] | None = None
    for rule in (ingress.get("spec") or {}).get("rules") or []:
        if host is not None and rule.get("host") not in (None, host):
            continue
        for entry in (rule.get("http") or {}).get("paths") or []:
            value, kind = str(entry.get("path", "/")), entry.get("pathType", "Prefix")
            matches = (
                path == value
                if kind == "Exact"
                else path.startswith(value.rstrip("/") + "/") or path == value
            )
            name = ((entry.get("backend") or {}).get("service") or {}).get("name")
            if matches and name and (best is None or len(value) > best[0]):
                best = (len(value), str(name))
        if best is not None:
            return best[1]
    return None


def ingress_backends(
    main: Body | None,
    canary: Body | None,
    host: str | None = None,
    path: str = "/",
    headers: Headers | None = None,
) -> list[tuple[Target, int]]:
    """Where ingress-nginx sends a request, when the canary Ingress is marked canary and serves
    the same host and path: to its backend by `canary-by-header` (the header equal to
    `canary-by-header-value`, or without one "always"; "never" keeps it off), else by
    `canary-by-cookie` (the cookie "always" or "never"), else `canary-weight` of
    `canary-weight-total` (100) to it and the rest to the main Ingress's."""
    main_service = ingress_service(main, host, path) if main is not None else None
    if main_service is None:
        return []
    annotations = ((canary or {}).get("metadata") or {}).get("annotations") or {}
    canary_service = ingress_service(canary, host, path) if canary is not None else None
    raw, total = annotations.get(CANARY_WEIGHT, "0"), annotations.get(CANARY_WEIGHT_TOTAL, "100")
    if annotations.get(CANARY_ANNOTATION) != "true" or canary_service is None or not (raw + total).isdigit():
        return [(Target(main_service), 100)]
    chosen = _nginx_canary_by_request(annotations, headers or {})
    if chosen is not None:
        return [(Target(canary_service if chosen else main_service), 100)]
    weight, whole = min(int(raw), int(total)), int(total)
    return [(Target(main_service), whole - weight), (Target(canary_service), weight)]


def _nginx_canary_by_request(annotations: Mapping[str, str], headers: Headers) -> bool | None:
    """Whether the request's header or cookie decides for the canary (True) or against it
    (False); None: neither decides, the weight does."""
    by_header = annotations.get(CANARY_BY_HEADER)
    if by_header:
        found = headers.get(by_header.lower())
        wanted = annotations.get(CANARY_BY_HEADER_VALUE)
        if wanted is not None and found == wanted:
            return True
        if wanted is None and found in ("always", "never"):
            return found == "always"
    by_cookie = annotations.get(CANARY_BY_COOKIE)
    if by_cookie:
        found = _cookies(headers.get("cookie", "")).get(by_cookie)
        if found in ("always", "never"):
            return found == "always"
    return None


def _cookies(header: str) -> dict[str, str]:
    """A `Cookie` header's cookies by name."""
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return {name: value for name, equals, value in pairs if equals}


def route_backends(
    route: Body, rule_name: str | None = None, headers: Headers | None = None
) -> list[tuple[str | None, int]]:
    """The backendRefs of the rule a `GET /` with `headers` takes, as (Service name, weight); the
    name is None for a backend this namespace's data plane cannot reach (another kind or
    namespace), whose share of requests fails, as an unresolved backendRef's does."""
    rule = route_rule(route, rule_name, headers)
    namespace = (route.get("metadata") or {}).get("namespace")
    backends: list[tuple[str | None, int]] = []
    for ref in (rule or {}).get("backendRefs") or []:
        local = (
            ref.get("group", "") == ""
            and ref.get("kind", "Service") == "Service"
            and ref.get("namespace", namespace) == namespace
        )
        backends.append((str(ref["name"]) if local else None, int(ref.get("weight", 1))))
    return backends


# ---------------------------------------------------------------------------- watching the cluster


class Informer:
    """The objects of one kind in one namespace, kept current by a list and a watch (a small
    client-go informer). `on_change(name, object or None)` runs on its thread."""

    def __init__(
        self,
        kind: str,
        list_function: Callable[..., Any],
        namespace: str,
        on_change: Callable[[str, Body | None], None] = lambda _name, _obj: None,
    ) -> None:
        self.list_function, self.namespace, self.on_change = list_function, namespace, on_change
        self.synced = threading.Event()
        self.error: Exception | None = None  # the last failure, for a post-mortem
        self._objects: dict[str, Body] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer-{kind}-{namespace}", daemon=True)

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        # The watch ends at its server-side timeout at the latest; nothing is applied after this.
        self._stop.set()

    def objects(self) -> list[Body]:
        with self._lock:
            return list(self._objects.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._relist()
                self.synced.set()
                self._watch(version)
            except Exception as error:  # an expired watch (410) or an API blip: list again
                self.error = error
                self._stop.wait(0.5)

    def _relist(self) -> str:
        response = self.list_function(self.namespace, _preload_content=False)
        body = json.loads(response.data)
        listed = {item["metadata"]["name"]: item for item in body.get("items") or []}
        for gone in set(self._names()) - set(listed):
            self._apply(gone, None)
        for name, item in listed.items():
            self._apply(name, item)
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                self.list_function, self.namespace, resource_version=version,
                allow_watch_bookmarks=True, timeout_seconds=10, _request_timeout=30,
            )  # fmt: skip
            for event in stream:
                if self._stop.is_set():
                    return
                item = event["raw_object"]
                version = item["metadata"]["resourceVersion"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._apply(item["metadata"]["name"], item)
                elif event["type"] == "DELETED":
                    self._apply(item["metadata"]["name"], None)

    def _names(self) -> list[str]:
        with self._lock:
            return list(self._objects)

    def _apply(self, name: str, item: Body | None) -> None:
        if self._stop.is_set():
            return
        with self._lock:
            if item is None:
                self._objects.pop(name, None)
            else:
                self._objects[name] = item
        self.on_change(name, item)


# ---------------------------------------------------------------------------- the data plane


@dataclass
class Endpoint:
    """One pod's app: the server standing in for its container."""

    uid: str
    image: str
    app: App
    version: Version
    setting_on: bool | None = None  # what the pod read of its app's StartupSetting when it started

    @property
    def url(self) -> str:
        return self.version.url


class DataPlane:
    """App endpoints for the pods of `namespace`, and the Services and routes that reach them.

    `apps` maps container images to what their app does (an `App`, or just a `Behaviour`);
    images it does not name run `default`. One data plane per namespace: the port annotation
    is its own.
    """

    def __init__(
        self,
        api: Any,
        namespace: str,
        apps: Mapping[str, App | Behaviour] | None = None,
        default: App | Behaviour | None = None,
    ) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self._apps = {image: as_app(entry) for image, entry in (apps or {}).items()}
        self._default = as_app(default or App())
        self._endpoints: dict[str, Endpoint] = {}
        self._lock = threading.RLock()
        self._stopped = False
        self.pods = Informer("pods", self.core.list_namespaced_pod, namespace, self._on_pod)
        self.slices = Informer(
            "endpointslices", client.DiscoveryV1Api(api).list_namespaced_endpoint_slice, namespace
        )
        self._api = api
        self._followed: dict[str, Informer] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30) -> DataPlane:
        self.pods.start()
        self.slices.start()
        for informer in (self.pods, self.slices):
            if not informer.synced.wait(timeout):
                raise TimeoutError(f"data plane for {self.namespace}: no first listing within {timeout}s")
        return self

    def follow(self, *kinds: str, timeout: float = 30) -> DataPlane:
        """Keep the objects of route kinds current too (`httproutes`, `virtualservices`,
        `destinationrules`, `ingresses`), for the pickers that read them."""
        for kind in kinds:
            if kind in self._followed:
                continue
            informer = Informer(kind, _lister(self._api, kind), self.namespace).start()
            if not informer.synced.wait(timeout):
                raise TimeoutError(f"data plane for {self.namespace}: no listing of {kind} within {timeout}s")
            self._followed[kind] = informer
        return self

    def object(self, kind: str, name: str) -> Body | None:
        """A followed object as last seen, or None."""
        return next((o for o in self._followed[kind].objects() if o["metadata"]["name"] == name), None)

    def objects(self, kind: str) -> list[Body]:
        return self._followed[kind].objects()

    def stop(self) -> None:
        for informer in self._followed.values():
            informer.stop()
        self.pods.stop()
        self.slices.stop()
        with self._lock:
            self._stopped = True
            endpoints, self._endpoints = list(self._endpoints.values()), {}
        for endpoint in endpoints:
            endpoint.version.stop()

    # ------------------------------------------------------------------ apps

    def set_app(self, image: str, entry: App | Behaviour) -> None:
        """Change what an image's app does; running endpoints of that image follow at once (a
        new status code label name needs a new pod: a registry's label names are fixed)."""
        with self._lock:
            self._apps[image] = as_app(entry)
            for endpoint in self._endpoints.values():
                endpoint.app = app_for(endpoint.image, self._apps, self._default)
                self._configure(endpoint)

    def endpoints(self) -> list[Endpoint]:
        """Every pod's app endpoint now."""
        with self._lock:
            return list(self._endpoints.values())

    def endpoint(self, pod: str) -> Endpoint | None:
        with self._lock:
            return self._endpoints.get(pod)

    def ports(self) -> dict[str, int]:
        """Each pod's app port, by pod name."""
        with self._lock:
            return {name: e.version.port for name, e in self._endpoints.items()}

    def _on_pod(self, name: str, pod: Body | None) -> None:
        with self._lock:
            if self._stopped:
                return
            running = self._endpoints.get(name)
            runs = pod is not None and pod_runs(pod)
            # The same pod with the same image is the same process; a new image restarts it.
            same = (
                running is not None
                and pod is not None
                and (running.uid, running.image) == (_uid(pod), pod_image(pod))
            )
            if running is not None and not (runs and same):
                del self._endpoints[name]
                running.version.stop()
                running = None
            if pod is None or not runs:
                return
            if running is None:
                running = self._start_endpoint(pod)
                self._endpoints[name] = running
            port = str(running.version.port)
        if ((pod.get("metadata") or {}).get("annotations") or {}).get(PORT_ANNOTATION) != port:
            with contextlib.suppress(ApiException):  # deleted meanwhile: its DELETED event follows
                self.core.patch_namespaced_pod(
                    name, self.namespace, {"metadata": {"annotations": {PORT_ANNOTATION: port}}}
                )

    def _start_endpoint(self, pod: Body) -> Endpoint:
        image = pod_image(pod)
        app = app_for(image, self._apps, self._default)
        version = Version(pod_version(pod), behaviour=app.behaviour, code_label=app.code_label,
                          labelled=False, every_code=False)  # fmt: skip
        count_audiences(version)
        endpoint = Endpoint(_uid(pod), image, app, version)
        self._configure(endpoint)
        version.start()
        return endpoint

    def _configure(self, endpoint: Endpoint) -> None:
        """Make the endpoint's server behave as its app says (a setting read at start is kept)."""
        app, version = endpoint.app, endpoint.version
        if isinstance(app.flag, StartupSetting):
            if endpoint.setting_on is None:
                endpoint.setting_on = self._read_setting(app.flag)
            version.follow_flag(None)
            version.report_features({app.flag.name: endpoint.setting_on})
            flagged = app.when_flag_on if endpoint.setting_on else None
            version.set_behaviour(flagged or app.behaviour)
        else:
            version.report_features({})
            version.set_behaviour(app.behaviour)
            version.follow_flag(app.flag, app.when_flag_on)

    def _read_setting(self, setting: StartupSetting) -> bool:
        """The setting as the ConfigMap holds it now (off while it does not exist)."""
        try:
            found = self.core.read_namespaced_config_map(setting.config_map, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return flag_value((found.data or {}).get(setting.key, ""), setting.name)

    # ------------------------------------------------------------------ traffic

    def service_endpoints(self, service: str, labels: Mapping[str, str] | None = None) -> list[str]:
        """URLs of the ready endpoints of `service`, from its EndpointSlices: each leads to its
        pod's app. With `labels`, only the pods that carry them (an Istio subset).

        An endpoint is found by the pod it names (`targetRef`), else by its address (a pod IP):
        a proxy sends to what the slices list, and this data plane's own view of the pods may be
        behind them (its pod watch's thread writes each new pod's port annotation before it
        takes the pod's next change, its IP), while the pod's app runs from the pod's first sight."""
        slices = [
            s
            for s in self.slices.objects()
            if ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == service
        ]
        wanted = dict(labels or {})
        pods = {
            str((pod.get("metadata") or {}).get("name")): pod
            for pod in self.pods.objects()
            if pod_runs(pod) and wanted.items() <= ((pod.get("metadata") or {}).get("labels") or {}).items()
        }
        by_ip = {ip: name for name, pod in pods.items() if (ip := (pod.get("status") or {}).get("podIP"))}
        names = dict.fromkeys(
            name
            for address, pod in ready_targets(slices)
            if (name := pod if pod in pods else by_ip.get(address))
        )
        with self._lock:
            endpoints = [self._endpoints.get(name) for name in names]
        return [e.url for e in endpoints if e is not None]

    def service_picker(self, service: str, rng: random.Random | None = None) -> ServicePicker:
        return ServicePicker(self, service, rng)

    def route_picker(
        self, route: Body | Callable[[], Body], rule_name: str | None = None, rng: random.Random | None = None
    ) -> RoutePicker:
        return RoutePicker(self, route, rule_name, rng)

    def virtual_service_picker(self, name: str, rng: random.Random | None = None) -> VirtualServicePicker:
        """Requests through the followed VirtualService `name` (and the DestinationRules, if followed)."""
        rules = (lambda: self.objects("destinationrules")) if "destinationrules" in self._followed else list
        return VirtualServicePicker(self, lambda: self.object("virtualservices", name) or {}, rules, rng)

    def ingress_picker(self, name: str, canary: str, rng: random.Random | None = None) -> IngressPicker:
        """Requests through the followed Ingress `name` and its canary Ingress `canary`."""
        return IngressPicker(
            self, lambda: self.object("ingresses", name), lambda: self.object("ingresses", canary), rng=rng
        )


def count_audiences(version: Version) -> None:
    """Make `version`'s app count the requests it serves by their `x-testbed-audience` header
    (`testbed_audience_requests_total{audience}`), before it starts: the load generator names
    each request's group there, so Prometheus tells which version each group reached."""
    counter = Counter(AUDIENCE_COUNTER.removesuffix("_total"), "Requests served, by the load's audience.",
                      ["audience"], registry=version.registry)  # fmt: skip
    serve = version.server.RequestHandlerClass

    class Counting(serve):  # type: ignore[valid-type,misc]
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            audience = self.headers.get(AUDIENCE_HEADER)
            if audience and self.path != "/metrics":
                counter.labels(audience).inc()
            super().do_GET()

    version.server.RequestHandlerClass = Counting


def _lister(api: Any, kind: str) -> Callable[..., Any]:
    """A namespaced list function for a route kind, as `Informer` and the watch call it."""
    if kind == "ingresses":
        listing: Callable[..., Any] = client.NetworkingV1Api(api).list_namespaced_ingress
        return listing
    group, version = {
        "httproutes": ("gateway.networking.k8s.io", "v1"),
        "virtualservices": ("networking.istio.io", "v1"),
        "destinationrules": ("networking.istio.io", "v1"),
    }[kind]
    custom = client.CustomObjectsApi(api)

    def list_objects(namespace: str, **options: Any) -> Any:
        return custom.list_namespaced_custom_object(group, version, namespace, kind, **options)

    return list_objects


def _uid(pod: Body) -> str:
    return str((pod.get("metadata") or {}).get("uid", ""))


class Endpoints(Protocol):
    """What a picker needs: the URLs of a Service's ready endpoints (with some labels), now."""

    def service_endpoints(self, service: str, labels: Mapping[str, str] | None = None) -> list[str]: ...


class ServicePicker:
    """Requests to a Service as kube-proxy sends them: to one of its ready endpoints, uniformly."""

    def __init__(self, plane: Endpoints, service: str, rng: random.Random | None = None) -> None:
        self.plane, self.service = plane, service
        self.rng = rng or random.Random()

    def backends(self) -> list[Backend]:
        return [Backend(1, tuple(self.plane.service_endpoints(self.service)))]

    def __call__(self, headers: Headers | None = None) -> str | None:
        return choose(self.backends(), self.rng)


class RoutePicker:
    """Requests through an HTTPRoute as a gateway sends them: a backendRef by weight, then one
    of its Service's ready endpoints. `route` is the route's body, or a function returning its
    current body (a watch, or a test's dict while the Gateway API CRDs are not installed)."""

    def __init__(
        self,
        plane: Endpoints,
        route: Body | Callable[[], Body],
        rule_name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.plane, self.rule_name = plane, rule_name
        self.route: Callable[[], Body] = route if callable(route) else lambda: route
        self.rng = rng or random.Random()
        self.balance = SmoothWeights()

    def backends(self, headers: Headers | None = None) -> list[Backend]:
        return [
            Backend(weight, tuple(self.plane.service_endpoints(service)) if service else ())
            for service, weight in route_backends(self.route(), self.rule_name, headers)
        ]

    def __call__(self, headers: Headers | None = None) -> str | None:
        return choose(self.backends(headers), self.rng, self.balance)


def _backends(plane: Endpoints, targets: list[tuple[Target, int]]) -> list[Backend]:
    return [
        Backend(weight, tuple(plane.service_endpoints(t.service, dict(t.labels))) if t.service else ())
        for t, weight in targets
    ]


class VirtualServicePicker:
    """Requests through an Istio VirtualService as its sidecars send them: a destination of the
    http route `GET /` takes, by weight, then a ready endpoint of its Service (of its subset's
    pods, by the DestinationRule's labels)."""

    def __init__(
        self,
        plane: Endpoints,
        vs: Callable[[], Body],
        destination_rules: Callable[[], Iterable[Body]] = list,
        rng: random.Random | None = None,
    ) -> None:
        self.plane, self.vs, self.destination_rules = plane, vs, destination_rules
        self.rng = rng or random.Random()
        self.balance = SmoothWeights()

    def backends(self, headers: Headers | None = None) -> list[Backend]:
        return _backends(self.plane, virtual_service_backends(self.vs(), self.destination_rules(), headers))

    def __call__(self, headers: Headers | None = None) -> str | None:
        return choose(self.backends(headers), self.rng, self.balance)


class IngressPicker:
    """Requests through an NGINX Ingress and its canary Ingress as ingress-nginx sends them."""

    def __init__(
        self,
        plane: Endpoints,
        main: Callable[[], Body | None],
        canary: Callable[[], Body | None],
        host: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.plane, self.main, self.canary, self.host = plane, main, canary, host
        self.rng = rng or random.Random()
        self.balance = SmoothWeights()

    def backends(self, headers: Headers | None = None) -> list[Backend]:
        return _backends(self.plane, ingress_backends(self.main(), self.canary(), self.host, headers=headers))

    def __call__(self, headers: Headers | None = None) -> str | None:
        return choose(self.backends(headers), self.rng, self.balance)
