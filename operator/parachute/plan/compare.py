"""The comparison judge for rates: is the canary worse than stable, and how sure is that? Pure.

A fixed line misjudges low traffic: 6 errors in 400 requests is 1.5% and may be noise, 60 in
4,000 is not. So a rate is judged from the request and error counts of both versions in the same
window, the way an engineer reads them:

- too few requests (`minRequests`) to say anything: Inconclusive;
- critical only when the canary is worse than stable with the stated confidence (Fisher's exact
  test, one-sided) *and* its rate is past the metric's critical line, the floor below which no
  difference matters; without stable traffic to compare with, when it is past the floor with
  that confidence (an exact binomial test);
- past the floor but not shown worse: like stable (within the tolerance), a Warning; worse by
  the numbers but not yet with confidence, Inconclusive ("cannot tell yet");
- `rollbackAt` rolls back at once when the rate is past it and the canary is worse than stable
  with that confidence; without stable traffic, when the rate is past it with that confidence.

While a stage runs, the counts are those of the stage so far, so evidence accumulates and a low
traffic canary is decided once there is enough of it. Looking again every interval would make a
chance difference look certain sooner or later, so the p-value of the k-th look is multiplied by
k(k+1): the looks' error probabilities add up to at most 1 - confidence however long the stage
runs (a Bonferroni bound over Σ 1/(k(k+1)) = 1). The exact tails are `plan.exact`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from parachute.plan.exact import binomial_at_least, hypergeom_at_least


@dataclass(frozen=True)
class Counts:
    """Requests in a window and how many of them failed."""

    requests: float
    errors: float

    @property
    def rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0

    def whole(self) -> tuple[int, int]:
        """(errors, requests) as counts: increase() extrapolates to fractions."""
        requests = max(0, round(self.requests))
        return min(max(0, round(self.errors)), requests), requests


class Severity(StrEnum):
    ok = "ok"
    warning = "warning"
    critical = "critical"
    immediate = "immediate"
    inconclusive = "inconclusive"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    detail: str  # what decided it, for the verdict's message
    confidence: float | None = None  # that the canary is worse (than stable, or than the floor)


@dataclass(frozen=True)
class Limits:
    """The lines a bad-request rate is judged against (all as rates of bad requests)."""

    floor: float | None  # the critical line
    warning: float | None = None
    rollback_at: float | None = None
    confidence: float = 0.95
    tolerance: float = 0.1  # how much above stable's rate still reads as "like stable"
    min_requests: int = 10


def adjusted(p_value: float, look: int) -> float:
    """The p-value of the `look`-th look at accumulating data, valid over all looks together;
    look 0 is a window of its own (nothing accumulates), taken as it is."""
    return min(1.0, p_value * look * (look + 1)) if look > 0 else p_value


def p_worse(canary: Counts, stable: Counts) -> float:
    """One-sided Fisher's exact test: the chance of a canary at least this much worse, were the
    two versions alike."""
    ce, cn = canary.whole()
    se, sn = stable.whole()
    return hypergeom_at_least(ce, cn + sn, cn, ce + se)  # the canary's share of all the errors


def least_p_worse(canary: Counts, stable: Counts) -> float:
    """The smallest p-value `p_worse` could give on these totals (requests of each, errors of
    both together), were every error the canary's: a look whose totals cannot reach the
    confidence asked could not find the canary worse, whatever its counts.

    Fisher's test is conditional on these totals, and under "alike" which version an error
    falls on does not depend on how many errors there are: a look may be counted (or not) by
    its totals alone without making any other look's p-value less valid (Tarone's argument for
    tests of discrete data)."""
    _, cn = canary.whole()
    se, sn = stable.whole()
    errors = min(canary.whole()[0] + se, cn + sn)
    worst = min(errors, cn)
    return hypergeom_at_least(worst, cn + sn, errors, cn)


def testable(canary: Counts, stable: Counts, confidence: float, look: int) -> bool:
    """Could the `look`-th look at these totals find the canary worse with that confidence?"""
    return 1.0 - adjusted(least_p_worse(canary, stable), look) >= confidence


def p_above(canary: Counts, line: float) -> float:
    """One-sided exact binomial test: the chance of this many errors, were the rate at `line`."""
    errors, requests = canary.whole()
    if requests == 0:
        return 1.0
    return binomial_at_least(errors, requests, min(max(line, 0.0), 1.0))


def _shown(counts: Counts) -> str:
    errors, requests = counts.whole()
    return f"{counts.rate * 100:.3g}% ({errors} of {requests})"


def compare(canary: Counts, stable: Counts | None, limits: Limits, look: int = 0) -> Finding:
    """How bad the canary's rate of bad requests is, canary against stable where stable has traffic."""
    _, requests = canary.whole()
    least = max(1, limits.min_requests)
    if requests < least:
        return Finding(Severity.inconclusive, f"too few requests to judge ({requests}, fewer than {least})")
    baseline = stable if stable is not None and stable.whole()[1] >= least else None
    worse = None if baseline is None else 1.0 - adjusted(p_worse(canary, baseline), look)
    against = f"stable {_shown(baseline)}" if baseline is not None else "no stable traffic to compare with"
    head = f"{_shown(canary)} vs {against}"
    rate = canary.rate
    if limits.rollback_at is not None and rate > limits.rollback_at:
        line = f"{limits.rollback_at * 100:.3g}%"
        if worse is not None and worse >= limits.confidence:
            return Finding(Severity.immediate, f"{head}: worse with {_percent(worse)} confidence, past {line}",
                           worse)  # fmt: skip
        past = 1.0 - adjusted(p_above(canary, limits.rollback_at), look)
        if worse is None and past >= limits.confidence:
            return Finding(Severity.immediate, f"{head}: past {line} with {_percent(past)} confidence", past)
    if limits.floor is not None and rate > limits.floor:
        return _past_floor(canary, baseline, worse, limits, look=look, head=head)
    if limits.warning is not None and rate > limits.warning:
        return Finding(Severity.warning, f"{head}: past the {limits.warning * 100:.3g}% warning line, "
                       "watching", worse)  # fmt: skip
    return Finding(Severity.ok, head, worse)


