"""The reports endpoint refuses what it must, each refusal with its HTTP status and a message
naming what is wrong, and records nothing then: no token 401, a wrong one 403, over the rate 429,
too large 413, a bad body 400 naming the field, an unknown Rollout 404, one that does not watch
user reports 409. The token never reaches a log."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application, post

from parachute.reports import record, server
from parachute.reports.request import (
    MAX_BODY,
    Limiter,
    Rates,
    RefusedError,
    Report,
    TokenBucket,
    authenticate,
    parse,
)

TOKEN = b"Zm9yIHRoZSByZXBvcnRzIG9ubHk"
GOOD = {"namespace": "shop", "rollout": "checkout", "key": "CHK-1234", "message": "checkout page stays blank"}
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def body(**fields: Any) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


@pytest.mark.parametrize(
    ("raw", "status", "said"),
    [
        pytest.param(b"{", HTTPStatus.BAD_REQUEST, "not JSON", id="not-json"),
        pytest.param(b"\xff\xfe", HTTPStatus.BAD_REQUEST, "not JSON", id="not-utf8"),
        pytest.param(b"[1]", HTTPStatus.BAD_REQUEST, "not a JSON object", id="not-an-object"),
        pytest.param(body(severity="high"), HTTPStatus.BAD_REQUEST, "severity: unknown field", id="unknown-field"),
        pytest.param(json.dumps({"rollout": "checkout", "key": "k"}).encode(), HTTPStatus.BAD_REQUEST,
                     "namespace: required", id="no-namespace"),
        pytest.param(body(namespace="Shop"), HTTPStatus.BAD_REQUEST, "namespace: must be", id="bad-namespace"),
        pytest.param(body(rollout=""), HTTPStatus.BAD_REQUEST, "rollout: required", id="empty-rollout"),
        pytest.param(body(rollout=7), HTTPStatus.BAD_REQUEST, "rollout: must be", id="rollout-not-text"),
        pytest.param(body(key=None), HTTPStatus.BAD_REQUEST, "key: required", id="no-key"),
        pytest.param(body(key="blank page"), HTTPStatus.BAD_REQUEST, "key: must be", id="key-with-a-space"),
        pytest.param(body(key="k" * 64), HTTPStatus.BAD_REQUEST, "key: must be", id="key-too-long"),
        pytest.param(body(key="-k"), HTTPStatus.BAD_REQUEST, "key: must be", id="key-starts-oddly"),
        pytest.param(body(message=["x"]), HTTPStatus.BAD_REQUEST, "message: must be a string", id="message-not-text"),
        pytest.param(body(message="x" * 513), HTTPStatus.BAD_REQUEST, "message: at most 512", id="message-too-long"),
        pytest.param(body(message="a\x1b[31mb"), HTTPStatus.BAD_REQUEST, "message: control characters",
                     id="message-with-escapes"),
        pytest.param(body(message="x" * 5000), HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "larger than 4096",
                     id="too-large"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_report_is_refused_naming_the_field(
    raw: bytes, status: HTTPStatus, said: str
) -> None:
    with pytest.raises(RefusedError) as refused:
        parse(raw)
    assert refused.value.status == status and said in refused.value.message


@pytest.mark.parametrize(
    ("raw", "report"),
    [
        pytest.param(body(), Report("shop", "checkout", "CHK-1234", "checkout page stays blank"), id="full"),
        pytest.param(json.dumps({"namespace": "shop", "rollout": "checkout", "key": "sev2_login.blank"}).encode(),
                     Report("shop", "checkout", "sev2_login.blank"), id="no-message"),
        pytest.param(body(message="two\nlines\tand a tab"), Report("shop", "checkout", "CHK-1234", "two\nlines\tand a tab"),
                     id="newlines-and-tabs"),
    ],
)  # fmt: skip
def test_a_report_is_read(raw: bytes, report: Report) -> None:
    assert parse(raw) == report


@pytest.mark.parametrize(
    ("header", "status"),
    [
        pytest.param(None, HTTPStatus.UNAUTHORIZED, id="none"),
        pytest.param("Basic dXNlcjpwYXNz", HTTPStatus.UNAUTHORIZED, id="not-bearer"),
        pytest.param("Bearer ", HTTPStatus.UNAUTHORIZED, id="empty"),
        pytest.param("Bearer wrong", HTTPStatus.FORBIDDEN, id="wrong"),
        pytest.param(f"Bearer {TOKEN.decode()}x", HTTPStatus.FORBIDDEN, id="longer"),
        pytest.param(f"Bearer {TOKEN.decode()[:-1]}", HTTPStatus.FORBIDDEN, id="shorter"),
        pytest.param(f"bearer {TOKEN.decode()}", None, id="right-any-case"),
    ],
)
def test_only_the_reports_token_is_let_in(header: str | None, status: HTTPStatus | None) -> None:
    if status is None:
        authenticate(header, TOKEN)
        return
    with pytest.raises(RefusedError) as refused:
        authenticate(header, TOKEN)
    assert refused.value.status == status


def test_a_bucket_lets_a_burst_through_then_its_rate() -> None:
    bucket = TokenBucket(rate=0.5, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(1.0) and bucket.take(2.0) and not bucket.take(2.5)


def test_each_source_has_its_bucket_and_all_share_one() -> None:
    limiter = Limiter(Rates(per_source=0.0, source_burst=2, overall=0.0, overall_burst=3), now=0.0)
    limiter.admit("10.0.0.1", 0.0)
    limiter.admit("10.0.0.1", 0.0)
    with pytest.raises(RefusedError, match="from this source"):
        limiter.admit("10.0.0.1", 0.0)
    limiter.admit("10.0.0.2", 0.0)  # another source still gets through
    with pytest.raises(RefusedError, match="too many reports: try again later"):
        limiter.admit("10.0.0.3", 0.0)  # until all of them together are over the rate


# ------------------------------------------------------------------ the endpoint


class Cluster:
    """The Rollouts the endpoint may read, and the Events it recorded."""

    def __init__(self) -> None:
        self.rollouts: dict[tuple[str, str], dict[str, Any]] = {}
        self.recorded: list[str] = []

    async def read_rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.rollouts.get((namespace, name))

    async def post_report_event(
        self, rollout: dict[str, Any], reason: str, message: str, **fields: Any
    ) -> None:
        self.recorded.append(message)


def rollout(name: str, metrics: list[dict[str, Any]], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name, "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {"analysis": {"metrics": metrics}}}  # fmt: skip


Call = Callable[..., Awaitable[tuple[int, dict[str, Any]]]]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    fake = Cluster()
    fake.rollouts[("shop", "checkout")] = rollout("checkout", [{"template": "user-reports"}])
    fake.rollouts[("shop", "search")] = rollout("search", [{"template": "error-rate"}])
    fake.rollouts[("shop", "other-shard")] = rollout(
        "other-shard", [{"template": "user-reports"}], {"shard": "b"}
    )
    monkeypatch.setattr(server.kube, "read_rollout", fake.read_rollout)
    monkeypatch.setattr(record.kube, "post_report_event", fake.post_report_event)
    return fake


def ask(
    requests: list[tuple[dict[str, str], bytes]], rates: Rates | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """POST each request to a served endpoint; the answers' status and JSON body."""
    endpoint = server.Endpoint(lambda: TOKEN, lambda body: (body["metadata"].get("labels") or {}).get("shard") != "b",
                               rates=rates, now=lambda: T0)  # fmt: skip

    async def run() -> list[tuple[int, dict[str, Any]]]:
        app = Application(client_max_size=MAX_BODY + 1)
        app.add_routes([post(server.PATH, endpoint.handle)])
        async with TestClient(TestServer(app)) as client:
            answers = []
            for headers, data in requests:
                response = await client.post(server.PATH, data=data, headers=headers)
                answers.append((response.status, await response.json()))
            return answers

    return asyncio.run(run())


