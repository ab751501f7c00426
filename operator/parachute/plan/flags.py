"""Setting a release's feature flags off, on, or on for a percentage of users, as pure
transformations of the flag store.

Two shapes of store: a ConfigMap of plain `KEY: "true"|"false"` values, and OpenFeature
flagd flag definitions (`{"flags": {name: {state, variants, defaultVariant, targeting}}}`),
held in a ConfigMap key or in a `FeatureFlag` resource's `spec.flagSpec`. Off and on both
mean the same answer for every evaluation, so targeting is cleared (a targeting rule would
otherwise keep serving the other variant to some users); the copy taken before the write
keeps the original. A percentage (flagd only) is a `fractional` rule (`plan.fractional`).
Stages set the flags' exposure; a rollback switches them off.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from parachute.api import FlagState, describe_exposure, flag_percent
from parachute.plan import fractional

OFF_NAMES = ("off", "false", "disabled")
ON_NAMES = ("on", "true", "enabled")


def plain_set(data: Mapping[str, str], flags: Iterable[str], state: FlagState) -> dict[str, str]:
    value = "true" if state == FlagState.on else "false"
    return {**data, **{flag: value for flag in flags}}


def plain_off(data: Mapping[str, str], flags: Iterable[str]) -> dict[str, str]:
    return plain_set(data, flags, FlagState.off)


def plain_state(data: Mapping[str, str], flags: Iterable[str]) -> str | None:
    """on or off when every flag says so (a missing key is off); None when they differ."""
    values = {(data.get(flag) or "false").strip().lower() == "true" for flag in flags}
    if values == {True}:
        return FlagState.on.value
    return FlagState.off.value if values <= {False} else None


def plain_is_off(data: Mapping[str, str], flags: Iterable[str]) -> bool:
    return plain_state(data, flags) == FlagState.off


def off_variant(definition: Mapping[str, Any]) -> str | None:
    """The variant that turns a flag off: the one whose value is false, else one named off."""
    return _variant(definition, False, OFF_NAMES)


def on_variant(definition: Mapping[str, Any]) -> str | None:
    """The variant that turns a flag on: the one whose value is true, else one named on."""
    return _variant(definition, True, ON_NAMES)


def _variant(definition: Mapping[str, Any], value: bool, names: tuple[str, ...]) -> str | None:
    variants = definition.get("variants") or {}
    for name, given in variants.items():
        if given is value:
            return str(name)
    for name in variants:
        if str(name).lower() in names:
            return str(name)
    return None


def flagd_set(
    document: Mapping[str, Any], flags: Iterable[str], exposure: str
) -> tuple[dict[str, Any], list[str]]:
    """The flag definitions with `flags` at `exposure` (off, on, or a percentage), and what was
    changed (or could not be)."""
    out = copy.deepcopy(dict(document))
    definitions = out.setdefault("flags", {})
    changed = []
    percent = flag_percent(exposure)
    for flag in flags:
        definition = definitions.get(flag)
        if definition is None:
            changed.append(f"{flag}: not defined, nothing to switch {describe_exposure(exposure)}")
            continue
        if percent is not None:
            changed += _split_one(flag, definition, percent)
            continue
        changed += _set_one(flag, definition, FlagState(exposure))
        if definition.pop("targeting", None):
            changed.append(f"{flag}: targeting cleared")
    return out, changed


def _split_one(flag: str, definition: dict[str, Any], percent: int) -> list[str]:
    on, off = on_variant(definition), off_variant(definition)
    if on is None or off is None:
        return [f"{flag}: no {'true or on' if on is None else 'false or off'} variant, not split"]
    before = definition.get("targeting")
    users = fractional.users_rule(before)
    wanted = fractional.targeting(users, on, off, percent)
    changed = []
    if before != wanted:
        changed.append(f"{flag}: {on} for {percent}% of users (fractional targeting)")
        if users and fractional.split_of(before) is None:
            changed.append(f"{flag}: its targeting kept for the users it picks")
    definition["targeting"] = wanted
    if definition.get("defaultVariant") != off:
        changed.append(f"{flag}: defaultVariant {definition.get('defaultVariant')} -> {off}")
        definition["defaultVariant"] = off
    if definition.get("state") != "ENABLED":
        definition["state"] = "ENABLED"
        changed.append(f"{flag}: state ENABLED")
    return changed


def _set_one(flag: str, definition: dict[str, Any], state: FlagState) -> list[str]:
    before = definition.get("defaultVariant")
    if state == FlagState.on:
        variant = on_variant(definition)
        if variant is None:
            return [f"{flag}: no true or on variant, not switched on"]
        changed = [] if before == variant else [f"{flag}: defaultVariant {before} -> {variant}"]
        if definition.get("state") != "ENABLED":
            definition["state"] = "ENABLED"
            changed.append(f"{flag}: state ENABLED")
        definition["defaultVariant"] = variant
        return changed
    variant = off_variant(definition)
    if variant is None:
        # No safe variant to serve: a disabled flag makes clients fall back to their code default.
        definition["state"] = "DISABLED"
        return [f"{flag}: state DISABLED (no false or off variant)"]
    definition["defaultVariant"] = variant
    return [] if before == variant else [f"{flag}: defaultVariant {before} -> {variant}"]


def flagd_off(document: Mapping[str, Any], flags: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    return flagd_set(document, flags, FlagState.off.value)


def flagd_state(document: Mapping[str, Any], flags: Iterable[str]) -> str | None:
    """off, on or a percentage when every flag serves that to everyone; None otherwise."""
    states = {_flagd_one(document, flag) for flag in flags}
    return states.pop() if len(states) == 1 else None


def _flagd_one(document: Mapping[str, Any], flag: str) -> str | None:
    definition = (document.get("flags") or {}).get(flag)
    if definition is None or definition.get("state") == "DISABLED":
        return FlagState.off.value  # clients answer their code default: the new path stays shut
    if definition.get("targeting"):
        percent = fractional.percentage(definition, on_variant(definition), off_variant(definition))
        return None if percent is None else f"{percent}%"
    default = definition.get("defaultVariant")
    if default is not None and default == off_variant(definition):
        return FlagState.off.value
    if default is not None and default == on_variant(definition) and definition.get("state") == "ENABLED":
        return FlagState.on.value
    return None


def flagd_is_off(document: Mapping[str, Any], flags: Iterable[str]) -> bool:
    return flagd_state(document, flags) == FlagState.off


def flagd_cannot_switch_on(document: Mapping[str, Any], flags: Iterable[str]) -> str:
    """Why some of `flags` cannot be switched on (not defined, no on variant); empty if all can."""
    definitions, names = document.get("flags") or {}, list(flags)
    missing = [flag for flag in names if flag not in definitions]
    no_variant = [f for f in names if f in definitions and on_variant(definitions[f]) is None]
    problems = [f"{', '.join(missing)} not defined"] if missing else []
    problems += [f"{', '.join(no_variant)} without a true or on variant"] if no_variant else []
    return "; ".join(problems)


def flagd_cannot_split(document: Mapping[str, Any], flags: Iterable[str]) -> str:
    """Why some of `flags` cannot be on for a percentage of users (besides what keeps them from
    being switched on): a fractional rule needs an off variant to give the others."""
    definitions = document.get("flags") or {}
    no_off = [f for f in flags if f in definitions and off_variant(definitions[f]) is None]
    return f"{', '.join(no_off)} without a false or off variant" if no_off else ""
