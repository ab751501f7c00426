"""What the plugin shows, as data: a Rollout read into rows and trees, before any rendering.

Pure: the Rollout (and the Deployments it points at) in, view models out, the time passed in.
Status is read the way the operator writes it (`RolloutStatus.model_validate`), so a field
added to status needs only a line here to be shown. The same models are what `-o json` prints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from parachute.api import (
    Condition,
    GateStatus,
    Incident,
    MetricStatus,
    Model,
    Phase,
    RolloutSpec,
    RolloutStatus,
    WindowStatus,
)
from parachute.conditions import parse_time
from parachute.plan.desired_workload import actual_weight, canary_name, revision_of, with_config
from parachute.plan.rollback import content_hash


def humanize(seconds: float) -> str:
    """A span as a person reads it, rounded to its largest units: 45s, 12m, 2h5m, 3d4h."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{round(seconds)}s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 24 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    hours = round(seconds / 3600)
    days, rest = divmod(hours, 24)
    return f"{days}d{rest}h" if rest else f"{days}d"


def relative(text: str | None, now: datetime) -> str:
    """`in 5m` or `3h ago`; empty when there is no time."""
    moment = parse_time(text)
    if moment is None:
        return ""
    delta = (moment - now).total_seconds()
    return f"in {humanize(delta)}" if delta > 0 else f"{humanize(delta)} ago"


def clock(text: str | None, now: datetime) -> str:
    """A time in UTC: the time of day when it is today, else the date too."""
    moment = parse_time(text)
    if moment is None:
        return ""
    moment = moment.astimezone(UTC)
    if moment.date() == now.astimezone(UTC).date():
        return moment.strftime("%H:%M:%SZ")
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def status_of(body: dict[str, Any]) -> RolloutStatus:
    return RolloutStatus.model_validate(body.get("status") or {})


def spec_of(body: dict[str, Any]) -> RolloutSpec | None:
    """The spec, or None when it no longer parses (the operator reports that as Invalid)."""
    try:
        return RolloutSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return None


def target_name(body: dict[str, Any]) -> str | None:
    return ((body.get("spec") or {}).get("targetRef") or {}).get("name")


# ---------------------------------------------------------------------------- attention


def attention(body: dict[str, Any]) -> list[str]:
    """What only a person can move forward: a pause, unmet gates, blocked revisions, a rollback
    under way, a stopped release, a spec that cannot work. A closed window is not one: it
    opens by itself."""
    st = status_of(body)
    name = body["metadata"]["name"]
    out: list[str] = []
    paused = bool((body.get("spec") or {}).get("paused"))
    if paused or st.phase == Phase.paused:
        out.append(f"paused (kubectl parachute resume {name})")
    unmet = [g.name for g in st.gates or [] if not g.met]
    if unmet:
        out.append(f"gates unmet: {', '.join(unmet)}")
    if st.blocked_revisions:
        which = st.blocked_revisions[0] if len(st.blocked_revisions) == 1 else "REVISION|all"
        out.append(f"blocked: {', '.join(st.blocked_revisions)} (kubectl parachute resolve {name} {which})")
    if st.phase == Phase.rolling_back:
        incident = st.incidents[-1] if st.incidents else None
        level = f" at level {incident.level}" if incident and incident.level else ""
        out.append(f"rolling back{level}")
    elif st.phase == Phase.aborted:
        out.append(f"aborted (kubectl parachute retry {name}, or a new revision)")
    elif st.phase == Phase.invalid:
        out.append("invalid spec (see message)")
    return out


# ---------------------------------------------------------------------------- list


class Row(Model):
    """One Rollout on one line of `list`."""

    namespace: str
    name: str
    phase: str = ""
    stage: str = ""
    weight: int | None = None
    risk: str = ""
    verdict: str = ""
    age: str = ""
    waiting_on: list[str] = Field(default_factory=list)
    message: str = ""


def row(body: dict[str, Any], now: datetime) -> Row:
    st = status_of(body)
    meta = body["metadata"]
    created = parse_time(meta.get("creationTimestamp"))
    return Row(
        namespace=meta["namespace"],
        name=meta["name"],
        phase=str(st.phase or ""),
        stage=st.stage or "",
        weight=st.canary_weight,
        risk=str(st.risk or ""),
        verdict=str(st.last_verdict or ""),
        age=humanize((now - created).total_seconds()) if created else "",
        waiting_on=attention(body),
        message=st.message or "",
    )


