"""The notifications' own threads for their requests (see `parachute.transport`)."""

from __future__ import annotations

from parachute.transport import Threads

THREADS = 8

_threads = Threads("notification", THREADS)
send = _threads.send
