"""How the fast lane counts its looks at a stage (issue #16: no new false rollbacks, and a
failure proven within seconds however old the stage is): only looks that could have found the
canary worse than stable are counted against the confidence, so a rare background error spends
nothing in hours of looks, versions that both fail often spend a look each time, and the chance
of a false rollback over a stage stays within 1 - confidence."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parachute.api import RolloutSpec, Verdict
from parachute.plan import compare
from parachute.plan import fastlane as core
from parachute.plan.compare import Counts, least_p_worse, p_worse
from parachute.plan.metrics import definitions
from parachute.plan.sources import source_for
from parachute.plan.versions import Versions, Where

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=3)  # the lane's at a 1 s scrape
CADENCE = timedelta(seconds=1)
RATE = 50  # requests a second to each version, as in the bench


def watched() -> core.Watched:
    rollout = RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"}, "risk": "medium",
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "interval": "60s",
                     "metrics": [{"template": "error-rate"}]},
    })  # fmt: skip
    versions = Versions(judged=Where(pods="checkout-canary-.*", workload="checkout-canary"),
                        stable=Where(pods="checkout-[a-f0-9]+-.*", workload="checkout"))  # fmt: skip
    found = core.enrolment(namespace="shop", name="checkout", server="prom", revision="rev-2",
                           source=source_for(rollout), metrics=definitions(rollout, {}, rollout.risk),
                           versions=versions, min_requests=10, since=T0)  # fmt: skip
    assert found is not None
    return found


@given(
    st.integers(10, 400), st.integers(10, 400), st.integers(0, 40), st.integers(0, 40),
)  # fmt: skip
def test_no_split_of_the_errors_gives_a_smaller_p_value_than_every_error_the_canarys(
    canary: int, stable: int, mine: int, theirs: int
) -> None:
    mine, theirs = min(mine, canary), min(theirs, stable)
    least = least_p_worse(Counts(canary, mine), Counts(stable, theirs))
    assert least <= p_worse(Counts(canary, mine), Counts(stable, theirs)) + 1e-12
    everything = min(mine + theirs, canary)
    assert least == pytest.approx(
        p_worse(Counts(canary, everything), Counts(stable, mine + theirs - everything))
    )


@pytest.mark.parametrize(
    ("canary", "stable", "look", "could"),
    [
        pytest.param(Counts(150, 1), Counts(150, 0), 1, False, id="one-background-error-proves-nothing"),
        pytest.param(Counts(150, 5), Counts(150, 0), 1, False, id="five-of-three-hundred-fall-so-by-chance"),
        pytest.param(Counts(150, 6), Counts(150, 0), 1, True, id="six-all-the-canarys-could"),
        pytest.param(Counts(150, 6), Counts(150, 0), 3, False, id="not-at-the-third-counted-look"),
        pytest.param(Counts(150, 15), Counts(150, 15), 30, True, id="thirty-errors-could-whoever-has-them"),
    ],
)  # fmt: skip
def test_a_look_could_find_the_canary_worse_only_with_enough_errors_between_the_two(
    canary: Counts, stable: Counts, look: int, could: bool
) -> None:
    assert compare.testable(canary, stable, 0.95, look) is could


def judge(w: core.Watched, memory: core.Memory, second: float, canary: Counts, stable: Counts) -> core.Judged:
    found = core.judge_split(w, core.Split(canary, stable), memory.previous(w), T0 + timedelta(seconds=second),
                             WINDOW, spent=memory.spent(w, CADENCE))  # fmt: skip
    memory.keep(w, found.statuses, found.spent)
    return found


def windows(rng: np.random.Generator, seconds: int, rate: float) -> list[tuple[Counts, Counts]]:
    """The lane's window (its last 3 s) at each second, each version serving RATE requests a
    second of which `rate` fail at random."""
    served = rng.poisson(RATE, (2, seconds + 3))
    failed = rng.binomial(served, rate)
    return [
        (Counts(float(served[0, t - 3:t].sum()), float(failed[0, t - 3:t].sum())),
         Counts(float(served[1, t - 3:t].sum()), float(failed[1, t - 3:t].sum())))
        for t in range(3, seconds + 3)
    ]  # fmt: skip


def test_an_hour_of_looks_at_a_rare_background_error_counts_nothing_and_finds_nothing() -> None:
    w, memory = watched(), core.Memory()
    for second, (canary, stable) in enumerate(windows(np.random.default_rng(1), 3600, 0.001)):
        assert not judge(w, memory, second, canary, stable).breaches
    assert memory.spent(w, CADENCE) == 0


@pytest.mark.parametrize("age", [20, 100, 600])
def test_a_ten_percent_failure_is_proven_on_two_seconds_of_it_however_old_the_stage(age: int) -> None:
    w, memory, rng = watched(), core.Memory(), np.random.default_rng(age)
    for second, (canary, stable) in enumerate(windows(rng, age, 0.001)):
        judge(w, memory, second, canary, stable)
    # Two seconds of failing requests in the window (10 in 100), one healthy: no stable error.
    found = judge(w, memory, age, Counts(150, 10), Counts(150, 0))
    assert [b.status.immediate for b in found.breaches] == [True], found.statuses[0].message
    assert found.statuses[0].verdict == Verdict.failed


def test_versions_that_both_fail_often_spend_looks_and_rarely_find_one_worse() -> None:
    """Both at 6% (past rollbackAt's 5%): most looks could find a difference by chance, and are
    counted. Of 60 stages of a minute, looked at every second, at most 1 - confidence (5%: three
    stages) may see a false immediate rollback."""
    rng = np.random.default_rng(6)
    falsely, spent = 0, []
    for _ in range(60):
        w, memory = watched(), core.Memory()
        found = [judge(w, memory, second, canary, stable).breaches
                 for second, (canary, stable) in enumerate(windows(rng, 60, 0.06))]  # fmt: skip
        falsely += any(found)
        spent.append(memory.spent(w, CADENCE))
    assert falsely <= 3
    assert statistics.median(spent) >= 30  # most looks


def test_without_stable_traffic_the_test_against_the_line_counts_one_look_per_window_elapsed() -> None:
    # The binomial test against rollbackAt is not conditional on totals: every window counts.
    later = T0 + timedelta(seconds=10)
    assert core.counted(watched(), core.Split(Counts(150, 1), None), 0, later, WINDOW) == (4, 0)
    assert core.counted(watched(), core.Split(Counts(150, 1), Counts(5, 0)), 7, later, WINDOW) == (4, 7)


def test_a_look_that_could_find_is_counted_and_the_count_is_forgotten_with_the_stage() -> None:
    w, memory = watched(), core.Memory()
    judge(w, memory, 1, Counts(150, 1), Counts(150, 0))
    assert memory.spent(w, CADENCE) == 0
    judge(w, memory, 2, Counts(150, 12), Counts(150, 9))
    assert memory.spent(w, CADENCE) == 1
    next_stage = core.enrolment(namespace=w.namespace, name=w.name, server=w.server, revision=w.revision,
                                source=w.source, metrics=w.metrics, versions=w.versions, min_requests=10,
                                since=T0 + timedelta(minutes=5))  # fmt: skip
    assert next_stage is not None and memory.spent(next_stage, CADENCE) == 0


def test_a_restarted_lane_takes_the_looks_it_cannot_know_of_as_one_per_cadence_before_it_began() -> None:
    # The stage began 90 s before this process's lane: a lane before it may have counted a look
    # each second. A stage that begins under this lane owes nothing to another.
    w = watched()
    assert core.Memory(started=T0 + timedelta(seconds=90)).spent(w, CADENCE) == 90
    assert core.Memory(started=T0 - timedelta(seconds=5)).spent(w, CADENCE) == 0
    restarted = core.Memory(started=T0 + timedelta(seconds=90))
    judge(w, restarted, 91, Counts(150, 12), Counts(150, 9))
    assert restarted.spent(w, CADENCE) == 91


def test_the_lane_judges_the_requests_its_samples_saw_not_increases_extrapolation() -> None:
    # Three scrapes a second apart in a 3 s window span 2 s: increase() reports half as much again.
    seen = core.observed(core.Split(Counts(225, 15), Counts(225, 0)), WINDOW, 1.0)
    assert seen == core.Split(Counts(150, 10), Counts(150, 0))
    assert core.observed(core.Split(None, Counts(30, 3)), WINDOW, 1.0) == core.Split(None, Counts(20, 2))
    assert core.observed(core.Split(Counts(30, 3), None), timedelta(seconds=1), 1.0).judged == Counts(30, 3)
