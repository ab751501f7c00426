"""When a reconcile writes status: not for a look whose only news is a later next check (a poll
while held, a look woken before its safety net), which is every look of a held Rollout."""

from __future__ import annotations

from datetime import timedelta

from parachute.reconcile import _dump, _only_looks_later
from tests.unit.world import Story, World, spec

SECONDS = timedelta(seconds=1)

HELD = {"phase": "Progressing", "message": "stage 1/2 (canary) at 10%: held, error-rate: no data",
        "nextCheckAt": "2026-12-05T10:00:02Z"}  # fmt: skip


def test_a_poll_that_only_moves_the_next_check_later_writes_nothing() -> None:
    assert _only_looks_later(HELD, {**HELD, "nextCheckAt": "2026-12-05T10:00:04Z"})
    assert _only_looks_later(HELD, {k: v for k, v in HELD.items() if k != "nextCheckAt"})  # none needed


def test_an_earlier_next_check_is_written_so_a_standby_or_a_restart_is_never_late() -> None:
    assert not _only_looks_later(HELD, {**HELD, "nextCheckAt": "2026-12-05T10:00:01Z"})
    without = {k: v for k, v in HELD.items() if k != "nextCheckAt"}
    assert not _only_looks_later(without, HELD)


def test_any_other_change_is_written_with_its_next_check() -> None:
    assert not _only_looks_later(HELD, {**HELD, "message": "watching", "nextCheckAt": "2026-12-05T10:01:00Z"})


def test_a_stage_s_start_is_one_write_and_the_looks_while_it_waits_for_its_pods_none() -> None:
    story = Story(spec(risk="medium", waits={"min": "1m", "max": "5m"}), World(canary_delay=30 * SECONDS))
    story.tick()
    story.world.revision = "rev-2"
    story.tick()
    story.tick(30 * SECONDS)  # stage 1 reached
    begun = story.tick(timedelta(minutes=1))  # and over: stage 2 begins, its larger canary not ready
    assert (
        begun.status.stage == "2/3" and "waiting for the new version to become ready" in begun.status.message
    )
    written = _dump(begun.status)
    for woken_after in (1, 5, 20):  # looks woken by the Deployments, then the safety net's
        look = _dump(story.tick(woken_after * SECONDS).status)
        assert _only_looks_later(written, look)
