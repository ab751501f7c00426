"""Prometheus as a metric provider, through prometheus-api-client.

Called off the event loop on threads of each Prometheus's own, never asyncio's default executor,
where every Kubernetes call runs: a Prometheus that answers a byte at a time (requests' timeout
bounds each read, not the answer) would otherwise take those threads, and with them every
reconcile and rollback. Each query has a deadline for the whole exchange: past it the caller
gets an Error sample (so the Rollout holds) while the thread finishes or fails on its own (its
connection is not cut: requests keeps its connections pooled), and a query still waiting for a
thread at its deadline is never sent. Transient HTTP failures get a
bounded retry. Whatever goes wrong becomes an Error sample (or series) with a message a
person can act on, with the credentials masked; a NaN or an empty vector is no data.
Nothing here judges.

A CA bundle to verify the server with is held in memory (an SSL context on the session's
adapter), never written to a file: the operator's Pod has a read-only root filesystem.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import re
import ssl
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from parachute import telemetry
from parachute.api import parse_duration
from parachute.plan.fastlane import Landing
from parachute.plan.verdicts import Sample, Series
from parachute.redaction import redact

THREADS = 16  # queries in flight at once to one Prometheus
# Each Prometheus on threads of its own: one that hangs (or drops packets) holds up no other's
# queries. Addresses are few (one per monitoring stack), and a pool's threads start as needed.
_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
# How long a caller waits for the whole exchange, retries included, against the server-side
# `timeout` each try carries.
DEADLINE_FACTOR = 2.0


def _pool(address: str) -> ThreadPoolExecutor:
    with _pools_lock:
        if address not in _pools:
            _pools[address] = ThreadPoolExecutor(
                max_workers=THREADS, thread_name_prefix="parachute-prometheus"
            )
        return _pools[address]


T = TypeVar("T")


class _TrustingAdapter(HTTPAdapter):
    """Verifies servers against one CA bundle held in memory, and nothing else."""

    def __init__(self, ca: ssl.SSLContext, **kwargs: Any) -> None:
        self._ca = ca
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, ssl_context=self._ca, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would load its default bundle (certifi) into the context: trust ours alone.
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = conn.ca_cert_dir = None


def trust(ca_pem: str) -> ssl.SSLContext:
    """An SSL context that trusts exactly the PEM bundle given (ssl.SSLError if it holds none)."""
    return ssl.create_default_context(cadata=ca_pem)


class PrometheusProvider:
    def __init__(
        self,
        address: str,
        *,
        timeout: float = 10.0,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        ca: ssl.SSLContext | None = None,
        insecure_skip_verify: bool = False,
        retries: int = 2,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._secrets = [bearer_token or "", *(basic_auth or ())]
        retry = Retry(total=retries, connect=retries, read=0, backoff_factor=0.2,
                      status_forcelist=(502, 503, 504), allowed_methods=("GET",))  # fmt: skip
        session = requests.Session()
        session.verify = not insecure_skip_verify
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
        self._client = PrometheusConnect(
            address, headers=headers, disable_ssl=insecure_skip_verify, retry=retry, auth=basic_auth,
            session=session, timeout=timeout,
        )  # fmt: skip
        # After PrometheusConnect, which mounts its own adapter (10 connections) on the address:
        # a connection for each of the address's threads, else each query past 10 opens its own.
        if ca is not None and not insecure_skip_verify:
            session.mount(address, _TrustingAdapter(ca, max_retries=retry, pool_maxsize=THREADS))
        else:
            session.mount(address, HTTPAdapter(max_retries=retry, pool_maxsize=THREADS))

    @property
    def deadline(self) -> float:
        return self.timeout * DEADLINE_FACTOR

    async def _off_loop(self, call: Callable[..., T], *args: Any) -> T:
        """`call` on this module's threads, its answer awaited until the deadline (TimeoutError)."""
        future = asyncio.get_running_loop().run_in_executor(_pool(self.address), call, *args)
        async with asyncio.timeout(self.deadline):
            return await future

    def _late(self) -> str:
        return f"Prometheus at {self.address} did not answer within {self.deadline:g}s"

    async def sample(self, query: str) -> Sample:
        try:
            return await telemetry.query(self._off_loop(self._sample, query))
        except TimeoutError:
            return Sample(error=self._late())

    def _sample(self, query: str) -> Sample:
        try:
            result = self._client.custom_query(query, params={"timeout": f"{self.timeout:g}s"})
        except Exception as error:  # whatever goes wrong is an Error sample, never an exception
            return Sample(error=self._failure(error))
        return _to_sample(result)

    async def vector(self, query: str) -> Series:
        try:
            return await telemetry.query(self._off_loop(self._vector, query))
        except TimeoutError:
            return Series(error=self._late())

    def _vector(self, query: str) -> Series:
        try:
            result = self._client.custom_query(query, params={"timeout": f"{self.timeout:g}s"})
        except Exception as error:  # as for a sample: an Error, never an exception
            return Series(error=self._failure(error))
        return _to_series(result)

    async def scrape_interval(
        self, namespaces: Collection[str], namespace_label: str = "namespace"
    ) -> float | None:
        """The shortest scrape interval (seconds) of the active targets in these namespaces (of
        any target when none is there); None when Prometheus does not say."""
        with contextlib.suppress(TimeoutError):  # the caller falls back, as when not told
            return await self._off_loop(self._scrape_interval, set(namespaces), namespace_label)
        return None

    def _scrape_interval(self, namespaces: set[str], namespace_label: str) -> float | None:
        try:
            targets = (self._client.get_targets(state="active") or {}).get("activeTargets") or []
        except Exception:  # a proxy that serves queries only: the caller falls back
            return None
        everywhere, there = [], []
        for target in targets:
            try:
                seconds = parse_duration(str(target.get("scrapeInterval") or "")).total_seconds()
            except ValueError:
                continue
            everywhere.append(seconds)
            if (target.get("labels") or {}).get(namespace_label) in namespaces:
                there.append(seconds)
        found = there or everywhere
        return min(found) if found else None

    async def scrape_landings(
        self, namespaces: Collection[str], namespace_label: str = "namespace"
    ) -> list[Landing]:
        """When each active target in these namespaces last had its sample in (its last scrape's
        start plus its duration): the fast lane looks just after its judged pods' samples land."""
        with contextlib.suppress(TimeoutError):  # the lane keeps its own tick
            return await self._off_loop(self._scrape_landings, set(namespaces), namespace_label)
        return []

    def _scrape_landings(self, namespaces: set[str], namespace_label: str) -> list[Landing]:
        try:
            targets = (self._client.get_targets(state="active") or {}).get("activeTargets") or []
        except Exception:  # as for the interval: the lane keeps its own tick
            return []
        out = []
        for target in targets:
            labels = target.get("labels") or {}
            if labels.get(namespace_label) not in namespaces:
                continue
            try:
                started = datetime.fromisoformat(str(target.get("lastScrape") or "")).timestamp()
                took = float(target.get("lastScrapeDuration") or 0.0)
            except (TypeError, ValueError):
                continue
            if started > 0:  # never scraped yet: Prometheus says the year 1
                out.append(Landing({str(k): str(v) for k, v in labels.items()}, started + took))
        return out

    def _failure(self, error: Exception) -> str:
        at = f"Prometheus at {self.address}"
        if isinstance(error, PrometheusApiClientException):
            refused = re.match(r"HTTP Status Code (401|403)\b", str(error))
            if refused:
                return f"{at} refused the credentials (HTTP {refused[1]})"
            return redact(_api_error(str(error)), self._secrets)
        if isinstance(error, requests.exceptions.Timeout):
            return f"{at} did not answer within {self.timeout:g}s"
        if isinstance(error, requests.exceptions.SSLError):
            return f"{at}: TLS failed ({_tls_reason(error)})"
        if isinstance(error, requests.exceptions.RequestException):
            return f"{at} unreachable ({type(error).__name__})"
        return f"{at}: request failed ({type(error).__name__})"  # e.g. a credential no header can carry


def _to_sample(result: Any) -> Sample:
    """A vector of one series, a scalar, or nothing. Several series is the query's mistake."""
    if not result:
        return Sample()
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return Sample.of(float(result[1]))  # a scalar: [time, "value"]
    if len(result) > 1:
        return Sample(error=f"the query returned {len(result)} series; aggregate it to one (e.g. sum(...))")
    return Sample.of(float(result[0]["value"][1]))


def _to_series(result: Any) -> Series:
    """Every series of a vector with its labels (a scalar is one series without labels)."""
    if not result:
        return Series()
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return Series.of(({}, float(result[1])))
    return Series.of(*((dict(item.get("metric") or {}), float(item["value"][1])) for item in result))


def _tls_reason(error: Exception) -> str:
    """The SSL library's reason (e.g. "certificate verify failed: unable to get local issuer
    certificate"), without the URL and connection pool around it."""
    found = re.search(r"certificate verify failed[^(]*|\[SSL: [A-Z_]+\][^(]*", str(error))
    return found.group(0).strip(" :") if found else type(error).__name__


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
