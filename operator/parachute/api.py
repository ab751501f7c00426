"""The Rollout API: pydantic models of `parachute.dev/v1alpha1` Rollout spec and status.

This module is the one source of truth for the resource. The CRD under `crds/` is
generated from these models (`make crds`, see `parachute.crd`), and a test fails when
the committed YAML drifts from them. Validation that the API server can do is declared
here (enums, bounds, patterns, CEL rules across fields) so that bad input is refused at
`kubectl apply` with a message naming the field; everything else is checked by the
operator and reported as an `Invalid` condition.

Every duration is a Go-style string (`90s`, `2h`, `1h30m`), so the same plan runs for
hours in production and for seconds in a test.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "parachute.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Rollout"
PLURAL = "rollouts"
SINGULAR = "rollout"
# `ro` belongs to Argo Rollouts; `pr` keeps both installable side by side.
SHORT_NAMES = ["pr"]


def owner_reference(name: str, uid: str) -> dict[str, object]:
    """What a Rollout's own objects carry: deleted with it, and known as its own."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid, "controller": True}


# Go's time.ParseDuration grammar without signs and sub-millisecond units. CEL's
# duration() accepts the same strings, so cross-field rules can compare them.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# No wait, budget, deadline or timeout is longer than a year: a longer one is a slip (`87600h`
# for `8760h`), and past about 292 years Go's and CEL's durations cannot hold it at all.
MAX_DURATION = "8760h"

Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
# A threshold is a number (`1`, `"0.5"`), a percentage (`0.5%`), a duration (`400ms`) or a
# rate (`10/min`); the template it belongs to says what a bare number measures. On the
# wire it is int-or-string: a CRD field cannot take both a float and a string, so a
# decimal without a unit is written in quotes.
THRESHOLD_PATTERN = r"^[0-9]+(\.[0-9]+)?(%|ms|s|/s|/min)?$"


def _number_as_text(value: object) -> object:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Threshold = Annotated[
    str,
    StringConstraints(pattern=THRESHOLD_PATTERN, max_length=32),
    BeforeValidator(_number_as_text),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


def _seconds(text: str) -> float:
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (expected forms like 30s, 5m, 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def parse_duration(text: str) -> timedelta:
    """Turn a Go-style duration (`1h30m`, `250ms`) into a timedelta; raise ValueError if malformed
    or longer than a timedelta holds."""
    try:
        return timedelta(seconds=_seconds(text))
    except OverflowError:
        raise ValueError(f"not a duration: {text!r} is longer than any clock holds") from None


def format_duration(value: timedelta) -> str:
    """The inverse of `parse_duration`, shortest form: 90 s is `1m30s`, 0.25 s is `250ms`."""
    millis = round(value.total_seconds() * 1000)
    if millis % 1000:
        return f"{millis}ms"
    total, out = millis // 1000, ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            out += f"{total // size}{unit}"
            total %= size
    return out or "0s"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """A CEL validation rule as the API server expects it in `x-kubernetes-validations`."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def crd_extras(*rules: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Schema keywords that only Kubernetes understands, attached to a model's JSON schema."""
    out: dict[str, Any] = dict(extra)
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    return out


def _at_most_a_year(text: str) -> str:
    if _seconds(text) > _seconds(MAX_DURATION):
        raise ValueError(f"at most {MAX_DURATION} (a year)")
    return text


Duration = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_at_most_a_year),
    # A string the pattern refuses is not converted as well: one message says what is wrong.
    Field(
        json_schema_extra=crd_extras(
            cel(
                f"!self.matches(r'{DURATION_PATTERN}') || duration(self) <= duration('{MAX_DURATION}')",
                f"at most {MAX_DURATION} (a year)",
            )
        )
    ),
]


# A field the API declares but no code acts on yet. `parachute.crd` turns the marker into a
# CEL rule on the parent object that refuses the field with a message naming it, strips the
# marker from the emitted schema, and the reference shows the field as refused. The models
# refuse it too, for objects the API server never checked against the current CRD (stored
# before an upgrade, or a CRD that `helm upgrade` left as it was): they are marked Invalid.
NOT_SUPPORTED = "x-parachute-not-supported"


def not_supported(why: str) -> dict[str, Any]:
    """`json_schema_extra` of a field refused until the code that acts on it exists; `why` says what is missing."""
    return {NOT_SUPPORTED: why}


@cache
def _not_supported_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and NOT_SUPPORTED in info.json_schema_extra
    )


class Model(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields ignored.

    Unknown fields are ignored rather than refused because the API server has already
    pruned what the schema does not know; a newer CRD with an older operator must not crash.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @model_validator(mode="after")
    def _refuse_not_supported(self) -> Self:
        model = type(self)
        refused = [
            model.model_fields[name].alias or name
            for name in sorted(_not_supported_fields(model) & self.model_fields_set)
            if getattr(self, name) is not None
        ]
        if refused:
            raise ValueError("; ".join(f"{field} is not supported yet" for field in refused))
        return self


# ---------------------------------------------------------------------------- references


class LocalObjectRef(Model):
    """A named object in the Rollout's own namespace."""

    name: Name


class SecretKeyRef(Model):
    """One key of a Secret in the Rollout's namespace."""

    name: Name
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]


class TargetRef(Model):
    """The workload being released. The user (or GitOps) owns it; Parachute only pauses,
    unpauses and — on a code-level rollback, when allowed — restores its pod template."""

    api_version: Literal["apps/v1"] = Field("apps/v1", description="API version of the target.")
    kind: Literal["Deployment"] = Field("Deployment", description="Kind of the target.")
    name: Name = Field(description="Name of the Deployment in the Rollout's namespace.")


# ---------------------------------------------------------------------------- plan


class Risk(StrEnum):
    """How much can go wrong; picks the default stage plan, waits and watched metrics."""

    zero = "zero"
    low = "low"
    medium = "medium"
    high = "high"


class Strategy(StrEnum):
    """How the new version is exposed: by share (canary), by copy (blueGreen), by audience (phased)."""

    canary = "canary"
    blue_green = "blueGreen"
    phased = "phased"


SUPPORTED_STRATEGIES = (Strategy.canary, Strategy.blue_green, Strategy.phased)


class FlagState(StrEnum):
    """The two exposures every flag store can hold: the new code path shut, or open to everyone."""

    off = "off"
    on = "on"


# What a stage exposes through the release's flags: off, on (for everyone), or on for a
# percentage of users (`10%`), which only a flagd store can hold (a `fractional` rule).
FLAG_EXPOSURE_PATTERN = r"^(off|on|(100|[1-9]?[0-9])%)$"
_PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")


def _exposure_as_written(value: str) -> str:
    """`0%` is off and `100%` is on (on for everyone, even an evaluation with no targeting key)."""
    return {"0%": FlagState.off.value, "100%": FlagState.on.value}.get(value, value)


FlagExposure = Annotated[
    str,
    StringConstraints(pattern=FLAG_EXPOSURE_PATTERN, max_length=4),
    AfterValidator(_exposure_as_written),
]


def flag_percent(exposure: str) -> int | None:
    """The percentage of users an exposure names (`10%` is 10); None for off and on."""
    found = _PERCENT.match(exposure)
    return int(found.group(1)) if found else None


def describe_exposure(exposure: str) -> str:
    """An exposure in words: off, on, or on for 10% of users."""
    percent = flag_percent(exposure)
    return exposure if percent is None else f"on for {percent}% of users"


class Step(Model):
    """One stage of a release: a traffic share held for a wait between a minimum and a maximum."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "!has(self.minWait) || !has(self.maxWait) || duration(self.minWait) <= duration(self.maxWait)",
                "minWait must not be longer than maxWait",
                ".minWait",
            )
        )
    )

    name: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None, description="A label for the stage (shown in status), e.g. canary or partial."
    )
    weight: int = Field(ge=0, le=100, description="Percent of traffic (or replicas) on the new version.")
    min_wait: Duration | None = Field(
        None,
        description="The stage may end this early when every watched metric was healthy for the whole wait. "
        "Counted from when the stage is in place (status.stageReachedAt).",
    )
    max_wait: Duration | None = Field(
        None,
        description="The stage must be decided (promote or roll back) by this time, counted from when it is "
        "in place.",
    )
    flags: FlagExposure | None = Field(
        None,
        description="The state Parachute puts the release's feature flags (spec.featureFlags) in when "
        "this stage begins: off, on (for everyone), or on for a percentage of users such as 10% "
        "(flagd flags only: a fractional targeting rule over the evaluation's targeting key). The stage "
        "counts as reached once the store is seen in that state. Unset: the flags are left as they are.",
    )
    audience: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None,
        description="An audience for this step.",
        json_schema_extra=not_supported("a phased release's stages are spec.phased.audiences, not steps"),
    )


class Waits(Model):
    """Overrides for the waits of the risk plan's stages (real plans wait hours; demos seconds)."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "!has(self.min) || !has(self.max) || duration(self.min) <= duration(self.max)",
                "waits.min must not be longer than waits.max",
                ".min",
            )
        )
    )

    min: Duration | None = Field(None, description="Minimum wait of every stage.")
    max: Duration | None = Field(None, description="Maximum wait of every stage.")
    first_stage_min: Duration | None = Field(None, description="Minimum wait of the first stage.")
    first_stage_max: Duration | None = Field(None, description="Maximum wait of the first stage.")


