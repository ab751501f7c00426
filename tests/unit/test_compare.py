"""The comparison judge for rates, as an engineer reads the counts: worse than stable only with
the stated confidence and past the floor, Inconclusive while there are too few requests to tell,
and never more certain for having looked more often."""

from __future__ import annotations

import pytest

from parachute.plan.compare import Counts, Limits, Severity, adjusted, compare

# error-rate's lines: floor (critical) 0.5%, warning 0.2%, rollbackAt 5%, 95% confidence.
ERROR_RATE = Limits(floor=0.005, warning=0.002, rollback_at=0.05, confidence=0.95, min_requests=10)


@pytest.mark.parametrize(
    ("canary", "stable", "severity", "says"),
    [
        # Clearly worse: 60 in 4,000 against stable's 0.3%.
        pytest.param(Counts(4000, 60), Counts(36000, 108), Severity.critical, "worse with >99.9% confidence",
                     id="clearly-worse"),
        pytest.param(Counts(10000, 150), Counts(100000, 1000), Severity.critical, "past the 0.5% floor",
                     id="clearly-worse-with-much-traffic"),
        # Clearly the same: past the floor as stable is, not worse.
        pytest.param(Counts(10000, 100), Counts(100000, 1000), Severity.warning, "as stable is, not worse",
                     id="clearly-same-above-the-floor"),
        pytest.param(Counts(10000, 1), Counts(100000, 10), Severity.ok, "0.01% (1 of 10000)",
                     id="clearly-same-and-fine"),
        # Too few requests to tell: 6 in 400 may be noise next to stable's 1%.
        pytest.param(Counts(400, 6), Counts(3600, 36), Severity.inconclusive, "cannot tell yet",
                     id="low-traffic-1.5-percent-is-noise"),
        pytest.param(Counts(8, 1), Counts(3600, 36), Severity.inconclusive, "too few requests to judge (8",
                     id="too-few-requests"),
        # Worse than stable, but below the floor: not critical (watched in the warning band).
        pytest.param(Counts(40000, 120), Counts(360000, 36), Severity.warning, "warning line",
                     id="worse-but-below-the-floor"),
        pytest.param(Counts(4000, 400), Counts(36000, 36), Severity.immediate, "past 5%",
                     id="far-past-rollback-at"),
        # Past rollbackAt and surely worse than a stable that fails nothing: at once, even on few.
        pytest.param(Counts(35, 2), Counts(3600, 0), Severity.immediate, "worse with >99.9% confidence, past 5%",
                     id="two-of-thirty-five-against-none-at-once"),
        # One error in twenty is 5%: worse than a stable that has none (held as a Warning until
        # sustained), but no immediate rollback on one request.
        pytest.param(Counts(20, 1), Counts(3600, 0), Severity.critical, "worse with 99.4% confidence",
                     id="one-error-in-twenty-is-no-outage"),
        # As bad as stable is not the canary's fault.
        pytest.param(Counts(4000, 400), Counts(36000, 3600), Severity.warning, "as stable is",
                     id="as-bad-as-stable"),
    ],
)  # fmt: skip
def test_canary_against_stable(canary: Counts, stable: Counts, severity: Severity, says: str) -> None:
    finding = compare(canary, stable, ERROR_RATE)
    assert finding.severity == severity, finding.detail
    assert says in finding.detail


@pytest.mark.parametrize(
    ("canary", "severity", "says"),
    [
        pytest.param(Counts(4000, 60), Severity.critical, "past the 0.5% floor with", id="clearly-past-the-floor"),
        pytest.param(Counts(400, 3), Severity.inconclusive, "cannot tell yet, past the 0.5% floor",
                     id="not-sure-it-is-past-the-floor"),
        pytest.param(Counts(4000, 2), Severity.ok, "no stable traffic to compare with", id="below-the-floor"),
        pytest.param(Counts(4000, 400), Severity.immediate, "past 5% with", id="surely-past-rollback-at"),
        # 7.5% is surely past the floor, not surely past 5%: critical, not at once.
        pytest.param(Counts(40, 3), Severity.critical, "past the 0.5% floor with", id="not-surely-past-rollback-at"),
    ],
)  # fmt: skip
def test_without_stable_traffic_the_floor_is_judged_with_the_same_confidence(
    canary: Counts, severity: Severity, says: str
) -> None:
    for stable in (None, Counts(3, 0)):  # none, or fewer than minRequests
        finding = compare(canary, stable, ERROR_RATE)
        assert finding.severity == severity and says in finding.detail


def test_evidence_accumulates_at_low_traffic_and_decides_once_there_is_enough() -> None:
    # 1.5% against 0.5%: undecided on the first 400 requests, decided on 4,000.
    assert compare(Counts(400, 6), Counts(3600, 18), ERROR_RATE, look=1).severity == Severity.inconclusive
    assert compare(Counts(4000, 60), Counts(36000, 180), ERROR_RATE, look=10).severity == Severity.critical


def test_each_look_at_accumulating_counts_asks_for_more_certainty() -> None:
    assert adjusted(0.01, 0) == 0.01  # a window of its own: nothing accumulates
    assert adjusted(0.01, 1) == pytest.approx(0.02)
    assert adjusted(0.01, 4) == pytest.approx(0.2)
    assert adjusted(0.1, 10) == 1.0
    # The looks' chances of a false failure add up to at most 1 - confidence, however many.
    assert sum(0.05 / (k * (k + 1)) for k in range(1, 100_000)) < 0.05
    borderline = compare(Counts(2000, 32), Counts(18000, 170), ERROR_RATE, look=1)
    assert borderline.severity == Severity.critical
    assert compare(Counts(2000, 32), Counts(18000, 170), ERROR_RATE, look=6).severity == Severity.inconclusive


def test_the_confidence_is_reported_and_is_the_one_asked_for() -> None:
    finding = compare(Counts(400, 6), Counts(3600, 36), ERROR_RATE)
    assert finding.confidence is not None and 0.5 < finding.confidence < 0.95
    assert "95% needed" in finding.detail
    stricter = Limits(floor=0.005, confidence=0.999, min_requests=10)
    assert compare(Counts(10000, 150), Counts(100000, 1000), stricter).severity == Severity.critical
    assert compare(Counts(2000, 32), Counts(18000, 170), stricter).severity == Severity.inconclusive


def test_counts_are_whole_requests_whatever_prometheus_extrapolated() -> None:
    assert Counts(399.6, 6.4).whole() == (6, 400)
    assert Counts(3.2, 5.0).whole() == (3, 3)  # never more errors than requests
