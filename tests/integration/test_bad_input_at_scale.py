"""Bad input at scale: over a thousand Rollout, MetricTemplate and ReleasePolicy documents, made
by hypothesis from the models in `parachute.api` (derandomized, so a run is repeatable), are sent
to the real API server while the operator runs and one ordinary release goes on beside them.

Each document is a valid one, or a valid one with one field made wrong as a user would make it:
a wrong type, a value out of range, an unknown enum value, a malformed duration, threshold or
percentage, an unknown field (sent as `kubectl apply` sends, with strict field validation), two
fields that exclude each other, a required field left out, a huge string, or deep nesting. Each
one ends one of three ways: refused by the API server with a message naming the field; accepted
and reconciled (a phase, no fault); or accepted and marked `Invalid` with `status.message` naming
the field. A wrong one that is accepted and reconciled as if it were right is a silent acceptance.
A MetricTemplate or a ReleasePolicy is reconciled through a Rollout that uses it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from parachute import api, crd
from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    event_reasons,
    eventually,
    rollout,
    rollout_status,
    wait_adopted,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION = api.GROUP, api.VERSION
PLURALS = {"Rollout": "rollouts", "MetricTemplate": "metrictemplates", "ReleasePolicy": "releasepolicies"}
DOCUMENTS = 1050
SECRET = "fuzz"  # holds every key the generated references name
SECRET_KEYS = ("token", "user", "url")  # and "ca", a PEM certificate
# Names the test gives the objects that valid documents refer to. A Rollout's target is a
# Deployment of its own name; the ReleasePolicy's name has the run's in it (it is cluster-wide).
TARGET, BASE_POLICY = "@target", "@policy"
BASE_TEMPLATE, FLAGS = "fuzz-base", "fuzz-flags"
# A Prometheus that refuses at once: nothing serves tcpmux's port. (The analysis of these
# Rollouts is not what is tested, and an address that had to time out would slow them all.)
PROMETHEUS = "http://127.0.0.1:1"

# ---------------------------------------------------------------------------- the schemas

# The structural schemas the API server checks, generated from the models (`parachute.crd`).
SCHEMAS = {
    "Rollout": crd.structural(api.RolloutSpec.model_json_schema(by_alias=True), "spec"),
    "MetricTemplate": crd.structural(api.MetricTemplateSpec.model_json_schema(by_alias=True), "spec"),
    "ReleasePolicy": crd.structural(api.ReleasePolicySpec.model_json_schema(by_alias=True), "spec"),
}
PERCENT = r"^[0-9]+(\.[0-9]+)?%$"
CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
URL = r"^https?://[^\s]+$"


def _refused(node: dict[str, Any]) -> set[str]:
    """Fields a CEL rule on this object refuses outright (not supported yet)."""
    return {
        match.group(1)
        for rule in node.get("x-kubernetes-validations", [])
        if (match := re.fullmatch(r"!has\(self\.(\w+)\)", rule["rule"]))
    }


# ---------------------------------------------------------------------------- valid values

DURATIONS = st.one_of(
    st.integers(1, 600).map(lambda n: f"{n}s"),
    st.integers(1, 90).map(lambda n: f"{n}m"),
    st.integers(1, 48).map(lambda n: f"{n}h"),
    st.integers(1, 999).map(lambda n: f"{n}ms"),
    st.tuples(st.integers(1, 5), st.integers(1, 59)).map(lambda hm: f"{hm[0]}h{hm[1]}m"),
    st.tuples(st.integers(0, 9), st.integers(1, 9)).map(lambda f: f"{f[0]}.{f[1]}s"),
)
THRESHOLDS = st.one_of(
    st.integers(0, 1000),
    st.sampled_from(["0.5", "1", "0.05", "5%", "0.5%", "400ms", "1.5s", "10/min", "2/s", "99.9%"]),
)
PERCENTS = st.sampled_from(["1%", "5%", "10%", "50%", "90%", "95%", "99%", "99.5%"])
CLOCKS = st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda hm: f"{hm[0]:02d}:{hm[1]:02d}")
URLS = st.sampled_from([PROMETHEUS, f"{PROMETHEUS}/", f"{PROMETHEUS}/prometheus", f"{PROMETHEUS}/api?x=1"])
DATE_TIMES = st.builds(
    lambda year, month, day, hour, form: form.format(y=year, mo=month, d=day, h=hour),
    st.integers(2020, 2035), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
    st.sampled_from(["{y}-{mo:02d}-{d:02d}T{h:02d}:00:00Z", "{y}-{mo:02d}-{d:02d}T{h:02d}:30:00+02:00",
                     "{y}-{mo:02d}-{d:02d}T{h:02d}:00:00.250Z"]),
)  # fmt: skip
NAMES = st.from_regex(r"[a-z]([-a-z0-9]{0,14}[a-z0-9])?", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
PROMQL = st.sampled_from([
    'sum(rate(http_requests_total{namespace="{{namespace}}",pod=~"{{pods}}",code=~"5.."}[{{window}}]))',
    'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{pod=~"{{pods}}"}[1m])))',
    'sum(ALERTS{alertstate="firing", namespace="{{namespace}}"})',
    "vector(1)",
])  # fmt: skip
# Values that name something in the cluster name what the test made, so that a valid document
# works; a reference to nothing is one of the conflicts below.
REFERENCES: dict[str, st.SearchStrategy[Any]] = {
    "targetRef": st.just({"name": TARGET}),
    "templateRef": st.just({"name": BASE_TEMPLATE}),
    "policyRef": st.just({"name": BASE_POLICY}),
    "configMapRef": st.just({"name": FLAGS}),
    "featureFlagRef": st.just({"name": FLAGS}),
    "caSecretRef": st.just({"name": SECRET, "key": "ca"}),
    "query": PROMQL,
    "address": URLS,
    "url": URLS,
    "apiURL": URLS,
    "holidays": st.builds(lambda place, before: {**place, "dayBefore": before}, st.sampled_from([
        {"country": "DE"}, {"country": "DE", "subdivision": "BY"}, {"country": "US", "subdivision": "CA"},
        {"country": "FR"}]), st.booleans()),
    "timeZone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
}  # fmt: skip
SECRET_REFS = st.builds(lambda key: {"name": SECRET, "key": key}, st.sampled_from(("token", "user", "url")))
PATTERNS = {api.DURATION_PATTERN: DURATIONS, PERCENT: PERCENTS, CLOCK: CLOCKS, URL: URLS}


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    pattern, limit = node.get("pattern"), node.get("maxLength", 253)
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    if node.get("format") == "date-time":
        return DATE_TIMES
    if pattern:
        ascii_only = st.characters(codec="ascii")
        return st.from_regex(pattern, fullmatch=True, alphabet=ascii_only).filter(lambda s: len(s) <= limit)
    return NAMES if node.get("minLength") or limit > 64 else TEXT.filter(lambda s: len(s) <= limit)


@st.composite
def _object(draw: st.DrawFn, node: dict[str, Any]) -> dict[str, Any]:
    """The required fields, and a third of the others (a field not supported yet is never set)."""
    out: dict[str, Any] = {}
    required = set(node.get("required", []))
    for key, child in (node.get("properties") or {}).items():
        if key not in _refused(node) and (key in required or draw(st.integers(0, 2)) == 0):
            out[key] = draw(valid(child, key))
    return out


def _array(node: dict[str, Any], name: str) -> st.SearchStrategy[list[Any]]:
    low = node.get("minItems", 0)
    items = st.lists(
        valid(node["items"], name), min_size=low, max_size=max(low, min(node.get("maxItems", 3), 3))
    )
    if node.get("x-kubernetes-list-type") == "set":
        return items.map(lambda found: list(dict.fromkeys(found)))
    return items


def _special(node: dict[str, Any], name: str) -> st.SearchStrategy[Any] | None:
    """What a field's name or kind says better than its schema's type."""
    if name in REFERENCES:
        return REFERENCES[name]
    if name == "port":  # a route's (a number) or a container's (a number or a name)
        numbers = st.integers(1, 65535)
        return (
            numbers if node.get("type") == "integer" else st.one_of(numbers, st.sampled_from(["http", "web"]))
        )
    if name.endswith(("SecretRef", "secretRef")):
        return SECRET_REFS
    if "enum" in node:
        return st.sampled_from(node["enum"])
    return THRESHOLDS if node.get("x-kubernetes-int-or-string") else None


SCALARS: dict[str, Callable[[dict[str, Any]], st.SearchStrategy[Any]]] = {
    "integer": lambda node: st.integers(node.get("minimum", 0), min(node.get("maximum", 1000), 1000)),
    "number": lambda node: st.floats(-1000, 1000, allow_nan=False),
    "boolean": lambda node: st.booleans(),
    "string": _string,
    # No type, unknown fields kept (an app's answer, say): any JSON value.
    "None": lambda node: st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=8), st.none()),
}


def valid(node: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """A value the schema at `node` accepts (the cross-field rules are `repair`'s job)."""
    special = _special(node, name)
    if special is not None:
        return special
    kind = node.get("type")
    if kind == "object":
        return _object(node)
    if kind == "array":
        return _array(node, name)
    return SCALARS[str(kind)](node)


def _duration(text: str) -> float:
    return api.parse_duration(text).total_seconds()


def _one_of(obj: dict[str, Any], keys: tuple[str, ...], fallback: tuple[str, Any] | None = None) -> None:
    """Keep the first of `keys` present (or put `fallback` in), drop the others: a CEL rule's 'exactly one'."""
    present = [k for k in keys if k in obj]
    for extra in present[1:]:
        del obj[extra]
    if not present and fallback is not None:
        obj[fallback[0]] = fallback[1]


def _ordered_waits(obj: dict[str, Any], low: str, high: str) -> None:
    if low in obj and high in obj and _duration(obj[low]) > _duration(obj[high]):
        obj[low], obj[high] = obj[high], obj[low]


def _repair_policy(spec: dict[str, Any]) -> None:
    window = spec.get("window") or {}
    for ranges in (window.get("allow") or [], window.get("deny") or []):
        for item in ranges:
            if item["start"] == item["end"]:
                item["end"] = "23:59" if item["start"] != "23:59" else "00:00"
    window.pop("deny", None)  # deny ranges drawn at random may close the whole week
    for gate in (spec.get("checklist") or {}).get("gates") or []:
        _one_of(gate, ("annotation", "condition", "http", "prometheus", "changeTicket"), ("changeTicket", {}))


ROUTERS = ("gatewayAPI", "istio", "nginx")


def _repair_strategy(spec: dict[str, Any]) -> None:
    """The strategy, when drawn, follows the settings drawn: blue/green's, else phased's, else
    canary. Without one it is canary, and their settings go."""
    routing = spec.get("trafficRouting")
    if "strategy" not in spec:
        spec.pop("blueGreen", None)
        spec.pop("phased", None)
    if "blueGreen" in spec:
        spec["strategy"] = "blueGreen"
        for key in ("phased", "steps", "waits"):
            spec.pop(key, None)
        for key in ROUTERS if routing is not None else ():
            routing.pop(key, None)  # blue/green switches the active Service, not a route
    elif "phased" in spec:
        spec["strategy"] = "phased"
        for key in ("steps", "waits", "watchAfterRelease"):
            spec.pop(key, None)
        if routing is None or not set(ROUTERS) & routing.keys():
            spec["trafficRouting"] = routing = {**(routing or {}), "nginx": NGINX}
        routing.pop("replicas", None)  # an audience needs a router
        _repair_audiences(spec["phased"]["audiences"], nginx="nginx" in routing)
    elif "strategy" in spec:
        spec["strategy"] = "canary"


def _repair_audiences(audiences: list[dict[str, Any]], nginx: bool) -> None:
    """Audiences by header or cookie, then everyone; names unique."""
    for index, audience in enumerate(audiences):
        audience["name"] = f"{audience['name'][:30]}-{index}"
        _ordered_waits(audience, "minWait", "maxWait")
        if index == len(audiences) - 1:
            audience.pop("header", None)
            audience.pop("cookie", None)
            continue
        _one_of(audience, ("header", "cookie"), ("header", {"name": "x-group", "value": audience["name"]}))
        if nginx and "cookie" in audience:
            audience["cookie"]["value"] = "always"


def _repair_plan(spec: dict[str, Any]) -> None:
    _repair_strategy(spec)
    if "steps" in spec:
        spec["steps"].sort(key=lambda s: s["weight"])
        spec.pop("waits", None)
        spec.pop("watchAfterRelease", None)
        flags = spec.get("featureFlags") or {}
        percentages = "featureFlagRef" in flags or flags.get("format") == "flagd"
        for step in spec["steps"]:
            _ordered_waits(step, "minWait", "maxWait")
            if "featureFlags" not in spec:
                step.pop("flags", None)
            elif str(step.get("flags", "")).endswith("%") and not percentages:
                step["flags"] = "on"  # a plain ConfigMap holds only true or false
    if "waits" in spec:
        _ordered_waits(spec["waits"], "min", "max")
    routing = spec.get("trafficRouting")
    if routing is not None:
        _one_of(routing, ("replicas", "gatewayAPI", "istio", "nginx"))
        if not {"gatewayAPI", "istio", "nginx"} & routing.keys():
            routing.pop("canaryScale", None)
            routing.pop("scaleDownDelay", None)
        elif "scaleDownDelay" in routing and _duration(routing["scaleDownDelay"]) > 3600:
            routing["scaleDownDelay"] = "30s"


def _repair_analysis(spec: dict[str, Any]) -> None:
    analysis = spec.get("analysis")
    if analysis is None:
        return
    if "interval" in analysis and _duration(analysis["interval"]) < 1:
        analysis["interval"] = "1s"  # no shorter than a scrape
    auth = analysis["prometheus"].get("auth")
    if auth is not None and auth.get("type") == "basic":
        auth.setdefault("usernameSecretRef", {"name": SECRET, "key": "user"})
    for metric in analysis.get("metrics") or []:
        _one_of(metric, ("template", "templateRef", "query"), ("template", "error-rate"))
        if "query" in metric:
            metric.setdefault("name", "custom")
        if metric.get("template") not in api.RATE_TEMPLATES:
            metric.pop("judge", None)
            metric.pop("confidence", None)
        if metric.get("template") != api.USER_REPORTS:
            metric.pop("window", None)  # the window of the reports counted
        elif "window" in metric and _duration(metric["window"]) > 3600:
            metric["window"] = "10m"


def _repair_notifications(spec: dict[str, Any]) -> None:
    notifications = spec.get("notifications")
    if notifications is None:
        return
    for notification in notifications:
        _one_of(notification, ("slack", "cloudEvents", "statusPage"), ("slack", {"webhookSecretRef": {
            "name": SECRET, "key": "url"}}))  # fmt: skip
    for extra in [n for n in notifications if "statusPage" in n][1:]:
        notifications.remove(extra)


def repair(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The CRD's cross-field rules (its CEL), kept: what `valid` drew becomes a valid document."""
    if kind == "MetricTemplate":
        if not {"warning", "critical", "rollbackAt"} & spec.keys():
            spec["critical"] = "5%"
        return spec
    _repair_policy(spec)
    if kind == "Rollout":
        if "featureFlags" in spec:
            _one_of(
                spec["featureFlags"], ("configMapRef", "featureFlagRef"), ("configMapRef", {"name": FLAGS})
            )
        _repair_plan(spec)
        _repair_analysis(spec)
        _repair_notifications(spec)
    return spec


# ---------------------------------------------------------------------------- one field made wrong

Where = tuple[str | int, ...]


def path_text(path: Where) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


@dataclass(frozen=True)
class Spot:
    """A place in a document and the schema that governs it."""

    path: Where
    node: dict[str, Any]


def spots(value: Any, node: dict[str, Any], path: Where = ("spec",)) -> Iterator[Spot]:
    yield Spot(path, node)
    if isinstance(value, dict) and node.get("type") == "object":
        for key, item in value.items():
            if key in (node.get("properties") or {}):
                yield from spots(item, node["properties"][key], (*path, key))
    elif isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            yield from spots(item, node["items"], (*path, index))


def _get(body: dict[str, Any], path: Where) -> Any:
    for part in path:
        body = body[part]  # type: ignore[index]
    return body


def _set(body: dict[str, Any], path: Where, value: Any) -> None:
    _get(body, path[:-1])[path[-1]] = value


@dataclass(frozen=True)
class Wrong:
    """What was made wrong, and where: a refusal or an Invalid must name `path` (and `words`)."""

    how: str
    path: str
    words: tuple[str, ...] = ()


OTHER_TYPES: dict[str, list[Any]] = {
    "integer": ["ten", True, [1], {"value": 1}, 2.5],
    "number": ["ten", True, [1]],
    "string": [42, True, ["x"], {"value": "x"}],
    "int-or-string": [True, [1], {"value": 1}, 2.5],
    "boolean": ["yes", "true", 1],
    "object": ["text", 5, ["item"]],
    "array": ["text", {"item": 1}, 5],
}
MALFORMED = {
    api.DURATION_PATTERN: ["5 m", "1d", "-5s", "10", "1h-30m", "5mins", "P1D", "1.5"],
    api.THRESHOLD_PATTERN: ["5 %", "-1", "1e3", "abc", "0.5%%", "5ms/s", ".5"],
    PERCENT: ["10", "10 %", "ten%", "-5%", "%"],
    CLOCK: ["24:00", "9:00", "12:60", "noon"],
    URL: ["prometheus:9090", "ftp://prometheus", "http://a b", "//prometheus:9090"],
}
BAD_DATE_TIMES = ["tomorrow", "2024-13-01T00:00:00Z", "2024-02-30T10:00:00Z", "01/02/2024 10:00"]
HUGE = 100_000


def _kind_of(node: dict[str, Any]) -> str:
    return "int-or-string" if node.get("x-kubernetes-int-or-string") else str(node.get("type"))


Mutation = Callable[[st.DrawFn, dict[str, Any], list[Spot]], Wrong | None]


def _pick(draw: st.DrawFn, places: list[Spot], usable: Callable[[Spot], bool]) -> Spot | None:
    found = [s for s in places if usable(s)]
    return draw(st.sampled_from(found)) if found else None


def _wrong_type(draw: st.DrawFn, body: dict[str, Any], places: list[Spot]) -> Wrong | None:
    spot = _pick(draw, places, lambda s: _kind_of(s.node) in OTHER_TYPES and "enum" not in s.node)
    if spot is None:
        return None
    _set(body, spot.path, draw(st.sampled_from(OTHER_TYPES[_kind_of(spot.node)])))
    return Wrong("type", path_text(spot.path))


def _out_of_bounds(draw: st.DrawFn, body: dict[str, Any], places: list[Spot]) -> Wrong | None:
    spot = _pick(draw, places, _has_range)
    if spot is None:
        return None
    _set(body, spot.path, _out_of_range(draw, spot, _get(body, spot.path)))
    return Wrong("range", path_text(spot.path))


def _unknown_value(draw: st.DrawFn, body: dict[str, Any], places: list[Spot]) -> Wrong | None:
    spot = _pick(draw, places, lambda s: "enum" in s.node and len(s.node["enum"]) > 1)
    if spot is None:
        return None
    current = str(_get(body, spot.path))
    _set(body, spot.path, draw(st.sampled_from([current.upper(), current.capitalize() + "s", "extreme", ""])))
    return Wrong("enum", path_text(spot.path))


def _malformed(draw: st.DrawFn, body: dict[str, Any], places: list[Spot]) -> Wrong | None:
    spot = _pick(
        draw, places, lambda s: s.node.get("pattern") in MALFORMED or s.node.get("format") == "date-time"
    )
    if spot is None:
        return None
    _set(body, spot.path, draw(st.sampled_from(MALFORMED.get(spot.node.get("pattern", ""), BAD_DATE_TIMES))))
    return Wrong("malformed", path_text(spot.path))


def _unknown_field(draw: st.DrawFn, body: dict[str, Any], places: list[Spot]) -> Wrong | None:
    spot = _pick(draw, places, lambda s: s.node.get("type") == "object")
    if spot is None:
        return None
    known = list(spot.node.get("properties") or {})
    typos = [k.lower() for k in known if k.lower() != k] + [k + "s" for k in known] + ["fooBar", "enabled"]
    typo = draw(st.sampled_from([t for t in typos if t not in known]))
    _get(body, spot.path)[typo] = draw(st.sampled_from([1, "yes", {"a": 1}]))
    return Wrong("unknown", path_text((*spot.path, typo)))


def _missing(draw: st.DrawFn, body: dict[str, Any], places: list[Spot]) -> Wrong | None:
    spot = _pick(draw, places, lambda s: bool(s.node.get("required")))
    if spot is None:
        return None
    gone = draw(st.sampled_from(spot.node["required"]))
    del _get(body, spot.path)[gone]
    return Wrong("missing", path_text((*spot.path, gone)))


def _huge(draw: st.DrawFn, body: dict[str, Any], places: list[Spot]) -> Wrong | None:
    spot = _pick(draw, places, lambda s: s.node.get("type") == "string" and "enum" not in s.node)
    if spot is None:
        return None
    _set(body, spot.path, "x" * HUGE)
    return Wrong("huge", path_text(spot.path))


def _deep(draw: st.DrawFn, body: dict[str, Any], places: list[Spot]) -> Wrong | None:
    spot = _pick(draw, places, lambda s: len(s.path) > 1 and s.node.get("type") != "object")
    if spot is None:
        return None
    nested: Any = "bottom"
    for _ in range(draw(st.integers(50, 200))):
        nested = {"a": nested}
    _set(body, spot.path, nested)
    return Wrong("deep", path_text(spot.path))


MUTATIONS: list[Mutation] = [_wrong_type, _out_of_bounds, _unknown_value, _malformed, _unknown_field,
                             _missing, _huge, _deep]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, kind: str, body: dict[str, Any]) -> tuple[dict[str, Any], Wrong]:
    """`body` with one field made wrong as a user would make it, or two fields that exclude each other."""
    body = copy.deepcopy(body)
    if draw(st.integers(0, len(MUTATIONS))) < len(MUTATIONS):
        wrong = draw(st.sampled_from(MUTATIONS))(draw, body, list(spots(body["spec"], SCHEMAS[kind])))
        if wrong is not None:
            return body, wrong
    conflict = draw(st.sampled_from(CONFLICTS[kind]))
    return conflict(body)


def _has_range(spot: Spot) -> bool:
    node, leaf = spot.node, spot.path[-1]
    return (
        "minimum" in node
        or "maximum" in node
        or "maxItems" in node
        or node.get("minItems", 0) > 0
        or (node.get("type") == "string" and "maxLength" in node and "enum" not in node)
        or leaf == "confidence"
    )


def _out_of_range(draw: st.DrawFn, spot: Spot, current: Any) -> Any:
    node, leaf = spot.node, spot.path[-1]
    if leaf == "confidence":
        return draw(st.sampled_from(["100.5%", "150%", "1000%"]))
    if node.get("pattern") == api.DURATION_PATTERN:
        return draw(st.sampled_from(["100000000000h", "9999999999999999999999s", "2562048h"]))
    if node.get("type") == "integer":
        bounds = [node["maximum"] + 1, 2**40] if "maximum" in node else []
        bounds += [node["minimum"] - 1, -(2**40)] if "minimum" in node else []
        return draw(st.sampled_from(bounds))
    if node.get("type") == "array":
        if node.get("minItems", 0) > 0 and (not current or "maxItems" not in node or draw(st.booleans())):
            return []
        return (list(current) * (node["maxItems"] + 1))[: node["maxItems"] + 1] if current else [{}] * 100
    return "x" * (node["maxLength"] + 1)


def _without_steps(spec: dict[str, Any]) -> dict[str, Any]:
    spec.pop("steps", None)
    return spec


NGINX = {"ingress": "web", "service": "web"}
CHECK = {"name": SECRET, "key": "url"}
Conflict = Callable[[dict[str, Any]], tuple[dict[str, Any], Wrong]]


def _conflict(how: str, path: str, change: Callable[[dict[str, Any]], Any], *words: str) -> Conflict:
    def apply(body: dict[str, Any]) -> tuple[dict[str, Any], Wrong]:
        change(body["spec"])
        for key in [k for k, v in body["spec"].items() if v is None]:
            del body["spec"][key]  # taken out, not sent as null
        return body, Wrong(f"conflict:{how}", path, words)

    return apply


def _analysis(spec: dict[str, Any]) -> dict[str, Any]:
    analysis: dict[str, Any] = spec.setdefault("analysis", {"prometheus": {"address": PROMETHEUS}})
    return analysis


FULL_WEEK = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
NEVER_OPENS = [{"days": FULL_WEEK, "start": "00:00", "end": "12:00"},
               {"days": FULL_WEEK, "start": "12:00", "end": "00:00"}]  # fmt: skip
WINDOW_CONFLICTS: list[tuple[str, str, Callable[[dict[str, Any]], Any], tuple[str, ...]]] = [
    ("empty-range", "spec.window.allow[0].end",
     lambda w: w.update(allow=[{"days": ["Mon"], "start": "09:00", "end": "09:00"}]), ()),
    ("never-opens", "spec.window.deny", lambda w: w.update(deny=NEVER_OPENS, allow=None), ()),
    ("no-such-time-zone", "spec.window.timeZone", lambda w: w.update(timeZone="Europe/Atlantis"), ()),
    ("no-such-country", "spec.window.holidays", lambda w: w.update(holidays={"country": "QQ"}), ()),
]  # fmt: skip


def _window_conflict(how: str, path: str, change: Callable[[dict[str, Any]], Any]) -> Conflict:
    def apply_to(spec: dict[str, Any]) -> None:
        window = spec.setdefault("window", {})
        change(window)
        for key in [k for k, v in window.items() if v is None]:
            del window[key]

    return _conflict(how, path, apply_to)


GATE_CONFLICT = _conflict("two-gate-kinds", "spec.checklist.gates[0]", lambda s: s.update(
    checklist={"gates": [{"name": "g", "http": {"url": PROMETHEUS}, "changeTicket": {}}]}))  # fmt: skip
POLICY_CONFLICTS = [GATE_CONFLICT, *(_window_conflict(h, p, c) for h, p, c, _ in WINDOW_CONFLICTS)]

ROLLOUT_CONFLICTS: list[Conflict] = [
    *POLICY_CONFLICTS,
    _conflict("weights-decrease", "spec.steps", lambda s: s.update(steps=[{"weight": 50}, {"weight": 10}],
                                                                   waits=None, watchAfterRelease=None)),
    _conflict("min-wait-past-max", "spec.steps[0].minWait", lambda s: s.update(
        steps=[{"weight": 100, "minWait": "10m", "maxWait": "1m"}], waits=None, watchAfterRelease=None)),
    _conflict("waits-min-past-max", "spec.waits.min",
              lambda s: _without_steps(s).update(waits={"min": "1h", "max": "5m"})),
    _conflict("steps-and-waits", "spec.waits", lambda s: s.update(steps=[{"weight": 100}], waits={"min": "1m"})),
    _conflict("steps-and-watch", "spec.watchAfterRelease",
              lambda s: s.update(steps=[{"weight": 100}], watchAfterRelease="1h", waits=None)),
    _conflict("flags-without-store", "spec.steps", lambda s: s.update(
        steps=[{"weight": 100, "flags": "on"}], featureFlags=None, waits=None, watchAfterRelease=None),
        "featureFlags"),
    _conflict("audience", "spec.steps[0].audience", lambda s: s.update(
        steps=[{"weight": 100, "audience": "beta"}], waits=None, watchAfterRelease=None)),
    _conflict("two-routers", "spec.trafficRouting", lambda s: s.update(
        trafficRouting={"replicas": {}, "nginx": NGINX}), "nginx"),
    _conflict("full-without-router", "spec.trafficRouting.canaryScale",
              lambda s: s.update(trafficRouting={"canaryScale": "full"})),
    _conflict("delay-without-router", "spec.trafficRouting.scaleDownDelay",
              lambda s: s.update(trafficRouting={"scaleDownDelay": "30s"})),
    _conflict("delay-past-an-hour", "spec.trafficRouting.scaleDownDelay",
              lambda s: s.update(trafficRouting={"nginx": NGINX, "scaleDownDelay": "2h"})),
    _conflict("metric-two-sources", "spec.analysis.metrics[0]", lambda s: _analysis(s).update(
        metrics=[{"template": "error-rate", "query": "vector(1)", "name": "both"}]), "template", "query"),
    _conflict("query-without-name", "spec.analysis.metrics[0].name",
              lambda s: _analysis(s).update(metrics=[{"query": "vector(1)"}])),
    _conflict("confidence-of-a-hundred-percent", "spec.analysis.metrics[0].confidence",
              lambda s: _analysis(s).update(metrics=[{"template": "error-rate", "confidence": "100%"}])),
    _conflict("judge-on-latency", "spec.analysis.metrics[0].judge",
              lambda s: _analysis(s).update(metrics=[{"template": "latency-p95", "judge": "compare"}])),
    _conflict("no-such-template", "spec.analysis.metrics[0].templateRef",
              lambda s: _analysis(s).update(metrics=[{"templateRef": {"name": "no-such-template"}}])),
    _conflict("no-such-placeholder", "spec.analysis.metrics[0].query", lambda s: _analysis(s).update(
        metrics=[{"name": "q", "query": "sum(up{pod=~'{{pod}}'})"}])),
    _conflict("basic-without-user", "spec.analysis.prometheus.auth", lambda s: _analysis(s)["prometheus"].update(
        auth={"type": "basic", "secretRef": {"name": SECRET, "key": "password"}}), "usernameSecretRef"),
    _conflict("no-such-secret", "spec.analysis.prometheus.auth.secretRef", lambda s: _analysis(s)["prometheus"].update(
        auth={"secretRef": {"name": "no-such-secret", "key": "token"}})),
    _conflict("two-flag-stores", "spec.featureFlags", lambda s: s.update(featureFlags={
        "configMapRef": {"name": "flags"}, "featureFlagRef": {"name": "flags"}, "flags": ["f"]})),
    _conflict("two-notification-kinds", "spec.notifications[0]", lambda s: s.update(notifications=[
        {"slack": {"webhookSecretRef": CHECK}, "cloudEvents": {"urlSecretRef": CHECK}}])),
    _conflict("two-status-pages", "spec.notifications", lambda s: s.update(notifications=[
        {"statusPage": {"pageIdSecretRef": CHECK, "tokenSecretRef": CHECK}}] * 2)),
    _conflict("blue-green", "spec.strategy", lambda s: s.update(strategy="blueGreen")),
    _conflict("blue-green-settings", "spec.blueGreen", lambda s: s.update(blueGreen={"activeService": "web"})),
    _conflict("no-such-target", "spec.targetRef.name", lambda s: s.update(targetRef={"name": "no-such-target"})),
    _conflict("peak-traffic-without-analysis", "spec.window.peakTraffic", lambda s: s.update(
        analysis=None, window={"peakTraffic": {"query": "vector(1)", "threshold": 5}})),
]  # fmt: skip
TEMPLATE_CONFLICTS: list[Conflict] = [
    _conflict("no-threshold", "spec", lambda s: [s.pop(k, None) for k in ("warning", "critical", "rollbackAt")],
              "critical"),
    _conflict("no-such-placeholder", "spec.query", lambda s: s.update(query="sum(up{pod=~'{{pod}}'})")),
]  # fmt: skip
CONFLICTS: dict[str, list[Conflict]] = {
    "Rollout": ROLLOUT_CONFLICTS,
    "MetricTemplate": TEMPLATE_CONFLICTS,
    "ReleasePolicy": POLICY_CONFLICTS,
}


# ---------------------------------------------------------------------------- the documents


@dataclass
class Document:
    kind: str
    body: dict[str, Any]
    wrong: Wrong | None = None
    base: dict[str, Any] | None = None  # the valid document it was made from
    name: str = ""
    outcome: str = ""  # accepted, refused, invalid
    message: str = ""
    user: Document | None = None  # the Rollout that reads a template or a policy


@st.composite
def documents(draw: st.DrawFn) -> Document:
    kind = draw(st.sampled_from(["Rollout", "Rollout", "MetricTemplate", "ReleasePolicy"]))
    body = {"spec": repair(kind, draw(valid(SCHEMAS[kind])))}
    if draw(st.integers(0, 9)) < 3:
        return Document(kind, body)
    made, wrong = draw(mutated(kind, body))
    return Document(kind, made, wrong, body)


# The smallest valid document of each kind: what each conflict is made on once more.
SMALLEST: dict[str, dict[str, Any]] = {
    "Rollout": {"spec": {"targetRef": {"name": TARGET}}},
    "MetricTemplate": {"spec": {"query": "vector(1)", "critical": "5%"}},
    "ReleasePolicy": {"spec": {}},
}


def draw_documents(count: int) -> list[Document]:
    """`count` documents, the same ones on every run (hypothesis derandomized), and each conflict
    made once more on the smallest valid document, so that every one is sent whatever was drawn."""
    drawn: list[Document] = []

    @settings(max_examples=count, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(documents())
    def collect(document: Document) -> None:
        drawn.append(document)

    collect()
    for kind, conflicts in CONFLICTS.items():
        for conflict in conflicts:
            body, wrong = conflict(copy.deepcopy(SMALLEST[kind]))
            drawn.append(Document(kind, body, wrong, SMALLEST[kind]))
    return drawn


# ---------------------------------------------------------------------------- judging an outcome


def _dotted_indices(text: str) -> str:
    """`spec.window.allow.0.start` read as `spec.window.allow[0].start`."""
    return re.sub(r"\.(\d+)(?=[.:\s]|$)", r"[\1]", text)


def names(message: str, wrong: Wrong) -> bool:
    """The message names the field made wrong: its path, or its parent's path and its own name."""
    text = _dotted_indices(message)
    parent, _, leaf = wrong.path.rpartition(".")
    leaf = re.sub(r"\[\d+\]$", "", leaf)
    named = wrong.path in text or (bool(parent) and parent in text and leaf in text)
    return named and all(word in text for word in wrong.words)


def names_a_field(message: str) -> bool:
    return re.search(r"\bspec\.[a-zA-Z]", message) is not None


def refusal(error: ApiException) -> str:
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.body or error.reason)


# ---------------------------------------------------------------------------- the cluster


def _placed(value: Any, names: dict[str, str]) -> Any:
    """`value` with the placeholders of the objects valid documents refer to replaced by their names."""
    if isinstance(value, dict):
        return {k: _placed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_placed(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


def _parallel(work: Callable[[Any], None], items: list[Any]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, items))


def _settled(item: dict[str, Any] | None) -> bool:
    """Reconciled at its latest generation: a phase, for what it is now."""
    if item is None:
        return False
    status = item.get("status") or {}
    return bool(status.get("phase")) and status.get("observedGeneration") == item["metadata"]["generation"]


def _failed(status: dict[str, Any]) -> bool:
    conditions = status.get("conditions") or []
    return any(c["type"] == "ReconcileFailed" and c["status"] == "True" for c in conditions)


@dataclass
class Sender:
    """Sends documents as `kubectl apply` would, and reads back what became of each."""

    cluster: Cluster
    namespace: str
    run: str

    @property
    def base_policy(self) -> str:
        return f"fuzz-{self.run}-base"

    def name(self, documents: list[Document], prefix: str) -> None:
        for index, document in enumerate(documents):
            short = {"Rollout": "ro", "MetricTemplate": "mt", "ReleasePolicy": f"fuzz-{self.run}"}[
                document.kind
            ]
            document.name = f"{prefix}{short}-{index}"
            document.body = _placed(document.body, {TARGET: document.name, BASE_POLICY: self.base_policy})

    def send(self, documents: list[Document], timeout: float) -> None:
        """Create them (a template or a policy first, then the Rollout that reads it) and wait until
        each Rollout the API server accepted was reconciled."""
        _parallel(self._create, [d for d in documents if d.kind != "Rollout"])
        for document in documents:
            if document.kind != "Rollout" and document.outcome == "accepted":
                document.user = _user(document)
        rollouts = [d for d in documents if d.kind == "Rollout"] + [d.user for d in documents if d.user]
        _parallel(self._target, [d.name for d in rollouts if _targets(d)])
        _parallel(self._create, rollouts)
        accepted = {d.name for d in rollouts if d.outcome == "accepted"}
        deadline = time.monotonic() + timeout
        while True:
            items = self.cluster.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "rollouts"
            )
            seen = {item["metadata"]["name"]: item for item in items["items"]}
            waiting = sorted(n for n in accepted if not _settled(seen.get(n)))
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert not waiting, f"{len(waiting)} Rollouts never reconciled (stuck), e.g. {waiting[:10]}"
        for document in rollouts:
            if document.outcome == "accepted":
                status = seen[document.name].get("status") or {}
                assert not _failed(status), f"{document.name}: ReconcileFailed: {status}"
                document.outcome = "invalid" if status.get("phase") == "Invalid" else "accepted"
                document.message = status.get("message", "")
        for document in documents:
            if document.user is not None:  # a template or a policy is judged by what its user made of it
                document.outcome, document.message = document.user.outcome, document.user.message

    def _create(self, document: Document) -> None:
        meta = {"name": document.name, "labels": {"fuzz": self.run}}
        body = {"apiVersion": api.API_VERSION, "kind": document.kind, "metadata": meta, **document.body}
        custom, plural = self.cluster.custom, PLURALS[document.kind]
        try:
            if document.kind == "ReleasePolicy":
                custom.create_cluster_custom_object(GROUP, VERSION, plural, body, field_validation="Strict")
            else:
                custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body,
                                                       field_validation="Strict")  # fmt: skip
            document.outcome = "accepted"
        except ApiException as error:
            if error.status not in (400, 422):
                raise
            document.outcome, document.message = "refused", refusal(error)

    def _target(self, name: str) -> None:
        self.cluster.apps.create_namespaced_deployment(self.namespace, deployment(name, replicas=0))