# ---------------------------------------------------------------------------- traffic


class ReplicaRouting(Model):
    """Weight as the ratio of canary to stable ready pods behind one Service. Needs no mesh."""


class GatewayAPIRouting(Model):
    """Gateway API: Parachute sets the weights of the stable and canary backendRefs of one HTTPRoute
    (a Gateway's, or a mesh's through GAMMA: parentRefs a Service)."""

    http_route: Name = Field(description="The HTTPRoute to drive, in the Rollout's namespace.")
    service: Name = Field(
        description="The Service the route sends to; Parachute makes <service>-stable and <service>-canary "
        "beside it and points the managed rule's backendRefs at them."
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the stable and canary backendRefs. Default: the port the rule's backendRef "
        "names.",
    )
    rule_name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        None,
        description="The route rule to drive, by name. Default: every rule whose backendRef is the Service.",
    )


class IstioRouting(Model):
    """Istio: Parachute sets the route weights of a VirtualService: host-level (two Services), or
    subset-level (two subsets of a DestinationRule)."""

    virtual_service: Name = Field(description="The VirtualService to drive, in the Rollout's namespace.")
    service: Name = Field(
        description="The Service the route sends to. Host-level, Parachute makes <service>-stable and "
        "<service>-canary and routes to those hosts."
    )
    routes: list[Annotated[str, StringConstraints(max_length=253)]] | None = Field(
        None,
        max_length=16,
        description="Names of the http routes to drive. Default: every http route with the Service as "
        "its destination.",
    )
    destination_rule: LocalObjectRef | None = Field(
        None,
        description="Subset-level routing: the DestinationRule for the Service's host. Parachute keeps its "
        "subsets stable (the stable pod-template-hash) and canary (the canary's pods) and routes to them; "
        "its other subsets and policies are left alone.",
    )


class NginxRouting(Model):
    """NGINX Ingress: Parachute manages a canary copy of the Ingress with canary annotations."""

    ingress: Name = Field(description="The stable Ingress; a `<name>-canary` Ingress is created beside it.")
    service: Name = Field(
        description="The Service the Ingress sends to; its paths are pointed at <service>-stable, the "
        "canary copy's at <service>-canary."
    )


# A routed canary's pods outlive its last share of traffic by this much (Argo Rollouts' default).
DEFAULT_SCALE_DOWN_DELAY = timedelta(seconds=30)
MAX_SCALE_DOWN_DELAY = timedelta(hours=1)


class CanaryScale(StrEnum):
    """How big the canary is at a stage that sends it traffic through a router."""

    share = "share"  # enough pods for its share of traffic (at least one)
    full = "full"  # as many pods as the target, before any traffic moves


class TrafficRouting(Model):
    """How a weight becomes traffic: the ratio of canary to stable ready pods behind one Service
    (the default), or the weights of a router: Gateway API, Istio or NGINX."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "[has(self.replicas), has(self.gatewayAPI), has(self.istio), has(self.nginx)]"
                ".filter(x, x).size() <= 1",
                "set at most one of replicas, gatewayAPI, istio, nginx",
            ),
            cel(
                "!has(self.canaryScale) || self.canaryScale == 'share' || has(self.gatewayAPI) "
                "|| has(self.istio) || has(self.nginx)",
                "canaryScale full needs a router (gatewayAPI, istio or nginx): with replica ratio the "
                "canary's size is its share",
                ".canaryScale",
            ),
            cel(
                "!has(self.scaleDownDelay) || has(self.gatewayAPI) || has(self.istio) || has(self.nginx)",
                "scaleDownDelay needs a router (gatewayAPI, istio or nginx): with replica ratio the "
                "canary's pods are its traffic, and nothing drains",
                ".scaleDownDelay",
            ),
            cel(
                "!has(self.scaleDownDelay) || duration(self.scaleDownDelay) <= duration('1h')",
                "scaleDownDelay is at most 1h",
                ".scaleDownDelay",
            ),
        )
    )

    replicas: ReplicaRouting | None = None
    gateway_api: GatewayAPIRouting | None = Field(None, alias="gatewayAPI")
    istio: IstioRouting | None = None
    nginx: NginxRouting | None = None
    canary_scale: CanaryScale = Field(
        CanaryScale.share,
        description="With a router: share sizes the canary for its share of traffic (target replicas x "
        "weight / 100, rounded up, at least one pod); full brings it to the target's size before traffic "
        "moves, so a stage's load never finds it small.",
    )

    scale_down_delay: Duration | None = Field(
        None,
        description="With a router: how long the canary keeps its pods after the route is read back "
        "sending it nothing (at the end of a release, a rollback or an abort), so that requests a proxy "
        "still sends it, or has in flight, find a backend. Default 30s, at most 1h.",
    )

    @model_validator(mode="after")
    def _full_needs_a_router(self) -> Self:
        # The CEL rules above, for objects the API server did not check.
        if self.canary_scale == CanaryScale.full and self.router() is None:
            raise ValueError("canaryScale full needs a router (gatewayAPI, istio or nginx)")
        if self.scale_down_delay is not None:
            if self.router() is None:
                raise ValueError("scaleDownDelay needs a router (gatewayAPI, istio or nginx)")
            if parse_duration(self.scale_down_delay) > MAX_SCALE_DOWN_DELAY:
                raise ValueError("scaleDownDelay is at most 1h")
        return self

    def router(self) -> str | None:
        """The router backend in use (its field's name), or None for replica ratio."""
        for name, value in (("gatewayAPI", self.gateway_api), ("istio", self.istio), ("nginx", self.nginx)):
            if value is not None:
                return name
        return None


class BlueGreen(Model):
    """Blue/green: a full second copy, checked on a preview Service, then an instant switch."""

    active_service: Name = Field(
        description="Service that carries production traffic. Its selector is pinned to the stable pods "
        "and switched to the new copy in one write at promotion."
    )
    preview_service: Name | None = Field(
        None,
        description="Service, made by the operator, that reaches the new copy before the switch. "
        "Default: <activeService>-preview.",
    )
    auto_promote: bool = Field(
        True,
        description="Switch once the preview has been healthy for previewWait. false: wait on preview "
        "until kubectl parachute promote.",
    )
    preview_wait: Duration = Field(
        "5m", description="How long the new copy is watched on preview before an automatic switch."
    )
    scale_down_delay: Duration = Field(
        "30s",
        description="How long the old copy is kept after the switch, watched on active traffic: a "
        "rollback within it switches the active Service back.",
    )


# A header or cookie name: an RFC 7230 token, as Gateway API accepts a header's name.
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$", max_length=256)]
AudienceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)]


class HeaderAudience(Model):
    """Requests that carry a header with an exact value."""

    name: Token = Field(description="The header's name (matched without regard to case).")
    value: Annotated[str, StringConstraints(pattern=r"^[!-~]([ -~]*[!-~])?$", max_length=256)] = Field(
        description="The header's exact value."
    )


class CookieAudience(Model):
    """Requests that carry a cookie with an exact value."""

    name: Token = Field(description="The cookie's name.")
    value: Annotated[str, StringConstraints(pattern=r"^[!#-+\--:<-\[\]-~]+$", max_length=256)] = Field(
        description="The cookie's exact value. With NGINX it must be always (canary-by-cookie routes no "
        "other value)."
    )


