"""What a rollback says is what serves, whatever happens: an invariant over random stories.

Random plans (flag-gated, low risk with flags, steps that switch flags, plain canaries),
recovery settings and scripts of failures, recoveries, new templates, reverts, aborts,
retries and root-cause fixes, on a world whose target may take time to roll. At every tick:

- `RolledBack` by the code level means the target's template is the stable one, or the
  incident names what to revert in git and the message says so, and no ready pod of the
  rolled-back revision serves from the target or a canary;
- "all traffic on stable" is said only when no pod of the rolled-back revision is ready;
- no level is healthy before a whole analysis window after its change was in place;
- flags Parachute switched on for a release are off once that release is rolled back;
- an incident's `newCodeInTarget` is what the target's ReplicaSets showed when it opened;
- a canary is never created of a revision the target's own pods already serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from parachute.api import (
    ABORT_ANNOTATION,
    RESOLVED_ANNOTATION,
    RETRY_ANNOTATION,
    FlagState,
    Phase,
    RecoveryLevel,
    Verdict,
)
from parachute.plan.desired_workload import template_revision
from parachute.plan.engine import parse_time
from parachute.plan.model import Decision, Observed
from parachute.plan.rollback import still_serving
from tests.unit.world import Story, World, spec

SECOND = timedelta(seconds=1)
WINDOW = timedelta(seconds=10)
FLAGS = {"configMapRef": {"name": "checkout-flags"}, "flags": ["new-checkout"]}
PLANS: dict[str, dict[str, Any]] = {
    "flag-gated": {"featureFlags": FLAGS},
    "low": {"featureFlags": FLAGS, "risk": "low"},
    "steps-with-flags": {
        "featureFlags": FLAGS,
        "steps": [
            {"weight": 100, "minWait": "1m", "flags": "off"},
            {"weight": 100, "minWait": "1m", "maxWait": "3m", "flags": "on"},
        ],
    },
    "canary-then-flags": {
        "featureFlags": FLAGS,
        "steps": [{"weight": 20, "minWait": "1m", "flags": "on"}, {"weight": 100, "minWait": "1m"}],
    },
    "plain": {},
}

actions = st.sampled_from(
    ["tick", "wait", "wait", "fail", "heal", "heal", "template", "revert", "abort", "retry", "resolve"]
)


def act(story: Story, action: str, n: int) -> timedelta:
    """Do one thing to the world; how long passes before the next look."""
    world = story.world
    if action == "fail":
        story.judge(Verdict.failed)
    elif action == "heal":  # a round on a window that began after whatever changed last
        story.now += WINDOW + SECOND
        story.judge(Verdict.successful)
    elif action == "template":
        world.revision = f"rev-{n + 2}"
    elif action == "revert":
        stable = story.status.release.stable_revision if story.status.release else None
        world.revision = template_revision(stable or world.revision)
    elif action == "abort":
        world.annotations[ABORT_ANNOTATION] = f"a{n}"
    elif action == "retry":
        world.annotations[RETRY_ANNOTATION] = f"r{n}"
    elif action == "resolve":
        world.annotations[RESOLVED_ANNOTATION] = "all"
    return timedelta(minutes=1) if action == "wait" else 3 * SECOND


@dataclass
class Memory:
    """What the test saw over the story, independent of what the planner recorded."""

    flags_on_for: set[str] = field(default_factory=set)  # releases whose flags Parachute put on
    incidents: set[str] = field(default_factory=set)


def check(story: Story, seen: Observed, decision: Decision, canary_before: Any, memory: Memory) -> None:
    status = decision.status
    assert 0 <= (status.canary_weight or 0) <= 100
    assert decision.workload.canary_replicas >= 0
    if status.phase in (Phase.aborted, Phase.rolled_back, Phase.healthy, Phase.waiting):
        assert decision.workload.canary_replicas == 0

    # Never a canary of a revision the target's own pods serve (one already running is kept).
    intent = decision.workload
    stable = status.release.stable_revision if status.release else None
    if intent.canary_replicas and intent.canary_revision:
        new = template_revision(intent.canary_revision)
        kept = canary_before is not None and canary_before.revision == intent.canary_revision
        if new != template_revision(stable or "") and seen.serving.in_target(new):
            assert kept and canary_before.replicas > 0, "a canary created beside a target running it"

    plan, index = status.plan or [], status.stage_index
    stage_on = index is not None and index < len(plan) and plan[index].flags == FlagState.on
    if (
        status.phase == Phase.progressing
        and stage_on
        and story.world.flags == FlagState.on
        and status.release
    ):
        memory.flags_on_for.add(status.release.revision or "")
    incident = status.incidents[-1] if status.incidents else None
    if incident is None:
        return
    if incident.id not in memory.incidents:  # opened on this observation
        memory.incidents.add(incident.id)
        bad = template_revision(incident.revision or "")
        assert incident.new_code_in_target == (seen.serving.in_target(bad) > 0)
    # Never healthy at once: a whole window after the change, at every level.
    for record in incident.levels or []:
        if record.healthy_at is not None:
            applied = parse_time(record.applied_at)
            assert applied is not None and parse_time(record.healthy_at) >= applied + WINDOW  # type: ignore[operator]
    if status.phase != Phase.rolled_back:
        return
    in_target, in_canary = still_serving(seen, incident)
    message = status.message or ""
    if "all traffic on stable" in message:
        assert (in_target, in_canary) == (0, 0), message
    if incident.level == RecoveryLevel.code:
        assert (in_target, in_canary) == (0, 0), f"rolled back while the revision serves: {message}"
        template_stable = template_revision(seen.target.revision) == template_revision(
            incident.stable_revision or ""
        )
        assert template_stable or (incident.revert_in_git and "revert it in git to" in message), message
    if incident.revision in memory.flags_on_for:
        assert story.world.flags == FlagState.off, "flags Parachute switched on were left on"


@st.composite
def stories(draw: st.DrawFn) -> tuple[Story, list[str]]:
    """A Rollout of a random plan and recovery, adopted, rev-2 applied; and a script for it."""
    fields: dict[str, Any] = {"risk": "medium", **PLANS[draw(st.sampled_from(sorted(PLANS)))]}
    if "steps" not in fields:
        fields["waits"] = {"min": "1m", "max": "3m"}
    recovery: dict[str, Any] = {"restoreTemplate": draw(st.booleans()), "watchAfterRollback": "10m"}
    levels = draw(st.sampled_from([None, ["code"], ["flag", "code"]]))
    if levels is not None:
        recovery["levels"] = levels
    analysis = {"prometheus": {"address": "http://prometheus:9090"}, "interval": "10s"}
    flags = draw(st.sampled_from([FlagState.on, FlagState.off])) if "featureFlags" in fields else None
    world = World(flags=flags, roll_delay=draw(st.sampled_from([timedelta(0), 20 * SECOND])))
    story = Story(spec(**fields, recovery=recovery, analysis=analysis), world)
    story.tick()
    world.revision = "rev-2"
    return story, draw(st.lists(actions, min_size=1, max_size=40))


@settings(max_examples=300, deadline=None)
@given(stories())
def test_a_rollback_says_what_serves_whatever_happens(drawn: tuple[Story, list[str]]) -> None:
    story, script = drawn
    memory = Memory()
    for n, action in enumerate(script):
        after = act(story, action, n)
        # The action's own look, then the planner's wake-ups as the scheduler follows them.
        for step in (after, SECOND, SECOND, SECOND):
            canary_before = story.world.canary
            decision = story.tick(step)
            assert story.seen is not None
            check(story, story.seen, decision, canary_before, memory)
