"""Risk from what a change touches: the decision matrix of the playbook, as a pure function.

A pipeline declares what changed in the `parachute.dev/change` annotation: area names
(`docs`, `api`, `payments`) or paths (`docs/setup.md`, `services/auth/login.go`), separated by
commas, spaces or new lines. Each entry gets a risk; the change gets the highest. An explicit
`spec.risk` always wins; with neither, a release is `medium`.
"""

from __future__ import annotations

import re
from fnmatch import fnmatch

from parachute.api import Risk

ORDER = (Risk.zero, Risk.low, Risk.medium, Risk.high)
WHY = {
    Risk.zero: "tests and docs",
    Risk.low: "new code not yet wired in",
    Risk.medium: "middleware, API changes, compatible migrations",
    Risk.high: "auth, payments, data writes, breaking migrations",
}

AREAS: dict[str, Risk] = {
    **dict.fromkeys(("docs", "doc", "documentation", "readme", "tests", "test", "comments", "ci"), Risk.zero),
    **dict.fromkeys(("unwired", "new-code", "flagged-off", "dead-code"), Risk.low),
    **dict.fromkeys(
        ("middleware", "api", "migration", "compatible-migration", "config", "dependencies", "refactor"),
        Risk.medium,
    ),
    **dict.fromkeys(
        (
            "auth",
            "authentication",
            "authorization",
            "payments",
            "payment",
            "billing",
            "data-writes",
            "breaking-migration",
            "security",
            "crypto",
        ),
        Risk.high,
    ),
}
# First match wins: tests and docs come first, so a test of the auth code is still a test.
PATHS: tuple[tuple[str, Risk], ...] = (
    ("docs/*", Risk.zero), ("*.md", Risk.zero), ("*.rst", Risk.zero), ("*.txt", Risk.zero),
    ("tests/*", Risk.zero), ("test/*", Risk.zero), ("*/tests/*", Risk.zero), ("*_test.*", Risk.zero),
    ("*/test_*", Risk.zero), ("test_*", Risk.zero), ("*.spec.*", Risk.zero), ("*.test.*", Risk.zero),
    ("*auth*", Risk.high), ("*payment*", Risk.high), ("*billing*", Risk.high), ("*breaking*", Risk.high),
    ("*migrations/*", Risk.medium), ("*middleware*", Risk.medium), ("*api/*", Risk.medium),
)  # fmt: skip


def entries(annotation: str) -> list[str]:
    return [e for e in re.split(r"[\s,]+", annotation.strip()) if e]


def classify(entry: str) -> Risk | None:
    """An area name or a path; None when it says nothing about risk."""
    lowered = entry.lower()
    if lowered in AREAS:
        return AREAS[lowered]
    if "/" in lowered or "." in lowered:
        for pattern, risk in PATHS:
            if fnmatch(lowered, pattern):
                return risk
    return None


def risk_of_change(annotation: str) -> tuple[Risk, str] | None:
    """The change's risk and why; None when no entry could be classified."""
    judged = [(e, r) for e in entries(annotation) if (r := classify(e)) is not None]
    if not judged:
        return None
    top = max((r for _, r in judged), key=ORDER.index)
    causes = [e for e, r in judged if r == top]
    unknown = [e for e in entries(annotation) if classify(e) is None]
    reason = f"{top} from the change ({', '.join(causes[:5])}: {WHY[top]})"
    if unknown:
        reason += f"; not classified: {', '.join(unknown[:5])}"
    return top, reason