# ---------------------------------------------------------------------------- get


class StageView(Model):
    number: int
    name: str | None = None
    weight: int
    min_wait: str | None = None
    max_wait: str | None = None
    flags: str | None = None  # off, on or a percentage ("10%"): what the stage puts the release's flags in
    state: str = Field(description="done, current or next")


class VersionView(Model):
    role: str
    deployment: str | None = None
    revision: str | None = None
    images: list[str] = Field(default_factory=list)
    replicas: int | None = None
    ready: int | None = None


class RoutingView(Model):
    backend: str
    desired_weight: int | None = None
    applied_weight: int | None = None
    applied_from: str | None = Field(None, description="Where the applied weight was read.")


class RolloutView(Model):
    """Everything `get` shows about one Rollout."""

    namespace: str
    name: str
    generation: int | None = None
    phase: str = ""
    message: str = ""
    risk: str = ""
    risk_reason: str = ""
    stage: str = ""
    stage_started_at: str | None = None
    stage_reached_at: str | None = None
    paused: bool = False
    stages: list[StageView] = Field(default_factory=list)
    stable: VersionView
    canary: VersionView
    routing: RoutingView
    metrics: list[MetricStatus] = Field(default_factory=list)
    last_verdict: str = ""
    next_analysis_at: str | None = None
    gates: list[GateStatus] = Field(default_factory=list)
    window: WindowStatus | None = None
    incidents: list[Incident] = Field(default_factory=list)
    blocked_revisions: list[str] = Field(default_factory=list)
    waiting_on: list[str] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)


def _stage_state(index: int, st: RolloutStatus) -> str:
    if st.stage_index is None:
        return "next"
    release = st.release
    if st.phase == Phase.healthy and release is not None and release.revision == release.stable_revision:
        return "done"  # released: every stage was passed
    if index < st.stage_index:
        return "done"
    return "current" if index == st.stage_index else "next"


def _replicas(deployment: dict[str, Any] | None) -> tuple[int | None, int | None]:
    if deployment is None:
        return None, None
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    return int(spec.get("replicas", 1)), int(status.get("readyReplicas") or 0)


def _backend(spec: RolloutSpec | None) -> str:
    routing = spec.traffic_routing if spec else None
    if routing is None:
        return "replicas"
    for field_name, label in (
        ("gateway_api", "gatewayAPI"),
        ("istio", "istio"),
        ("nginx", "nginx"),
        ("smi", "smi"),
    ):
        if getattr(routing, field_name, None) is not None:
            return label
    return "replicas"


def build(body: dict[str, Any], target: dict[str, Any] | None, canary: dict[str, Any] | None) -> RolloutView:
    """The tree `get` draws: stages, versions, routing, metrics, gates, window, incidents."""
    st = status_of(body)
    spec = spec_of(body)
    meta = body["metadata"]
    release = st.release
    stages = [
        StageView(number=i + 1, name=s.name, weight=s.weight, min_wait=s.min_wait, max_wait=s.max_wait,
                  flags=s.flags or None, state=_stage_state(i, st))
        for i, s in enumerate(st.plan or [])
    ]  # fmt: skip
    stable_replicas, stable_ready = _replicas(target)
    canary_replicas, canary_ready = _replicas(canary)
    stable = VersionView(
        role="stable",
        deployment=target_name(body),
        revision=release.stable_revision if release else None,
        images=list(release.stable_images or []) if release else [],
        replicas=stable_replicas,
        ready=stable_ready,
    )
    releasing = release is not None and release.revision != release.stable_revision
    canary_view = VersionView(
        role="canary",
        deployment=canary["metadata"]["name"] if canary else None,
        # Between releases the canary Deployment keeps its last revision at zero replicas: not shown.
        revision=release.revision if releasing and release else None,
        images=list(release.images or []) if releasing and release else [],
        replicas=canary_replicas,
        ready=canary_ready,
    )
    backend = _backend(spec)
    applied: int | None = None
    applied_from: str | None = None
    if backend == "replicas" and target is not None:
        # Replica ratio: the share is what the ready pods make it.
        applied = actual_weight(stable_ready or 0, canary_ready or 0) if canary else 0
        applied_from = "ready pods"
    return RolloutView(
        namespace=meta["namespace"],
        name=meta["name"],
        generation=meta.get("generation"),
        phase=str(st.phase or ""),
        message=st.message or "",
        risk=str(st.risk or ""),
        risk_reason=st.risk_reason or "",
        stage=st.stage or "",
        stage_started_at=st.stage_started_at,
        stage_reached_at=st.stage_reached_at,
        paused=bool((body.get("spec") or {}).get("paused")),
        stages=stages,
        stable=stable,
        canary=canary_view,
        routing=RoutingView(
            backend=backend,
            desired_weight=st.canary_weight,
            applied_weight=applied,
            applied_from=applied_from,
        ),
        metrics=list(st.metrics or []),
        last_verdict=str(st.last_verdict or ""),
        next_analysis_at=st.next_analysis_at,
        gates=list(st.gates or []),
        window=st.window,
        incidents=list(st.incidents or []),
        blocked_revisions=list(st.blocked_revisions or []),
        waiting_on=attention(body),
        conditions=list(st.conditions or []),
    )