class Audience(Model):
    """One stage of a phased release: who gets the new version, and for how long it is watched."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel("!has(self.header) || !has(self.cookie)", "set at most one of header, cookie", ".header"),
            cel(
                "!has(self.minWait) || !has(self.maxWait) || duration(self.minWait) <= duration(self.maxWait)",
                "minWait must not be longer than maxWait",
                ".minWait",
            ),
        )
    )

    name: AudienceName = Field(description="The audience's name, shown as the stage's, e.g. internal, beta.")
    header: HeaderAudience | None = Field(
        None,
        description="The audience is the requests with this header. The router sends them to the new version.",
    )
    cookie: CookieAudience | None = Field(
        None,
        description="The audience is the requests with this cookie. The router sends them to the new version.",
    )
    flag_targeting: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        None,
        description="A flag store's targeting rule that selects this audience.",
        json_schema_extra=not_supported("flag-store audiences are not built yet; use header or cookie"),
    )
    min_wait: Duration | None = Field(
        None,
        description="The stage may end this early when every watched metric was healthy for the whole wait, "
        "counted from when the stage is in place (status.stageReachedAt). Default 0s.",
    )
    max_wait: Duration | None = Field(
        None,
        description="The stage must be decided (promote or roll back) by this time, counted from when it is "
        "in place. Default: minWait.",
    )

    @model_validator(mode="after")
    def _one_match(self) -> Self:
        # The CEL rule above, for objects the API server did not check.
        if self.header is not None and self.cookie is not None:
            raise ValueError("set at most one of header, cookie")
        return self

    def matches(self) -> bool:
        """Whether this is an audience rather than everyone."""
        return self.header is not None or self.cookie is not None


class Phased(Model):
    """Phased: by audience, not share (internal → beta → everyone). Each audience is a stage whose
    requests (by header or cookie) the router sends to the new version while everyone else stays on
    stable; the last entry, with neither, is everyone: the new version promoted as a canary's 100%."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "size(self.audiences) == 0 || (!has(self.audiences[size(self.audiences) - 1].header) && "
                "!has(self.audiences[size(self.audiences) - 1].cookie))",
                "spec.phased.audiences: the last is everyone (no header or cookie): the release ends with "
                "the new version for all",
                ".audiences",
            ),
            cel(
                "self.audiences.filter(a, !has(a.header) && !has(a.cookie)).size() == 1",
                "spec.phased.audiences: every audience but the last names a header or a cookie",
                ".audiences",
            ),
            cel(
                "self.audiences.all(a, self.audiences.filter(b, b.name == a.name).size() == 1)",
                "spec.phased.audiences: names must be unique",
                ".audiences",
            ),
        )
    )

    audiences: list[Audience] = Field(
        min_length=2,
        max_length=10,
        description="The stages in order: audiences by header or cookie, then everyone (the last, with "
        "neither).",
    )

    @model_validator(mode="after")
    def _ends_with_everyone(self) -> Self:
        # The CEL rules above, for objects the API server did not check.
        if self.audiences[-1].matches():
            raise ValueError("the last audience is everyone (no header or cookie)")
        if any(not a.matches() for a in self.audiences[:-1]):
            raise ValueError("every audience but the last names a header or a cookie")
        if len({a.name for a in self.audiences}) != len(self.audiences):
            raise ValueError("audience names must be unique")
        return self


# ---------------------------------------------------------------------------- analysis


class PrometheusAuth(Model):
    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "!has(self.type) || self.type != 'basic' || has(self.usernameSecretRef)",
                "basic auth needs usernameSecretRef",
            )
        )
    )

    type: Literal["bearer", "basic"] = Field("bearer", description="Bearer token, or basic auth.")
    secret_ref: SecretKeyRef = Field(description="The token (bearer) or password (basic).")
    username_secret_ref: SecretKeyRef | None = Field(None, description="Basic auth user name.")


class PrometheusTLS(Model):
    insecure_skip_verify: bool = Field(False, description="Do not verify the server certificate.")
    ca_secret_ref: SecretKeyRef | None = Field(None, description="PEM CA bundle to verify the server with.")


class Prometheus(Model):
    address: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)] = Field(
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090."
    )
    auth: PrometheusAuth | None = None
    tls: PrometheusTLS | None = None
    timeout: Duration = Field(
        "10s",
        description="Per-query timeout, which Prometheus is asked to keep; Parachute waits for the whole exchange, retries included, twice this at most.",
    )


class Direction(StrEnum):
    """Which side of a threshold is bad."""

    above = "above"  # e.g. error rate, latency
    below = "below"  # e.g. success rate


class TemplateKind(StrEnum):
    metric_template = "MetricTemplate"
    cluster_metric_template = "ClusterMetricTemplate"


class TemplateRef(Model):
    kind: TemplateKind = TemplateKind.metric_template
    name: Name


class NoData(StrEnum):
    """What a metric's "no data" means (not "no traffic": that is always Inconclusive)."""

    hold = "hold"  # Inconclusive: never a pass, never a rollback; the release holds and says why
    fail = "fail"  # Failed: for teams that treat missing data as a failure
    ignore = "ignore"  # Successful: the metric does not hold the release when it has no data


class Judge(StrEnum):
    """How a rate built from request counts is judged."""

    compare = "compare"  # canary against stable from both versions' counts, with stated confidence
    threshold = "threshold"  # the canary's rate against fixed lines alone


# The built-ins that are rates of bad requests, which the comparison judge can judge.
RATE_TEMPLATES = ("error-rate", "success-rate")
# The built-in that counts what support tooling reports (`parachute.reports`), not a PromQL query.
USER_REPORTS = "user-reports"
# How long a user report counts. Reports of one issue come in over minutes to tens of minutes
# after users meet it: half an hour gathers such a burst into one count, and forgets a report of
# something long fixed. At most an hour: reports are kept as Events, which the API server keeps
# for an hour by default (kube-apiserver --event-ttl), so a longer window would count reports
# that may already be gone.
DEFAULT_REPORTS_WINDOW = "30m"
MAX_REPORTS_WINDOW = timedelta(hours=1)
Percent = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?%$", max_length=16)]
# Below 100%: no sample proves a canary worse with certainty, so at 100% or more a metric
# would never fail, and the release never roll back for it.
Confidence = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,2}(\.[0-9]+)?%$", max_length=16)]