BEARER = {"Authorization": f"Bearer {TOKEN.decode()}"}


@pytest.mark.parametrize(
    ("headers", "data", "status", "said"),
    [
        pytest.param({}, body(), 401, "bearer token is required", id="no-token"),
        pytest.param({"Authorization": "Bearer guess"}, body(), 403, "not the reports token", id="wrong-token"),
        pytest.param(BEARER, body(message="x" * (MAX_BODY + 10)), 413, "larger than 4096", id="oversized-body"),
        pytest.param(BEARER, b"key=CHK-1", 400, "not JSON", id="form-body"),
        pytest.param(BEARER, body(key="a key"), 400, "key: must be", id="bad-key"),
        pytest.param(BEARER, body(rollout="cart"), 404, "Rollout shop/cart does not exist", id="unknown-rollout"),
        pytest.param(BEARER, body(rollout="other-shard"), 404, "not served by this operator", id="another-shard"),
        pytest.param(BEARER, body(rollout="search"), 409, "does not watch user-reports", id="not-watching"),
    ],
)  # fmt: skip
def test_a_refused_request_records_nothing(
    cluster: Cluster, headers: dict[str, str], data: bytes, status: int, said: str
) -> None:
    [(answered, answer)] = ask([(headers, data)])
    assert answered == status and said in answer["error"]
    assert cluster.recorded == []


