"""User reports as a trigger (the playbook: a single report is watched, 10+ reports of the same
issue are evaluated now): counted per key in a sliding window that starts no earlier than the
release, judged as the built-in `user-reports` metric through the same verdicts as every other
metric, and recorded as Events only a token holder can sign."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from parachute.analysis.evaluate import Round, evaluate, judge_reports
from parachute.analysis.provider import FixedProvider
from parachute.api import (
    AnalysisLimits,
    Incident,
    LevelRecord,
    Metric,
    MetricStatus,
    Phase,
    RecoveryLevel,
    ReleaseStatus,
    RolloutSpec,
    RolloutStatus,
    Verdict,
)
from parachute.conditions import timestamp
from parachute.plan.metrics import Kind, reports_query, reports_window, resolve
from parachute.plan.rollback import health_returned
from parachute.plan.verdicts import Sample, health, judge
from parachute.plan.versions import Versions, Where
from parachute.reports import counting, record
from parachute.reports.request import Report
from parachute.reports.tally import Received, ReportsProvider, Unavailable, count, next_change, origin

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
RELEASE = Versions(judged=Where(pods="checkout-canary-x", workload="checkout-canary"),
                   stable=Where(pods="checkout-x", workload="checkout"))  # fmt: skip
USER_REPORTS = resolve(Metric(template="user-reports"), {})


def reports(*found: tuple[str, float]) -> list[Received]:
    """Reports of a key made so many minutes before T0."""
    return [Received(key, T0 - timedelta(minutes=minutes)) for key, minutes in found]


def spec(*metrics: dict[str, Any]) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"}, "risk": "medium",
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "interval": "30s",
                     "metrics": list(metrics) or [{"template": "user-reports"}]},
    })  # fmt: skip


# ------------------------------------------------------------------ the template


def test_the_built_in_has_the_playbooks_numbers_and_counts_in_half_an_hour() -> None:
    assert USER_REPORTS.kind == Kind.reports and USER_REPORTS.at_least
    assert (USER_REPORTS.warning, USER_REPORTS.critical, USER_REPORTS.rollback_at) == (1, 10, None)
    assert USER_REPORTS.sustain_for == timedelta(0) and USER_REPORTS.no_data_is_zero
    assert not USER_REPORTS.needs_traffic
    assert reports_window(USER_REPORTS.query) == timedelta(minutes=30)
    assert resolve(Metric(template="user-reports", window="10m"), {}).query == reports_query(
        timedelta(minutes=10)
    )


@pytest.mark.parametrize(
    ("metric", "complaint"),
    [
        pytest.param({"template": "error-rate", "window": "10m"}, "window applies to the built-in user-reports",
                     id="window-on-another-template"),
        pytest.param({"name": "q", "query": "up", "window": "10m"}, "window applies to the built-in user-reports",
                     id="window-on-a-query"),
        pytest.param({"template": "user-reports", "window": "2h"}, "window is at most 1h", id="window-over-an-hour"),
    ],
)  # fmt: skip
def test_a_window_that_cannot_work_is_refused(metric: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Metric.model_validate(metric)


@pytest.mark.parametrize(
    ("query", "window"),
    [
        pytest.param("user-reports[30m]", timedelta(minutes=30), id="minutes"),
        pytest.param("user-reports[1h]", timedelta(hours=1), id="hour"),
        pytest.param("user-reports[soon]", None, id="not-a-duration"),
        pytest.param("sum(up)", None, id="promql"),
    ],
)
def test_a_reports_query_names_its_window(query: str, window: timedelta | None) -> None:
    assert reports_window(query) == window


# ------------------------------------------------------------------ counting


@pytest.mark.parametrize(
    ("found", "since", "expected"),
    [
        pytest.param([], T0 - timedelta(minutes=30), [], id="none"),
        pytest.param([("blank-page", 1), ("blank-page", 5), ("slow", 2)], T0 - timedelta(minutes=30),
                     [("blank-page", 2), ("slow", 1)], id="per-key-most-first"),
        pytest.param([("blank-page", 29), ("blank-page", 31)], T0 - timedelta(minutes=30),
                     [("blank-page", 1)], id="older-than-the-window-left-out"),
        pytest.param([("blank-page", 3), ("blank-page", 10)], T0 - timedelta(minutes=5),
                     [("blank-page", 1)], id="before-since-left-out"),
        pytest.param([("blank-page", -1)], T0 - timedelta(minutes=30), [], id="after-now-left-out"),
        pytest.param([("a", 3), ("b", 1)], T0 - timedelta(minutes=30), [("b", 1), ("a", 1)],
                     id="ties-the-latest-first"),
    ],
)  # fmt: skip
def test_reports_are_counted_per_key_in_the_window(
    found: list[tuple[str, float]], since: datetime, expected: list[tuple[str, int]]
) -> None:
    assert [(c.key, c.count) for c in count(reports(*found), since, T0)] == expected


def status(
    phase: Phase, started: int | None = 20, level: tuple[int, int | None] | None = None
) -> RolloutStatus:
    """A release started `started` minutes before T0; a rollback level started and applied so many
    minutes before T0."""
    incidents = None
    if level is not None:
        began, applied = level
        record_ = LevelRecord(level=RecoveryLevel.flag, started_at=timestamp(T0 - timedelta(minutes=began)),
                              applied_at=timestamp(T0 - timedelta(minutes=applied)) if applied is not None else None)  # fmt: skip
        incidents = [Incident(id="i", reason="r", started_at=record_.started_at, levels=[record_])]
    release = (
        ReleaseStatus(started_at=timestamp(T0 - timedelta(minutes=started))) if started is not None else None
    )
    return RolloutStatus(phase=phase, release=release, incidents=incidents)


@pytest.mark.parametrize(
    ("rollout", "start"),
    [
        pytest.param(status(Phase.healthy, started=None), None, id="no-release-the-window-alone"),
        pytest.param(status(Phase.progressing), 20, id="a-release-from-its-start"),
        # Status keeps moments to the second: a rollback counts from the second after its own.
        pytest.param(
            status(Phase.rolling_back, level=(6, None)), 6 - 1 / 60, id="rolling-back-from-the-levels-start"
        ),
        pytest.param(
            status(Phase.rolling_back, level=(6, 4)), 4 - 1 / 60, id="rolling-back-from-its-change-in-place"
        ),
        pytest.param(status(Phase.rolled_back, level=(6, 4)), 4 - 1 / 60, id="watching-after-the-rollback"),
        pytest.param(status(Phase.progressing, level=(40, 38)), 20, id="an-old-incident-does-not-count"),
    ],
)
def test_counting_starts_at_the_release_or_at_the_rollbacks_change(
    rollout: RolloutStatus, start: float | None
) -> None:
    assert origin(rollout) == (T0 - timedelta(minutes=start) if start is not None else None)


def test_status_shows_the_counts_bounded_and_when_they_next_change() -> None:
    found = reports(*[(f"key-{i}", 1) for i in range(12)], ("blank-page", 2), ("blank-page", 25))
    shown = ReportsProvider(found, T0, T0 - timedelta(minutes=40)).shown(timedelta(minutes=30))
    assert (shown.window, shown.since, shown.total) == ("30m", timestamp(T0 - timedelta(minutes=30)), 14)
    assert shown.keys is not None and len(shown.keys) == 10
    assert (shown.keys[0].key, shown.keys[0].count) == ("blank-page", 2)
    # The oldest report counted leaves the window 30 minutes after it was made.
    assert next_change(shown) == T0 - timedelta(minutes=25) + timedelta(minutes=30, seconds=1)
    assert next_change(None) is None


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(min_value=-5, max_value=90)), max_size=40
    ),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=1, max_value=60),
)
def test_a_longer_window_never_counts_fewer(found: list[tuple[str, int]], short: int, extra: int) -> None:
    provider = ReportsProvider(reports(*found), T0, None)
    narrow = {c.key: c.count for c in provider.counts(timedelta(minutes=short))}
    wide = {c.key: c.count for c in provider.counts(timedelta(minutes=short + extra))}
    assert all(wide.get(key, 0) >= n for key, n in narrow.items())
    assert sum(wide.values()) == sum(1 for _, minutes in found if 0 <= minutes < short + extra)


# ------------------------------------------------------------------ the verdicts


def judged(found: list[Received], metric: dict[str, Any] | None = None) -> MetricStatus:
    rollout = spec(metric or {"template": "user-reports"})
    round_ = asyncio.run(judge_reports(rollout, namespace="shop", previous=None, now=T0,
                                       reports=ReportsProvider(found, T0, None)))  # fmt: skip
    return round_.metrics[0]


@pytest.mark.parametrize(
    ("found", "metric", "verdict", "said"),
    [
        pytest.param([], None, Verdict.successful, "user-reports 0", id="none-successful"),
        pytest.param([("blank-page", 3)], None, Verdict.warning,
                     "user-reports 1 at or above warning 1: watching (1 user report of blank-page)",
                     id="a-single-report-is-watched"),
        pytest.param([("blank-page", 1)] * 9, None, Verdict.warning, "(9 user reports of blank-page)",
                     id="nine-still-watched"),
        pytest.param([("blank-page", 1)] * 10, None, Verdict.failed,
                     "user-reports 10 at or above critical 10, for 0s (10 user reports of blank-page)",
                     id="ten-of-one-issue-fail"),
        pytest.param([("blank-page", 1)] * 5 + [("slow", 1)] * 5, None, Verdict.warning,
                     "(5 user reports of", id="ten-of-two-issues-are-watched"),
        pytest.param([("blank-page", 1)] * 10, {"template": "user-reports", "critical": 20}, Verdict.warning,
                     "(10 user reports of blank-page)", id="critical-overridden"),
        pytest.param([("blank-page", 15)] * 10, {"template": "user-reports", "window": "10m"},
                     Verdict.successful, "user-reports 0", id="a-shorter-window"),
    ],
)  # fmt: skip
def test_the_metric_is_judged_on_the_most_reported_key(
    found: list[tuple[str, float]], metric: dict[str, Any] | None, verdict: Verdict, said: str
) -> None:
    status_ = judged(reports(*found), metric)
    assert status_.verdict == verdict, status_.message
    assert said in (status_.message or "")


def test_without_the_endpoint_the_metric_cannot_be_measured() -> None:
    round_ = asyncio.run(judge_reports(spec(), namespace="shop", previous=None, now=T0,
                                       reports=Unavailable(counting.OFF)))  # fmt: skip
    assert round_.metrics[0].verdict == Verdict.error
    assert "--reports-port" in (round_.metrics[0].message or "")


def test_in_a_round_it_is_judged_beside_the_prometheus_metrics_in_the_rollouts_order() -> None:
    rollout = spec({"template": "user-reports"}, {"template": "error-rate", "judge": "threshold"})
    prometheus = FixedProvider(default=Sample.of(0.001))
    found = ReportsProvider(reports(*[("blank-page", 1)] * 10), T0, None)
    round_: Round = asyncio.run(evaluate(rollout, namespace="shop", previous=None, provider=prometheus,
                                         templates={}, now=T0, versions=RELEASE, reports=found))  # fmt: skip
    assert [(m.name, m.verdict) for m in round_.metrics] == [
        ("user-reports", Verdict.failed), ("error-rate", Verdict.inconclusive)]  # fmt: skip
    # Prometheus is never asked about user reports.
    assert not any("user-reports" in q for q in prometheus.queries)
    assert [e.reason for e in round_.events] == ["MetricFailed", "MetricInconclusive"]


def test_ten_reports_fail_health_naming_the_key_and_health_returns_once_none_come_after_the_rollback() -> (
    None
):
    """The rollback the failure starts is the normal one: `health` says failed with the metric's
    message, which the engine writes as the incident's reason and the RollingBack Event's."""
    found = reports(*[("blank-page", 3)] * 10)
    failed = judged(found)
    verdict = health([failed], AnalysisLimits(), None)
    assert verdict.failed and "10 user reports of blank-page" in verdict.reason
    # After the flag went off (2 minutes ago) nobody reported again: the count starts there.
    applied = T0 - timedelta(minutes=2)
    after = judge(USER_REPORTS, asyncio.run(ReportsProvider(found, T0, applied).sample(USER_REPORTS.query)),
                  failed, T0)  # fmt: skip
    assert after.verdict == Verdict.successful
    assert health_returned([after], applied) == T0


def test_between_rounds_only_the_reports_are_judged_and_the_others_keep_their_verdicts() -> None:
    rollout = spec({"template": "error-rate"}, {"template": "user-reports"})
    before = [MetricStatus(name="error-rate", verdict=Verdict.successful), MetricStatus(name="user-reports")]
    round_ = asyncio.run(judge_reports(rollout, namespace="shop", previous=before, now=T0,
                                       reports=ReportsProvider(reports(("x", 1)), T0, None)))  # fmt: skip
    assert [(m.name, m.verdict) for m in round_.metrics] == [("user-reports", Verdict.warning)]


# ------------------------------------------------------------------ the record


class FakeKube:
    """The Events a namespace holds, as the API server would keep them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def post_report_event(self, rollout: dict[str, Any], reason: str, message: str, *, name: str,
                                labels: dict[str, str], annotations: dict[str, str]) -> None:  # fmt: skip
        meta = rollout["metadata"]
        self.events.append({
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels, "annotations": annotations},
            "involvedObject": {"kind": "Rollout", "name": meta["name"], "uid": meta["uid"]},
            "reason": reason, "message": message, "type": "Warning",
        })  # fmt: skip

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in field_selector.split(","))
        return [
            e for e in self.events
            if e["metadata"]["namespace"] == namespace and e["reason"] == wanted["reason"]
            and e["involvedObject"]["uid"] == wanted["involvedObject.uid"]
        ]  # fmt: skip


