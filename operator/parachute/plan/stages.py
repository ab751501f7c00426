"""Stage plans: the default stages of each risk level (spec §2), or the user's own steps.

Every wait is a duration string, so a test or demo runs the same plan in seconds by
overriding `spec.waits`.
"""

from __future__ import annotations

from dataclasses import dataclass

from parachute.api import FlagState, PlannedStage, Risk, RolloutSpec, Step, parse_duration


@dataclass(frozen=True)
class _Default:
    name: str
    weight: int
    min_wait: str
    max_wait: str
    flags: str | None = None  # off, on, or a percentage of users


# The playbook's plans. The closing 100% stage holds the "watch after release" period.
DEFAULT_PLANS: dict[Risk, tuple[_Default, ...]] = {
    # Tests, docs, code whose flags are off: straight to 100%, nothing to wait for.
    Risk.zero: (_Default("full", 100, "0s", "0s"),),
    # New code not yet wired in: everything at once with flags OFF, then an hour of watching.
    Risk.low: (_Default("full", 100, "1h", "1h", flags=FlagState.off),),
    # Middleware, API changes, compatible migrations.
    Risk.medium: (
        _Default("canary", 10, "2h", "4h"),
        _Default("partial", 50, "4h", "8h"),
        _Default("full", 100, "24h", "24h"),
    ),
    # Auth, payments, data writes, breaking migrations: small first, long first wait.
    Risk.high: (
        _Default("canary", 5, "8h", "24h"),
        _Default("canary-10", 10, "4h", "8h"),
        _Default("canary-25", 25, "4h", "8h"),
        _Default("partial", 50, "4h", "8h"),
        _Default("partial-75", 75, "4h", "8h"),
        _Default("full", 100, "24h", "24h"),
    ),
}

# The playbook's flag-gated sequence: the code goes out to everyone with its flags OFF
# (infrastructure, then an hour of integration), then the flags go ON for 10% of users, then
# 50%, then everyone, and the release is watched for a day.
FLAG_PERCENT_PLAN: tuple[_Default, ...] = (
    _Default("infrastructure", 100, "0s", "0s", flags=FlagState.off),
    _Default("integration", 100, "1h", "1h", flags=FlagState.off),
    _Default("canary", 100, "2h", "4h", flags="10%"),
    _Default("partial", 100, "4h", "8h", flags="50%"),
    _Default("full", 100, "24h", "24h", flags=FlagState.on),
)
# The same for a store that holds only true or false (a plain ConfigMap): no percentages, so
# the flags go from OFF to ON for everyone.
FLAG_GATED_PLAN: tuple[_Default, ...] = (
    _Default("infrastructure", 100, "0s", "0s", flags=FlagState.off),
    _Default("integration", 100, "1h", "1h", flags=FlagState.off),
    _Default("full", 100, "24h", "24h", flags=FlagState.on),
)


def effective_risk(spec: RolloutSpec) -> Risk:
    return spec.risk or Risk.medium


def plan_for(spec: RolloutSpec) -> list[PlannedStage]:
    """The stages this Rollout goes through, waits overridden by `spec.waits` where given."""
    if spec.steps:
        return [_from_step(i, step) for i, step in enumerate(spec.steps)]
    return _planned(spec, DEFAULT_PLANS[effective_risk(spec)])


def flag_gated_plan(spec: RolloutSpec) -> list[PlannedStage]:
    """The flag-gated sequence, with the same overrides of its waits: by percentages of users
    where the flag store can hold them."""
    flags = spec.feature_flags
    percentages = flags is not None and flags.holds_percentage()
    return _planned(spec, FLAG_PERCENT_PLAN if percentages else FLAG_GATED_PLAN)


def _planned(spec: RolloutSpec, defaults: tuple[_Default, ...]) -> list[PlannedStage]:
    # Without a flag store there is nothing to switch: a plan never claims flags it cannot set.
    has_flags = spec.feature_flags is not None
    stages = [
        PlannedStage(name=d.name, weight=d.weight, min_wait=d.min_wait, max_wait=d.max_wait,
                     flags=d.flags if has_flags else None)
        for d in defaults
    ]  # fmt: skip
    stages = _with_wait_overrides(spec, stages)
    # The watch after release is the closing stage's own wait: it wins over `waits`.
    if spec.watch_after_release is not None and stages[-1].weight == 100:
        last = stages[-1]
        stages[-1] = last.model_copy(
            update={"min_wait": spec.watch_after_release, "max_wait": spec.watch_after_release}
        )
    return stages


def _from_step(index: int, step: Step) -> PlannedStage:
    return PlannedStage(
        name=step.name or f"step-{index + 1}",
        weight=step.weight,
        min_wait=step.min_wait or "0s",
        max_wait=step.max_wait or step.min_wait or "0s",
        flags=step.flags,
    )


def _with_wait_overrides(spec: RolloutSpec, stages: list[PlannedStage]) -> list[PlannedStage]:
    waits = spec.waits
    if waits is None:
        return stages
    out = []
    for i, stage in enumerate(stages):
        low = (waits.first_stage_min if i == 0 else None) or waits.min or stage.min_wait
        high = (waits.first_stage_max if i == 0 else None) or waits.max or stage.max_wait
        if low and high and parse_duration(low) > parse_duration(high):
            low = high  # an override of one bound never makes the stage impossible
        out.append(stage.model_copy(update={"min_wait": low, "max_wait": high}))
    return out
