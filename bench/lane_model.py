"""The fast lane's judge on a modelled canary (`python -m bench.lane_model`): when does a 10%
failure first trip `rollbackAt`, by how the lane counts its looks, its window and the stage's
age, and how often does it roll back a canary that is no worse than stable? No cluster: Poisson
requests (50 a second to each version, 0.1% failing at random before the failure), four canary
and four stable pods each scraped once a second at its own moment, Prometheus's `increase()`
with its extrapolation, the looks just after the canary's samples land, and the lane's own
judge (`plan.fastlane.judge_split`, with `error-rate`'s lines and guards).

Two ways of counting looks against the confidence (`plan.compare.adjusted`):
- per window: one look per window elapsed in the stage (the lane before, on a 5 s window);
- counted: only looks that could have found the canary worse (`plan.fastlane.counted`).

It prints the median and p90 seconds from the first 5xx to the look that decides (the reconcile
and the scale-down come on top), then the false alarms: hours of looks at a 0.1% background on
both versions, and stages in which both fail 6% of their requests (past `rollbackAt`).
"""

from __future__ import annotations

import bisect
import random
import statistics
from datetime import UTC, datetime, timedelta

import numpy as np

from parachute.api import RolloutSpec
from parachute.plan import fastlane as core
from parachute.plan.compare import Counts, Limits, Severity, compare
from parachute.plan.metrics import definitions
from parachute.plan.sources import source_for
from parachute.plan.versions import Versions, Where

SCRAPE = 1.0
HORIZON = 12.0
RATE = 50.0  # requests a second to each version
BACKGROUND = 0.001
T0 = datetime(2026, 12, 1, tzinfo=UTC)
Requests = list[tuple[float, bool]]  # when, and whether it failed
LIMITS = Limits(
    floor=0.005, warning=0.002, rollback_at=0.05, confidence=0.95, min_requests=10
)  # error-rate's


def watched() -> core.Watched:
    """A Rollout with `error-rate` (rollbackAt 5%, compared with stable at 95% confidence)."""
    rollout = RolloutSpec.model_validate({
        "targetRef": {"name": "checkout"},
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "metrics": [{"template": "error-rate"}]},
    })  # fmt: skip
    versions = Versions(judged=Where(pods="c-.*", workload="c"), stable=Where(pods="s-.*", workload="s"))
    found = core.enrolment(namespace="shop", name="checkout", server="prom", revision="r", source=source_for(rollout),
                           metrics=definitions(rollout, {}, rollout.risk), versions=versions, min_requests=10,
                           since=T0)  # fmt: skip
    assert found is not None
    return found


WATCHED = watched()


class Judge:
    """The lane's judge at one stage, counting its looks one way or the other."""

    def __init__(self, window: float, counting: bool) -> None:
        self.window, self.counting = timedelta(seconds=window), counting
        self.memory = core.Memory()

    def look(self, at: float, canary: Counts, stable: Counts, *, scraped: bool = True) -> bool:
        """Whether this look, `at` seconds into the stage, rolls back at once (`scraped`: the
        counts are `increase()`'s, extrapolated to the window's edges)."""
        now = T0 + timedelta(seconds=at)
        if not self.counting:  # the rounds' judge with the look counted per window, as before
            return (
                compare(canary, stable, LIMITS, core.look(T0, now, self.window)).severity
                == Severity.immediate
            )
        seen = (
            core.observed(core.Split(canary, stable), self.window, SCRAPE)
            if scraped
            else core.Split(canary, stable)
        )
        found = core.judge_split(WATCHED, seen, self.memory.previous(WATCHED), now,
                                 self.window, spent=self.memory.spent(WATCHED))  # fmt: skip
        self.memory.keep(WATCHED, found.statuses, found.spent)
        return bool(found.breaches)


def _requests(rng: random.Random, start: float, failing_from: float, share: float, pods: int) -> Requests:
    at, out = start, list[tuple[float, bool]]()
    while True:
        at += rng.expovariate(RATE / pods)
        if at > HORIZON:
            return out
        out.append((at, rng.random() < (share if at >= failing_from else BACKGROUND)))


def _counter(served: Requests, at: float) -> tuple[int, int]:
    i = bisect.bisect_right([t for t, _ in served], at)
    return i, sum(1 for _, failed in served[:i] if failed)