class Metric(Model):
    """One watched signal: a built-in template, a template resource, or an inline PromQL query."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "[has(self.template), has(self.templateRef), has(self.query)].filter(x, x).size() == 1",
                "set exactly one of template, templateRef, query",
            ),
            cel("!has(self.query) || has(self.name)", "a metric with an inline query needs a name", ".name"),
            cel(
                "(!has(self.judge) && !has(self.confidence)) || (has(self.template) && self.template in ["
                + ", ".join(f"'{t}'" for t in RATE_TEMPLATES)
                + "])",
                "judge and confidence apply to the built-in rates: " + ", ".join(RATE_TEMPLATES),
                ".judge",
            ),
            cel(
                f"!has(self.window) || (has(self.template) && self.template == '{USER_REPORTS}')",
                f"window applies to the built-in {USER_REPORTS}",
                ".window",
            ),
            cel(
                "!has(self.window) || duration(self.window) <= duration('1h')",
                "window is at most 1h (user reports are kept as Events, which the API server keeps for an hour)",
                ".window",
            ),
        )
    )

    name: (
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)] | None
    ) = Field(None, description="Metric name in status; defaults to the template's name.")
    template: (
        Literal[
            "error-rate", "latency-p95", "success-rate", "database-errors", "security-alerts", "user-reports"
        ]
        | None
    ) = Field(
        None,
        description="A built-in template with the playbook's thresholds, querying what "
        "spec.analysis.source exports; user-reports counts what support tooling reports to the "
        "operator (1 report of an issue is a Warning, 10 of the same issue are critical).",
    )
    template_ref: TemplateRef | None = Field(None, description="A MetricTemplate or ClusterMetricTemplate.")
    query: Annotated[str, StringConstraints(min_length=1, max_length=8192)] | None = Field(
        None,
        description="PromQL, sent once for the version it judges and, with compareWithStable, once for "
        "stable. Variables: {{namespace}}, {{target}}, {{window}}; {{pods}}, {{workload}} and "
        "{{service}} of the version it is sent for; {{canary_pods}} and {{stable_pods}} always.",
    )
    direction: Direction | None = Field(
        None, description="Which side of the thresholds is bad. Default: above."
    )
    warning: Threshold | None = Field(
        None, description="Past this the release is watched closely but proceeds."
    )
    critical: Threshold | None = Field(
        None,
        description="Past this (sustained) the release is rolled back. With judge compare: the floor "
        "the canary's rate must be above, as well as worse than stable, to count as critical.",
    )
    sustain_for: Duration | None = Field(
        None, description="How long a critical value must hold at every evaluation before it triggers."
    )
    compare_with_stable: bool | None = Field(
        None, description="Judge the canary relative to stable where both have traffic."
    )
    tolerance: Percent | None = Field(
        None, description="With compareWithStable: allowed excess over stable, e.g. 10%."
    )
    rollback_at: Threshold | None = Field(
        None, description="Past this the release is rolled back at once, without waiting for sustainFor."
    )
    no_data_is_zero: bool | None = Field(
        None, description="An empty result means zero (counts such as firing alerts), not Inconclusive."
    )
    on_no_data: NoData | None = Field(
        None,
        description="hold (Inconclusive), fail (Failed) or ignore (Successful) when the query has no "
        "data while there is traffic. Default: hold. Too little traffic is always Inconclusive.",
    )
    judge: Judge | None = Field(
        None,
        description="error-rate and success-rate: compare (canary against stable from both versions' "
        "request and error counts, failing only when the canary is worse with `confidence` and past "
        "its critical floor) or threshold (fixed lines alone). Default: compare.",
    )
    confidence: Confidence | None = Field(
        None,
        description="With judge compare: how sure the canary must be worse than stable (or than a "
        "threshold, without stable traffic) before it counts, below 100%. Default: 95%.",
    )
    window: Duration | None = Field(
        None,
        description=f"user-reports: how long a report counts. Default {DEFAULT_REPORTS_WINDOW}, at most 1h. "
        "A release counts only the reports made since it started, and a rollback those made since its "
        "level's change was in place.",
    )

    @model_validator(mode="after")
    def _window_of_user_reports(self) -> Self:
        # The CEL rules above, for objects the API server did not check.
        if self.window is not None:
            if self.template != USER_REPORTS:
                raise ValueError(f"window applies to the built-in {USER_REPORTS}")
            if parse_duration(self.window) > MAX_REPORTS_WINDOW:
                raise ValueError("window is at most 1h")
        return self


class MetricTemplateSpec(Model):
    """A reusable metric: the PromQL and the thresholds, referenced from Rollouts by name."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "has(self.warning) || has(self.critical) || has(self.rollbackAt)",
                "set at least one threshold: warning, critical or rollbackAt",
            )
        )
    )

    query: Annotated[str, StringConstraints(min_length=1, max_length=8192)] = Field(
        description="PromQL. Variables: {{namespace}}, {{target}}, {{window}}; {{pods}}, {{workload}} "
        "and {{service}} of the version it is sent for; {{canary_pods}} and {{stable_pods}} always."
    )
    direction: Direction = Field(Direction.above, description="Which side of the thresholds is bad.")
    warning: Threshold | None = None
    critical: Threshold | None = None
    sustain_for: Duration | None = None
    rollback_at: Threshold | None = None
    compare_with_stable: bool = False
    tolerance: Percent | None = None
    no_data_is_zero: bool = False
    on_no_data: NoData = Field(
        NoData.hold, description="hold, fail or ignore when the query has no data while there is traffic."
    )
    unit: Literal["ratio", "seconds", "perMinute", "count", "number"] = Field(
        "number", description="How a bare threshold number is read and how values are shown."
    )


class MetricTemplate(Model):
    """A namespaced metric template (`kind: MetricTemplate`)."""

    api_version: Literal["parachute.dev/v1alpha1"] = "parachute.dev/v1alpha1"
    kind: Literal["MetricTemplate", "ClusterMetricTemplate"] = "MetricTemplate"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MetricTemplateSpec


class MetricsSource(StrEnum):
    """Whose metrics the built-in templates read: the application's own, or a data plane's."""

    app = "app"  # the app's request counter and latency histogram, per pod
    istio = "istio"  # istio_requests_total, reported by the destination's sidecar
    nginx = "nginx"  # nginx_ingress_controller_requests, with its canary label
    envoy_gateway = "envoyGateway"  # Envoy's per-backend cluster stats
    linkerd = "linkerd"  # the proxies' response_total, per pod


LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=128)]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", max_length=256)]


class MetricLabels(Model):
    """The label names your scrape configuration gives every series of a pod."""

    namespace: LabelName = Field("namespace", description="The namespace's label (NGINX: the Ingress's).")
    pod: LabelName = Field("pod", description="The pod name's label.")


class AppMetrics(Model):
    """What the application itself exports, for the built-ins with source app."""

    requests: MetricName = Field(
        "http_requests_total", description="Counter of requests served, labelled with the status code."
    )
    status_label: LabelName = Field(
        "code", description="The label holding the HTTP status code (code, status, response_code ...)."
    )
    latency: MetricName = Field(
        "http_request_duration_seconds",
        description="Histogram of request durations in seconds (its _bucket series are read).",
    )


class AnalysisLimits(Model):
    """How many outcomes of each kind a metric may have before the stage is decided."""

    failure: int = Field(0, ge=0, le=100, description="Failed measurements tolerated before rolling back.")
    inconclusive: int = Field(
        3, ge=0, le=100, description="Inconclusive measurements in a row before the release holds."
    )
    consecutive_errors: int = Field(4, ge=0, le=100, description="Consecutive query errors before it holds.")


class Analysis(Model):
    # A round reads Prometheus, which holds nothing newer than its last scrape (1 s at the
    # shortest): a shorter interval only repeats the same answer, as fast as the operator can ask.
    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                f"!has(self.interval) || !self.interval.matches(r'{DURATION_PATTERN}') || duration(self.interval) >= duration('1s')",
                "interval must be at least 1s: Prometheus has nothing newer between its scrapes",
                ".interval",
            )
        )
    )

    prometheus: Prometheus
    interval: Duration = Field("1m", description="How often every metric is evaluated (at least 1s).")
    metrics: list[Metric] | None = Field(
        None, max_length=32, description="Watched metrics; default: the built-ins the risk plan watches."
    )
    min_requests: int | None = Field(
        None,
        ge=0,
        description="Fewer requests than this in the window makes a result Inconclusive. Default: 10.",
    )
    source: MetricsSource | None = Field(
        None,
        description="Whose metrics the built-ins read: app, istio, nginx, envoyGateway or linkerd. "
        "Default: from spec.trafficRouting (gatewayAPI: envoyGateway, istio, nginx), else app.",
    )
    labels: MetricLabels | None = Field(None, description="Label names of the pods' series.")
    app: AppMetrics | None = Field(None, description="The application's own metric and label names.")
    limits: AnalysisLimits | None = None


# ---------------------------------------------------------------------------- recovery


class FlagFormat(StrEnum):
    plain = "plain"  # ConfigMap data: KEY: "true" | "false"
    flagd = "flagd"  # ConfigMap key holding OpenFeature flagd JSON