def _user(document: Document) -> Document:
    """The Rollout that reads a template or a policy: without one, nothing would."""
    name = f"use-{document.name}"
    if document.kind == "MetricTemplate":
        spec = {"analysis": {"prometheus": {"address": PROMETHEUS},
                             "metrics": [{"templateRef": {"name": document.name}}]}}  # fmt: skip
    else:
        spec = {"policyRef": {"name": document.name}}
    return Document("Rollout", {"spec": {"targetRef": {"name": name}, **spec}}, name=name)


def _targets(document: Document) -> bool:
    spec = document.body.get("spec")
    ref = spec.get("targetRef") if isinstance(spec, dict) else None
    return isinstance(ref, dict) and ref.get("name") == document.name


def _certificate(directory: Path) -> str:
    """A PEM certificate, for the Prometheus CA of a valid document."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=fuzz", "-days", "2",
                    "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt")],
                   check=True, capture_output=True)  # fmt: skip
    return (directory / "ca.crt").read_text()


def _fixtures(cluster: Cluster, namespace: str, sender: Sender, directory: Path) -> None:
    """What valid documents refer to: a Secret, a MetricTemplate, a ReleasePolicy, a flag ConfigMap."""
    keys = {k: f"{k}-value" for k in SECRET_KEYS} | {"ca": _certificate(directory)}
    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": SECRET}, "stringData": keys})
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": FLAGS}, "data": {}})
    template = {"apiVersion": api.API_VERSION, "kind": "MetricTemplate", "metadata": {"name": BASE_TEMPLATE},
                "spec": {"query": "vector(0)", "critical": "5%", "unit": "ratio"}}  # fmt: skip
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "metrictemplates", template)
    policy = {"apiVersion": api.API_VERSION, "kind": "ReleasePolicy",
              "metadata": {"name": sender.base_policy, "labels": {"fuzz": sender.run}}, "spec": {}}  # fmt: skip
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "releasepolicies", policy)


NEW_IMAGE = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
ORDINARY_RELEASE = ["Adopted", "ReleaseStarted", "StageAdvanced", "Promoting", "ReleaseCompleted"]


@pytest.fixture
def ordinary(crds: Cluster) -> Iterator[str]:
    """A namespace of its own for the ordinary release beside the documents."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    crds.core.create_namespace({"metadata": {"name": name, "labels": {"parachute.dev/test": "true"}}})
    eventually(lambda: crds.core.read_namespaced_service_account("default", name), what="default SA")
    yield name
    crds.core.delete_namespace(name, propagation_policy="Background")


