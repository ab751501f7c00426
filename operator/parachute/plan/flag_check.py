"""What the app says of the release's flags, judged (spec.featureFlags.verify).

Pure. The flag level changes the store; an app that caches its flags, or reads another key,
keeps serving the new path whatever the store says. With `verify`, the ready pods serving the
rolled-back revision are asked (`parachute.recovery.verify` asks them), and the level counts as
in place only once every one reports the expected value. A pod that reports otherwise once the
store shows the flags off has the check's `grace` to change its answer; then the level escalates
at once, saying what it reported. An answer that cannot be had (no pod to ask, a refused
connection, no JSON) proves nothing either way: the level waits, and its budget decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from parachute.api import FlagCheck, FlagCheckRecord, Incident, format_duration, parse_duration
from parachute.conditions import at, timestamp
from parachute.plan.desired_workload import HASH_LABEL, template_revision
from parachute.plan.model import AppAnswer, FlagCheckView, Observed
from parachute.plan.versions import CANARY_LABEL

# At most this many pods are asked in one look, in name order: the look stays bounded in time.
MAX_ASKED = 32
# What is shown of a value the app reported.
SHOWN_CHARACTERS = 80


@dataclass(frozen=True)
class Address:
    """Where one pod is asked."""

    pod: str
    url: str


@dataclass(frozen=True)
class PodAnswer:
    pod: str
    answer: AppAnswer
    said: str  # what it answered, in words: `GET /health says features.new-checkout is true, not false`

    def __str__(self) -> str:
        return f"pod {self.pod}: {self.said}"


@dataclass(frozen=True)
class Judgement:
    """The flag level's change as the app shows it: in place, awaited, or to be escalated now."""

    in_place: bool
    record: FlagCheckRecord
    escalate: str = ""  # why the level escalates at once ("" unless the app disagrees past its grace)
    grace_ends: datetime | None = None  # while a disagreement is within its grace: when that ends


# ---------------------------------------------------------------------------- whom to ask


def serves_release(pod: Mapping[str, Any], observed: Observed, incident: Incident) -> bool:
    """Whether the pod runs the rolled-back revision: any canary pod, and the target's pods of
    its template (or, for a release of configuration alone, every pod of the target)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(CANARY_LABEL) == "true":
        return True
    bad, stable = template_revision(incident.revision or ""), incident.stable_revision or ""
    if bad != template_revision(stable):
        revision, _ = observed.serving.target_sets.get(str(labels.get(HASH_LABEL, "")), ("", 0))
        return revision == bad
    return observed.target.revision != stable


def ready(pod: Mapping[str, Any]) -> bool:
    """Ready, with an address, and not on its way out."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def port_of(pod: Mapping[str, Any], wanted: str | None) -> int | None:
    """The port to ask on: a number as given, a container port by name, or the first port the
    pod's first container declares."""
    if wanted is not None and wanted.isdigit():
        return int(wanted)
    containers = (pod.get("spec") or {}).get("containers") or []
    if wanted is None:
        ports = (containers[0].get("ports") or []) if containers else []
        return int(ports[0]["containerPort"]) if ports and "containerPort" in ports[0] else None
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") == wanted and "containerPort" in port:
                return int(port["containerPort"])
    return None


def pods_to_ask(
    pods: Iterable[Mapping[str, Any]], observed: Observed, incident: Incident, check: FlagCheck
) -> tuple[list[Address], list[PodAnswer]]:
    """The ready pods serving the rolled-back revision, where to ask each (at most `MAX_ASKED`),
    and the answers of those that cannot be asked (no such port)."""
    serving = sorted(
        (p for p in pods if ready(p) and serves_release(p, observed, incident)),
        key=lambda p: str((p.get("metadata") or {}).get("name", "")),
    )[:MAX_ASKED]
    addresses: list[Address] = []
    unaskable: list[PodAnswer] = []
    for pod in serving:
        name = str(pod["metadata"]["name"])
        port = port_of(pod, check.port)
        if port is None:
            missing = f"no container port named {check.port}" if check.port else "no container port"
            unaskable.append(PodAnswer(name, AppAnswer.unknown,
                                       f"declares {missing}: set spec.featureFlags.verify.port"))  # fmt: skip
            continue
        ip = str(pod["status"]["podIP"])
        host = f"[{ip}]" if ":" in ip else ip
        addresses.append(Address(name, f"http://{host}:{port}{check.path}"))
    return addresses, unaskable


