"""The status page: what it should say of each incident, the requests that say it (Statuspage's
REST API), and when a failed delivery is tried again — all read from the incident record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from parachute.api import Incident, Notification, Phase, RolloutStatus, StatusPageRecord
from parachute.notify import statuspage
from parachute.notify.statuspage import Wanted
from tests.unit.world import spec

NOW = datetime(2026, 11, 25, 10, 40, tzinfo=UTC)
TARGET = {
    "pageIdSecretRef": {"name": "page", "key": "id"},
    "tokenSecretRef": {"name": "page", "key": "token"},
    "componentIds": ["cmp-1"],
    "apiURL": "http://127.0.0.1:8080/",
}


def at(delta: timedelta) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def incident(id_: str = "rev-2-1", **fields: Any) -> Incident:
    return Incident.model_validate(
        {"id": id_, "reason": "error-rate", "startedAt": at(-timedelta(minutes=10)), **fields}
    )


RECOVERED = {"recoveredAt": at(-timedelta(minutes=5)), "watchUntil": at(timedelta(hours=1))}
WATCHED = {"recoveredAt": at(-timedelta(hours=2)), "watchUntil": at(-timedelta(minutes=1))}


@pytest.mark.parametrize(
    ("fields", "latest", "expected"),
    [
        pytest.param({}, True, "identified", id="rolling-back"),
        pytest.param(RECOVERED, True, "monitoring", id="recovered-watching"),
        pytest.param(
            {**RECOVERED, "regressedAt": at(-timedelta(minutes=1))}, True, "investigating", id="failed-again"
        ),
        pytest.param(WATCHED, True, "resolved", id="watch-over"),
        pytest.param({}, False, "resolved", id="a-newer-incident"),
    ],
)
def test_what_the_page_says_follows_the_incident(fields: dict[str, Any], latest: bool, expected: str) -> None:
    assert statuspage.page_status(incident(**fields), latest, NOW) == expected


def facing(**fields: Any) -> Any:
    return spec(customerFacing=True, notifications=[{"statusPage": TARGET}], **fields)


def status(*incidents: Incident, phase: Phase = Phase.rolling_back) -> RolloutStatus:
    return RolloutStatus(phase=phase, incidents=list(incidents))


def test_only_a_customer_facing_rollout_uses_its_status_page() -> None:
    assert statuspage.target_of(spec(notifications=[{"statusPage": TARGET}])) is None
    assert statuspage.target_of(spec(customerFacing=True)) is None
    assert statuspage.wanted(spec(notifications=[{"statusPage": TARGET}]), status(incident()), NOW) == []
    assert statuspage.wanted(facing(), status(incident()), NOW) == [Wanted("rev-2-1", "identified", None)]


OPENED = StatusPageRecord(incident_id="inc-1", status="identified", delivered_at=at(-timedelta(minutes=9)))


@pytest.mark.parametrize(
    ("incidents", "expected"),
    [
        pytest.param([incident(status_page=OPENED)], [], id="told-already"),
        pytest.param(
            [incident(**RECOVERED, status_page=OPENED)], [("rev-2-1", "monitoring")], id="recovered"
        ),
        pytest.param([incident(**WATCHED)], [], id="never-tried-and-over"),
        pytest.param(
            [incident(status_page=OPENED), incident("rev-3-1")],
            [("rev-2-1", "resolved"), ("rev-3-1", "identified")],
            id="newer-incident-resolves-the-older",
        ),
        pytest.param(
            [incident(**WATCHED, status_page=StatusPageRecord(failures=2, last_error="down"))],
            [("rev-2-1", "resolved")],
            id="tried-while-it-lasted",
        ),
    ],
)
def test_what_is_still_to_be_told(incidents: list[Incident], expected: list[tuple[str, str]]) -> None:
    found = statuspage.wanted(facing(), status(*incidents), NOW)
    assert [(w.incident, w.status) for w in found] == expected


def test_an_invalid_rollout_tells_the_page_nothing() -> None:
    assert statuspage.wanted(facing(), status(incident(), phase=Phase.invalid), NOW) == []


def test_opening_then_updating_speak_statuspage() -> None:
    target = facing().notifications[0].status_page
    method, url, body = statuspage.request(target, "pg-1", "checkout", Wanted("rev-2-1", "identified", None))
    assert (method, url) == ("POST", "http://127.0.0.1:8080/v1/pages/pg-1/incidents")
    sent = body["incident"]
    assert sent["status"] == "identified" and sent["name"] and "checkout" in sent["body"]
    assert sent["component_ids"] == ["cmp-1"] and sent["components"] == {"cmp-1": "degraded_performance"}
    method, url, body = statuspage.request(
        target, "pg-1", "checkout", Wanted("rev-2-1", "monitoring", OPENED)
    )
    assert (method, url) == ("PATCH", "http://127.0.0.1:8080/v1/pages/pg-1/incidents/inc-1")
    assert body["incident"]["components"] == {"cmp-1": "operational"}


def test_the_impact_and_no_components() -> None:
    target = spec(customerFacing=True, notifications=[{"statusPage": {**TARGET, "impact": "major_outage"}}])
    _, _, body = statuspage.request(
        target.notifications[0].status_page, "pg", "checkout", Wanted("i", "investigating", OPENED)
    )
    assert body["incident"]["components"] == {"cmp-1": "major_outage"}
    bare = {k: v for k, v in TARGET.items() if k != "componentIds"}
    plain = spec(notifications=[{"statusPage": bare}]).notifications[0].status_page
    _, _, body = statuspage.request(plain, "pg", "checkout", Wanted("i", "identified", None))
    assert "components" not in body["incident"] and "component_ids" not in body["incident"]


def test_the_default_api_is_statuspage_s() -> None:
    bare = {k: v for k, v in TARGET.items() if k != "apiURL"}
    target = spec(notifications=[{"statusPage": bare}]).notifications[0].status_page
    _, url, _ = statuspage.request(target, "pg", "checkout", Wanted("i", "identified", None))
    assert url == "https://api.statuspage.io/v1/pages/pg/incidents"


def test_a_failure_is_recorded_and_retried_later_and_later() -> None:
    first = statuspage.after_failure(None, "POST failed: refused", NOW)
    assert first.failures == 1 and first.last_error == "POST failed: refused" and first.incident_id is None
    assert first.retry_at == at(timedelta(seconds=15))
    again = statuspage.after_failure(first, "still down", NOW)
    assert again.failures == 2 and again.retry_at == at(timedelta(seconds=30))
    assert statuspage.retry_after(50) == timedelta(minutes=10)
    pending = incident(status_page=first)
    found = statuspage.wanted(facing(), status(pending), NOW)
    assert (
        found and not statuspage.due(found[0], NOW) and statuspage.due(found[0], NOW + timedelta(seconds=15))
    )
    assert statuspage.next_attempt_at(facing(), status(pending), NOW) == NOW + timedelta(seconds=15)


def test_a_success_keeps_the_page_s_incident_id_and_clears_the_failures() -> None:
    failed = statuspage.after_failure(OPENED, "down", NOW)
    done = statuspage.after_success(failed, Wanted("rev-2-1", "monitoring", failed), {}, NOW)
    assert done == StatusPageRecord(incident_id="inc-1", status="monitoring", delivered_at=at(timedelta(0)))
    opened = statuspage.after_success(None, Wanted("rev-2-1", "identified", None), {"id": "abc"}, NOW)
    assert opened.incident_id == "abc" and opened.failures == 0


def test_the_end_of_the_watch_is_a_moment_to_wake_for() -> None:
    monitoring = OPENED.model_copy(update={"status": "monitoring"})
    watched = status(incident(**RECOVERED, status_page=monitoring), phase=Phase.rolled_back)
    assert statuspage.next_attempt_at(facing(), watched, NOW) == NOW + timedelta(hours=1)
    assert statuspage.next_attempt_at(spec(), watched, NOW) is None


def test_at_most_one_status_page_and_exactly_one_kind_per_target() -> None:
    with pytest.raises(ValidationError):
        Notification.model_validate({"statusPage": {**TARGET, "apiURL": "not a url"}})
    assert Notification.model_validate({"statusPage": TARGET}).status_page is not None


def test_a_reconcile_that_read_status_before_the_outcome_was_recorded_does_not_tell_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    async def deliver(namespace: str, name: str, target: Any, found: Wanted) -> None:
        sent.append(found.status)

    monkeypatch.setattr(statuspage, "_deliver_logged", deliver)
    rollout = {"metadata": {"namespace": "shop", "name": "checkout"}}

    async def story() -> None:
        # This process told the page "identified"; the Rollout as read still has no record of it.
        monkeypatch.setitem(statuspage._told, ("shop", "checkout", "rev-2-1"), "identified")
        statuspage.sync(rollout, facing(), status(incident()), NOW)
        # Recovered since: what the page should say now is told.
        statuspage.sync(rollout, facing(), status(incident(**RECOVERED)), NOW)
        await asyncio.sleep(0)

    asyncio.run(story())
    assert sent == ["monitoring"]