def _past_floor(
    canary: Counts, baseline: Counts | None, worse: float | None, limits: Limits, *, look: int, head: str
) -> Finding:
    """Past the critical floor: critical if shown worse, else like stable or not yet decided."""
    assert limits.floor is not None
    floor, needed = f"{limits.floor * 100:.3g}%", limits.confidence
    if baseline is None or worse is None:
        past = 1.0 - adjusted(p_above(canary, limits.floor), look)
        if past >= needed:
            return Finding(Severity.critical, f"{head}: past the {floor} floor with {_percent(past)} confidence",
                           past)  # fmt: skip
        return Finding(Severity.inconclusive, f"{head}: cannot tell yet, past the {floor} floor with "
                       f"{_percent(past)} confidence, {_percent(needed)} needed", past)  # fmt: skip
    if worse >= needed:
        return Finding(Severity.critical, f"{head}: worse with {_percent(worse)} confidence, past the {floor} "
                       "floor", worse)  # fmt: skip
    if canary.rate <= baseline.rate * (1 + limits.tolerance):
        return Finding(Severity.warning, f"{head}: past the {floor} floor as stable is, not worse "
                       f"({_percent(worse)} confidence that it is)", worse)  # fmt: skip
    return Finding(Severity.inconclusive, f"{head}: cannot tell yet, worse with {_percent(worse)} "
                   f"confidence, {_percent(needed)} needed", worse)  # fmt: skip


def _percent(value: float) -> str:
    """A confidence as a person reads it: 78%, 99.5%; never 100%, which no sample proves."""
    return ">99.9%" if value >= 0.9995 else f"{value * 100:.3g}%"
