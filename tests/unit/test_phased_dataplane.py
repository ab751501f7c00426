"""The testbed's data plane honours a request's headers and cookies the way the real proxies do,
so a phased release's audience is measured, not assumed: Gateway API's precedence (the most
specific match wins: more header matches before fewer, whatever the rule order), Istio's first
http route that matches, ingress-nginx's canary-by-header (its value, or "always"/"never"),
then canary-by-cookie ("always"/"never"), then the weight. The load generator sends a mix of
requests with and without an audience's headers, and each app counts them by group."""

from __future__ import annotations

import random
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest

from testbed.dataplane import (
    AUDIENCE_COUNTER,
    AUDIENCE_HEADER,
    RoutePicker,
    Target,
    count_audiences,
    ingress_backends,
    route_backends,
    virtual_service_backends,
)
from testbed.demoapp import Behaviour, Version
from testbed.loadgen import LoadGenerator

NS = "shop"


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "checkout", "namespace": NS}, "spec": {"rules": list(rules)}}


def rule(to: str, *headers: dict[str, str], path: dict[str, str] | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {"path": path or {"type": "PathPrefix", "value": "/"}}
    if headers:
        match["headers"] = list(headers)
    return {"matches": [match], "backendRefs": [{"name": to, "port": 80}]}


EMPLOYEE = {"name": "x-employee", "value": "true"}
COOKIE = {"type": "RegularExpression", "name": "cookie", "value": r"^(.*?;\s*)?beta=yes(;.*)?$"}


@pytest.mark.parametrize(
    ("body", "headers", "to"),
    [
        pytest.param(route(rule("stable"), rule("canary", EMPLOYEE)), {"x-employee": "true"}, "canary",
                     id="more-headers-win-whatever-the-order"),
        pytest.param(route(rule("canary", EMPLOYEE), rule("stable")), {}, "stable", id="no-header-no-audience"),
        pytest.param(route(rule("canary", EMPLOYEE), rule("stable")), {"x-employee": "false"}, "stable",
                     id="another-value-no-audience"),
        pytest.param(route(rule("canary", {**EMPLOYEE, "name": "X-Employee"}), rule("stable")), {"x-employee": "true"},
                     "canary", id="header-names-without-case"),
        pytest.param(route(rule("canary", COOKIE), rule("stable")), {"cookie": "a=1; beta=yes; b=2"}, "canary",
                     id="cookie-among-others"),
        pytest.param(route(rule("canary", COOKIE), rule("stable")), {"cookie": "beta=yesno"}, "stable",
                     id="cookie-value-whole"),
        pytest.param(route(rule("stable", path={"type": "Exact", "value": "/"}), rule("canary", EMPLOYEE)),
                     {"x-employee": "true"}, "stable", id="an-exact-path-before-more-headers"),
        pytest.param(route(rule("first", EMPLOYEE), rule("second", EMPLOYEE)), {"x-employee": "true"}, "first",
                     id="a-tie-goes-to-the-first-rule"),
    ],
)  # fmt: skip
def test_a_gateway_api_route_takes_the_most_specific_rule_that_matches(
    body: dict[str, Any], headers: dict[str, str], to: str
) -> None:
    assert route_backends(body, headers=headers) == [(to, 1)]


def vs(*http: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": NS}, "spec": {"http": list(http)}}


def to(host: str, **headers: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"route": [{"destination": {"host": host}}]}
    if headers:
        out["match"] = [{"headers": dict(headers)}]
    return out


@pytest.mark.parametrize(
    ("body", "headers", "host"),
    [
        pytest.param(vs(to("canary", **{"x-employee": {"exact": "true"}}), to("stable")), {"x-employee": "true"},
                     "canary", id="first-that-matches"),
        pytest.param(vs(to("stable"), to("canary", **{"x-employee": {"exact": "true"}})), {"x-employee": "true"},
                     "stable", id="order-decides"),
        pytest.param(vs(to("canary", **{"x-employee": {"exact": "true"}}), to("stable")), {}, "stable",
                     id="no-header"),
        pytest.param(vs(to("canary", cookie={"regex": COOKIE["value"]}), to("stable")), {"cookie": "beta=yes"},
                     "canary", id="cookie-regex"),
        pytest.param(vs(to("canary", **{"x-employee": {"prefix": "tr"}}), to("stable")), {"x-employee": "true"},
                     "canary", id="prefix"),
    ],
)  # fmt: skip
def test_an_istio_virtual_service_takes_the_first_http_route_that_matches(
    body: dict[str, Any], headers: dict[str, str], host: str
) -> None:
    assert virtual_service_backends(body, headers=headers) == [(Target(host), 100)]


def ingress(name: str, to: str, **annotations: str) -> dict[str, Any]:
    path = {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": to, "port": {"number": 80}}}}
    prefixed = {f"nginx.ingress.kubernetes.io/{k.replace('_', '-')}": v for k, v in annotations.items()}
    return {"metadata": {"name": name, "namespace": NS, "annotations": prefixed},
            "spec": {"rules": [{"host": "shop.example", "http": {"paths": [path]}}]}}  # fmt: skip


MAIN = ingress("shop", "stable")


@pytest.mark.parametrize(
    ("annotations", "headers", "expected"),
    [
        pytest.param({"canary_by_header": "x-employee", "canary_by_header_value": "true"}, {"x-employee": "true"},
                     [(Target("canary"), 100)], id="header-value"),
        pytest.param({"canary_by_header": "x-employee", "canary_by_header_value": "true"}, {"x-employee": "yes"},
                     [(Target("stable"), 100), (Target("canary"), 0)], id="another-value-falls-to-the-weight"),
        pytest.param({"canary_by_header": "X-Employee"}, {"x-employee": "always"}, [(Target("canary"), 100)],
                     id="header-always"),
        pytest.param({"canary_by_header": "x-employee", "canary_weight": "100"}, {"x-employee": "never"},
                     [(Target("stable"), 100)], id="header-never-whatever-the-weight"),
        pytest.param({"canary_by_cookie": "beta"}, {"cookie": "a=1; beta=always"}, [(Target("canary"), 100)],
                     id="cookie-always"),
        pytest.param({"canary_by_cookie": "beta", "canary_weight": "100"}, {"cookie": "beta=never"},
                     [(Target("stable"), 100)], id="cookie-never"),
        pytest.param({"canary_by_cookie": "beta", "canary_weight": "10"}, {"cookie": "beta=yes"},
                     [(Target("stable"), 90), (Target("canary"), 10)], id="cookie-other-value-by-weight"),
        pytest.param({"canary_by_header": "x-employee", "canary_by_header_value": "true", "canary_by_cookie": "beta"},
                     {"x-employee": "no", "cookie": "beta=always"}, [(Target("canary"), 100)],
                     id="the-header-first-then-the-cookie"),
    ],
)  # fmt: skip
def test_ingress_nginx_asks_the_header_then_the_cookie_then_the_weight(
    annotations: dict[str, str], headers: dict[str, str], expected: list[tuple[Target, int]]
) -> None:
    canary = ingress("shop-canary", "canary", **{"canary": "true", "canary_weight": "0", **annotations})
    assert ingress_backends(MAIN, canary, headers=headers) == expected


class Endpoints:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def service_endpoints(self, service: str, labels: Any = None) -> list[str]:
        return list(self.table.get(service, []))


def test_a_route_picker_sends_an_audience_by_its_headers() -> None:
    body = route(rule("checkout-stable"), rule("checkout-canary", EMPLOYEE))
    picker = RoutePicker(
        Endpoints({"checkout-stable": ["s"], "checkout-canary": ["c"]}), body, rng=random.Random(1)
    )
    assert Counter(picker({"x-employee": "true"}) for _ in range(100)) == {"c": 100}
    assert Counter(picker() for _ in range(100)) == {"s": 100}


def test_the_load_generator_sends_its_mix_and_each_app_counts_its_groups() -> None:
    stable, canary = (
        Version("stable", behaviour=Behaviour(latency_ms=0)),
        Version("canary", behaviour=Behaviour(latency_ms=0)),
    )
    for version in (stable, canary):
        count_audiences(version)
        version.start()
    route_body = route(rule("stable"), rule("canary", EMPLOYEE))
    urls = {"stable": stable.url, "canary": canary.url}

    def picker(headers: dict[str, str] | None = None) -> str:
        (name, _), = route_backends(route_body, headers=headers)  # fmt: skip
        return urls[str(name)]

    mix = [({"x-employee": "true", AUDIENCE_HEADER: "internal"}, 1), ({AUDIENCE_HEADER: "everyone"}, 3)]
    load = LoadGenerator(rate=200, duration=1.0, picker=picker, mix=mix).start()
    try:
        time.sleep(1.2)  # its duration is over: it sends no more
        sent = load.sent
        deadline = time.monotonic() + 10
        while True:  # the requests in flight are answered
            counts = {name: _counted(version) for name, version in (("stable", stable), ("canary", canary))}
            if sum(sum(c.values()) for c in counts.values()) >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        load.stop()
        stable.stop()
        canary.stop()
    assert set(counts["canary"]) == {"internal"} and set(counts["stable"]) == {"everyone"}
    # One request in four is the audience's, in turn: exact to within the last cycle.
    assert counts["canary"]["internal"] + counts["stable"]["everyone"] == sent
    assert counts["canary"]["internal"] == pytest.approx(sent / 4, abs=1)


def _counted(version: Version) -> dict[str, float]:
    with urllib.request.urlopen(f"{version.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(f'{AUDIENCE_COUNTER}{{audience="'):
            name = line.split('"')[1]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out
