"""The flag level asks the app (spec.featureFlags.verify): the store showing the flags off is not
enough, the pods serving the release must say so too. Told as stories on a virtual clock: the
app agrees, disagrees within its grace, disagrees past it (the level escalates at once, long
before its budget, saying what the app said), cannot be asked (proof of nothing: the budget
decides), and an operator restarted mid-grace resumes from status. Then the pure parts: whom to
ask, what one answer says, and the answers summed up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from parachute.api import FlagCheck, FlagState, Incident, Phase, RecoveryLevel, RolloutStatus, Verdict
from parachute.conditions import timestamp
from parachute.plan import flag_check, rollback
from parachute.plan.flag_check import PodAnswer
from parachute.plan.model import AppAnswer, FlagCheckView, Observed, Serving, TargetState
from tests.unit.world import Story, World, spec

SECOND = timedelta(seconds=1)
ANALYSIS = {"prometheus": {"address": "http://prometheus:9090"}, "interval": "10s"}
VERIFY = {
    "path": "/health",
    "jsonPath": "features.new-checkout",
    "expect": False,
    "grace": "15s",
    "port": 8080,
}
FLAGS = {"configMapRef": {"name": "checkout-flags"}, "flags": ["new-checkout"], "verify": VERIFY}
STEPS = [
    {"name": "canary", "weight": 10, "minWait": "10m", "maxWait": "20m"},
    {"name": "full", "weight": 100},
]
CHECK = FlagCheck.model_validate(VERIFY)

AGREES = FlagCheckView(
    AppAnswer.match, "4 pods of revision rev-2: GET /health says features.new-checkout is false"
)
DISAGREES = FlagCheckView(
    AppAnswer.mismatch, "pod checkout-canary-a: GET /health says features.new-checkout is true, not false"
)
AWAY = FlagCheckView(AppAnswer.unknown, "pod checkout-canary-a: GET /health failed: Connection refused")


@dataclass
class Asked(World):
    """A world whose pods answer `says` when the reconcile would ask them (`asks`)."""

    says: FlagCheckView | None = AGREES
    asks: Callable[[Observed], bool] = field(default=lambda seen: False)
    asked: int = 0

    def observe(self, now: datetime) -> Observed:
        seen = super().observe(now)
        if not self.asks(seen):
            return seen
        self.asked += 1
        return replace(seen, flag_check=self.says)


def story_of(flags: dict[str, Any] | None = None, **world: Any) -> Story:
    """Adopted at rev-1, rev-2 applied behind its flags (on), then judged Failed: rolling back."""
    story = Story(
        spec(steps=STEPS, analysis=ANALYSIS, featureFlags=flags or FLAGS), Asked(flags=FlagState.on, **world)
    )
    asked = story.world
    assert isinstance(asked, Asked)
    # As the reconcile does: asked only when the planner says the app is to be asked.
    asked.asks = lambda seen: rollback.asks_app(story.spec, story.status, seen)
    story.tick()
    story.world.revision = "rev-2"
    story.tick(SECOND)
    story.tick(SECOND)
    story.judge(Verdict.failed)
    story.tick(SECOND)  # the incident opens at the flag level; the flags are switched off
    assert story.status.phase == Phase.rolling_back and levels(story) == [RecoveryLevel.flag]
    return story


def world_of(story: Story) -> Asked:
    assert isinstance(story.world, Asked)
    return story.world


def incident(story: Story) -> Incident:
    assert story.status.incidents
    return story.status.incidents[-1]


def levels(story: Story) -> list[RecoveryLevel]:
    return [r.level for r in incident(story).levels or []]


def flag_level(story: Story) -> Any:
    return (incident(story).levels or [])[0]


def escalations(story: Story) -> list[str]:
    return [e.message for e in story.events if e.reason == "RecoveryEscalated"]


# ---------------------------------------------------------------------------- the decision table


def test_the_level_is_in_place_once_the_app_says_the_flags_are_off() -> None:
    story = story_of(says=AGREES)
    story.tick(SECOND)  # the store shows the flags off: the app is asked, and agrees
    assert world_of(story).asked == 1
    record = flag_level(story)
    assert record.applied_at == timestamp(story.now) and record.flag_check.said == AGREES.said
    assert record.flag_check.mismatch_since is None
    assert "RecoveryApplied" in story.reasons and not escalations(story)
    story.tick(SECOND)
    assert world_of(story).asked == 1, "once in place, the app is not asked again"


@pytest.mark.parametrize(
    ("change", "asks"),
    [
        pytest.param(lambda st, seen: (st, seen), True, id="flag-level-store-off"),
        pytest.param(lambda st, seen: (st, replace(seen, flags=replace(seen.flags, state=FlagState.on))), False,
                     id="store-not-off-yet"),
        pytest.param(lambda st, seen: (st, replace(seen, flags=replace(seen.flags, state=None))), False,
                     id="store-mixed"),
        pytest.param(lambda st, seen: (st.model_copy(update={"phase": Phase.rolled_back}), seen), False,
                     id="not-rolling-back"),
    ],
)  # fmt: skip
def test_when_the_app_is_asked(
    change: Callable[[RolloutStatus, Observed], tuple[RolloutStatus, Observed]], asks: bool
) -> None:
    story = story_of(says=AGREES)
    seen = replace(story.world.observe(story.now), flag_check=None)
    status, seen = change(story.status, seen)
    assert rollback.asks_app(story.spec, status, seen) is asks


def test_the_app_is_not_asked_at_another_level_or_once_the_level_is_in_place() -> None:
    story = story_of(says=AGREES)
    story.tick(SECOND)
    assert flag_level(story).applied_at is not None
    assert not rollback.asks_app(story.spec, story.status, story.world.observe(story.now))
    escalated = story_of(says=DISAGREES)
    escalated.tick(SECOND)
    escalated.tick(15 * SECOND)
    assert levels(escalated)[-1] == RecoveryLevel.code
    assert not rollback.asks_app(escalated.spec, escalated.status, escalated.world.observe(escalated.now))


def test_a_disagreeing_app_within_its_grace_holds_the_level_and_says_why() -> None:
    story = story_of(says=DISAGREES)
    story.tick(SECOND)
    first = story.now
    story.tick(10 * SECOND)
    record = flag_level(story)
    assert record.applied_at is None and levels(story) == [RecoveryLevel.flag]
    assert record.flag_check.mismatch_since == timestamp(first) and record.flag_check.said == DISAGREES.said
    message = story.status.message or ""
    assert "waits for the app to say features.new-checkout is false" in message, message
    assert f"escalating at {timestamp(first + 15 * SECOND)}" in message, message
    # Looked at again when the grace ends, not only at the next routine look.
    assert story.last is not None and story.last.next_check_at is not None
    assert story.last.next_check_at <= first + 15 * SECOND


def test_a_disagreeing_app_past_its_grace_escalates_at_once_long_before_the_budget() -> None:
    story = story_of(says=DISAGREES)
    story.tick(SECOND)
    first = story.now
    story.tick(14 * SECOND)
    assert levels(story) == [RecoveryLevel.flag]
    story.tick(SECOND)  # 15 s after it first disagreed: the grace is over
    assert levels(story) == [RecoveryLevel.flag, RecoveryLevel.code]
    record = flag_level(story)
    assert record.applied_at is None and record.seconds is not None and record.seconds < 60  # budget: 5m
    assert record.flag_check.mismatch_since == timestamp(first)
    (why,) = escalations(story)
    assert why.startswith("level flag: the app does not report the flags off after 15s (grace 15s): ")
    assert DISAGREES.said in why and why.endswith("moving to level code"), why


def test_an_app_that_comes_round_within_its_grace_puts_the_level_in_place() -> None:
    story = story_of(says=DISAGREES)
    story.tick(SECOND)
    story.tick(5 * SECOND)
    world_of(story).says = AGREES  # its flag SDK polled the store
    story.tick(SECOND)
    record = flag_level(story)
    assert record.applied_at == timestamp(story.now) and not escalations(story)


def test_an_app_that_cannot_be_asked_proves_nothing_and_the_budget_decides() -> None:
    story = story_of(says=AWAY)
    story.tick(SECOND)
    story.tick(60 * SECOND)  # far past the grace: no early escalation on no answer
    record = flag_level(story)
    assert levels(story) == [RecoveryLevel.flag] and record.applied_at is None
    assert record.flag_check.mismatch_since is None and record.flag_check.said == AWAY.said
    story.tick(4 * 60 * SECOND)  # the flag level's 5 minutes are over
    assert levels(story) == [RecoveryLevel.flag, RecoveryLevel.code]
    (why,) = escalations(story)
    assert "its change was not in place within 5m (the app: " in why and "Connection refused" in why, why


def test_an_operator_restarted_mid_grace_resumes_from_status() -> None:
    story = story_of(says=DISAGREES)
    story.tick(SECOND)
    first = story.now
    story.tick(10 * SECOND)
    # A new operator: nothing but the status (through JSON) and the world carries over.
    restarted = Story(story.spec, story.world, story.now + 4 * SECOND,
                      RolloutStatus.model_validate(story.status.model_dump(by_alias=True, mode="json")))  # fmt: skip
    world_of(restarted).asks = lambda seen: rollback.asks_app(restarted.spec, restarted.status, seen)
    restarted.tick()
    assert levels(restarted) == [RecoveryLevel.flag], "14 s: still within the grace"
    restarted.tick(SECOND)
    assert levels(restarted) == [RecoveryLevel.flag, RecoveryLevel.code]
    assert flag_level(restarted).flag_check.mismatch_since == timestamp(first)


def test_pods_that_must_restart_are_asked_only_once_they_have() -> None:
    story = story_of({**FLAGS, "reloads": False}, says=DISAGREES, restarts=False)
    story.tick(20 * SECOND)
    assert world_of(story).asked == 0 and levels(story) == [RecoveryLevel.flag]
    assert story.last is not None
    story.world.restarted_at = story.last.recovery.restart_stamp  # the restarted pods are ready
    world_of(story).says = AGREES
    story.tick(SECOND)
    assert world_of(story).asked == 1 and flag_level(story).applied_at == timestamp(story.now)


def test_without_verify_the_store_alone_puts_the_level_in_place() -> None:
    story = story_of({k: v for k, v in FLAGS.items() if k != "verify"}, says=DISAGREES)
    story.tick(SECOND)
    assert world_of(story).asked == 0 and flag_level(story).applied_at == timestamp(story.now)
    assert flag_level(story).flag_check is None


# ---------------------------------------------------------------------------- whom to ask

STABLE_HASH, BAD_HASH = "aaa", "bbb"
OBSERVED = Observed(
    target=TargetState(revision="rev-1", replicas=4, paused=True),
    serving=Serving(target_sets={STABLE_HASH: ("rev-1", 4), BAD_HASH: ("rev-2", 2)}),
)
INCIDENT = Incident(
    id="i", revision="rev-2", stable_revision="rev-1", reason="r", started_at="2026-11-24T10:00:00Z"
)


def pod(name: str, *, canary: bool = False, digest: str = STABLE_HASH, ready: bool = True,
        ip: str | None = "10.0.0.1", ports: list[dict[str, Any]] | None = None,
        deleting: bool = False) -> dict[str, Any]:  # fmt: skip
    labels = {
        "app": "checkout",
        "pod-template-hash": digest,
        **({"parachute.dev/canary": "true"} if canary else {}),
    }
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-24T10:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "ports": ports or []}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


@pytest.mark.parametrize(
    ("pods", "asked"),
    [
        pytest.param([pod("s1"), pod("c1", canary=True)], ["c1"], id="the-canary-not-stable"),
        pytest.param([pod("s1"), pod("t1", digest=BAD_HASH)], ["t1"], id="the-targets-pods-of-the-bad-template"),
        pytest.param([pod("c1", canary=True, ready=False)], [], id="not-ready-is-not-asked"),
        pytest.param([pod("c1", canary=True, ip=None)], [], id="no-address-yet"),
        pytest.param([pod("c1", canary=True, deleting=True)], [], id="on-its-way-out"),
        pytest.param([pod(f"c{i:02}", canary=True) for i in range(40)],
                     [f"c{i:02}" for i in range(flag_check.MAX_ASKED)], id="at-most-MAX_ASKED-in-name-order"),
    ],
)  # fmt: skip
def test_the_ready_pods_serving_the_rolled_back_revision_are_asked(
    pods: list[dict[str, Any]], asked: list[str]
) -> None:
    addresses, unaskable = flag_check.pods_to_ask(pods, OBSERVED, INCIDENT, CHECK)
    assert [a.pod for a in addresses] == asked and not unaskable


def test_a_release_of_configuration_alone_asks_every_pod_of_the_target() -> None:
    same_template = INCIDENT.model_copy(update={"revision": "rev-1.cfg2", "stable_revision": "rev-1.cfg1"})
    observed = replace(OBSERVED, target=replace(OBSERVED.target, revision="rev-1.cfg2"))
    addresses, _ = flag_check.pods_to_ask([pod("s1"), pod("s2")], observed, same_template, CHECK)
    assert [a.pod for a in addresses] == ["s1", "s2"]


@pytest.mark.parametrize(
    ("port", "ports", "ip", "url"),
    [
        pytest.param("8080", [], "10.0.0.1", "http://10.0.0.1:8080/health", id="a-number"),
        pytest.param("http", [{"name": "metrics", "containerPort": 9090}, {"name": "http", "containerPort": 8081}],
                     "10.0.0.1", "http://10.0.0.1:8081/health", id="a-name"),
        pytest.param(None, [{"containerPort": 8082}, {"containerPort": 9090}], "10.0.0.1",
                     "http://10.0.0.1:8082/health", id="default-the-first-declared"),
        pytest.param("8080", [], "fd00::5", "http://[fd00::5]:8080/health", id="ipv6"),
    ],
)  # fmt: skip
def test_where_a_pod_is_asked(port: str | None, ports: list[dict[str, Any]], ip: str, url: str) -> None:
    check = CHECK.model_copy(update={"port": port})
    addresses, _ = flag_check.pods_to_ask(
        [pod("c1", canary=True, ip=ip, ports=ports)], OBSERVED, INCIDENT, check
    )
    assert [a.url for a in addresses] == [url]


@pytest.mark.parametrize(
    ("port", "said"),
    [
        pytest.param(None, "pod c1: declares no container port: set spec.featureFlags.verify.port", id="none-declared"),
        pytest.param("http", "pod c1: declares no container port named http: set spec.featureFlags.verify.port",
                     id="no-such-name"),
    ],
)  # fmt: skip
def test_a_pod_without_the_port_cannot_be_asked_and_says_what_to_set(port: str | None, said: str) -> None:
    check = CHECK.model_copy(update={"port": port})
    addresses, unaskable = flag_check.pods_to_ask([pod("c1", canary=True)], OBSERVED, INCIDENT, check)
    assert not addresses and [(a.answer, str(a)) for a in unaskable] == [(AppAnswer.unknown, said)]


# ---------------------------------------------------------------------------- what one pod said


@pytest.mark.parametrize(
    ("code", "body", "error", "answer", "said"),
    [
        pytest.param(200, b'{"features": {"new-checkout": false}}', "", AppAnswer.match,
                     "GET /health says features.new-checkout is false", id="agrees"),
        pytest.param(200, b'{"features": {"new-checkout": true}}', "", AppAnswer.mismatch,
                     "GET /health says features.new-checkout is true, not false", id="disagrees"),
        pytest.param(200, b'{"features": {"new-checkout": "false"}}', "", AppAnswer.mismatch,
                     'GET /health says features.new-checkout is "false", not false', id="a-string-is-not-a-bool"),
        pytest.param(200, b'{"features": {"new-checkout": 0}}', "", AppAnswer.mismatch,
                     "GET /health says features.new-checkout is 0, not false", id="zero-is-not-false"),
        pytest.param(200, b'{"features": {"checkout-v2": false}}', "", AppAnswer.mismatch,
                     "GET /health has no features.new-checkout (expected false)", id="reads-another-key"),
        pytest.param(503, b'{"features": {"new-checkout": false}}', "", AppAnswer.unknown,
                     "GET /health answered 503", id="not-2xx"),
        pytest.param(200, b"ok", "", AppAnswer.unknown, "GET /health answered 200 with no JSON", id="not-json"),
        pytest.param(None, None, "Connection refused", AppAnswer.unknown,
                     "GET /health failed: Connection refused", id="refused"),
    ],
)  # fmt: skip
def test_one_pods_answer(
    code: int | None, body: bytes | None, error: str, answer: AppAnswer, said: str
) -> None:
    assert flag_check.answer(CHECK, "c1", code, body, error) == PodAnswer("c1", answer, said)


@pytest.mark.parametrize(
    ("document", "path", "found"),
    [
        pytest.param({"features": {"new-checkout": False}}, "features.new-checkout", (True, False), id="nested"),
        pytest.param({"features": {"new-checkout": False}}, ".features.new-checkout", (True, False), id="leading-dot"),
        pytest.param({"flags": [{"on": True}, {"on": False}]}, "flags.1.on", (True, False), id="list-index"),
        pytest.param({"flags": [{"on": True}]}, "flags.3.on", (False, None), id="index-out-of-range"),
        pytest.param({"features": None}, "features.x", (False, None), id="through-a-null"),
        pytest.param({"features": {"x": None}}, "features.x", (True, None), id="a-null-is-a-value"),
    ],
)  # fmt: skip
def test_lookup(document: Any, path: str, found: tuple[bool, Any]) -> None:
    assert flag_check.lookup(document, path) == found


@pytest.mark.parametrize(
    ("answers", "answer", "said"),
    [
        pytest.param([], AppAnswer.unknown, "no ready pod of revision rev-2 to ask", id="no-pod"),
        pytest.param([PodAnswer("b", AppAnswer.match, "ok"), PodAnswer("a", AppAnswer.match, "ok")],
                     AppAnswer.match, "2 pods of revision rev-2: ok", id="all-agree"),
        pytest.param([PodAnswer("a", AppAnswer.match, "ok")], AppAnswer.match, "pod a: ok", id="the-one-agrees"),
        pytest.param([PodAnswer("a", AppAnswer.match, "ok"), PodAnswer("c", AppAnswer.mismatch, "true"),
                      PodAnswer("b", AppAnswer.unknown, "refused")],
                     AppAnswer.mismatch, "pod c: true (1 of 3 pods)", id="one-disagreeing-outweighs-all"),
        pytest.param([PodAnswer("a", AppAnswer.match, "ok"), PodAnswer("b", AppAnswer.unknown, "refused")],
                     AppAnswer.unknown, "pod b: refused (1 of 2 pods)", id="one-unasked-is-no-proof"),
    ],
)  # fmt: skip
def test_the_answers_summed_up(answers: list[PodAnswer], answer: AppAnswer, said: str) -> None:
    assert flag_check.summarise(answers, "rev-2") == FlagCheckView(answer, said)
