"""No Secret value reaches a log line, an Event or a status: what `redact` hides, and that a
failed notification and the `--verbose` operator log nothing of the Secrets they use."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parachute.__main__ import quiet_http_clients
from parachute.notify import webhooks
from parachute.redaction import redact

SLACK = "hooks.slack.example/T000/B000/XXXXsecretXXXX"  # no scheme: urllib quotes it whole
CLOUD = "https://bus.example:8443/ingest/tenant-7?key=k3y-v4lue"
TOKEN = "tok-9f8e7d6c"


@pytest.mark.parametrize(
    ("text", "secrets", "shown"),
    [
        ("unknown url type: 'hooks.slack.example/T000/B000/XXXXsecretXXXX'", [SLACK], "unknown url type: '***'"),
        (f"cannot reach {CLOUD}", [CLOUD], "cannot reach https://bus.example:8443/…"),
        ("404 for /T000/B000/XXXXsecretXXXX", [SLACK], "404 for /…"),
        ("bad query string key=k3y-v4lue", [CLOUD], "bad query string ***"),
        (f"token {TOKEN} refused", [TOKEN], "token *** refused"),
        ("GET http://user:pw@prom:9090/api/v1/query?query=up failed", [], "GET http://prom:9090/… failed"),
        ("Invalid header value b'Bearer abc.def-ghi\\n'", [], "Invalid header value b'Bearer ***'"),
        ("Authorization: Basic dXNlcjpwdw==", [], "Authorization: Basic ***"),
        ("Prometheus at http://127.0.0.1:9090 unreachable", [], "Prometheus at http://127.0.0.1:9090 unreachable"),
        ("<urlopen error [Errno 111] Connection refused>", [SLACK, TOKEN], "<urlopen error [Errno 111] Connection refused>"),
        ("a URL that is all host: https://hooks.example", ["https://hooks.example"], "a URL that is all host: ***"),
    ],
    ids=[
        "schemeless-webhook-url", "url-keeps-scheme-and-host", "url-path-alone", "url-query-alone", "token",
        "any-url-user-info-path-and-query", "bearer-credentials", "basic-credentials", "address-without-path-kept",
        "nothing-secret-unchanged", "host-only-secret",
    ],
)  # fmt: skip
def test_redact(text: str, secrets: list[str], shown: str) -> None:
    assert redact(text, secrets) == shown


SECRET_ALPHABET = st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_/:.@?=&")


@given(
    before=st.text(max_size=40),
    secret=st.text(SECRET_ALPHABET, min_size=6, max_size=60),
    after=st.text(max_size=40),
)
def test_a_secret_given_never_survives(before: str, secret: str, after: str) -> None:
    assert secret.strip() not in redact(before + secret + after, [secret])


def test_a_failed_notification_logs_no_secret(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "ATTEMPTS", 1)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def send() -> int:
        return await webhooks.post(SLACK, {"text": "x"}, headers)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(webhooks._with_retries(send, "Slack webhook", [SLACK, TOKEN]))
    assert "notification to Slack webhook failed" in caplog.text and "unknown url type" in caplog.text
    for value in (SLACK, "/T000/B000/XXXXsecretXXXX", TOKEN):
        assert value not in caplog.text


def test_the_http_clients_never_log_bodies_even_when_verbose() -> None:
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.DEBUG)  # what kopf's --verbose does
        quiet_http_clients()
        for name in ("kubernetes.client.rest", "urllib3.connectionpool"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    finally:
        root.setLevel(level)
