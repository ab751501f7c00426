"""Recovery in three levels, fastest first: feature flag, configuration, code.

Pure: which levels a Rollout has, each level's budget, when a level's change counts as in
place, when health has returned, and the incident record. The engine calls these; the
executor (`parachute.recovery`) makes the intent real.

A level is *applied* when its change is seen in place (flags off in the store, ConfigMaps
back at their snapshot bytes, pods restarted where they cannot reload; for the code level,
no ready pod of the rolled-back revision serving from the target or a canary). Health has
*returned* when every metric was judged Successful, or Warning below its critical
threshold, on a window that began after the level was applied: a window still holding the
bad minutes proves nothing. That holds for the code level too: what serves then is what it
left, and nothing but a measurement says it is healthy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from parachute.api import (
    Incident,
    MetricStatus,
    RecoveryBudgets,
    RecoveryLevel,
    RolloutSpec,
    Verdict,
    format_duration,
    parse_duration,
)
from parachute.plan.desired_workload import template_revision
from parachute.plan.model import Observed

LEVEL_ORDER = (RecoveryLevel.flag, RecoveryLevel.config, RecoveryLevel.code)
# How many incidents status keeps; older ones live on in Events and notifications.
INCIDENTS_KEPT = 10
GOOD = (Verdict.successful, Verdict.warning)


def levels_for(spec: RolloutSpec) -> list[RecoveryLevel]:
    """The levels this Rollout uses, fastest first. Code is always last: bad code never stays."""
    wanted = set(spec.recovery.levels) if spec.recovery and spec.recovery.levels else set(LEVEL_ORDER)
    means = {
        RecoveryLevel.flag: spec.feature_flags is not None,
        RecoveryLevel.config: bool(spec.config_refs),
        RecoveryLevel.code: True,
    }
    chosen = [level for level in LEVEL_ORDER if level in wanted and means[level]]
    if RecoveryLevel.code not in chosen:
        chosen.append(RecoveryLevel.code)
    return chosen


def budgets(spec: RolloutSpec) -> dict[RecoveryLevel, timedelta]:
    given = (spec.recovery.budgets if spec.recovery else None) or RecoveryBudgets()
    return {
        RecoveryLevel.flag: parse_duration(given.flag),
        RecoveryLevel.config: parse_duration(given.config),
        RecoveryLevel.code: parse_duration(given.code),
    }


def budget_for(spec: RolloutSpec, level: RecoveryLevel, immediate: bool) -> timedelta:
    """A level's time to bring health back; an immediate trigger gives every level the shortest."""
    table = budgets(spec)
    return min(table.values()) if immediate else table[level]


def next_level(spec: RolloutSpec, level: RecoveryLevel) -> RecoveryLevel | None:
    levels = levels_for(spec)
    index = levels.index(level) if level in levels else len(levels) - 1
    return levels[index + 1] if index + 1 < len(levels) else None


def failed_metrics(metrics: Iterable[MetricStatus]) -> list[MetricStatus]:
    return [m for m in metrics if m.verdict == Verdict.failed]


def first_critical(metrics: Iterable[MetricStatus], now: datetime) -> datetime:
    """When the failure began: the earliest breach (or failed evaluation) of a failed metric."""
    moments = [
        _parse(m.breached_since or m.last_evaluated_at or "")
        for m in failed_metrics(metrics)
        if m.breached_since or m.last_evaluated_at
    ]
    return min([*moments, now])


def is_immediate(metrics: Iterable[MetricStatus]) -> bool:
    return any(m.immediate for m in failed_metrics(metrics))


def health_returned(metrics: Iterable[MetricStatus], since: datetime) -> datetime | None:
    """When every metric was judged good on a window that began at or after `since`; else None."""
    judged = list(metrics)
    if not judged:
        return None
    moments = []
    for m in judged:
        # A Warning still past its critical threshold (not yet sustained) is not health.
        if m.verdict not in GOOD or m.breached_since or not m.last_evaluated_at:
            return None
        moment = _parse(m.last_evaluated_at)
        if moment < since:
            return None
        moments.append(moment)
    return max(moments)


def incident_id(revision: str, started: datetime) -> str:
    return f"{revision}-{started.strftime('%Y%m%d%H%M%S')}"


def snapshot_name(config_map: str, content_hash: str) -> str:
    """The immutable copy's name: content-addressed, so taking it twice is harmless, and two
    Rollouts tracking one ConfigMap share the copy (each one an owner)."""
    return f"{config_map[: 253 - 20]}-snapshot-{content_hash[:10]}"


def content_hash(data: Mapping[str, str], binary: Mapping[str, str] | None = None) -> str:
    """A hash of a ConfigMap's exact content (data and binaryData, keys sorted)."""
    digest = hashlib.sha256()
    for section, values in (("data", data), ("binaryData", binary or {})):
        for key in sorted(values):
            digest.update(f"{section}\0{key}\0{values[key]}\0".encode())
    return digest.hexdigest()[:16]


def seconds(start: datetime, end: datetime) -> float:
    return round(max(0.0, (end - start).total_seconds()), 3)


def still_serving(observed: Observed, incident: Incident) -> tuple[int, int]:
    """Ready pods of the rolled-back revision: in the target, and in the canary (any canary pod
    serves a release, never stable)."""
    bad, stable = template_revision(incident.revision or ""), incident.stable_revision or ""
    if bad != template_revision(stable):
        in_target = observed.serving.in_target(bad)
    elif observed.target.revision != stable:
        # A release of configuration alone: the target's pods read the configuration it brought.
        in_target = sum(observed.serving.target.values())
    else:
        in_target = 0
    return in_target, observed.serving.in_canary()


def what_serves(observed: Observed, incident: Incident) -> str:
    """What serves now, as seen in the ReplicaSets, in words: never "stable" unless it is so."""
    in_target, in_canary = still_serving(observed, incident)
    if in_target or in_canary:
        where = [
            f"the {side} ({ready_pods(n)})" for side, n in (("target", in_target), ("canary", in_canary)) if n
        ]
        return f"revision {incident.revision} still serves from {' and '.join(where)}"
    stable = incident.stable_revision or ""
    total = sum(observed.serving.target.values())
    on_stable = (
        total if observed.target.revision == stable else observed.serving.in_target(template_revision(stable))
    )
    if total == 0:
        return f"no ready pods serve yet (stable revision {stable} is coming back)"
    if on_stable < total:
        return f"stable revision {stable} serves ({ready_pods(on_stable)}) beside {ready_pods(total - on_stable)} of other revisions"
    return f"all traffic on stable revision {stable}"


def ready_pods(count: int) -> str:
    return f"{count} ready pod{'' if count == 1 else 's'}"


def human_seconds(value: float) -> str:
    """A recovery time as a person reads it: 5s, 1m30s."""
    return format_duration(timedelta(seconds=round(value)))


def current_incident(incidents: list[Incident] | None) -> Incident | None:
    return incidents[-1] if incidents else None


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
