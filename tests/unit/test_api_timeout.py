"""An API server that stops answering does not hold a reconcile for ever: every request of the
operator's client has a bound, unless the call names its own."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from kubernetes import client

from parachute import kube


@pytest.fixture
def silent() -> Iterator[str]:
    """An address that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_request_to_an_api_server_that_never_answers_times_out(
    silent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "REQUEST_TIMEOUT", (0.5, 0.5))
    configuration = client.Configuration()
    configuration.host = silent
    configuration.retries = 0
    with pytest.raises(Exception, match=r"(?i)timed? ?out"):
        kube._Client(configuration).request("GET", f"{silent}/api/v1/namespaces")