# ---------------------------------------------------------------------------- what one pod said


def lookup(document: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted path (a number indexes a list): (found, value)."""
    value = document
    for part in path.lstrip(".").split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[: SHOWN_CHARACTERS - 1]}…"


def same(value: Any, expected: Any) -> bool:
    """Equal as JSON: false is neither "false" nor 0."""
    return json.dumps(value, sort_keys=True) == json.dumps(expected, sort_keys=True)


def answer(check: FlagCheck, pod: str, code: int | None, body: bytes | None, error: str = "") -> PodAnswer:
    """One pod's answer: its HTTP status and body, or why there was none."""
    asked = f"GET {check.path}"
    if error or code is None or body is None:
        return PodAnswer(pod, AppAnswer.unknown, f"{asked} failed: {error or 'no answer'}")
    if not 200 <= code < 300:
        return PodAnswer(pod, AppAnswer.unknown, f"{asked} answered {code}")
    try:
        document = json.loads(body)
    except ValueError:
        return PodAnswer(pod, AppAnswer.unknown, f"{asked} answered {code} with no JSON")
    found, value = lookup(document, check.json_path)
    if not found:
        return PodAnswer(pod, AppAnswer.mismatch,
                         f"{asked} has no {check.json_path} (expected {shown(check.expect)})")  # fmt: skip
    if same(value, check.expect):
        return PodAnswer(pod, AppAnswer.match, f"{asked} says {check.json_path} is {shown(value)}")
    return PodAnswer(pod, AppAnswer.mismatch,
                     f"{asked} says {check.json_path} is {shown(value)}, not {shown(check.expect)}")  # fmt: skip


def summarise(answers: Sequence[PodAnswer], revision: str | None) -> FlagCheckView:
    """The pods' answers as one: a pod that disagrees outweighs one that could not be asked,
    which outweighs those that agree; no pod to ask proves nothing."""
    if not answers:
        return FlagCheckView(AppAnswer.unknown, f"no ready pod of revision {revision} to ask")
    for kind in (AppAnswer.mismatch, AppAnswer.unknown):
        those = sorted((a for a in answers if a.answer == kind), key=lambda a: a.pod)
        if those:
            count = f" ({len(those)} of {len(answers)} pods)" if len(answers) > 1 else ""
            return FlagCheckView(kind, f"{those[0]}{count}")
    if len(answers) == 1:
        return FlagCheckView(AppAnswer.match, str(answers[0]))
    return FlagCheckView(AppAnswer.match, f"{len(answers)} pods of revision {revision}: {answers[0].said}")


# ---------------------------------------------------------------------------- the level's verdict


def judge(
    check: FlagCheck, view: FlagCheckView | None, record: FlagCheckRecord | None, now: datetime
) -> Judgement:
    """With the store showing the flags off: whether the app says so too, and what follows."""
    kept = record or FlagCheckRecord()
    if view is None:  # not asked in this look
        return Judgement(False, kept)
    seen = kept.model_copy(update={"said": view.said})
    if view.answer == AppAnswer.match:
        return Judgement(True, seen)
    if view.answer == AppAnswer.unknown:
        return Judgement(False, seen)
    since = at(kept.mismatch_since) if kept.mismatch_since else now
    seen = seen.model_copy(update={"mismatch_since": timestamp(since)})
    grace = parse_duration(check.grace)
    if now >= since + grace:
        waited = format_duration(now - since)
        why = f"the app does not report the flags off after {waited} (grace {check.grace}): {view.said}"
        return Judgement(False, seen, escalate=why)
    return Judgement(False, seen, grace_ends=since + grace)


def awaited(check: FlagCheck, record: FlagCheckRecord | None) -> str:
    """What the level waits for from the app, in words."""
    said = record.said if record and record.said else "not asked yet"
    until = ""
    if record and record.mismatch_since:
        until = f"; escalating at {timestamp(at(record.mismatch_since) + parse_duration(check.grace))}"
    return f"the app to say {check.json_path} is {shown(check.expect)} ({said}{until})"