# A container port: its number, or its name (an IANA service name, as Kubernetes names ports).
PORT_PATTERN = r"^([1-9][0-9]{0,4}|[a-z0-9]*[a-z]([-a-z0-9]*[a-z0-9])?)$"
PortRef = Annotated[
    str,
    StringConstraints(pattern=PORT_PATTERN, max_length=15),
    BeforeValidator(_number_as_text),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
# A dotted path into a JSON document: `features.new-checkout`; a number indexes a list.
JSON_PATH_PATTERN = r"^\.?[^.\s]+(\.[^.\s]+)*$"


class FlagCheck(Model):
    """Asking the app whether it serves the flags as the store says: the flag level counts as in
    place only once every pod serving the rolled-back revision reports `expect` at `jsonPath`."""

    path: Annotated[str, StringConstraints(pattern=r"^/[^\s]*$", max_length=2048)] = Field(
        description="The HTTP path each pod answers with JSON, e.g. /health."
    )
    json_path: Annotated[str, StringConstraints(pattern=JSON_PATH_PATTERN, max_length=1024)] = Field(
        description="Where the flag is in the answer: a dotted path such as features.new-checkout "
        "(a leading dot is allowed; a number indexes a list)."
    )
    expect: Any = Field(
        False,
        description="What the app reports there while the flags are off: any JSON value, compared exactly "
        '(false is not "false").',
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    port: PortRef | None = Field(
        None,
        description="The pods' port, by number or container port name. Default: the first port the "
        "pod's first container declares.",
    )
    grace: Duration = Field(
        "15s",
        description="How long the app may still report otherwise once the store shows the flags off "
        "(and restarted pods are ready); then the level escalates at once, with what the app said.",
    )

    @field_validator("port")
    @classmethod
    def _a_port(cls, value: str | None) -> str | None:
        if value is not None and value.isdigit() and not 0 < int(value) < 65536:
            raise ValueError(f"port {value} is not between 1 and 65535")
        return value


_PERCENT_NEEDS_FLAGD = (
    "a percentage of users needs flagd flags (featureFlags.format flagd, or featureFlagRef); "
    "a plain ConfigMap holds only true or false"
)


class FeatureFlags(Model):
    """Where the release's flags live, and which flags gate the new code (rollback level 1)."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "has(self.configMapRef) != has(self.featureFlagRef)",
                "set exactly one of configMapRef, featureFlagRef",
            )
        )
    )

    config_map_ref: LocalObjectRef | None = Field(None, description="ConfigMap holding the flags.")
    feature_flag_ref: LocalObjectRef | None = Field(
        None, description="OpenFeature FeatureFlag (core.openfeature.dev) holding the flags."
    )
    format: FlagFormat = Field(FlagFormat.plain, description="plain KEY=true|false data, or flagd JSON.")
    key: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        None, description="flagd: the ConfigMap key holding the JSON; default: the only key ending in .json."
    )
    flags: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = Field(
        min_length=1, max_length=64, description="Flag names that gate the new code."
    )
    reloads: bool = Field(True, description="Pods re-read the flags without a restart.")
    verify: FlagCheck | None = Field(
        None,
        description="Ask the app, not only the store: the flag level is in place once the pods serving the "
        "release say the flags are off.",
    )

    def holds_percentage(self) -> bool:
        """Whether the store can serve the new variant to a share of users: flagd definitions can
        (a `fractional` rule), a plain ConfigMap's `true` or `false` cannot."""
        return self.feature_flag_ref is not None or self.format == FlagFormat.flagd


class ConfigRef(Model):
    """A ConfigMap whose content belongs to the release and is snapshot before it starts."""

    name: Name


class RecoveryLevel(StrEnum):
    flag = "flag"
    config = "config"
    code = "code"


class RecoveryBudgets(Model):
    flag: Duration = Field("5m", description="Time for the flag level to bring health back.")
    config: Duration = Field("10m", description="Time for the config level to bring health back.")
    code: Duration = Field("15m", description="Time for the code level to bring health back.")


class Recovery(Model):
    levels: list[RecoveryLevel] | None = Field(
        None,
        max_length=3,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Levels to use, fastest first; default: every level the Rollout has the means for "
        "(flag needs featureFlags, config needs configRefs). Code is always the last resort.",
    )
    budgets: RecoveryBudgets | None = None
    restore_template: bool = Field(
        False,
        description="Code level also restores the target's pod template to the stable revision. "
        "Leave off when GitOps owns the Deployment (status says which revision to revert in git).",
    )
    watch_after_rollback: Duration = Field("24h", description="How long to keep watching after a rollback.")
    postmortem_due: Duration = Field("48h", description="When the postmortem is due after a rollback.")
    objective: Duration = Field("5m", description="Recovery-time objective; longer recoveries are reported.")


# ---------------------------------------------------------------------------- policy

Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", max_length=5)]


class WeeklyRange(Model):
    model_config = ConfigDict(
        json_schema_extra=crd_extras(cel("self.start != self.end", "an empty range never opens", ".end"))
    )

    days: list[Weekday] = Field(
        min_length=1, max_length=7, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    start: ClockTime = Field(description="HH:MM, local to the time zone.")
    end: ClockTime = Field(description="HH:MM; before start means it runs past midnight.")


class Freeze(Model):
    start: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="RFC 3339 date-time.", json_schema_extra={"format": "date-time"}
    )
    end: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="RFC 3339 date-time.", json_schema_extra={"format": "date-time"}
    )
    reason: Annotated[str, StringConstraints(max_length=1024)] | None = None


class Holidays(Model):
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = Field(description="ISO 3166-1 code.")
    subdivision: Annotated[str, StringConstraints(max_length=16)] | None = None
    day_before: bool = Field(True, description="Also closed the day before a holiday.")


class PeakTraffic(Model):
    query: Annotated[str, StringConstraints(min_length=1, max_length=8192)]
    threshold: Threshold = Field(description="Above this the release waits.")
    recheck: Duration = Field("5m", description="How often a release held by peak traffic looks again.")


class Window(Model):
    """When a release may progress. Rollbacks are never held by it."""

    time_zone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        "UTC", description="IANA time zone, e.g. Europe/Berlin."
    )
    allow: list[WeeklyRange] | None = Field(
        None, max_length=32, description="Open ranges; none means always."
    )
    deny: list[WeeklyRange] | None = Field(
        None, max_length=32, description="Closed ranges, winning over allow."
    )
    freezes: list[Freeze] | None = Field(None, max_length=64)
    holidays: Holidays | None = None
    peak_traffic: PeakTraffic | None = None


class AnnotationGate(Model):
    key: Annotated[str, StringConstraints(min_length=1, max_length=317)]
    value: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        None, description="Required value; any value when unset."
    )


class ChangeTicketGate(Model):
    """Met when the release carries a change ticket (spec.changeTicket or the change-ticket annotation)."""


class ConditionGate(Model):
    api_version: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    kind: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    name: Name
    type: Annotated[str, StringConstraints(min_length=1, max_length=316)]
    status: Literal["True", "False", "Unknown"] = "True"


class HTTPGate(Model):
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)]
    timeout: Duration = "5s"


class PrometheusGate(Model):
    query: Annotated[str, StringConstraints(min_length=1, max_length=8192)]
    min: float | None = None
    max: float | None = None


class Gate(Model):
    """A named check that must hold before the first stage."""

    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "[has(self.annotation), has(self.condition), has(self.http), has(self.prometheus),"
                " has(self.changeTicket)].filter(x, x).size() == 1",
                "set exactly one of annotation, condition, http, prometheus, changeTicket",
            )
        )
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    annotation: AnnotationGate | None = None
    condition: ConditionGate | None = None
    http: HTTPGate | None = None
    prometheus: PrometheusGate | None = None
    change_ticket: ChangeTicketGate | None = Field(
        None,
        description="Met when the release carries a change ticket (spec.changeTicket or the "
        "parachute.dev/change-ticket annotation on the Deployment or the Rollout).",
    )


class Checklist(Model):
    preset: Literal["playbook", "none"] | None = Field(
        None, description="playbook: the playbook's gates. Default: playbook for high risk, none otherwise."
    )
    gates: list[Gate] | None = Field(None, max_length=32)


class ReleasePolicySpec(Model):
    """Windows and gates a platform team sets once and Rollouts reference (or get by default)."""

    window: Window | None = None
    checklist: Checklist | None = None


class ReleasePolicy(Model):
    """A cluster-wide release policy (`kind: ReleasePolicy`)."""

    api_version: Literal["parachute.dev/v1alpha1"] = "parachute.dev/v1alpha1"
    kind: Literal["ReleasePolicy"] = "ReleasePolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ReleasePolicySpec


# ---------------------------------------------------------------------------- notifications


class SlackNotification(Model):
    webhook_secret_ref: SecretKeyRef = Field(description="Secret key holding the incoming-webhook URL.")
    channel: Annotated[str, StringConstraints(max_length=80)] | None = None


class CloudEventsNotification(Model):
    url_secret_ref: SecretKeyRef = Field(description="Secret key holding the receiver URL.")
    token_secret_ref: SecretKeyRef | None = Field(None, description="Bearer token for the receiver.")


class ComponentImpact(StrEnum):
    """Statuspage's component states a rollback may set."""

    degraded_performance = "degraded_performance"
    partial_outage = "partial_outage"
    major_outage = "major_outage"


STATUSPAGE_API = "https://api.statuspage.io"


class StatusPageNotification(Model):
    """An incident on a status page speaking Atlassian Statuspage's REST API, opened on the
    rollback of a customer-facing Rollout (spec.customerFacing) and resolved when the watch ends."""

    page_id_secret_ref: SecretKeyRef = Field(description="Secret key holding the page id.")
    token_secret_ref: SecretKeyRef = Field(description="Secret key holding the API token (sent as OAuth).")
    component_ids: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(
        None, max_length=16, description="Components the rollback affects: set to `impact` while it lasts."
    )
    impact: ComponentImpact = Field(
        ComponentImpact.degraded_performance, description="The components' state while rolling back."
    )
    api_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)] = Field(
        STATUSPAGE_API, alias="apiURL", description="Base URL of the Statuspage-compatible API."
    )


