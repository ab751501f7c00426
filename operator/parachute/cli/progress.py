"""`status`: has the release finished, and how — for pipelines that wait on it.

Pure: the Rollout and the revision the pipeline is waiting for in, an outcome out. A release
counts as done only once the operator has seen the current spec and the revision the target
asks for; until then an earlier release's phase (Healthy, RolledBack) says nothing about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from parachute.api import Phase
from parachute.cli.view import status_of


class Exit(IntEnum):
    """The exit codes of `status` (and of every command: 1 and 2 as usual)."""

    released = 0
    error = 1  # the API could not be read, the Rollout does not exist
    usage = 2  # bad arguments
    rolled_back = 3
    aborted = 4
    invalid = 5
    timeout = 6


@dataclass(frozen=True)
class Outcome:
    """Where the release stands: `done` says whether waiting is over, `exit` how it ended."""

    done: bool
    exit: Exit
    reason: str


# A decision table reads best as one early return per row.
def outcome(body: dict[str, Any], revision: str | None) -> Outcome:  # noqa: PLR0911
    """Judge a Rollout against the revision a pipeline waits for (None: whatever it releases)."""
    st = status_of(body)
    generation = body["metadata"].get("generation")
    if st.phase is None:
        return Outcome(False, Exit.timeout, "waiting for the operator to pick up the Rollout")
    if generation is not None and (st.observed_generation or 0) < generation:
        return Outcome(False, Exit.timeout, f"waiting for the operator to observe generation {generation}")
    if st.phase == Phase.invalid:
        return Outcome(True, Exit.invalid, st.message or "invalid")
    release = st.release
    current = release.revision if release else None
    incident = st.incidents[-1] if st.incidents else None
    if revision is not None:
        failed = incident is not None and incident.revision == revision and not incident.resolved
    else:
        failed = st.phase in (Phase.rolling_back, Phase.rolled_back)
    if failed:
        return Outcome(True, Exit.rolled_back, st.message or "rolled back")
    ours = revision is None or current == revision
    if st.phase == Phase.aborted and ours:
        return Outcome(True, Exit.aborted, st.message or "aborted")
    if st.phase == Phase.healthy and ours and release is not None and release.stable_revision == current:
        return Outcome(True, Exit.released, st.message or f"revision {current} released")
    if not ours:
        return Outcome(False, Exit.timeout, f"waiting for the operator to start revision {revision}")
    return Outcome(False, Exit.timeout, st.message or str(st.phase))
