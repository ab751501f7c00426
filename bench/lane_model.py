"""The fast lane's judge on a modelled canary (`python -m bench.lane_model`): when does a 10%
failure first trip `rollbackAt`, by the lane's window, the stage's age and whether the looks
come just after the canary's samples land? No cluster: Poisson requests, four canary and four
stable pods each scraped once a second at its own moment, Prometheus's `increase()` with its
extrapolation, and `plan.compare.compare` with the look correction the lane applies.

It prints the median and p90 seconds from the first 5xx to the look that decides (the reconcile
and the scale-down come on top), and how many failures were caught within 12 s.
"""

from __future__ import annotations

import bisect
import random
import statistics

from parachute.plan.compare import Counts, Limits, Severity, compare

LIMITS = Limits(floor=0.005, warning=0.002, rollback_at=0.05, confidence=0.95, min_requests=10)
SCRAPE = 1.0
HORIZON = 12.0
Requests = list[tuple[float, bool]]  # when, and whether it failed


def _requests(rng: random.Random, rate: float, start: float, failing_from: float, share: float) -> Requests:
    at, out = start, list[tuple[float, bool]]()
    while True:
        at += rng.expovariate(rate)
        if at > HORIZON:
            return out
        out.append((at, at >= failing_from and rng.random() < share))


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


def race(rng: random.Random, window: float, age: float, aligned: bool, pods: int = 4) -> float | None:
    """Seconds from the first 5xx to the look that rolls back, or None within the horizon."""
    canary_at = [rng.random() for _ in range(pods)]
    stable_at = [rng.random() for _ in range(pods)]
    start = -window - 2
    canary = [_requests(rng, 50 / pods, start, 0.0, 0.10) for _ in range(pods)]
    stable = [_requests(rng, 50 / pods, start, HORIZON, 0.0) for _ in range(pods)]
    if aligned:
        phase = min(
            ((o + 0.1) % SCRAPE for o in canary_at), key=lambda p: sum((p - o) % SCRAPE for o in canary_at)
        )
    else:
        phase = rng.random() * SCRAPE
    now = phase
    while now < HORIZON:
        mine = [_increase(s, o, now, window) for s, o in zip(canary, canary_at, strict=True)]
        theirs = [_increase(s, o, now, window) for s, o in zip(stable, stable_at, strict=True)]
        found = compare(
            Counts(sum(r for r, _ in mine), sum(e for _, e in mine)),
            Counts(sum(r for r, _ in theirs), sum(e for _, e in theirs)),
            LIMITS,
            int((age + now) / window) + 1,
        )
        if found.severity == Severity.immediate:
            return now
        now += SCRAPE
    return None


def main(races: int = 150) -> None:
    rng = random.Random(1)
    for aligned in (False, True):
        for window in (3.0, 4.0, 5.0):
            for age in (20.0, 45.0, 100.0, 600.0):
                times = [race(rng, window, age, aligned) for _ in range(races)]
                caught = sorted(t for t in times if t is not None)
                shown = (f"median {statistics.median(caught):.2f} s, p90 {caught[int(0.9 * len(caught))]:.2f} s"
                         if caught else "never")  # fmt: skip
                print(f"looks {'aligned' if aligned else 'on a tick'}, {window:g} s window, stage {age:g} s old: "
                      f"{shown}, {len(caught)} of {races} caught within {HORIZON:g} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
