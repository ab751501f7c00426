"""The release's flags as the engine asks for them: a stage's state, or off for a rollback.

`status.flags` records what was asked, why and when; the store is written until it is seen in
that state (`parachute.recovery.flags` writes it; `plan.flags` edits the documents).
"""

from __future__ import annotations

from datetime import datetime

from parachute.api import FlagsStatus, FlagState, RolloutSpec, RolloutStatus, describe_exposure, flag_percent
from parachute.conditions import timestamp
from parachute.plan.model import FlagsView
from parachute.plan.tick import Log, Tick


def ask(st: RolloutStatus, state: str, reason: str, now: datetime) -> None:
    """Ask for the flags at `state`: off, on, or on for a percentage of users ("10%")."""
    revision = st.release.revision if st.release else None
    st.flags = FlagsStatus(state=state, reason=reason, revision=revision, requested_at=timestamp(now))


def wait(tick: Tick, st: RolloutStatus, log: Log) -> str:
    """Put the asked-for state in place; what is still awaited ("" once the store shows it)."""
    spec, seen = tick.spec, tick.observed.flags
    assert st.flags is not None and spec.feature_flags is not None
    names = ", ".join(spec.feature_flags.flags)
    if st.flags.in_place_at is not None:
        return ""
    wanted = st.flags.state
    if seen.state == wanted:
        st.flags.in_place_at = timestamp(tick.now)
        log.event(
            "FlagsSet", f"flags {names} {describe_exposure(wanted)} in {store(spec)} ({st.flags.reason})"
        )
        return ""
    problem = seen.problem or _cannot(seen, wanted)
    if not problem:
        log.flags = wanted
    return f"flags {names} to be {describe_exposure(wanted)}" + (f": {problem}" if problem else "")


def _cannot(seen: FlagsView, wanted: str) -> str:
    """Why the store cannot show `wanted`: on needs an on variant, a percentage an off one too."""
    if wanted == FlagState.off:
        return ""
    split = seen.cannot_split if flag_percent(wanted) is not None else ""
    return "; ".join(p for p in (seen.cannot_switch_on, split) if p)


def store(spec: RolloutSpec) -> str:
    flags = spec.feature_flags
    assert flags is not None
    if flags.config_map_ref is not None:
        return f"ConfigMap {flags.config_map_ref.name}"
    return f"FeatureFlag {flags.feature_flag_ref.name if flags.feature_flag_ref else ''}"