def canary_deployment(body: dict[str, Any]) -> str | None:
    """The name of the Rollout's canary Deployment (None without a target)."""
    target = target_name(body)
    return canary_name(target) if target else None


# ---------------------------------------------------------------------------- revision


def expected_revision(
    body: dict[str, Any], target: dict[str, Any] | None, config_maps: dict[str, dict[str, Any] | None]
) -> str | None:
    """The revision the operator will release for what the target says now (its template,
    plus the tracked configuration's hash), or None when there is no target to read."""
    if target is None:
        return None
    revision = revision_of((target.get("spec") or {}).get("template") or {})
    hashes = {
        name: content_hash(cm.get("data") or {}, cm.get("binaryData") or {})
        for name, cm in config_maps.items()
        if cm is not None
    }
    return with_config(revision, hashes)


def config_ref_names(body: dict[str, Any]) -> list[str]:
    return [ref["name"] for ref in (body.get("spec") or {}).get("configRefs") or [] if ref.get("name")]


# ---------------------------------------------------------------------------- history

# Event reasons that end a release, and what they mean for it.
RELEASE_ENDS = {
    "ReleaseCompleted": "released",
    "RollingBack": "rolled back",
    "Aborted": "aborted",
    "ReleaseCancelled": "cancelled",
}


class ReleaseRecord(Model):
    started_at: str
    detail: str
    outcome: str = Field(
        "", description="released, rolled back, aborted, superseded, cancelled, or empty: running"
    )
    ended_at: str | None = None


class EventRecord(Model):
    at: str
    type: str
    reason: str
    message: str


class History(Model):
    """What `history` shows: releases (from the Events the API server keeps), the current release
    and the incidents (from status, which keeps the last ten)."""

    namespace: str
    name: str
    current: dict[str, Any] | None = None
    releases: list[ReleaseRecord] = Field(default_factory=list)
    incidents: list[Incident] = Field(default_factory=list)
    events: list[EventRecord] = Field(default_factory=list)


def history(body: dict[str, Any], events: list[dict[str, Any]], times: list[str]) -> History:
    """`events` oldest first, with `times[i]` the time of `events[i]`."""
    st = status_of(body)
    records = [
        EventRecord(
            at=at, type=e.get("type") or "", reason=e.get("reason") or "", message=e.get("message") or ""
        )
        for e, at in zip(events, times, strict=True)
    ]
    releases: list[ReleaseRecord] = []
    for record in records:
        running = releases and not releases[-1].outcome
        if record.reason in RELEASE_ENDS and running:
            releases[-1] = releases[-1].model_copy(
                update={"outcome": RELEASE_ENDS[record.reason], "ended_at": record.at}
            )
        elif record.reason == "ReleaseSuperseded" and running:  # ends one release and starts the next
            releases[-1] = releases[-1].model_copy(update={"outcome": "superseded", "ended_at": record.at})
        if record.reason in ("ReleaseStarted", "ReleaseRetried", "ReleaseSuperseded"):
            releases.append(ReleaseRecord(started_at=record.at, detail=record.message))
    current = st.release.model_dump(by_alias=True, exclude_none=True, mode="json") if st.release else None
    return History(
        namespace=body["metadata"]["namespace"],
        name=body["metadata"]["name"],
        current=current,
        releases=releases,
        incidents=list(st.incidents or []),
        events=records,
    )
