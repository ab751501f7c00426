"""The testbed's data plane chooses where a request goes as the cluster says: a Service's ready
endpoints uniformly, an HTTPRoute's backends by weight; and each pod's app is its image's."""

from __future__ import annotations

import copy
import random
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.dataplane import (
    App,
    Backend,
    RoutePicker,
    ServicePicker,
    SmoothWeights,
    app_for,
    choose,
    pod_version,
    ready_addresses,
    ready_targets,
    route_backends,
    route_rule,
)
from testbed.demoapp import Behaviour, Version
from testbed.loadgen import LoadGenerator
from testbed.prometheus import PodDiscovery, pod_scrape_config

PICKS = 20_000


def shares(backends: list[Backend], picks: int = PICKS) -> dict[str | None, float]:
    rng = random.Random(7)
    counts = Counter(choose(backends, rng) for _ in range(picks))
    return {endpoint: 100 * n / picks for endpoint, n in counts.items()}


@pytest.mark.parametrize(
    ("backends", "expected"),
    [
        pytest.param([Backend(1, ("a", "b", "c", "d"))], {"a": 25, "b": 25, "c": 25, "d": 25}, id="uniform-endpoints"),
        pytest.param([Backend(90, ("s",)), Backend(10, ("c",))], {"s": 90, "c": 10}, id="route-90-10"),
        pytest.param([Backend(1, ("s1", "s2", "s3")), Backend(1, ("c",))], {"s1": 16.7, "s2": 16.7, "s3": 16.7, "c": 50}, id="weight-then-endpoint"),
        pytest.param([Backend(100, ("s",)), Backend(0, ("c",))], {"s": 100}, id="zero-weight-never"),
        pytest.param([Backend(50, ("s",)), Backend(50, ())], {"s": 50, None: 50}, id="empty-backend-share-fails"),
        pytest.param([Backend(0, ("s",))], {None: 100}, id="no-weight-nowhere"),
        pytest.param([], {None: 100}, id="no-backend-nowhere"),
        pytest.param([Backend(1, ())], {None: 100}, id="service-without-ready-endpoints"),
    ],
)  # fmt: skip
def test_a_request_goes_by_weight_then_uniformly(
    backends: list[Backend], expected: dict[str | None, float]
) -> None:
    measured = shares(backends)
    assert set(measured) == set(expected)
    for endpoint, share in expected.items():
        assert measured[endpoint] == pytest.approx(share, abs=1.5), endpoint


@given(
    st.lists(st.tuples(st.integers(0, 5), st.lists(st.sampled_from("abcdef"), max_size=3)), max_size=4),
    st.integers(0, 2**32),
)
def test_a_request_only_ever_reaches_an_endpoint_of_a_weighted_backend(
    table: list[tuple[int, list[str]]], seed: int
) -> None:
    backends = [Backend(weight, tuple(endpoints)) for weight, endpoints in table]
    reachable = {e for b in backends if b.weight > 0 for e in b.endpoints}
    picked = choose(backends, random.Random(seed))
    assert picked is None or picked in reachable
    if reachable and all(b.endpoints for b in backends if b.weight > 0):
        assert picked is not None


@given(st.lists(st.integers(0, 100), min_size=1, max_size=4), st.integers(1, 400))
def test_balanced_picks_keep_every_backend_within_a_request_of_its_share(
    weights: list[int], picks: int
) -> None:
    balance, counts = SmoothWeights(), Counter[int | None]()
    total = sum(weights)
    for n in range(1, picks + 1):
        counts[balance.next(weights)] += 1
        for index, weight in enumerate(weights):
            assert abs(counts[index] - n * weight / total) < len(weights) if total else counts[None] == n


def test_a_stage_moving_on_moves_the_balanced_share_with_it() -> None:
    balance = SmoothWeights()
    backends = [Backend(90, ("s",)), Backend(10, ("c",))]
    first = Counter(choose(backends, random.Random(1), balance) for _ in range(1_200))
    backends = [Backend(50, ("s",)), Backend(50, ("c",))]
    then = Counter(choose(backends, random.Random(1), balance) for _ in range(1_200))
    assert abs(first["c"] - 120) <= 2 and abs(then["c"] - 600) <= 2


def endpoint(*addresses: str, ready: bool | None = True) -> dict[str, Any]:
    conditions = {} if ready is None else {"ready": ready}
    return {"addresses": list(addresses), "conditions": conditions}


