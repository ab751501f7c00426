"""What a report request must be, and who may send how many: pure checks, each refusal with its
HTTP status and a message that names what is wrong.

A request is `POST` with `Authorization: Bearer <token>` and a JSON object of at most
`MAX_BODY` bytes: `namespace` and `rollout` name the Rollout, `key` names the issue (reports
are counted per key), `message` is optional text for people. Unknown fields are refused, so a
misspelt field is not silently dropped. Tokens are compared in constant time. Rates are held
by token buckets, one per source address and one for all, so one noisy client cannot fill the
API server with Events or starve the others.
"""

from __future__ import annotations

import hmac
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus

MAX_BODY = 4096  # bytes: a key, two names and a short message fit many times over
MAX_MESSAGE = 512  # characters kept in the Event (after masking)
# An issue key as support tools write them: CHK-1234, checkout.blank-page, sev2_login.
KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
FIELDS = ("namespace", "rollout", "key", "message")
# Control characters other than tab and newline have no place in a message for people.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class RefusedError(Exception):
    """The request is refused with this HTTP status; nothing is recorded."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Report:
    """A report as support tooling sent it, checked."""

    namespace: str
    rollout: str
    key: str
    message: str = ""


def authenticate(header: str | None, token: bytes) -> None:
    """401 without a bearer token, 403 with a wrong one (compared in constant time)."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise RefusedError(
            HTTPStatus.UNAUTHORIZED, "a bearer token is required (Authorization: Bearer <token>)"
        )
    if not hmac.compare_digest(given.strip().encode(), token):
        raise RefusedError(HTTPStatus.FORBIDDEN, "the token is not the reports token")


def check_size(declared: int | None) -> None:
    """413 when the body says it is larger than `MAX_BODY` (a body that only turns out so is
    refused the same way when read)."""
    if declared is not None and declared > MAX_BODY:
        raise RefusedError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is larger than {MAX_BODY} bytes")


def parse(body: bytes) -> Report:
    """The report in a request body; 400 naming the field that is wrong, 413 when too large."""
    if len(body) > MAX_BODY:
        raise RefusedError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is larger than {MAX_BODY} bytes")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RefusedError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
    if not isinstance(document, dict):
        raise RefusedError(HTTPStatus.BAD_REQUEST, "the body is not a JSON object")
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise RefusedError(
            HTTPStatus.BAD_REQUEST, f"{unknown[0]}: unknown field (known: {', '.join(FIELDS)})"
        )

    def text(field: str, pattern: re.Pattern[str], what: str) -> str:
        value = document.get(field)
        if value is None or value == "":
            raise RefusedError(HTTPStatus.BAD_REQUEST, f"{field}: required")
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise RefusedError(HTTPStatus.BAD_REQUEST, f"{field}: must be {what}")
        return value

    namespace = text("namespace", NAMESPACE, "a namespace's name")
    rollout = text("rollout", NAME, "a Rollout's name")
    key = text(
        "key", KEY, "1 to 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
    )
    message = document.get("message")
    if message is None:
        message = ""
    if not isinstance(message, str):
        raise RefusedError(HTTPStatus.BAD_REQUEST, "message: must be a string")
    if len(message) > MAX_MESSAGE:
        raise RefusedError(HTTPStatus.BAD_REQUEST, f"message: at most {MAX_MESSAGE} characters")
    if _CONTROL.search(message):
        raise RefusedError(HTTPStatus.BAD_REQUEST, "message: control characters are not allowed")
    return Report(namespace, rollout, key, message.strip())


class TokenBucket:
    """`rate` requests per second on average, `burst` at once. Time is passed in (monotonic
    seconds), so tests need no clock."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True)
class Rates:
    """Reports per second, and bursts, per source address and for all together."""

    per_source: float = 0.5
    source_burst: float = 20
    overall: float = 2.0
    overall_burst: float = 50
    sources: int = 1024  # addresses remembered; the least recently seen is forgotten first


class Limiter:
    """A bucket per source and one for all: a request takes a token from both, or is refused 429."""

    def __init__(self, rates: Rates, now: float) -> None:
        self.rates = rates
        self.overall = TokenBucket(rates.overall, rates.overall_burst, now)
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, source: str, now: float) -> None:
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = self._sources[source] = TokenBucket(self.rates.per_source, self.rates.source_burst, now)
            while len(self._sources) > self.rates.sources:
                self._sources.popitem(last=False)
        self._sources.move_to_end(source)
        if not bucket.take(now):
            raise RefusedError(
                HTTPStatus.TOO_MANY_REQUESTS, "too many reports from this source: try again later"
            )
        if not self.overall.take(now):
            bucket.tokens += 1  # not this source's fault: its token is given back
            raise RefusedError(HTTPStatus.TOO_MANY_REQUESTS, "too many reports: try again later")
