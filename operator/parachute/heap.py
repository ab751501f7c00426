"""How often Python's garbage collector walks the operator's objects.

What a reconcile parses (a Rollout, its Deployments, a listing, PromQL answers) lives as long as
the reconcile, a second or more when thousands of Rollouts are due. With the collector's
defaults (a young collection every 700 objects made and not yet freed, an older one every 10 of
those) much of it outlives two collections, reaches the oldest generation and dies there; and
every time the oldest generation has grown by a quarter, a full collection walks every object
the operator holds. At 10,000 Rollouts (a 560 MiB heap) there were 205 full collections in the
operator's first 23 minutes (the adoption and 12 minutes of releases), and py-spy found the event
loop's thread inside the collector in 37% of its samples: every reconcile due, and the fast
lane's look, waited for it. At 1,000 the collector's pauses were a sixth of the operator's CPU
during the releases; with these thresholds 3%, and no full collection.

A young generation of 20,000 objects, and an older one collected every 20 young collections,
let a reconcile's objects die (freed by their reference counts, as nearly all are) before they
are moved on: a cost paid for at most a few tens of thousands of objects of cyclic garbage kept
a little longer.
"""

from __future__ import annotations

import gc

YOUNG = 20_000  # objects made and not freed since the last collection, before the next one
OLDER = 20  # young collections before the older generation is collected too


def tune() -> None:
    """The thresholds above; the oldest generation's is the default's (its quarter rule holds)."""
    gc.set_threshold(YOUNG, OLDER, gc.get_threshold()[2])