ChangeTicket = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class Notification(Model):
    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            cel(
                "[has(self.slack), has(self.cloudEvents), has(self.statusPage)].filter(x, x).size() == 1",
                "set exactly one of slack, cloudEvents, statusPage",
            )
        )
    )

    slack: SlackNotification | None = None
    cloud_events: CloudEventsNotification | None = None
    status_page: StatusPageNotification | None = None


# ---------------------------------------------------------------------------- spec


_STRATEGY_REFUSED = "not a strategy Parachute acts on"
_ROUTERS = (
    "has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.istio) || has(self.trafficRouting.nginx)"
)


class RolloutSpec(Model):
    model_config = ConfigDict(
        json_schema_extra=crd_extras(
            # The other values stay in the enum, so accepting one is lifting this rule.
            cel(
                "!has(self.strategy) || self.strategy in ["
                + ", ".join(f"'{s.value}'" for s in SUPPORTED_STRATEGIES)
                + "]",
                f"spec.strategy: {_STRATEGY_REFUSED}",
                ".strategy",
            ),
            cel(
                "(has(self.strategy) && self.strategy == 'blueGreen') == has(self.blueGreen)",
                "spec.blueGreen: set it exactly when spec.strategy is blueGreen (the Services it switches)",
                ".blueGreen",
            ),
            cel(
                "!has(self.blueGreen) || (!has(self.steps) && !has(self.waits))",
                "spec.blueGreen has two stages, preview and active, timed by blueGreen.previewWait and "
                "blueGreen.scaleDownDelay: spec.steps and spec.waits are for canary",
                ".blueGreen",
            ),
            cel(
                "!has(self.blueGreen) || !has(self.trafficRouting) || "
                "(!has(self.trafficRouting.gatewayAPI) && !has(self.trafficRouting.istio) && "
                "!has(self.trafficRouting.nginx))",
                "spec.blueGreen switches the active Service's selector; switching a router's route is "
                "not supported yet",
                ".blueGreen",
            ),
            cel(
                "(has(self.strategy) && self.strategy == 'phased') == has(self.phased)",
                "spec.phased: set it exactly when spec.strategy is phased (the audiences it releases to)",
                ".phased",
            ),
            cel(
                f"!has(self.phased) || (has(self.trafficRouting) && ({_ROUTERS}))",
                "spec.trafficRouting: a phased release needs a router (gatewayAPI, istio or nginx) to send "
                "an audience's requests to the new version",
                ".trafficRouting",
            ),
            cel(
                "!has(self.phased) || (!has(self.steps) && !has(self.waits) && !has(self.watchAfterRelease))",
                "spec.phased: its stages are its audiences, each with its own minWait and maxWait: "
                "spec.steps, spec.waits and spec.watchAfterRelease are for canary",
                ".phased",
            ),
            cel(
                "!has(self.phased) || !has(self.trafficRouting) || !has(self.trafficRouting.nginx) || "
                "self.phased.audiences.all(a, !has(a.cookie) || a.cookie.value == 'always')",
                "spec.phased.audiences: with nginx a cookie audience's value is always (canary-by-cookie "
                "routes no other value)",
                ".phased",
            ),
            # Equal weights are fine: 100, 100 is the flag-gated plan (flags off, then on).
            cel(
                "!has(self.steps) || self.steps.map(s, s.weight).isSorted()",
                "spec.steps: weights must not decrease (e.g. 10, 50, 100)",
                ".steps",
            ),
            cel(
                "!has(self.steps) || !has(self.waits)",
                "spec.waits overrides the risk plan's waits and is ignored with spec.steps: "
                "give each step its own minWait and maxWait",
                ".waits",
            ),
            cel(
                "!has(self.steps) || !has(self.watchAfterRelease)",
                "spec.watchAfterRelease sets the risk plan's closing wait and is ignored with spec.steps: "
                "give the last step its own minWait and maxWait",
                ".watchAfterRelease",
            ),
            cel(
                "!has(self.steps) || has(self.featureFlags) || self.steps.all(s, !has(s.flags))",
                "steps[].flags needs spec.featureFlags: the flags a stage switches",
                ".steps",
            ),
            cel(
                "!has(self.steps) || !has(self.featureFlags) || has(self.featureFlags.featureFlagRef) || "
                "(has(self.featureFlags.format) && self.featureFlags.format == 'flagd') || "
                "self.steps.all(s, !has(s.flags) || s.flags in ['off', 'on', '0%', '100%'])",
                f"spec.steps[].flags: {_PERCENT_NEEDS_FLAGD}",
                ".steps",
            ),
            cel(
                "!has(self.notifications) || self.notifications.filter(n, has(n.statusPage)).size() <= 1",
                "spec.notifications: at most one statusPage target (its incident id is kept in the incident record)",
                ".notifications",
            ),
        )
    )

    target_ref: TargetRef = Field(description="The Deployment being released.")
    risk: Risk | None = Field(
        None,
        description="zero, low, medium or high: picks the stage plan. Default: from the change "
        "annotation a pipeline sets, else medium.",
    )
    strategy: Strategy = Field(
        Strategy.canary,
        description="canary: the new version takes a share of the traffic per stage. blueGreen: a full "
        "copy behind a preview Service, then the active Service switched to it (spec.blueGreen). phased: "
        "the new version goes to one audience after another, by header or cookie, then to everyone "
        "(spec.phased).",
    )
    steps: list[Step] | None = Field(
        None, min_length=1, max_length=50, description="Explicit stages, replacing the risk plan's."
    )
    waits: Waits | None = Field(None, description="Override the waits of the risk plan's stages.")
    watch_after_release: Duration | None = Field(
        None,
        description="Watching after 100% before the release is closed. Default: 24h for medium and high.",
    )
    progress_deadline: Duration = Field(
        "10m", description="How long the new version may take to become ready."
    )
    traffic_routing: TrafficRouting | None = None
    blue_green: BlueGreen | None = Field(
        None, description="With strategy blueGreen: the active and preview Services, and the switch's timing."
    )
    phased: Phased | None = Field(
        None,
        description="With strategy phased: the audiences the new version goes to, one stage each, then "
        "everyone. Needs a router (spec.trafficRouting).",
    )
    analysis: Analysis | None = None
    feature_flags: FeatureFlags | None = None
    config_refs: list[ConfigRef] | None = Field(None, max_length=20)
    recovery: Recovery | None = None
    window: Window | None = None
    policy_ref: LocalObjectRef | None = Field(
        None, description="A cluster-wide ReleasePolicy (windows and gates)."
    )
    checklist: Checklist | None = None
    hotfix: bool = Field(False, description="A security hotfix: ignores windows (and says so in an Event).")
    paused: bool = Field(False, description="Hold the release where it is. Rollbacks still happen.")
    notifications: list[Notification] | None = Field(None, max_length=16)
    customer_facing: bool = Field(
        False,
        description="Users see this service: a rollback opens an incident on the statusPage target "
        "(spec.notifications) and the postmortem draft counts it as customer impact. Without it the "
        "statusPage target is not used.",
    )
    change_ticket: ChangeTicket | None = Field(
        None,
        description="The change ticket this release carries (else the parachute.dev/change-ticket annotation "
        "on the Deployment or the Rollout): kept in status.release and the incident, named in Events, "
        "notifications and the postmortem draft.",
    )

    @field_validator("strategy")
    @classmethod
    def _refuse_strategies_not_supported(cls, strategy: Strategy) -> Strategy:
        # The CEL rule above, for objects the API server did not check (see NOT_SUPPORTED).
        if strategy not in SUPPORTED_STRATEGIES:
            raise ValueError(_STRATEGY_REFUSED)
        return strategy

    @model_validator(mode="after")
    def _percentages_need_flagd(self) -> Self:
        # The CEL rule above, for objects the API server did not check (see NOT_SUPPORTED).
        flags = self.feature_flags
        if flags is None or flags.holds_percentage():
            return self
        for index, step in enumerate(self.steps or []):
            if step.flags is not None and flag_percent(step.flags) is not None:
                raise ValueError(f"spec.steps[{index}].flags: {step.flags}: {_PERCENT_NEEDS_FLAGD}")
        return self

    @model_validator(mode="after")
    def _blue_green_as_written(self) -> Self:
        # The CEL rules above, for objects the API server did not check (see NOT_SUPPORTED).
        if (self.strategy == Strategy.blue_green) != (self.blue_green is not None):
            raise ValueError("spec.blueGreen: set it exactly when spec.strategy is blueGreen")
        if self.blue_green is not None and (self.steps or self.waits):
            raise ValueError("spec.blueGreen: spec.steps and spec.waits are for canary")
        if self.blue_green is not None and self.traffic_routing and self.traffic_routing.router():
            raise ValueError("spec.blueGreen: switching a router's route is not supported yet")
        return self

    @model_validator(mode="after")
    def _phased_as_written(self) -> Self:
        # The CEL rules above, for objects the API server did not check.
        if (self.strategy == Strategy.phased) != (self.phased is not None):
            raise ValueError("spec.phased: set it exactly when spec.strategy is phased")
        if self.phased is None:
            return self
        router = self.traffic_routing.router() if self.traffic_routing is not None else None
        if router is None:
            raise ValueError(
                "spec.trafficRouting: a phased release needs a router (gatewayAPI, istio or nginx)"
            )
        if self.steps or self.waits or self.watch_after_release:
            raise ValueError("spec.phased: spec.steps, spec.waits and spec.watchAfterRelease are for canary")
        if router == "nginx" and any(a.cookie and a.cookie.value != "always" for a in self.phased.audiences):
            raise ValueError("spec.phased.audiences: with nginx a cookie audience's value is always")
        return self


