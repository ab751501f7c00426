"""The metric provider seam: `sample(query) -> Sample`, a value, no data, or an error.

One class per backend behind this Protocol; `parachute.analysis.prometheus` is the one
that ships. A fake for tests is a dict from query to Sample.
"""

from __future__ import annotations

from typing import Protocol

from parachute.plan.verdicts import Sample


class MetricProvider(Protocol):
    async def sample(self, query: str) -> Sample:
        """Never raises for an unreachable backend or a bad query: those are `Sample(error=...)`."""
        ...


class FixedProvider:
    """Answers from a table; an unknown query is no data. For tests and dry runs."""

    def __init__(self, answers: dict[str, Sample] | None = None, default: Sample | None = None) -> None:
        self.answers = answers or {}
        self.default = default or Sample()
        self.queries: list[str] = []

    async def sample(self, query: str) -> Sample:
        self.queries.append(query)
        return self.answers.get(query, self.default)
