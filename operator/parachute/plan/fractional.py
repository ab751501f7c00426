"""A flagd flag on for a percentage of users: the `fractional` rule Parachute writes, and reads back.

flagd's `fractional` operator hashes the flag's key with the evaluation's targeting key into
a bucket, and gives each variant its weight's share of the buckets. Parachute writes
`{"fractional": [[on, N], [off, 100 - N]]}`: N% of targeting keys get the on variant, and
since the on bucket grows from the start of the range, a user who had the new path at 10%
keeps it at 50%. The flag's default variant is the off one, so an evaluation without a
targeting key (nothing to bucket) stays off.

The percentage replaces the flag's default, not the user's own targeting: a rule that picks
some users (returns a variant for them, null for the rest) keeps deciding for those it picks,
and the percentage applies to everyone it leaves to the default:

    {"if": [{"!==": [RULE, null]}, RULE, {"fractional": ...}]}

A rule that is itself a percentage (a top-level `fractional`) is replaced: it leaves nobody to
the default, and the release's percentage is Parachute's to move. The store is copied before
every write (`parachute.recovery.flags`), so whatever was replaced can be put back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FRACTIONAL = "fractional"


def rule(on: str, off: str, percent: int) -> dict[str, Any]:
    """The fractional rule giving `on` to `percent`% of targeting keys, `off` to the rest."""
    return {FRACTIONAL: [[on, percent], [off, 100 - percent]]}


def targeting(users: Any, on: str, off: str, percent: int) -> dict[str, Any]:
    """The flag's targeting at `percent`: the user's rule first where there is one."""
    split = rule(on, off, percent)
    if not users:
        return split
    return {"if": [{"!==": [users, None]}, users, split]}


def split_of(targeting: Any) -> tuple[Any, Any] | None:
    """(the user's rule or None, the fractional's arguments) when `targeting` is a percentage as
    Parachute writes it, or any top-level fractional; None for anything else."""
    if not isinstance(targeting, Mapping):
        return None
    if set(targeting) == {FRACTIONAL}:
        return None, targeting[FRACTIONAL]
    branches = targeting.get("if") if set(targeting) == {"if"} else None
    if not isinstance(branches, list) or len(branches) != 3:
        return None
    test, users, otherwise = branches
    if test != {"!==": [users, None]}:
        return None
    if not isinstance(otherwise, Mapping) or set(otherwise) != {FRACTIONAL}:
        return None
    return users, otherwise[FRACTIONAL]


def users_rule(targeting: Any) -> Any:
    """The user's own rule inside `targeting`, to keep: none from a bare percentage."""
    found = split_of(targeting)
    if found is not None:
        return found[0]
    return targeting or None


def percentage(definition: Mapping[str, Any], on: str | None, off: str | None) -> int | None:
    """N when the flag serves `on` to N% of users (0 < N < 100) as Parachute writes it; else None."""
    serves_split = (
        on is not None
        and off is not None
        and definition.get("state") == "ENABLED"
        and definition.get("defaultVariant") == off
    )
    found = split_of(definition.get("targeting")) if serves_split else None
    return None if found is None else _on_share(found[1], on, off)


def _on_share(weights: Any, on: str | None, off: str | None) -> int | None:
    """N from `[[on, N], [off, 100 - N]]`, the arguments Parachute writes; None for any other."""
    shaped = isinstance(weights, list) and len(weights) == 2
    if not shaped or not all(isinstance(w, list) and len(w) == 2 for w in weights):
        return None
    (first, share), (second, rest) = weights
    whole = isinstance(share, int) and not isinstance(share, bool) and isinstance(rest, int)
    if (first, second) != (on, off) or not whole:
        return None
    return int(share) if 0 < share < 100 and share + rest == 100 else None