# ---------------------------------------------------------------------------- status

# A duration in status is Parachute's, copied from a spec already checked. Its pattern is kept;
# the bound is not: the API server refuses a CEL rule in a list of no bounded length for its cost.
WrittenDuration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]


class Phase(StrEnum):
    pending = "Pending"  # seen, not yet started
    waiting = "Waiting"  # held by a window or a gate, resumes by itself
    progressing = "Progressing"
    paused = "Paused"
    rolling_back = "RollingBack"
    rolled_back = "RolledBack"
    aborted = "Aborted"  # stopped by a person (or a deadline); stable serves everything
    healthy = "Healthy"  # fully promoted and closed, or nothing to release
    invalid = "Invalid"


class Verdict(StrEnum):
    successful = "Successful"
    warning = "Warning"  # in the warning band: watch, don't roll back
    failed = "Failed"
    inconclusive = "Inconclusive"  # no data, no traffic, too few requests
    error = "Error"  # could not measure: Prometheus down, bad query


class ConditionStatus(StrEnum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: Annotated[str, StringConstraints(max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    last_transition_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    observed_generation: int | None = None


class PlannedStage(Model):
    name: str | None = None
    weight: int = Field(ge=0, le=100)
    min_wait: WrittenDuration | None = None
    max_wait: WrittenDuration | None = None
    flags: FlagExposure | None = Field(
        None,
        description="The flags' state this stage puts in place (off, on, or a percentage of users); "
        "unset: left as they are.",
    )
    audience: str | None = Field(
        None,
        description="Phased: who this stage sends to the new version (e.g. header x-employee: true), "
        "everyone else staying on stable; unset: a share of everyone, as weight says.",
    )


class Comparison(Model):
    """The counts a rate was judged on, canary against stable, in the same window."""

    window: str = Field(description="The window the counts cover, e.g. 7m30s (the stage so far).")
    requests: float = Field(description="Requests the judged version served in the window.")
    errors: float = Field(description="Of those, the bad ones (5xx).")
    stable_requests: float | None = Field(None, description="Requests stable served in the same window.")
    stable_errors: float | None = None
    confidence: float | None = Field(
        None,
        description="How sure it is that the canary is worse (0 to 1), over every look at the stage so "
        "far; compared with the metric's confidence.",
    )


class MetricStatus(Model):
    name: str
    healthy_since: str | None = Field(
        None, json_schema_extra={"format": "date-time"}, description="Successful at every evaluation since."
    )
    value: float | None = Field(None, description="Last measured value; absent when there was no data.")
    stable_value: float | None = None
    verdict: Verdict | None = None
    message: str | None = None
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    consecutive_inconclusive: int = 0
    last_evaluated_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    breached_since: str | None = Field(None, json_schema_extra={"format": "date-time"})
    immediate: bool | None = Field(None, description="Failed on rollbackAt: an immediate trigger.")
    requests: float | None = Field(None, description="Requests the judged version served in the window.")
    comparison: Comparison | None = Field(None, description="With judge compare: the counts judged.")
    fast_lane: bool | None = Field(
        None,
        description="Judged Failed by the fast lane between analysis rounds, on the sample shown here "
        "(value, comparison, message); absent when a routine round judged it.",
    )


class UserReportCount(Model):
    """The reports of one issue key in the window."""

    key: str
    count: int = Field(ge=0)
    first_at: str = Field(
        description="The first report of it counted: it leaves the window first.",
        json_schema_extra={"format": "date-time"},
    )
    last_at: str = Field(json_schema_extra={"format": "date-time"})


class UserReportsStatus(Model):
    """What support tooling reported about this Rollout, counted per issue key."""

    window: str = Field(description="How long a report counts (the user-reports metric's window).")
    since: str = Field(
        description="Reports are counted from here: the window's start, or the release's start, or "
        "the moment the rollback's change was in place, whichever is latest.",
        json_schema_extra={"format": "date-time"},
    )
    counted_at: str = Field(json_schema_extra={"format": "date-time"})
    total: int = Field(0, ge=0, description="Reports counted, of every key.")
    keys: list[UserReportCount] | None = Field(
        None, max_length=10, description="The most reported keys first (ten at most)."
    )


class FlagCheckRecord(Model):
    """What the app said at the flag level when asked (spec.featureFlags.verify)."""

    said: str | None = Field(None, description="Its last answer, in words: which pod, what it reports.")
    mismatch_since: str | None = Field(
        None,
        description="When it was first seen reporting otherwise with the store off: the level escalates "
        "once the grace has passed since.",
        json_schema_extra={"format": "date-time"},
    )


class LevelRecord(Model):
    """One rollback level of an incident: when it started, what it changed, when health returned."""

    level: RecoveryLevel
    started_at: str = Field(json_schema_extra={"format": "date-time"})
    changed: list[str] | None = Field(None, description="What this level changed.")
    applied_at: str | None = Field(
        None,
        description="When its change was in place (pods restarted, if they had to be).",
        json_schema_extra={"format": "date-time"},
    )
    healthy_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    traffic_back_at: str | None = Field(
        None,
        description="When all traffic was seen back on stable: the route read back at 0% for the "
        "canary, or (replica ratio) no canary pod left ready.",
        json_schema_extra={"format": "date-time"},
    )
    budget: WrittenDuration | None = Field(None, description="How long it had to bring health back.")
    seconds: float | None = Field(None, description="From its start to health, or to the next level.")
    flag_check: FlagCheckRecord | None = Field(
        None, description="The flag level with spec.featureFlags.verify: what the app said."
    )


class StatusPageRecord(Model):
    """What the status page was told of one incident; kept here so a restarted operator goes on
    updating the same status page incident."""

    incident_id: str | None = Field(None, description="The status page's id of the incident, once opened.")
    status: str | None = Field(
        None, description="The status last delivered: identified, investigating, monitoring or resolved."
    )
    delivered_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    failures: int = Field(0, description="Deliveries failed in a row (each after its own retries).")
    last_error: str | None = Field(None, description="Why the last delivery failed (secrets masked).")
    retry_at: str | None = Field(
        None, description="When delivery is tried again.", json_schema_extra={"format": "date-time"}
    )


class OutboxEntry(Model):
    """An Event or a notification that a status change owes, recorded by the write that made the
    change and removed once delivered: a restarted operator sends what was not sent, once."""

    id: str = Field(description="Unique in the Rollout: with its uid, the Event's name; the CloudEvent's id.")
    reason: str = Field(description="The Event's reason, or the notification's (e.g. RollingBack).")
    message: str
    type: Literal["Normal", "Warning"] | None = Field(
        None, description="A Kubernetes Event of this type; absent for a notification."
    )
    target: int | None = Field(
        None, ge=0, description="A notification to spec.notifications[target]; absent for an Event."
    )
    incident: str | None = Field(None, description="The incident a notification describes (its id).")
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    attempts: int = Field(0, description="Deliveries failed so far (each after its own retries).")
    last_error: str | None = Field(None, description="Why the last delivery failed (secrets masked).")
    retry_at: str | None = Field(
        None, description="When delivery is tried again.", json_schema_extra={"format": "date-time"}
    )


class Incident(Model):
    """A rollback: what, when, why, which levels, and how long recovery took."""

    id: str
    revision: str | None = Field(None, description="The revision rolled back; blocked until resolved.")
    stable_revision: str | None = None
    reason: str
    started_at: str = Field(
        description="The first critical verdict.", json_schema_extra={"format": "date-time"}
    )
    immediate: bool = Field(False, description="An immediate trigger: every level has the shortest budget.")
    new_code_in_target: bool = Field(
        False,
        description="Ready pods of the new revision were seen serving from the target itself when the "
        "incident opened (counted from its ReplicaSets).",
    )
    level: RecoveryLevel | None = None
    levels: list[LevelRecord] | None = None
    recovered_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    recovery_seconds: float | None = Field(None, description="First critical verdict to health restored.")
    objective_met: bool | None = Field(
        None, description="Whether recovery took no longer than the objective."
    )
    postmortem_due_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    watch_until: str | None = Field(None, json_schema_extra={"format": "date-time"})
    revert_in_git: str | None = Field(None, description="For GitOps: the revision to revert to in git.")
    regressed_at: str | None = Field(
        None,
        description="Health failed again while watching after the rollback.",
        json_schema_extra={"format": "date-time"},
    )
    regression: str | None = Field(None, description="What failed while watching after the rollback.")
    resolved: bool = Field(False, description=f"Root cause marked fixed ({GROUP}/resolved).")
    change_ticket: str | None = Field(None, description="The change ticket of the release rolled back.")
    status_page: StatusPageRecord | None = Field(
        None, description="The status page's incident for this rollback, and how delivering to it went."
    )


class GateStatus(Model):
    name: str
    met: bool
    message: str | None = None
    checked_at: str | None = Field(None, json_schema_extra={"format": "date-time"})


class WindowStatus(Model):
    policy: str | None = Field(None, description="Which policy applied (none: not held by time).")
    open: bool = True
    reason: str | None = None
    next_open_at: str | None = Field(None, json_schema_extra={"format": "date-time"})


class TrafficStatus(Model):
    """The canary's share of traffic with a router: what the plan wants now, and what the route holds."""

    router: str = Field(description="The router in use: gatewayAPI, istio or nginx.")
    desired: int = Field(ge=0, le=100, description="The canary's share the route should hold now.")
    applied: int | None = Field(
        None,
        ge=0,
        le=100,
        description="The canary's share the route holds, as read back; absent when unknown.",
    )
    verified: bool = Field(False, description="applied was read back from the router's objects.")
    desired_audience: str | None = Field(
        None, description="Phased: the audience whose requests the route should send to the new version."
    )
    applied_audience: str | None = Field(
        None,
        description="Phased: the audience whose requests the route sends to the new version, as read back.",
    )
    message: str | None = Field(None, description="Why applied is unknown, or what is awaited.")
    draining_since: str | None = Field(
        None,
        description="When the route was first read back sending nothing to a canary that still has pods: "
        "they are scaled to 0 once spec.trafficRouting.scaleDownDelay has passed since.",
        json_schema_extra={"format": "date-time"},
    )


class ConfigSnapshot(Model):
    name: str
    snapshot: str = Field(description="The immutable copy Parachute owns.")
    hash: str


class FlagsStatus(Model):
    """The release's feature flags as Parachute last set them: at a stage, or on a rollback."""

    state: FlagExposure = Field(description="off, on, or on for a percentage of users (10%).")
    reason: str = Field(description="Why: the stage that says so, or the rollback of a revision.")
    revision: str | None = Field(None, description="The release they were set for.")
    requested_at: str = Field(
        description="When Parachute began to set them.", json_schema_extra={"format": "date-time"}
    )
    in_place_at: str | None = Field(
        None, description="When the store was seen in that state.", json_schema_extra={"format": "date-time"}
    )


class ReleaseStatus(Model):
    revision: str | None = Field(
        None,
        description="What is being released: the pod template's hash, then (with configRefs) the "
        "tracked configuration's, as <template>.<config>.",
    )
    stable_revision: str | None = None
    images: list[str] | None = None
    stable_images: list[str] | None = None
    started_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    change_ticket: str | None = Field(None, description="The change ticket the release carries.")


class HandledCommands(Model):
    """The last value of each command annotation acted on: a new value is a new command."""

    promote: str | None = None
    abort: str | None = None
    retry: str | None = None
    resolved: str | None = None


class RolloutStatus(Model):
    observed_generation: int | None = None
    phase: Phase | None = None
    message: str | None = None
    risk: Risk | None = None
    risk_reason: str | None = None
    release: ReleaseStatus | None = None
    plan: list[PlannedStage] | None = None
    stage_index: int | None = Field(None, ge=0, description="0-based index into plan.")
    stage: str | None = Field(None, description="Display only: position in the plan, e.g. 2/6.")
    stage_started_at: str | None = Field(
        None,
        description="When the current stage began: its progress deadline counts from then.",
        json_schema_extra={"format": "date-time"},
    )
    stage_reached_at: str | None = Field(
        None,
        description="When the current stage was first seen in place (its pods ready, its traffic "
        "and flags set): its wait and its analysis rounds count from then.",
        json_schema_extra={"format": "date-time"},
    )
    canary_weight: int | None = Field(
        None, ge=0, le=100, description="The new version's share of traffic at this stage."
    )
    traffic: TrafficStatus | None = Field(
        None, description="With a router: the route's share for the canary, wanted and read back."
    )
    last_verdict: Verdict | None = None
    metrics: list[MetricStatus] | None = None
    user_reports: UserReportsStatus | None = Field(
        None, description="User reports counted per issue key, with spec.analysis.metrics' user-reports."
    )
    gates: list[GateStatus] | None = None
    window: WindowStatus | None = None
    config_snapshots: list[ConfigSnapshot] | None = None
    flags: FlagsStatus | None = Field(None, description="The release's feature flags as Parachute set them.")
    incidents: list[Incident] | None = None
    blocked_revisions: list[str] | None = Field(
        None, description="Revisions that rolled back; not released again until marked fixed."
    )
    paused_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    commands: HandledCommands | None = None
    next_analysis_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    metrics_checked_at: str | None = Field(
        None,
        description="When every metric's query was last run to see that its series exist (the "
        "MetricsAvailable condition).",
        json_schema_extra={"format": "date-time"},
    )
    next_check_at: str | None = Field(None, json_schema_extra={"format": "date-time"})
    outbox: list[OutboxEntry] | None = Field(
        None,
        description="Events and notifications owed by status changes and not yet delivered; "
        "delivered at least once, and idempotent where they land.",
    )
    conditions: list[Condition] | None = Field(
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class Rollout(Model):
    """A release of one Deployment through stages, watched by Prometheus, recoverable in minutes."""

    api_version: Literal["parachute.dev/v1alpha1"] = "parachute.dev/v1alpha1"
    kind: Literal["Rollout"] = "Rollout"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RolloutSpec
    status: RolloutStatus | None = None


# Manual control: set one of these annotations to a new value (a timestamp is usual) and
# Parachute acts on it once; `status.commands` records the value it acted on.
PROMOTE_ANNOTATION = f"{GROUP}/promote"  # end the current stage's wait now
ABORT_ANNOTATION = f"{GROUP}/abort"  # stop the release; all traffic back to stable
RETRY_ANNOTATION = f"{GROUP}/retry"  # start an aborted or rolled-back release again
HOTFIX_ANNOTATION = f"{GROUP}/hotfix"  # "true": a security hotfix, not held by windows
# What a release touches (areas or paths), set by a pipeline on the Deployment or the Rollout:
# the risk when spec.risk is not given.
CHANGE_ANNOTATION = f"{GROUP}/change"
# The change ticket a release carries (CHG-1234, a URL), set by a pipeline like the change
# annotation, on the Deployment or the Rollout; spec.changeTicket wins.
CHANGE_TICKET_ANNOTATION = f"{GROUP}/change-ticket"
# The root cause of a rolled-back revision is fixed: its value is that revision (or "all").
RESOLVED_ANNOTATION = f"{GROUP}/resolved"
# On a target Deployment Parachute paused: the Rollout that paused it. A target whose Rollout
# is gone is given back unpaused.
PAUSED_BY_ANNOTATION = f"{GROUP}/paused-by"

# Printer columns of `kubectl get pr`: what an SRE needs on one line.
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "Risk", "type": "string", "jsonPath": ".status.risk"},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.lastVerdict"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]