@pytest.mark.parametrize(
    ("slices", "addresses"),
    [
        pytest.param([{"endpoints": [endpoint("10.244.0.1"), endpoint("10.244.0.2")]}], ["10.244.0.1", "10.244.0.2"], id="ready"),
        pytest.param([{"endpoints": [endpoint("10.244.0.1", ready=False), endpoint("10.244.0.2")]}], ["10.244.0.2"], id="not-ready-left-out"),
        pytest.param([{"endpoints": [endpoint("10.244.0.1", ready=None)]}], ["10.244.0.1"], id="unset-means-ready"),
        pytest.param([{"endpoints": [endpoint("10.244.0.1")]}, {"endpoints": [endpoint("10.244.0.1"), endpoint("10.244.0.3")]}], ["10.244.0.1", "10.244.0.3"], id="two-slices-once-each"),
        pytest.param([{"endpoints": None}, {}], [], id="no-endpoints"),
    ],
)  # fmt: skip
def test_ready_addresses_of_endpoint_slices(slices: list[dict[str, Any]], addresses: list[str]) -> None:
    assert ready_addresses(slices) == addresses


def test_a_ready_endpoint_names_its_pod_so_a_request_reaches_it_before_the_pods_ip_is_seen() -> None:
    named = {**endpoint("10.244.0.1"), "targetRef": {"kind": "Pod", "name": "checkout-canary-6b8d9-qwert"}}
    slices = [{"endpoints": [named, endpoint("10.244.0.2"), endpoint("10.244.0.3", ready=False)]}]
    assert ready_targets(slices) == [("10.244.0.1", "checkout-canary-6b8d9-qwert"), ("10.244.0.2", "")]


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    """A route of its own: a test that changes it changes no other test's rules."""
    return {
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"rules": copy.deepcopy(list(rules))},
    }


def ref(name: str, weight: int | None = None, **more: str) -> dict[str, Any]:
    return {"name": name, "port": 80, **({} if weight is None else {"weight": weight}), **more}


STABLE_CANARY = {"backendRefs": [ref("checkout-stable", 90), ref("checkout-canary", 10)]}


