"""`postmortem`: a Markdown draft of one incident, written from the record the operator keeps.

Pure: the Rollout, its Events (those the API server still has) and the time in; Markdown
out. The facts come from `status.incidents`; the Events add the stages and the verdicts of
the release while they last. The questions only people can answer — root cause, actions —
are left as the playbook's headings, to be filled in by the postmortem's due date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from parachute.api import Incident, RolloutStatus, format_duration, parse_duration
from parachute.cli.cluster import event_time
from parachute.cli.view import spec_of, status_of
from parachute.conditions import parse_time

# The playbook's post-rollback procedure, in its order.
PLAYBOOK_STEPS = (
    ("Notify team", "#incidents channel"),
    ("Update status page", "if customer impact"),
    ("Document incident", "what, when, why rolled back"),
    ("Keep monitoring", "24 hours minimum"),
    ("Schedule postmortem", "within 48 hours"),
    ("Fix root cause", "before re-deployment attempt"),
)
# Events worth a line in the timeline (the operator's reasons).
TIMELINE_REASONS = frozenset({
    "ReleaseStarted", "ReleaseSuperseded", "ReleaseRetried", "StageAdvanced", "Promoting", "Promoted", "Paused", "Resumed", "ReleaseWaiting",
    "MetricFailed", "MetricWarning", "MetricError", "MetricInconclusive", "RollingBack", "RecoveryApplied",
    "RecoveryEscalated", "RecoveryStalled", "RolledBack", "RegressedAfterRollback", "RootCauseFixed",
})  # fmt: skip


RELEASE_STARTS = frozenset({"ReleaseStarted", "ReleaseSuperseded", "ReleaseRetried"})


class NoIncidentError(LookupError):
    """The Rollout has no such incident."""


def pick(status: RolloutStatus, which: str | None) -> Incident:
    """The incident by id, or by number (1 is the oldest status keeps), or the latest."""
    incidents = status.incidents or []
    if not incidents:
        raise NoIncidentError("this Rollout has no incident in status")
    if which is None:
        return incidents[-1]
    for incident in incidents:
        if incident.id == which:
            return incident
    if which.isdigit() and 1 <= int(which) <= len(incidents):
        return incidents[int(which) - 1]
    ids = ", ".join(f"{n}: {i.id}" for n, i in enumerate(incidents, start=1))
    raise NoIncidentError(f"no incident {which} (status keeps {ids})")


@dataclass(frozen=True)
class Line:
    at: str
    what: str


def _iso(text: str | None) -> str:
    moment = parse_time(text)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else ""


def _timeline(incident: Incident, status: RolloutStatus, events: list[dict[str, Any]]) -> list[Line]:
    lines: list[Line] = []
    release = status.release
    start = parse_time(release.started_at) if release and release.revision == incident.revision else None
    if start is not None and release is not None:
        lines.append(Line(release.started_at or "", f"release of revision {incident.revision} started"))
    told = {"ReleaseStarted"} if start is not None else set()  # status said it already
    if start is None:  # another release is in status now: the Events say when this one began
        first = parse_time(incident.started_at)
        begun = [
            moment
            for e in events
            if e.get("reason") in RELEASE_STARTS
            and (moment := parse_time(event_time(e))) is not None
            and first is not None
            and moment <= first
        ]
        start = max(begun, default=None)
    end = parse_time(incident.recovered_at) or parse_time(incident.regressed_at)
    for event in events:
        moment = parse_time(event_time(event))
        if event.get("reason") not in TIMELINE_REASONS or event.get("reason") in told or moment is None:
            continue
        if start is not None and moment < start:
            continue
        if start is None and moment < (parse_time(incident.started_at) or moment):
            continue
        if end is not None and moment > end and event.get("reason") != "RegressedAfterRollback":
            continue
        lines.append(Line(event_time(event), f"{event.get('reason')}: {event.get('message', '')}"))
    lines.append(Line(incident.started_at, f"first critical verdict: {incident.reason}"))
    for record in incident.levels or []:
        lines.append(Line(record.started_at, f"level {record.level} started"))
        if record.applied_at:
            changed = f": {'; '.join(record.changed)}" if record.changed else ""
            lines.append(Line(record.applied_at, f"level {record.level} in place{changed}"))
        if record.healthy_at:
            lines.append(Line(record.healthy_at, f"health back (level {record.level})"))
    if incident.recovered_at:
        lines.append(Line(incident.recovered_at, f"recovered{_recovery_words(incident, status)}"))
    if incident.regressed_at:
        lines.append(Line(incident.regressed_at, f"failed again while watching: {incident.regression}"))
    return sorted(lines, key=lambda line: parse_time(line.at) or datetime.min)


def _objective(status: RolloutStatus, body: dict[str, Any]) -> str:
    spec = spec_of(body)
    recovery = spec.recovery if spec else None
    return recovery.objective if recovery else "5m"


def _recovery_words(incident: Incident, status: RolloutStatus) -> str:
    if incident.recovery_seconds is None:
        return ""
    return f" in {format_duration(_seconds(incident.recovery_seconds))}"


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=round(value))


def draft(body: dict[str, Any], events: list[dict[str, Any]], which: str | None, now: datetime) -> str:
    """The postmortem draft for one incident of one Rollout, as Markdown."""
    status = status_of(body)
    incident = pick(status, which)
    meta = body["metadata"]
    name = f"{meta['namespace']}/{meta['name']}"
    objective = _objective(status, body)
    out: list[str] = []
    add = out.append
    out.extend(_heading(incident, name, now))
    add("")
    add("## What happened")
    add("")
    add(_summary(incident, status, objective))
    add("")
    add("## Timeline (UTC)")
    add("")
    add("| time | what |")
    add("|---|---|")
    for line in _timeline(incident, status, events):
        add(f"| {_iso(line.at)} | {_cell(line.what)} |")
    add("")
    add("## Recovery time")
    add("")
    add(_recovery(incident, objective))
    add("")
    add("## Metrics")
    add("")
    add(_metrics(status))
    add("")
    add("## What was reverted, and where")
    add("")
    add(_reverted(incident, meta["name"]))
    add("")
    add("## Root cause")
    add("")
    add("_To be written: why the release failed, and why the checks before it did not catch it._")
    add("")
    add("## Actions")
    add("")
    add("The playbook's post-rollback procedure:")
    add("")
    for step, detail in PLAYBOOK_STEPS:
        add(f"- [{_done(step, incident, body)}] **{step}** ({detail}){_step_note(step, incident, body)}")
    add("")
    add("| action | owner | due |")
    add("|---|---|---|")
    add(f"| _fix the root cause_ | | {_iso(incident.postmortem_due_at)} |")
    add("")
    return "\n".join(out)


def _heading(incident: Incident, name: str, now: datetime) -> list[str]:
    out: list[str] = []
    add = out.append
    add(f"# Postmortem: {name}, revision {incident.revision or 'unknown'} rolled back")
    add("")
    add(f"Incident `{incident.id}`. Draft written by `kubectl parachute postmortem` on {_iso(now.isoformat())} "
        "from the incident record in the Rollout's status.")  # fmt: skip
    if incident.change_ticket:
        add(f"Change ticket: **{incident.change_ticket}**.")
    if incident.postmortem_due_at:
        add(f"**Due by {_iso(incident.postmortem_due_at)}.**")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _summary(incident: Incident, status: RolloutStatus, objective: str) -> str:
    release = status.release
    images = ""
    if release and release.revision == incident.revision and release.images:
        images = f" ({', '.join(release.images)})"
    stable = incident.stable_revision or "the stable revision"
    text = (
        f"Revision {incident.revision}{images} was being released over {stable} (risk {status.risk or 'unknown'}). "
        f"At {_iso(incident.started_at)} {incident.reason}"
    )
    text += "; an immediate trigger, so every level had the shortest budget." if incident.immediate else "."
    levels = [str(r.level) for r in incident.levels or []]
    if levels:
        text += f" Parachute rolled back through the {', then the '.join(levels)} level"
        text += "s." if len(levels) > 1 else "."
    if incident.recovery_seconds is not None:
        met = "met" if incident.objective_met else "missed"
        text += f" Health was back after {format_duration(_seconds(incident.recovery_seconds))} (objective {objective}: {met})."
    else:
        text += " Health had not come back when this draft was written."
    if incident.regressed_at:
        text += f" While watching after the rollback, health failed again: {incident.regression}."
    return text


def _recovery(incident: Incident, objective: str) -> str:
    if incident.recovery_seconds is None:
        return f"Not recovered yet (objective {objective})."
    taken = _seconds(incident.recovery_seconds)
    met = incident.objective_met
    verdict = "met" if met else f"missed by {format_duration(taken - parse_duration(objective))}"
    lines = [
        f"From the first critical verdict to health: **{format_duration(taken)}** against the objective of "
        f"{objective}: {verdict}.",
        "",
        "| level | started | in place | health back | took | budget |",
        "|---|---|---|---|---|---|",
    ]
    for record in incident.levels or []:
        took = format_duration(_seconds(record.seconds)) if record.seconds is not None else ""
        lines.append(
            f"| {record.level} | {_iso(record.started_at)} | {_iso(record.applied_at)} | "
            f"{_iso(record.healthy_at)} | {took} | {record.budget or ''} |"
        )
    return "\n".join(lines)


def _metrics(status: RolloutStatus) -> str:
    metrics = status.metrics or []
    if not metrics:
        return "No metrics in status."
    lines = [
        "The last values status holds (it keeps the latest round only; the verdicts at the time are in the timeline).",
        "",
        "| metric | value | stable | verdict | measured | note |",
        "|---|---|---|---|---|---|",
    ]
    for m in metrics:
        value = "" if m.value is None else f"{m.value:.6g}"
        stable = "" if m.stable_value is None else f"{m.stable_value:.6g}"
        lines.append(
            f"| {m.name} | {value} | {stable} | {m.verdict or ''} | {_iso(m.last_evaluated_at)} | {_cell(m.message or '')} |"
        )
    return "\n".join(lines)


def _reverted(incident: Incident, name: str) -> str:
    lines = []
    for record in incident.levels or []:
        for change in record.changed or []:
            lines.append(f"- {record.level} level: {change}")
    if not lines:
        lines.append("- nothing recorded as changed")
    if incident.revert_in_git:
        lines.append(
            f"- **In git**, revert to {incident.revert_in_git}: the Deployment's template there still names the rolled-back revision."
        )
    if incident.resolved:
        lines.append(f"- The root cause of revision {incident.revision} is marked fixed.")
    else:
        lines.append(
            f"- Revision {incident.revision} stays blocked until its root cause is fixed: "
            f"`kubectl parachute resolve {name} {incident.revision}`."
        )
    return "\n".join(lines)


def _done(step: str, incident: Incident, body: dict[str, Any]) -> str:
    if step == "Document incident":
        return "x"
    page = incident.status_page
    if step == "Update status page" and page is not None and page.incident_id:
        return "x"
    if step == "Fix root cause" and incident.resolved:
        return "x"
    return " "


def _customer_facing(body: dict[str, Any]) -> bool:
    return bool((body.get("spec") or {}).get("customerFacing"))


def _status_page_note(incident: Incident, body: dict[str, Any]) -> str:
    page = incident.status_page
    if not _customer_facing(body):
        return ": the Rollout is not marked customer-facing (spec.customerFacing): Parachute opened no status page incident"
    if page is None:
        return ": customer-facing, but no statusPage notification target: update it by hand"
    said = (
        f"status page incident `{page.incident_id}` is {page.status}"
        if page.incident_id
        else ("the status page incident could not be opened")
    )
    if page.failures and page.last_error:
        said += f" (delivery failed {page.failures} time(s): {page.last_error})"
    return f": Parachute keeps it in step; {said}"


def _step_note(step: str, incident: Incident, body: dict[str, Any]) -> str:
    if step == "Update status page":
        return _status_page_note(incident, body)
    if step == "Notify team" and (body.get("spec") or {}).get("notifications"):
        return ": Parachute sent the rollback to the configured notifications"
    if step == "Keep monitoring" and incident.watch_until:
        return f": Parachute watches until {_iso(incident.watch_until)}"
    if step == "Schedule postmortem" and incident.postmortem_due_at:
        return f": due {_iso(incident.postmortem_due_at)}"
    if step == "Fix root cause" and not incident.resolved:
        return f": then `kubectl parachute resolve {body['metadata']['name']} {incident.revision}`"
    return ""
