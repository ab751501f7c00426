"""Which Rollouts one operator serves: a Kubernetes label selector over the Rollout's labels.

A large cluster is split between installs, each with its own Lease: by namespace
(`--namespace`) or by label (`--selector parachute.dev/shard=a`). The selector has the
syntax `kubectl -l` takes: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
joined by commas, all of which must hold. The operator lists with it (server side) and checks
each watch event with it, so a Rollout relabelled into another shard is let go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^(?P<key>{_NAME})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY = re.compile(rf"^(?P<key>{_NAME})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})$")
_EXISTS = re.compile(rf"^(?P<bang>!?)\s*(?P<key>{_NAME})$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # in, notin, exists, absent
    values: frozenset[str] = frozenset()

    def holds(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "absent":
            return self.key not in labels
        if self.operator == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # notin: also when the label is missing


@dataclass(frozen=True)
class Selector:
    text: str
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(r.holds(labels or {}) for r in self.requirements)


EVERYTHING = Selector("", ())


def _terms(text: str) -> list[str]:
    """Split on the commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [*terms, current]


def parse(text: str) -> Selector:
    """The selector `text` means (everything when empty); ValueError naming the term it cannot read."""
    if not text.strip():
        return EVERYTHING
    requirements = []
    for raw in _terms(text):
        term = raw.strip()
        if found := _SET.match(term):
            values = frozenset(v.strip() for v in found["values"].split(","))
            if not values or any(not re.fullmatch(_VALUE, v) or not v for v in values):
                raise ValueError(f"label selector {text!r}: bad values in {term!r}")
            requirements.append(Requirement(found["key"], found["op"], values))
        elif found := _EQUALITY.match(term):
            operator = "notin" if found["op"] == "!=" else "in"
            requirements.append(Requirement(found["key"], operator, frozenset({found["value"]})))
        elif found := _EXISTS.match(term):
            requirements.append(Requirement(found["key"], "absent" if found["bang"] else "exists"))
        else:
            raise ValueError(f"label selector {text!r}: cannot read {term!r}")
    return Selector(text.strip(), tuple(requirements))
