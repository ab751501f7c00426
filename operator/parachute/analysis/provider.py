"""The metric provider seam: `sample(query)` (a value, no data, or an error) and `vector(query)`
(every series with its labels, or an error).

One class per backend behind this Protocol; `parachute.analysis.prometheus` is the one
that ships. A fake for tests answers from tables keyed by query.
"""

from __future__ import annotations

from typing import Protocol

from parachute.plan.verdicts import Sample, Series


class MetricProvider(Protocol):
    async def sample(self, query: str) -> Sample:
        """Never raises for an unreachable backend or a bad query: those are `Sample(error=...)`."""
        ...

    async def vector(self, query: str) -> Series:
        """Every series the query returns; never raises (see `sample`)."""
        ...


class FixedProvider:
    """Answers from tables; an unknown query is no data. For tests and dry runs."""

    def __init__(
        self,
        answers: dict[str, Sample] | None = None,
        default: Sample | None = None,
        vectors: dict[str, Series] | None = None,
        default_vector: Series | None = None,
    ) -> None:
        self.answers = answers or {}
        self.default = default or Sample()
        self.vectors = vectors or {}
        self.default_vector = default_vector or Series()
        self.queries: list[str] = []

    async def sample(self, query: str) -> Sample:
        self.queries.append(query)
        return self.answers.get(query, self.default)

    async def vector(self, query: str) -> Series:
        self.queries.append(query)
        return self.vectors.get(query, self.default_vector)