def test_a_chunked_body_is_read_whole_and_refused_once_too_large(cluster: Cluster) -> None:
    """Without a declared length the body is read in chunks, and no further than its limit."""

    async def chunks(data: bytes) -> Any:
        for start in range(0, len(data), 7):
            yield data[start : start + 7]

    endpoint = server.Endpoint(lambda: TOKEN, lambda body: True, now=lambda: T0)

    async def run() -> list[int]:
        app = Application()
        app.add_routes([post(server.PATH, endpoint.handle)])
        async with TestClient(TestServer(app)) as client:
            answers = []
            for data in (body(), body(message="x" * 500) + b" " * MAX_BODY):
                response = await client.post(server.PATH, data=chunks(data), headers=BEARER)
                answers.append(response.status)
            return answers

    assert asyncio.run(run()) == [202, 413]
    assert len(cluster.recorded) == 1


def test_a_report_is_recorded_and_accepted(cluster: Cluster) -> None:
    [(answered, answer)] = ask([(BEARER, body())])
    assert answered == 202
    assert (
        answer["rollout"] == "checkout"
        and answer["key"] == "CHK-1234"
        and answer["event"].startswith("checkout.")
    )
    assert cluster.recorded == ["user report CHK-1234: checkout page stays blank"]


def test_a_burst_is_cut_at_the_rate_and_what_is_refused_is_not_recorded(cluster: Cluster) -> None:
    answers = ask([(BEARER, body())] * 8, Rates(per_source=0.001, source_burst=5))
    assert [status for status, _ in answers] == [202] * 5 + [429] * 3
    assert len(cluster.recorded) == 5


def test_the_token_file_is_read_again_when_it_changes(tmp_path: Any) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    token = server.TokenFile(path)
    assert token() == b"first"
    path.write_text("second-and-longer\n")
    assert token() == b"second-and-longer"
    path.write_text("")
    assert token() is None
    path.unlink()
    assert token() is None


def test_the_token_is_never_logged(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="parachute")
    ask([(BEARER, body(message=f"pasted {TOKEN.decode()}")), ({"Authorization": "Bearer leaked-guess"}, body()),
         (BEARER, body(rollout="cart"))])  # fmt: skip
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "user report CHK-1234 recorded" in logged and "refused (404)" in logged
    assert TOKEN.decode() not in logged and "leaked-guess" not in logged
    assert TOKEN.decode() not in cluster.recorded[0]
