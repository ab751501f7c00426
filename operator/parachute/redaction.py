"""Hiding Secret values before text reaches a log line, an Event or a status.

Webhook URLs, tokens and passwords come from Secrets, and an error about a request that
carried one often quotes it: urllib says "unknown url type: 'hooks.slack.com/T000/…'",
http.client quotes a bad header value. Every such message goes through `redact` first:
the values it is given are masked wherever they appear (a URL keeps its scheme and host,
so the message still says where it went), and so are the user info, path and query of
any URL and the credentials after `Bearer` or `Basic`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"
ELIDED = "/…"
# A part of a secret shorter than this is masked only as part of the whole value.
_SHORTEST_PART = 4

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^\s/?#'\"<>]*)(?P<rest>[^\s'\"<>]*)")
_CREDENTIALS = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[^\s'\",;]+", re.IGNORECASE)


def _host(authority: str) -> str:
    return authority.rsplit("@", 1)[-1]


def _shown(value: str) -> str:
    """What may be said of a secret value: the scheme and host of a URL, nothing of anything else."""
    parts = urlsplit(value)
    shown = f"{parts.scheme}://{_host(parts.netloc)}{ELIDED}" if parts.scheme and parts.netloc else MASK
    return MASK if value in shown else shown  # a URL that is all host shows nothing


def _parts(value: str) -> list[str]:
    """Pieces of a secret URL an error may quote alone: its user info, path and query."""
    parts = urlsplit(value if "://" in value else f"//{value}")
    pieces = [parts.path, parts.query]
    if "@" in parts.netloc:
        pieces.append(parts.netloc.rsplit("@", 1)[0])
    return [piece for piece in pieces if len(piece) >= _SHORTEST_PART]


def _without_secrets(found: re.Match[str]) -> str:
    rest = found["rest"]
    elided = ELIDED if rest.strip("/") else rest
    return f"{found['scheme']}{_host(found['authority'])}{elided}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secret values, and the secret parts of any URL or credential, masked."""
    values = {value.strip() for value in secrets if value and value.strip()}
    # Longest first: a secret that contains another is masked whole.
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, _shown(value))
    for piece in sorted({p for value in values for p in _parts(value)}, key=len, reverse=True):
        text = text.replace(piece, ELIDED if piece.startswith("/") else MASK)
    text = _URL.sub(_without_secrets, text)
    return _CREDENTIALS.sub(lambda found: f"{found['scheme']} {MASK}", text)
