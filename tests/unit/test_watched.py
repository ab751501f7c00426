"""The copies a reconcile reads instead of asking the API server: the newest version wins, this
process's own write is never hidden by the watch's older event, a copy proved stale is not
trusted until the API server answers, and a copy nothing confirms for long is read again. An
object known not to exist (a 404, or its deletion seen) is known absent on the same terms; what
is known of an object is marked by a value that changes whenever that does."""

from __future__ import annotations

from typing import Any

from parachute.watched import Copies, version


def rollout(rv: str | None, phase: str = "Progressing", **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"namespace": "shop", "name": "checkout", **meta}
    if rv is not None:
        metadata["resourceVersion"] = rv
    return {"metadata": metadata, "status": {"phase": phase}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def phase(copies: Copies) -> str | None:
    found = copies.get("shop", "checkout")
    return None if found is None else str(found["status"]["phase"])


def test_nothing_kept_means_ask_the_api_server() -> None:
    assert Copies().get("shop", "checkout") is None


def test_a_newer_event_replaces_the_copy_and_an_older_one_does_not() -> None:
    copies = Copies()
    copies.seen(rollout("10", "Progressing"))
    copies.seen(rollout("12", "Healthy"))
    copies.seen(rollout("11", "RollingBack"))  # late: the watch never goes back, but answers overtake it
    assert phase(copies) == "Healthy"


def test_the_answer_to_this_processs_own_write_is_not_hidden_by_an_older_event() -> None:
    copies = Copies()
    copies.seen(rollout("10", "Progressing"))
    copies.answered(rollout("15", "RollingBack"))  # the status write's answer
    copies.seen(rollout("14", "Progressing"))  # someone's write just before ours, seen late
    assert phase(copies) == "RollingBack"
    copies.seen(rollout("15", "RollingBack"))  # our own write's event
    copies.seen(rollout("16", "RolledBack"))
    assert phase(copies) == "RolledBack"


def test_a_copy_proved_stale_is_not_trusted_until_the_api_server_answers() -> None:
    copies = Copies()
    copies.seen(rollout("10"))
    copies.doubt("shop", "checkout")  # a write based on it got a 409
    assert copies.get("shop", "checkout") is None
    copies.seen(rollout("11", "Progressing"))  # maybe still older than the object
    assert copies.get("shop", "checkout") is None
    copies.answered(rollout("13", "Healthy"))  # the reconcile read it again
    copies.seen(rollout("14", "Paused"))
    assert phase(copies) == "Paused"


def test_a_copy_nothing_confirmed_for_longer_than_it_is_kept_is_read_again() -> None:
    clock = Clock()
    copies = Copies(keep=120, clock=clock)
    copies.seen(rollout("10"))
    clock.now = 100
    copies.seen(rollout("10"))  # the same version again (a relisting) confirms it
    clock.now = 219
    assert phase(copies) == "Progressing"
    clock.now = 221
    assert copies.get("shop", "checkout") is None


def test_a_deleted_object_is_no_longer_kept() -> None:
    copies = Copies()
    copies.seen(rollout("10"))
    copies.gone("shop", "checkout")
    assert copies.get("shop", "checkout") is None
    assert len(copies) == 0


def test_a_version_that_is_not_a_number_cannot_be_ordered_so_nothing_is_kept() -> None:
    copies = Copies()
    copies.seen(rollout("10"))
    copies.seen(rollout("opaque-version"))
    assert copies.get("shop", "checkout") is None
    copies.seen(rollout(None))
    assert copies.get("shop", "checkout") is None
    assert version(rollout("007")) == 7


def test_each_read_gets_dicts_of_its_own() -> None:
    copies = Copies()
    copies.seen(rollout("10"))
    first = copies.get("shop", "checkout")
    assert first is not None
    first["status"]["phase"] = "changed by a caller"
    assert phase(copies) == "Progressing"


def test_managed_fields_are_not_kept() -> None:
    copies = Copies()
    copies.seen(rollout("10", managedFields=[{"manager": "kubectl"}], labels={"app": "checkout"}))
    kept = copies.get("shop", "checkout")
    assert kept is not None
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["labels"] == {"app": "checkout"}


def test_a_new_leader_takes_nothing_from_its_watch_until_the_api_server_has_answered() -> None:
    copies = Copies()
    copies.seen(rollout("98"))
    copies.distrust()  # leading now: the last leader may have written what this watch has not shown
    copies.seen(rollout("99", "Progressing"))  # still behind the last leader's write (100)
    assert copies.get("shop", "checkout") is None
    copies.answered(rollout("100", "RollingBack"))  # the first reconcile read it
    copies.seen(rollout("101", "RolledBack"))
    assert phase(copies) == "RolledBack"


# What is known not to exist.


def test_a_read_answered_not_found_is_known_absent_until_the_watch_shows_the_object() -> None:
    copies = Copies()
    copies.answered_absent("shop", "checkout", asked_at=0.0)
    assert copies.known_absent("shop", "checkout") and copies.get("shop", "checkout") is None
    copies.seen(rollout("20"))  # made since (or a late event: a 404 cannot be ordered with it)
    assert not copies.known_absent("shop", "checkout")
    assert phase(copies) == "Progressing"


def test_a_deletion_the_watch_showed_is_absence_and_older_events_do_not_bring_the_object_back() -> None:
    copies = Copies()
    copies.seen(rollout("10"))
    copies.deleted(rollout("12"))
    assert copies.known_absent("shop", "checkout") and copies.get("shop", "checkout") is None
    copies.seen(rollout("11"))  # from before the deletion
    assert copies.known_absent("shop", "checkout")
    copies.seen(rollout("13"))  # made again
    assert not copies.known_absent("shop", "checkout") and phase(copies) == "Progressing"


def test_a_deletion_seen_after_an_answer_that_showed_the_object_made_again_changes_nothing() -> None:
    copies = Copies()
    copies.answered(rollout("15", "Healthy"))  # this process made it again
    copies.deleted(rollout("12"))  # the deletion before, seen late
    assert not copies.known_absent("shop", "checkout") and phase(copies) == "Healthy"


def test_absence_is_forgotten_when_a_write_is_refused_or_after_it_is_kept() -> None:
    clock = Clock()
    copies = Copies(keep=120, clock=clock)
    copies.answered_absent("shop", "checkout", asked_at=0.0)
    copies.doubt("shop", "checkout")  # a create refused: it is there after all
    assert not copies.known_absent("shop", "checkout")
    copies.answered_absent("shop", "checkout", asked_at=0.0)
    clock.now = 121
    assert not copies.known_absent("shop", "checkout")  # asked again


def test_a_new_leader_knows_no_absence_until_the_api_server_says_so() -> None:
    copies = Copies()
    copies.answered_absent("shop", "checkout", asked_at=0.0)
    copies.distrust()
    assert not copies.known_absent("shop", "checkout")
    copies.deleted(rollout("30"))  # the watch's word alone: the last leader may have made it since
    assert not copies.known_absent("shop", "checkout")
    copies.answered_absent("shop", "checkout", asked_at=0.0)
    assert copies.known_absent("shop", "checkout")


def test_a_late_not_found_does_not_hide_what_the_watch_showed_made_meanwhile() -> None:
    clock = Clock()
    copies = Copies(clock=clock)
    clock.now = 10.0  # the read is asked
    clock.now = 10.5
    copies.seen(rollout("40"))  # made while the 404 was on its way
    copies.answered_absent("shop", "checkout", asked_at=10.0)
    assert not copies.known_absent("shop", "checkout") and phase(copies) == "Progressing"


def test_absences_nobody_asks_about_again_are_swept(monkeypatch: Any) -> None:
    monkeypatch.setattr("parachute.watched.SWEEP", 10)
    clock = Clock()
    copies = Copies(keep=120, clock=clock)
    for i in range(9):
        copies.answered_absent("shop", f"gone-{i}", asked_at=clock.now)
    clock.now = 200.0
    copies.answered_absent("shop", "checkout", asked_at=clock.now)  # the tenth: a sweep
    assert copies.absences == 1 and copies.known_absent("shop", "checkout")


def test_an_objects_mark_changes_whenever_what_is_known_of_it_does() -> None:
    clock = Clock()
    copies = Copies(keep=120, clock=clock)
    assert copies.mark("shop", "checkout") is None  # nothing known
    copies.seen(rollout("10"))
    assert copies.mark("shop", "checkout") == ("copy", 10)
    copies.seen(rollout("10", "Healthy"))  # the same version again: the same mark
    assert copies.mark("shop", "checkout") == ("copy", 10)
    copies.doubt("shop", "checkout")
    assert copies.mark("shop", "checkout") is None
    copies.answered_absent("shop", "checkout", asked_at=clock.now)
    gone = copies.mark("shop", "checkout")
    clock.now = 1.0
    copies.answered_absent("shop", "checkout", asked_at=clock.now)  # a 404 is not ordered: a new mark
    assert gone is not None and copies.mark("shop", "checkout") not in (None, gone)
    clock.now = 200.0
    assert copies.mark("shop", "checkout") is None  # kept too long


KEY = ("shop", "checkout")


def test_a_listing_of_the_same_version_confirms_a_copy_nothing_changed() -> None:
    clock = Clock()
    copies = Copies(keep=600, clock=clock)
    copies.seen(rollout("10"))
    clock.now = 500.0
    assert copies.confirm({KEY: 10}, at=40, asked_at=500.0) == 0
    clock.now = 1000.0  # 500 s after the listing, 1,000 after the watch's event
    assert phase(copies) == "Progressing"
    clock.now = 1101.0
    assert copies.get(*KEY) is None  # nothing confirmed it since: read again


def test_a_copy_the_listing_does_not_have_is_of_an_object_deleted_unseen() -> None:
    clock = Clock()
    copies = Copies(keep=600, clock=clock)
    copies.seen(rollout("10"))
    assert copies.confirm({}, at=40, asked_at=0.0) == 1
    assert copies.get(*KEY) is None
    assert copies.known_absent(*KEY)  # the next look asks nothing
    copies.seen(rollout("30"))  # an event from before the listing: before the deletion
    assert copies.known_absent(*KEY)
    copies.seen(rollout("41"))  # made again since
    assert phase(copies) == "Progressing"


def test_a_copy_newer_than_the_listing_is_not_its_to_judge() -> None:
    clock = Clock()
    copies = Copies(keep=600, clock=clock)
    copies.answered(rollout("50", "Healthy"))  # made after the snapshot at 40
    assert copies.confirm({}, at=40, asked_at=0.0) == 0
    assert phase(copies) == "Healthy"


def test_a_copy_behind_the_listing_waits_for_its_event_unconfirmed() -> None:
    clock = Clock()
    copies = Copies(keep=600, clock=clock)
    copies.seen(rollout("10"))
    clock.now = 500.0
    copies.confirm({KEY: 12}, at=40, asked_at=500.0)  # changed since: its event is on its way
    assert phase(copies) == "Progressing"
    clock.now = 601.0
    assert copies.get(*KEY) is None  # never came: read again when its time is up


def test_a_listing_of_one_namespace_judges_only_that_namespace() -> None:
    copies = Copies()
    copies.seen(rollout("10"))
    assert copies.confirm({}, at=40, asked_at=0.0, namespace="other") == 0
    assert phase(copies) == "Progressing"


def test_a_listing_confirms_an_absence_without_changing_its_mark() -> None:
    clock = Clock()
    copies = Copies(keep=600, clock=clock)
    copies.answered_absent(*KEY, asked_at=0.0)  # a read's 404
    mark = copies.mark(*KEY)
    clock.now = 500.0
    copies.confirm({}, at=40, asked_at=500.0)
    clock.now = 1000.0
    assert copies.known_absent(*KEY)
    assert copies.mark(*KEY) == mark  # a ReplicaSet listing kept under it still holds
    clock.now = 900.0
    copies.confirm({KEY: 45}, at=50, asked_at=900.0)  # there after all: not confirmed absent
    clock.now = 1101.0
    assert not copies.known_absent(*KEY)


def test_an_absence_nobody_asks_about_is_not_kept_alive_by_listings() -> None:
    clock = Clock()
    copies = Copies(keep=600, clock=clock)
    copies.deleted(rollout("10"))  # a name deleted and never asked for again
    for now in (200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0):  # the last ask within `keep`: 600
        clock.now = now
        copies.confirm({}, at=40, asked_at=now)
    clock.now = 1201.0
    assert copies.absences == 1  # held until a sweep or an ask
    assert not copies.known_absent(*KEY)
    assert copies.absences == 0


def test_a_404_answered_after_a_listing_vouched_for_the_copy_still_drops_it() -> None:
    clock = Clock()
    copies = Copies(keep=600, clock=clock)
    copies.seen(rollout("10"))
    clock.now = 10.0  # a read is sent
    clock.now = 20.0
    copies.confirm({KEY: 10}, at=40, asked_at=20.0)  # the listing saw it: deleted after it
    copies.answered_absent(*KEY, asked_at=10.0)  # the read's answer: gone
    assert copies.get(*KEY) is None
    assert copies.known_absent(*KEY)