def _increase(served: Requests, offset: float, now: float, window: float) -> tuple[float, float]:
    """Requests and failures as `increase(...[window])` at `now` sees them: the samples in the
    window, extrapolated to its edges (each is less than 1.1 scrapes from its nearest sample)."""
    k = int(now - window - offset) - 1
    samples = []
    while offset + k <= now:
        if offset + k > now - window:
            samples.append(offset + k)
        k += 1
    if len(samples) < 2:
        return 0.0, 0.0
    (r0, e0), (r1, e1) = _counter(served, samples[0]), _counter(served, samples[-1])
    span = samples[-1] - samples[0]
    return (r1 - r0) * window / span, (e1 - e0) * window / span


def _windows(rng: np.random.Generator, seconds: int, window: int, rate: float) -> list[tuple[Counts, Counts]]:
    """The lane's window at each second of a stage, from each second's requests (no scrapes)."""
    served = rng.poisson(RATE, (2, seconds + window))
    failed = rng.binomial(served, rate)
    return [
        (Counts(float(served[0, t - window:t].sum()), float(failed[0, t - window:t].sum())),
         Counts(float(served[1, t - window:t].sum()), float(failed[1, t - window:t].sum())))
        for t in range(window, seconds + window)
    ]  # fmt: skip


def race(rng: random.Random, window: float, age: float, counting: bool, pods: int = 4) -> float | None:
    """Seconds from the first 5xx to the look that rolls back, or None within the horizon."""
    judge = Judge(window, counting)
    # The stage so far: a look a second at a 0.1% background on both versions.
    history = np.random.default_rng(rng.randrange(1 << 30))
    for second, (canary, stable) in enumerate(_windows(history, int(age), int(window), BACKGROUND)):
        judge.look(second, canary, stable, scraped=False)
    canary_at = [rng.random() for _ in range(pods)]
    stable_at = [rng.random() for _ in range(pods)]
    start = -window - 2
    canary = [_requests(rng, start, 0.0, 0.10, pods) for _ in range(pods)]
    stable = [_requests(rng, start, HORIZON, 0.0, pods) for _ in range(pods)]
    phase = min(
        ((o + 0.1) % SCRAPE for o in canary_at), key=lambda p: sum((p - o) % SCRAPE for o in canary_at)
    )
    now = phase
    while now < HORIZON:
        mine = [_increase(s, o, now, window) for s, o in zip(canary, canary_at, strict=True)]
        theirs = [_increase(s, o, now, window) for s, o in zip(stable, stable_at, strict=True)]
        if judge.look(age + now, Counts(sum(r for r, _ in mine), sum(e for _, e in mine)),
                      Counts(sum(r for r, _ in theirs), sum(e for _, e in theirs))):  # fmt: skip
            return now
        now += SCRAPE
    return None


def false_alarms(window: int, counting: bool, rate: float, *, stages: int, seconds: int, seed: int) -> int:
    """Stages of `seconds` of looks, both versions failing `rate` of their requests at random,
    that saw a rollback."""
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(stages):
        judge = Judge(window, counting)
        alarms += any(
            judge.look(s, c, st, scraped=False)
            for s, (c, st) in enumerate(_windows(rng, seconds, window, rate))
        )
    return alarms


JUDGES = (("per window, 5 s window (before)", 5, False), ("counted, 3 s window (now)", 3, True))


def main(races: int = 60) -> None:
    rng = random.Random(1)
    for name, window, counting in JUDGES:
        for age in (20.0, 100.0, 600.0):
            times = [race(rng, window, age, counting) for _ in range(races)]
            caught = sorted(t for t in times if t is not None)
            shown = (f"median {statistics.median(caught):.2f} s, p90 {caught[int(0.9 * len(caught))]:.2f} s"
                     if caught else "never")  # fmt: skip
            print(f"{name}, stage {age:g} s old: {shown}, {len(caught)} of {races} caught within {HORIZON:g} s",
                  flush=True)  # fmt: skip
    for name, window, counting in JUDGES:
        hours = false_alarms(window, counting, BACKGROUND, stages=1, seconds=4 * 3600, seed=1)
        print(f"{name}: 4 hours of looks at 0.1% on both: {hours} rollback(s)", flush=True)
        bad = false_alarms(window, counting, 0.06, stages=100, seconds=300, seed=2)
        print(
            f"{name}: both at 6%, {bad} of 100 five-minute stages rolled back (1 - confidence: 5)", flush=True
        )


if __name__ == "__main__":
    main()
