"""The operator's clock: real UTC time, unless PARACHUTE_CLOCK_START says where it starts.

A test or a demo can start the operator at "Friday 17:00 in Berlin" and watch a release wait
for Monday without waiting for real hours: from that start the clock runs at real speed.
Everything that compares times (the reconcile, the scheduler's due times) reads this clock.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

CLOCK_START_ENV = "PARACHUTE_CLOCK_START"


def _offset() -> timedelta:
    start = os.environ.get(CLOCK_START_ENV)
    if not start:
        return timedelta(0)
    return datetime.fromisoformat(start.replace("Z", "+00:00")) - datetime.now(UTC)


_OFFSET = _offset()


def now() -> datetime:
    return datetime.now(UTC) + _OFFSET
