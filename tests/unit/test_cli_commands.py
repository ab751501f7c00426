"""The plugin's commands without a cluster: what `status` concludes, the patches the steering
commands make, the postmortem draft, and kubectl's flags before or after the command."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parachute.cli import actions, postmortem
from parachute.cli.main import parser
from parachute.cli.progress import Exit, outcome
from tests.unit.test_cli_view import KNOWN_STATUS, NOW, rollout


def body(generation: int = 1, **status: Any) -> dict[str, Any]:
    document = rollout({"observedGeneration": 1, **status})
    document["metadata"]["generation"] = generation
    return document


RELEASED = {"phase": "Healthy", "release": {"revision": "new", "stableRevision": "new"}}
INCIDENT = {
    "id": "new-1",
    "revision": "new",
    "reason": "error-rate Failed",
    "startedAt": "2026-11-26T11:00:00Z",
}


@pytest.mark.parametrize(
    ("status", "generation", "waiting_for", "done", "code"),
    [
        pytest.param({}, 1, "new", False, Exit.timeout, id="no status yet: wait"),
        pytest.param(RELEASED, 2, "new", False, Exit.timeout, id="a spec the operator has not seen: wait"),
        pytest.param(RELEASED, 1, "new", True, Exit.released, id="released"),
        pytest.param(RELEASED, 1, None, True, Exit.released, id="released, no target to compare with"),
        pytest.param({"phase": "Healthy", "release": {"revision": "old", "stableRevision": "old"}}, 1, "new",
                     False, Exit.timeout, id="an earlier release's Healthy says nothing of this one"),
        pytest.param({"phase": "Progressing", "release": {"revision": "new", "stableRevision": "old"}}, 1, "new",
                     False, Exit.timeout, id="progressing"),
        pytest.param({"phase": "Paused", "release": {"revision": "new", "stableRevision": "old"}}, 1, "new",
                     False, Exit.timeout, id="paused: a person may resume it"),
        pytest.param({"phase": "RollingBack", "release": {"revision": "new"}, "incidents": [INCIDENT]}, 1, "new",
                     True, Exit.rolled_back, id="rolling back"),
        pytest.param({"phase": "RolledBack", "release": {"revision": "new"}, "incidents": [INCIDENT]}, 1, "new",
                     True, Exit.rolled_back, id="rolled back"),
        pytest.param({"phase": "Waiting", "release": {"revision": "new"}, "incidents": [INCIDENT],
                      "blockedRevisions": ["new"]}, 1, "new", True, Exit.rolled_back,
                     id="a revision blocked by an earlier rollback fails at once"),
        pytest.param({"phase": "RolledBack", "release": {"revision": "old"},
                      "incidents": [{**INCIDENT, "revision": "old"}]}, 1, "new", False, Exit.timeout,
                     id="an earlier rollback says nothing of this release"),
        pytest.param({"phase": "Progressing", "release": {"revision": "new"},
                      "incidents": [{**INCIDENT, "resolved": True}]}, 1, "new", False, Exit.timeout,
                     id="a resolved incident of the same revision no longer fails it"),
        pytest.param({"phase": "Aborted", "release": {"revision": "new", "stableRevision": "old"}}, 1, "new",
                     True, Exit.aborted, id="aborted"),
        pytest.param({"phase": "Invalid", "message": "spec.targetRef.name: not found"}, 1, "new", True,
                     Exit.invalid, id="invalid"),
    ],
)  # fmt: skip
def test_what_status_concludes(
    status: dict[str, Any], generation: int, waiting_for: str | None, done: bool, code: Exit
) -> None:
    document = body(generation, **status) if status else rollout({})
    result = outcome(document, waiting_for)
    assert (result.done, result.exit if result.done else Exit.timeout) == (done, code)


def test_each_command_annotation_gets_a_new_value_every_time() -> None:
    first = actions.annotate("promote", NOW)
    second = actions.annotate("promote", NOW.replace(microsecond=1))
    assert first == {"metadata": {"annotations": {"parachute.dev/promote": "2026-11-26T12:00:00.000000Z"}}}
    assert first != second
    assert actions.annotate("abort", NOW)["metadata"]["annotations"].keys() == {"parachute.dev/abort"}
    assert actions.annotate("retry", NOW)["metadata"]["annotations"].keys() == {"parachute.dev/retry"}
    assert actions.pause(True) == {"spec": {"paused": True}}


def test_resolve_names_a_blocked_revision_or_all() -> None:
    document = rollout()
    assert actions.resolve(document, "9a8b7c6d5e") == {
        "metadata": {"annotations": {"parachute.dev/resolved": "9a8b7c6d5e"}}
    }
    assert actions.resolve(document, "all")["metadata"]["annotations"]["parachute.dev/resolved"] == "all"
    with pytest.raises(actions.ActionError, match=r"revision nope is not blocked \(blocked: 9a8b7c6d5e\)"):
        actions.resolve(document, "nope")
    # The operator acts once per value: the same value again would do nothing, so say so.
    document["metadata"]["annotations"] = {"parachute.dev/resolved": "9a8b7c6d5e"}
    with pytest.raises(actions.ActionError, match="resolve `all` instead"):
        actions.resolve(document, "9a8b7c6d5e")


def test_the_postmortem_draft_tells_the_incident_from_its_record() -> None:
    events = [
        {"type": "Normal", "reason": "Adopted", "message": "before the release", "lastTimestamp": "2026-11-25T09:00:00Z"},
        {"type": "Normal", "reason": "ReleaseStarted", "message": "releasing revision 9a8b7c6d5e over 0f3e9a7c21",
         "lastTimestamp": "2026-11-25T10:00:00Z"},
        {"type": "Warning", "reason": "MetricFailed", "message": "error-rate 6.1% above 5%",
         "lastTimestamp": "2026-11-25T10:30:00Z"},
        {"type": "Normal", "reason": "ReleaseStarted", "message": "a later release", "lastTimestamp": "2026-11-26T09:00:00Z"},
    ]  # fmt: skip
    # Status holds a later release now: the Events say when this one began.
    text = postmortem.draft(rollout(), events, None, NOW)
    assert text.startswith("# Postmortem: shop/checkout, revision 9a8b7c6d5e rolled back\n")
    assert "**Due by 2026-11-27 10:30:41Z.**" in text
    assert (
        "Parachute rolled back through the flag level. Health was back after 41s (objective 5m: met)." in text
    )
    timeline = text.split("## Timeline (UTC)")[1].split("\n## ")[0]
    rows = [line.strip("| ").split(" | ") for line in timeline.strip().splitlines()[2:]]
    assert rows == [
        ["2026-11-25 10:00:00Z", "ReleaseStarted: releasing revision 9a8b7c6d5e over 0f3e9a7c21"],
        ["2026-11-25 10:30:00Z", "MetricFailed: error-rate 6.1% above 5%"],
        [
            "2026-11-25 10:30:00Z",
            "first critical verdict: error-rate Failed: 6.1% is above 5% (roll back at once)",
        ],
        ["2026-11-25 10:30:00Z", "level flag started"],
        [
            "2026-11-25 10:30:02Z",
            "level flag in place: flag new-checkout-flow off in configmap/checkout-flags",
        ],
        ["2026-11-25 10:30:41Z", "health back (level flag)"],
        ["2026-11-25 10:30:41Z", "recovered in 41s"],
    ]
    assert "From the first critical verdict to health: **41s** against the objective of 5m: met." in text
    assert "- flag level: flag new-checkout-flow off in configmap/checkout-flags" in text
    assert "`kubectl parachute resolve checkout 9a8b7c6d5e`" in text
    for step in ("Notify team", "Update status page", "Document incident", "Keep monitoring",
                 "Schedule postmortem", "Fix root cause"):  # fmt: skip
        assert f"**{step}**" in text
    assert "## Root cause" in text and "## Actions" in text


def test_a_missed_objective_says_by_how_much() -> None:
    status = copy.deepcopy(KNOWN_STATUS)
    status["incidents"][0].update(recoverySeconds=400, objectiveMet=False)
    text = postmortem.draft(rollout(status), [], None, NOW)
    assert "against the objective of 5m: missed by 1m40s." in text


def test_an_incident_is_picked_by_id_or_number_and_an_unknown_one_is_named() -> None:
    status = postmortem.status_of(rollout())
    assert postmortem.pick(status, None).id == "9a8b7c6d5e-20261125103000"
    assert postmortem.pick(status, "1").id == postmortem.pick(status, "9a8b7c6d5e-20261125103000").id
    with pytest.raises(postmortem.NoIncidentError, match="1: 9a8b7c6d5e-20261125103000"):
        postmortem.pick(status, "7")
    with pytest.raises(postmortem.NoIncidentError, match="no incident in status"):
        postmortem.pick(postmortem.status_of(rollout({})), None)


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "shop", "--context", "prod", "-o", "json", "get", "checkout"],
        ["get", "checkout", "-n", "shop", "--context", "prod", "-o", "json"],
        ["--context", "prod", "get", "-o", "json", "checkout", "--namespace", "shop"],
    ],
    ids=["before", "after", "both"],
)
def test_kubectls_flags_go_before_or_after_the_command(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert (args.namespace, args.context, args.output, args.name, args.command) == (
        "shop", "prod", "json", "checkout", "get",
    )  # fmt: skip


def test_defaults_are_the_contexts_namespace_and_text() -> None:
    args = parser().parse_args(["status", "checkout"])
    assert (args.namespace, args.output, args.timeout, args.kubeconfig) == (None, "text", "30m", None)


def test_the_clock_for_relative_times_is_utc() -> None:
    assert NOW.tzinfo is UTC and datetime(2026, 1, 1, tzinfo=UTC) < NOW


PHASES = [
    "Pending",
    "Waiting",
    "Progressing",
    "Paused",
    "RollingBack",
    "RolledBack",
    "Aborted",
    "Healthy",
    "Invalid",
]
REVISIONS = st.sampled_from(["a", "b", "c"])


@given(
    st.fixed_dictionaries({
        "phase": st.sampled_from(PHASES), "revision": REVISIONS, "stable": REVISIONS, "waited": st.none() | REVISIONS,
        "incident": st.none() | REVISIONS, "resolved": st.booleans(), "behind": st.booleans(),
    })
)  # fmt: skip
def test_status_says_released_only_for_the_revision_it_waits_for_once_it_is_stable(
    case: dict[str, Any],
) -> None:
    status: dict[str, Any] = {
        "phase": case["phase"], "release": {"revision": case["revision"], "stableRevision": case["stable"]},
    }  # fmt: skip
    if case["incident"] is not None:
        status["incidents"] = [{**INCIDENT, "revision": case["incident"], "resolved": case["resolved"]}]
    result = outcome(body(2 if case["behind"] else 1, **status), case["waited"])
    if result.done and result.exit == Exit.released:
        assert not case["behind"] and case["phase"] == "Healthy" and case["revision"] == case["stable"]
        assert case["waited"] in (None, case["revision"])
    if case["behind"]:
        assert not result.done  # nothing is concluded from a spec the operator has not seen
