"""Prometheus as a metric provider, through prometheus-api-client.

Called off the event loop (a worker thread per query), with a timeout and a bounded retry
of transient HTTP failures. Whatever goes wrong becomes an Error sample with a message a
person can act on; a NaN or an empty vector is no data. Nothing here judges.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import re
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from parachute.plan.verdicts import Sample


class PrometheusProvider:
    def __init__(
        self,
        address: str,
        *,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        retries: int = 2,
    ) -> None:
        self.address = address
        self.timeout = timeout
        retry = Retry(total=retries, connect=retries, read=0, backoff_factor=0.2,
                      status_forcelist=(502, 503, 504), allowed_methods=("GET",))  # fmt: skip
        session = requests.Session()
        session.verify = verify
        self._client = PrometheusConnect(
            address, headers=headers, disable_ssl=verify is False, retry=retry, auth=basic_auth,
            session=session, timeout=timeout,
        )  # fmt: skip

    async def sample(self, query: str) -> Sample:
        return await asyncio.to_thread(self._sample, query)

    def _sample(self, query: str) -> Sample:
        try:
            result = self._client.custom_query(query, params={"timeout": f"{self.timeout:g}s"})
        except PrometheusApiClientException as error:
            return Sample(error=_api_error(str(error)))
        except requests.exceptions.Timeout:
            return Sample(error=f"Prometheus at {self.address} did not answer within {self.timeout:g}s")
        except requests.exceptions.RequestException as error:
            return Sample(error=f"Prometheus at {self.address} unreachable ({type(error).__name__})")
        return _to_sample(result)


def _to_sample(result: Any) -> Sample:
    """A vector of one series, a scalar, or nothing. Several series is the query's mistake."""
    if not result:
        return Sample()
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return Sample.of(float(result[1]))  # a scalar: [time, "value"]
    if len(result) > 1:
        return Sample(error=f"the query returned {len(result)} series; aggregate it to one (e.g. sum(...))")
    return Sample.of(float(result[0]["value"][1]))


def _api_error(text: str) -> str:
    """Prometheus's own words for a bad query, without the HTTP wrapping.

    The client puts the body's repr in its message: `HTTP Status Code 400 (b'{"error": ...}')`.
    """
    found = re.search(r"\((b'.*')\)\s*$", text, re.DOTALL)
    if found:
        with contextlib.suppress(ValueError, SyntaxError):
            body = json.loads(ast.literal_eval(found.group(1)))
            if isinstance(body, dict) and body.get("error"):
                return f"bad query: {body['error']}"
    return f"bad query: {text}"
