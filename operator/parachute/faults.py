"""Kill points: the operator dies (SIGKILL) at a named place in its work, when told to.

`PARACHUTE_KILL_AT=name[@namespace][#n]` makes the n-th time (1 unless said) that point
`name` is reached, for a Rollout in `namespace` (any unless said), the last thing the process
does: no cleanup, no Lease given up, nothing flushed, as when a node dies or the kernel kills
it. Tests start the operator with it to show that a release or rollback interrupted at that
point ends where it should once the operator is started again, with no action done twice.

The variable is read once, when this module is imported; without it `point` returns at once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

KILL_AT_ENV = "PARACHUTE_KILL_AT"


@dataclass(frozen=True)
class Target:
    """Where to die: the point's name, the namespace (None: any) and which reach (1: the first)."""

    name: str
    namespace: str | None = None
    nth: int = 1


def parse(text: str) -> Target:
    """`name[@namespace][#n]`; ValueError when it names nothing or n is not a positive number."""
    rest, _, nth = text.strip().partition("#")
    name, _, namespace = rest.partition("@")
    if not name:
        raise ValueError(f"{KILL_AT_ENV}={text!r}: no point named (name[@namespace][#n])")
    if nth and (not nth.isdigit() or int(nth) < 1):
        raise ValueError(f"{KILL_AT_ENV}={text!r}: #n must be a positive number")
    return Target(name, namespace or None, int(nth) if nth else 1)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Killer:
    """Counts the reaches of its target and dies at the chosen one."""

    def __init__(self, target: Target, die: Callable[[], None] = _die) -> None:
        self.target, self._die, self.reached = target, die, 0

    def point(self, name: str, namespace: str) -> None:
        target = self.target
        if name != target.name or (target.namespace is not None and namespace != target.namespace):
            return
        self.reached += 1
        if self.reached == target.nth:
            # Straight to the file descriptor: the logging handlers' buffers die with the process.
            when = time.strftime("%H:%M:%S")
            os.write(
                2,
                f"{when} parachute.faults: killed at {name} in {namespace} (reach {self.reached})\n".encode(),
            )
            self._die()


def _from_env() -> Killer | None:
    text = os.environ.get(KILL_AT_ENV)
    return Killer(parse(text)) if text else None


_KILLER = _from_env()


def point(name: str, namespace: str, detail: object = None) -> None:
    """A place where dying matters; the process is killed here if PARACHUTE_KILL_AT names it.

    With `detail` the point is `name:detail` (`status-written:RollingBack`), put together only
    when a kill point is set."""
    if _KILLER is not None:
        _KILLER.point(name if detail is None else f"{name}:{detail}", namespace)