@pytest.mark.parametrize(
    ("body", "rule_name", "backends"),
    [
        pytest.param(route(STABLE_CANARY), None, [("checkout-stable", 90), ("checkout-canary", 10)], id="weights"),
        pytest.param(route({"backendRefs": [ref("a"), ref("b")]}), None, [("a", 1), ("b", 1)], id="weight-defaults-to-one"),
        pytest.param(route({"backendRefs": [ref("a", 1, namespace="other"), ref("b", 1, kind="Pod"), ref("c", 1, group="x.io")]}), None, [(None, 1), (None, 1), (None, 1)], id="unreachable-refs-keep-their-share"),
        pytest.param(route({"backendRefs": [ref("a", 1, namespace="shop")]}), None, [("a", 1)], id="same-namespace-named"),
        pytest.param(route({"name": "api", "backendRefs": [ref("api")]}, {"name": "web", **STABLE_CANARY}), "web", [("checkout-stable", 90), ("checkout-canary", 10)], id="rule-by-name"),
        pytest.param(route({"name": "api", "backendRefs": [ref("api")]}), "missing", [], id="named-rule-missing"),
        pytest.param(route({"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [ref("api")]}, STABLE_CANARY), None, [("checkout-stable", 90), ("checkout-canary", 10)], id="other-path-not-taken"),
        pytest.param(route({"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}], "backendRefs": [ref("canary-only")]}, STABLE_CANARY), None, [("checkout-stable", 90), ("checkout-canary", 10)], id="header-match-not-taken"),
        pytest.param(route(STABLE_CANARY, {"matches": [{"path": {"type": "Exact", "value": "/"}}], "backendRefs": [ref("exact")]}), None, [("exact", 1)], id="exact-before-prefix"),
        pytest.param(route({"matches": [{"method": "POST"}], "backendRefs": [ref("post")]}), None, [], id="no-rule-takes-get"),
    ],
)  # fmt: skip
def test_route_backends_of_the_rule_a_get_takes(
    body: dict[str, Any], rule_name: str | None, backends: list[tuple[str | None, int]]
) -> None:
    assert route_backends(body, rule_name) == backends


def test_a_route_without_rules_has_no_rule() -> None:
    assert route_rule({"spec": {}}) is None


class Endpoints:
    """Ready endpoints by Service, as the data plane reads them from EndpointSlices."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def service_endpoints(self, service: str) -> list[str]:
        return list(self.table.get(service, []))


def test_a_service_picker_follows_the_ready_endpoints_as_they_change() -> None:
    endpoints = Endpoints({"checkout": ["s1", "s2", "s3", "c1"]})
    picker = ServicePicker(endpoints, "checkout", random.Random(1))
    first = Counter(picker() for _ in range(PICKS))
    assert 100 * first["c1"] / PICKS == pytest.approx(25, abs=1.5)
    endpoints.table["checkout"] = ["s1", "c1"]
    second = Counter(picker() for _ in range(PICKS))
    assert set(second) == {"s1", "c1"}
    assert 100 * second["c1"] / PICKS == pytest.approx(50, abs=1.5)


def test_a_route_picker_splits_by_weight_then_by_endpoint() -> None:
    endpoints = Endpoints({"checkout-stable": ["s1", "s2"], "checkout-canary": ["c1"]})
    body = route(STABLE_CANARY)
    picker = RoutePicker(endpoints, lambda: body, rng=random.Random(3))
    counts = Counter(picker() for _ in range(PICKS))
    assert {k: 100 * v / PICKS for k, v in counts.items()} == pytest.approx(
        {"s1": 45, "s2": 45, "c1": 10}, abs=1.5
    )
    body["spec"]["rules"][0]["backendRefs"][1]["weight"] = 0  # the route changes: the canary gets nothing
    assert "c1" not in {picker() for _ in range(1000)}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("checkout:2.0", 0.06, id="exact"),
        pytest.param("registry.example/checkout:2.0", 0.06, id="by-last-segment"),
        pytest.param("registry.example/checkout:1.0", 0.5, id="full-reference-first"),
        pytest.param("checkout:9.9", 0.0, id="default"),
    ],
)
def test_the_app_of_an_image(image: str, expected: float) -> None:
    table = {
        "checkout:2.0": App(Behaviour(error_rate=0.06)),
        "registry.example/checkout:1.0": App(Behaviour(error_rate=0.5)),
        "checkout:1.0": App(Behaviour(error_rate=0.9)),
    }
    assert app_for(image, table, App()).behaviour.error_rate == expected


@pytest.mark.parametrize(
    ("labels", "version"),
    [
        pytest.param({"app": "checkout", "parachute.dev/canary": "true"}, "canary", id="canary"),
        pytest.param({"app": "checkout"}, "stable", id="stable"),
        pytest.param({"parachute.dev/canary": "false"}, "stable", id="canary-false"),
        pytest.param(None, "stable", id="no-labels"),
    ],
)
def test_a_pod_is_canary_by_its_label(labels: dict[str, str] | None, version: str) -> None:
    assert pod_version({"metadata": {"labels": labels}}) == version


def test_an_app_may_name_its_status_code_label_status() -> None:
    version = Version("canary", behaviour=Behaviour(latency_ms=0), code_label="status").start()
    try:
        with urllib.request.urlopen(version.url, timeout=5) as response:
            response.read()
        with urllib.request.urlopen(f"{version.url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'http_requests_total{status="200",version="canary"} 1.0' in metrics
        assert 'code="' not in metrics
    finally:
        version.stop()


def test_pod_discovery_keeps_annotated_pods_at_their_loopback_port(tmp_path: Any) -> None:
    job = pod_scrape_config(PodDiscovery(tmp_path / "kubeconfig", ("shop",)))
    assert job["kubernetes_sd_configs"] == [
        {"role": "pod", "kubeconfig_file": str(tmp_path / "kubeconfig"), "namespaces": {"names": ["shop"]}}
    ]
    annotation = "__meta_kubernetes_pod_annotation_testbed_parachute_dev_port"
    relabel = job["relabel_configs"]
    assert relabel[0] == {"source_labels": [annotation], "regex": "[0-9]+", "action": "keep"}
    address = next(r for r in relabel if r.get("target_label") == "__address__")
    assert address == {
        "source_labels": [annotation],
        "target_label": "__address__",
        "replacement": "127.0.0.1:$1",
    }
    assert {r.get("target_label") for r in relabel} >= {"namespace", "pod"}


def test_the_load_generator_sends_where_its_picker_says() -> None:
    version = Version("stable", behaviour=Behaviour(latency_ms=0)).start()
    answers = iter([version.url, None] * 1000)
    load = LoadGenerator(rate=200, duration=0.5, picker=lambda: next(answers)).start()
    try:
        time.sleep(0.8)
        assert load.sent > 0 and load.unrouted > 0 and abs(load.sent - load.unrouted) <= 1
    finally:
        load.stop()
        version.stop()


def test_the_load_generator_needs_a_picker_or_two_urls() -> None:
    with pytest.raises(ValueError, match="picker"):
        LoadGenerator("http://127.0.0.1:1")
