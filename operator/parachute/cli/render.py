"""The plugin's terminal output: tables, the Rollout tree and history, drawn with rich.

Only drawing happens here; what is drawn is decided in `parachute.cli.view`. Colours appear
on a terminal and nowhere else, so piped output and snapshots are plain text.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from parachute.api import Incident, format_duration
from parachute.cli.view import History, RolloutView, Row, VersionView, clock, relative

PHASE_STYLE = {
    "Healthy": "green", "Progressing": "cyan", "Waiting": "yellow", "Paused": "yellow",
    "RollingBack": "bold red", "RolledBack": "red", "Aborted": "red", "Invalid": "bold red",
}  # fmt: skip
VERDICT_STYLE = {
    "Successful": "green", "Warning": "yellow", "Failed": "bold red", "Inconclusive": "magenta", "Error": "red",
}  # fmt: skip
STAGE_MARK = {"done": "✔", "current": "▶", "next": "·"}


def _styled(text: str, styles: dict[str, str]) -> Text:
    return Text(text, style=styles.get(text, ""))


def rows_table(rows: list[Row], all_namespaces: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    if all_namespaces:
        table.add_column("NAMESPACE")
    for column in ("NAME", "PHASE", "STAGE", "WEIGHT", "RISK", "VERDICT", "AGE", "WAITING ON"):
        table.add_column(column, no_wrap=column != "WAITING ON")
    for r in rows:
        cells: list[str | Text] = [r.namespace] if all_namespaces else []
        cells += [
            r.name,
            _styled(r.phase, PHASE_STYLE),
            r.stage,
            "" if r.weight is None else f"{r.weight}%",
            r.risk,
            _styled(r.verdict, VERDICT_STYLE),
            r.age,
            Text("; ".join(r.waiting_on), style="yellow"),
        ]
        table.add_row(*cells)
    return table


def _images(images: list[str]) -> str:
    return ", ".join(images) if images else "-"


def _version(v: VersionView) -> Text:
    text = Text(f"{v.role:<7}", style="bold")
    text.append(f"revision {v.revision or '-'}  {_images(v.images)}")
    if v.replicas is None:  # the Deployment is not there (yet, or any more)
        text.append(
            f"  (deployment/{v.deployment} not found)" if v.deployment else "  (no Deployment)", style="dim"
        )
    else:
        text.append(f"  {v.ready}/{v.replicas} ready")
        text.append(f"  deployment/{v.deployment}", style="dim")
    return text


def _when(label: str, at: str | None, now: datetime) -> str:
    if not at:
        return ""
    return f"{label} {clock(at, now)} ({relative(at, now)})"


def rollout_tree(view: RolloutView, now: datetime) -> Tree:
    """Rollout → stages (the current one marked), versions, routing, metrics, gates, window, incidents."""
    head = Text(f"Rollout {view.namespace}/{view.name}  ", style="bold")
    head.append(view.phase or "(no status yet)", style=PHASE_STYLE.get(view.phase, ""))
    if view.risk:
        head.append(f"  risk {view.risk}")
        if view.risk_reason:
            head.append(f" ({view.risk_reason})", style="dim")
    tree = Tree(head)
    if view.message:
        tree.add(Text(view.message, style="italic"))
    if view.waiting_on:
        tree.add(Text("waiting on a person: " + "; ".join(view.waiting_on), style="bold yellow"))
    _stages(tree.add(Text("Stages", style="bold")), view, now)
    versions = tree.add(Text("Versions", style="bold"))
    versions.add(_version(view.stable))
    versions.add(_version(view.canary))
    tree.add(_routing(view))
    _metrics(tree.add(_metrics_head(view, now)), view)
    if view.gates:
        _gates(tree.add(Text("Gates", style="bold")), view)
    if view.window is not None:
        tree.add(_window(view, now))
    if view.incidents:
        incidents = tree.add(Text("Incidents", style="bold"))
        for incident in view.incidents:
            incident_tree(incidents, incident, now)
    if view.blocked_revisions:
        tree.add(Text(f"Blocked revisions  {', '.join(view.blocked_revisions)}", style="bold red"))
    return tree


def _stages(parent: Tree, view: RolloutView, now: datetime) -> None:
    width = max((len(s.name or "stage") for s in view.stages), default=0)
    for s in view.stages:
        line = Text(f"{STAGE_MARK[s.state]} {s.number} ")
        line.append(f"{s.name or 'stage':<{width}}", style="bold" if s.state == "current" else "")
        line.append(f"  {s.weight:>3}%")
        if s.min_wait or s.max_wait:
            line.append(f"  wait {s.min_wait or '0s'}-{s.max_wait or s.min_wait}")
        if s.flags is not None:
            line.append(f"  flags {s.flags}")
        if s.state == "current" and view.stage_started_at:
            line.append(f"  {_when('started', view.stage_started_at, now)}", style="dim")
            if view.stage_reached_at:  # its wait counts from here
                line.append(f", {_when('in place', view.stage_reached_at, now)}", style="dim")
        parent.add(line)
    if not view.stages:
        parent.add(Text("no plan yet", style="dim"))


def _routing(view: RolloutView) -> Text:
    routing = Text("Routing  ", style="bold")
    routing.append(f"{view.routing.backend}: desired {_percent(view.routing.desired_weight)}")
    if view.routing.applied_weight is not None:
        routing.append(f", applied {view.routing.applied_weight}% ({view.routing.applied_from})")
    else:
        routing.append(", applied weight not reported")
    return routing


def _metrics(parent: Tree, view: RolloutView) -> None:
    for m in view.metrics:
        line = Text(f"{m.name:<18}")
        line.append(f"{'-' if m.value is None else f'{m.value:.4g}':>10}")
        if m.stable_value is not None:
            line.append(f"  stable {m.stable_value:.4g}")
        line.append("  ")
        line.append(str(m.verdict or "not judged"), style=VERDICT_STYLE.get(str(m.verdict), "dim"))
        if m.message:
            line.append(f"  {m.message}", style="dim")
        parent.add(line)


def _gates(parent: Tree, view: RolloutView) -> None:
    for g in view.gates:
        line = Text("✔ " if g.met else "✘ ", style="green" if g.met else "red")
        line.append(g.name)
        if g.message:
            line.append(f"  {g.message}", style="dim")
        parent.add(line)


def _window(view: RolloutView, now: datetime) -> Text:
    window = view.window
    assert window is not None
    line = Text("Window  ", style="bold")
    line.append(f"policy {window.policy or 'none'}: ")
    line.append("open" if window.open else "closed", style="green" if window.open else "yellow")
    if window.reason:
        line.append(f" ({window.reason})")
    if not window.open and window.next_open_at:
        line.append(f"; {_when('opens', window.next_open_at, now)}")
    return line


def _percent(value: int | None) -> str:
    return "-" if value is None else f"{value}%"


def _metrics_head(view: RolloutView, now: datetime) -> Text:
    head = Text("Metrics", style="bold")
    if view.last_verdict:
        head.append("  last verdict ")
        head.append(view.last_verdict, style=VERDICT_STYLE.get(view.last_verdict, ""))
    if view.next_analysis_at:
        head.append(f"  next {clock(view.next_analysis_at, now)}", style="dim")
    if not view.metrics:
        head.append("  none measured", style="dim")
    return head


def incident_tree(parent: Tree, incident: Incident, now: datetime) -> None:
    head = Text(f"{incident.id}  ", style="bold")
    head.append(incident.reason)
    node = parent.add(head)
    node.add(
        f"started {clock(incident.started_at, now)}, revision {incident.revision}, stable {incident.stable_revision}"
    )
    for record in incident.levels or []:
        text = f"level {record.level}: started {clock(record.started_at, now)}"
        if record.applied_at:
            text += f", in place {clock(record.applied_at, now)}"
        if record.healthy_at:
            text += f", health back {clock(record.healthy_at, now)}"
        if record.budget:
            text += f" (budget {record.budget})"
        node.add(text)
    if incident.recovery_seconds is not None:
        met = "met" if incident.objective_met else "missed"
        took = _took(incident.recovery_seconds)
        node.add(
            Text(f"recovered in {took}: objective {met}", style="green" if incident.objective_met else "red")
        )
    elif incident.level:
        node.add(Text(f"recovering at level {incident.level}", style="bold red"))
    if incident.revert_in_git:
        node.add(f"revert in git to {incident.revert_in_git}")
    if incident.regressed_at:
        node.add(Text(f"failed again while watching: {incident.regression}", style="red"))
    if incident.postmortem_due_at:
        node.add(f"postmortem due {_when('', incident.postmortem_due_at, now).strip()}")
    node.add("root cause fixed" if incident.resolved else "root cause not yet marked fixed")


def history_view(h: History, now: datetime) -> RenderableType:
    parts: list[RenderableType] = []
    releases = Table(title="Releases", title_justify="left", box=None, header_style="bold")
    for column in ("STARTED", "ENDED", "OUTCOME", "DETAIL"):
        releases.add_column(column, no_wrap=column != "DETAIL")
    for r in h.releases:
        releases.add_row(clock(r.started_at, now), clock(r.ended_at, now), r.outcome or "running", r.detail)
    if h.current:
        current = h.current
        parts.append(Text(
            f"Current release: revision {current.get('revision', '-')} ({_images(current.get('images') or [])}), "
            f"stable {current.get('stableRevision', '-')} ({_images(current.get('stableImages') or [])})"
        ))  # fmt: skip
        parts.append(Text(""))
    parts += [releases if h.releases else Text("No releases in the Events the API server still keeps.", style="dim"),
              Text("")]  # fmt: skip
    incidents = Table(title="Incidents", title_justify="left", box=None, header_style="bold")
    for column in ("ID", "REVISION", "STARTED", "LEVEL", "RECOVERY", "OBJECTIVE", "FIXED"):
        incidents.add_column(column)
    for i in h.incidents:
        took = "" if i.recovery_seconds is None else _took(i.recovery_seconds)
        objective = "" if i.objective_met is None else ("met" if i.objective_met else "missed")
        incidents.add_row(i.id, i.revision or "", clock(i.started_at, now), str(i.level or ""), took, objective,
                          "yes" if i.resolved else "no")  # fmt: skip
    parts += [incidents if h.incidents else Text("No incidents in status.", style="dim"), Text("")]
    timeline = Table(title="Events", title_justify="left", box=None, header_style="bold")
    for column in ("TIME", "TYPE", "REASON", "MESSAGE"):
        timeline.add_column(column, no_wrap=column != "MESSAGE")
    for e in h.events:
        timeline.add_row(clock(e.at, now), e.type, e.reason, e.message)
    parts.append(
        timeline
        if h.events
        else Text("No Events (the API server keeps them for about an hour).", style="dim")
    )
    return Group(*parts)


def _took(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds)))