def test_a_thousand_documents_are_each_accepted_refused_or_invalid_naming_the_field(
    crds: Cluster, namespace: str, ordinary: str, operator: RunningOperator, tmp_path: Path
) -> None:
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(what: str) -> None:
        nonlocal clock
        timings[what], clock = time.monotonic() - clock, time.monotonic()

    sender = Sender(crds, namespace, uuid.uuid4().hex[:6])
    drawn = draw_documents(DOCUMENTS)
    sender.name(drawn, "")
    lap("drawn")
    # The ordinary release: each stage waits 3 to 6 seconds, so it is over in well under a minute
    # when nothing holds it up.
    crds.apps.create_namespaced_deployment(ordinary, deployment("checkout", replicas=2))
    plain = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "3s", "max": "6s"}
    )
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, ordinary, "rollouts", plain)
    wait_adopted(crds, ordinary)
    try:
        _fixtures(crds, namespace, sender, tmp_path)
        lap("set up")
        crds.apps.patch_namespaced_deployment("checkout", ordinary, NEW_IMAGE)
        sender.send(drawn, timeout=300)
        lap("sent and reconciled")
        problems = {id(d): p for d in drawn if (p := judge(d))}
        # A wrong field found Invalid for another field's sake: is that one wrong in the valid
        # document it was made from too? Then the wrong field is behind it, not missed.
        suspects = [d for d in drawn if id(d) in problems and d.outcome == "invalid" and d.base is not None]
        bases = [Document(d.kind, d.base) for d in suspects if d.base is not None]
        sender.name(bases, "base-")
        sender.send(bases, timeout=180)
        shadowed = [d for d, base in zip(suspects, bases, strict=True) if _same_problem(d, base)]
        for document in shadowed:
            del problems[id(document)]
        lap("bases of the shadowed")

        counts = Counter((d.kind, d.outcome) for d in drawn)
        print(_summary(drawn, counts, timings, len(shadowed)))
        assert not problems, "\n".join(list(problems.values())[:200]) + f"\n({len(problems)} documents)"

        eventually(lambda: (s := rollout_status(crds, ordinary)).get("phase") == "Healthy"
                   and s["release"]["stableRevision"] == s["release"]["revision"], timeout=90,
                   what="the ordinary release completed")  # fmt: skip
        lap("ordinary release")
        # The Events a status change owes are posted after its write.
        eventually(lambda: sorted(event_reasons(crds, ordinary)) == sorted(ORDINARY_RELEASE), timeout=15,
                   what=f"the Events of an ordinary release: {sorted(ORDINARY_RELEASE)}")  # fmt: skip
        assert "Traceback" not in operator.output
        assert f"reconcile of {namespace}/" not in operator.output, "a reconcile of a document raised"
    finally:
        crds.custom.delete_collection_cluster_custom_object(GROUP, VERSION, "releasepolicies",
                                                            label_selector=f"fuzz={sender.run}")  # fmt: skip