ROLLOUT = {"metadata": {"namespace": "shop", "name": "checkout", "uid": "u-1"}}
TOKEN = b"s3cret-reports-token"


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    fake = FakeKube()
    monkeypatch.setattr(record.kube, "post_report_event", fake.post_report_event)
    monkeypatch.setattr(record.kube, "list_events", fake.list_events)
    return fake


def test_a_report_is_kept_as_a_signed_event_and_read_back(kube: FakeKube) -> None:
    report = Report("shop", "checkout", "blank-page", f"page blank, token {TOKEN.decode()} in a paste")
    name = asyncio.run(record.record(ROLLOUT, report, TOKEN, T0))
    event = kube.events[0]
    assert event["metadata"]["name"] == name and event["metadata"]["labels"] == {record.LABEL: "true"}
    assert event["message"].startswith("user report blank-page: page blank")
    assert TOKEN.decode() not in event["message"]
    assert asyncio.run(record.received("shop", "checkout", "u-1", TOKEN)) == [Received("blank-page", T0)]


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda e: e["metadata"]["annotations"].update({record.KEY_ANNOTATION: "other"}), id="key-changed"),
        pytest.param(lambda e: e["metadata"]["annotations"].update({record.AT_ANNOTATION: T0.isoformat()[:-6] + "+01:00"}),
                     id="time-changed"),
        pytest.param(lambda e: e["metadata"].update({"name": "checkout.copy"}), id="copied-under-another-name"),
        pytest.param(lambda e: e["metadata"]["annotations"].pop(record.SIGNATURE_ANNOTATION), id="unsigned"),
    ],
)  # fmt: skip
def test_an_event_not_signed_with_the_token_is_not_counted(kube: FakeKube, forge: Any) -> None:
    asyncio.run(record.record(ROLLOUT, Report("shop", "checkout", "blank-page"), TOKEN, T0))
    forge(kube.events[0])
    assert asyncio.run(record.received("shop", "checkout", "u-1", TOKEN)) == []


