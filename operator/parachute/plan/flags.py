"""Switching a release's feature flags off, as pure transformations of the flag store.

Two shapes of store: a ConfigMap of plain `KEY: "true"|"false"` values, and OpenFeature
flagd flag definitions (`{"flags": {name: {state, variants, defaultVariant, targeting}}}`),
held in a ConfigMap key or in a `FeatureFlag` resource's `spec.flagSpec`. Off means: every
evaluation answers the safe variant, so targeting is cleared too (a targeting rule would
otherwise keep serving the new path to some users).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

OFF_NAMES = ("off", "false", "disabled")


def plain_off(data: Mapping[str, str], flags: Iterable[str]) -> dict[str, str]:
    return {**data, **{flag: "false" for flag in flags}}


def plain_is_off(data: Mapping[str, str], flags: Iterable[str]) -> bool:
    return all((data.get(flag) or "false").strip().lower() != "true" for flag in flags)


def off_variant(definition: Mapping[str, Any]) -> str | None:
    """The variant that turns a flag off: the one whose value is false, else one named off."""
    variants = definition.get("variants") or {}
    for name, value in variants.items():
        if value is False:
            return str(name)
    for name in variants:
        if str(name).lower() in OFF_NAMES:
            return str(name)
    return None


def flagd_off(document: Mapping[str, Any], flags: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """The flag definitions with `flags` off, and what was changed (or could not be)."""
    out = copy.deepcopy(dict(document))
    definitions = out.setdefault("flags", {})
    changed = []
    for flag in flags:
        definition = definitions.get(flag)
        if definition is None:
            changed.append(f"{flag}: not defined, nothing to switch off")
            continue
        variant = off_variant(definition)
        before = definition.get("defaultVariant")
        if variant is None:
            # No safe variant to serve: a disabled flag makes clients fall back to their code default.
            definition["state"] = "DISABLED"
            changed.append(f"{flag}: state DISABLED (no false or off variant)")
        else:
            definition["defaultVariant"] = variant
            if before != variant:
                changed.append(f"{flag}: defaultVariant {before} -> {variant}")
        if definition.pop("targeting", None):
            changed.append(f"{flag}: targeting cleared")
    return out, changed


def flagd_is_off(document: Mapping[str, Any], flags: Iterable[str]) -> bool:
    definitions = document.get("flags") or {}
    for flag in flags:
        definition = definitions.get(flag)
        if definition is None or definition.get("state") == "DISABLED":
            continue
        if definition.get("targeting"):
            return False
        variant = off_variant(definition)
        if variant is None or definition.get("defaultVariant") != variant:
            return False
    return True