def _same_problem(document: Document, base: Document) -> bool:
    return base.outcome == "invalid" and base.message.replace(base.name, document.name) == document.message


def judge(document: Document) -> str:
    """Empty when the document ended as it should; else what went wrong, for the failure message."""
    wrong, where = document.wrong, f"{document.kind} {document.name}"
    if wrong is None:
        if document.outcome == "refused" or (
            document.outcome == "invalid" and not names_a_field(document.message)
        ):
            return f"{where} (valid) {document.outcome}: {document.message[:300]}"
        return ""
    if document.outcome == "accepted":
        return f"{where} accepted though {wrong.how} at {wrong.path}"
    named = names(document.message, wrong)
    if document.outcome == "invalid" and document.kind != "Rollout":
        named = named and document.name in document.message  # the user's message names what it uses
    if not named:
        return f"{where} {document.outcome}, {wrong.how} at {wrong.path} not named: {document.message[:300]}"
    return ""


def _summary(drawn: list[Document], counts: Counter[tuple[str, str]], timings: dict[str, float],
             shadowed: int) -> str:  # fmt: skip
    wrong = sum(1 for d in drawn if d.wrong)
    lines = [
        f"{len(drawn)} documents, {wrong} with a field made wrong ({shadowed} behind another's problem):"
    ]
    for kind in PLURALS:
        row = ", ".join(
            f"{outcome} {counts[(kind, outcome)]}" for outcome in ("accepted", "refused", "invalid")
        )
        lines.append(f"  {kind}: {row}")
    # Why valid documents were Invalid: what they refer to that is not there (a route, a CRD).
    why = Counter(re.sub(r"\b(ro|mt|use|fuzz)-[-a-z0-9]+", "…", d.message)[:90] for d in drawn
                  if d.wrong is None and d.outcome == "invalid")  # fmt: skip
    lines += [f"  valid, Invalid {n}x: {message}" for message, n in why.most_common(8)]
    lines.append("  " + ", ".join(f"{what} {seconds:.1f}s" for what, seconds in timings.items()))
    return "\n".join(lines)