def test_reports_signed_with_another_token_are_not_counted(kube: FakeKube) -> None:
    asyncio.run(record.record(ROLLOUT, Report("shop", "checkout", "blank-page"), TOKEN, T0))
    assert asyncio.run(record.received("shop", "checkout", "u-1", b"another-token")) == []


def test_the_reconcile_counts_only_when_something_is_due(kube: FakeKube) -> None:
    counting.install(lambda: TOKEN)
    try:
        asyncio.run(record.record(ROLLOUT, Report("shop", "checkout", "blank-page"), TOKEN, T0))
        rollout, now = spec(), T0 + timedelta(seconds=5)
        quiet = status(Phase.progressing)

        def refresh(current: RolloutStatus, due: bool = False) -> tuple[RolloutStatus, Any]:
            return asyncio.run(counting.refresh(rollout, current, namespace="shop", name="checkout", uid="u-1",
                                                now=now, due=due))  # fmt: skip

        assert refresh(quiet) == (quiet, None)  # nothing arrived, no round due, nothing to age
        counting.arrived(("shop", "checkout"), T0 + timedelta(seconds=1))
        counted, provider = refresh(quiet)
        assert provider is not None and counted.user_reports is not None
        assert counted.user_reports.keys is not None and counted.user_reports.keys[0].count == 1
        # The status write of that count lost a race: the next reconcile reads the old status, and
        # counts again.
        assert refresh(quiet)[1] is not None
        assert refresh(counted)[1] is None  # status shows a count made since the report arrived
        assert refresh(quiet)[1] is None  # ... and then it was forgotten: counted at the next round
        assert refresh(counted, due=True)[1] is not None
        # A rollback began: counting starts anew from it, at once.
        rolling_back = status(Phase.rolling_back, level=(0, None)).model_copy(
            update={"user_reports": counted.user_reports}
        )
        recounted, again = refresh(rolling_back)
        assert again is not None and recounted.user_reports is not None and recounted.user_reports.total == 0
        assert refresh(recounted)[1] is None
        # A Rollout that stops watching user reports stops showing them.
        unwatched = spec({"template": "error-rate"})
        cleared, none = asyncio.run(counting.refresh(unwatched, counted, namespace="shop", name="checkout",
                                                     uid="u-1", now=now, due=True))  # fmt: skip
        assert cleared.user_reports is None and none is None
    finally:
        counting.install(None)


def test_without_the_token_the_reconcile_says_the_endpoint_is_off() -> None:
    counting.install(None)
    counted, provider = asyncio.run(counting.refresh(spec(), status(Phase.progressing), namespace="shop",
                                                     name="checkout", uid="u-1", now=T0, due=True))  # fmt: skip
    assert isinstance(provider, Unavailable) and "--reports-port" in provider.why
    assert counted.user_reports is None
