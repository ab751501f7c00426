"""One active replica out of several: leader election over a `coordination.k8s.io` Lease.

The algorithm is client-go's (what controller-runtime's `--leader-elect` runs). A candidate
reads the Lease every `retry_period`. It takes a Lease that names nobody, or one whose record
has not changed for the record's `leaseDurationSeconds` as measured on its own clock from
when it first saw that record (so no two clocks are ever compared). The leader renews with the
resourceVersion it read as a precondition, so two replicas can never both succeed.

A leader leads only while its last successful renewal began less than `renew_deadline` ago,
and `renew_deadline < lease_duration`: a leader that cannot renew (API server unreachable, the
process stopped and resumed) stops acting before any other replica may take the Lease. That
is a property read from the monotonic clock at the moment of use, not a flag a loop has to
remember to clear, and `parachute.kube` checks it before every write.

A standby runs everything but the acting: kopf's watches, the Rollout index, the scheduler's
heap of due times. Taking over is starting to run the heap.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from parachute import kube

logger = logging.getLogger("parachute.leadership")

# Where a pod's namespace is, beside its ServiceAccount token.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Timing:
    """controller-runtime's defaults: a dead leader is replaced within about 15 + 2 seconds."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, "
                f"not {self.retry_period:g} < {self.renew_deadline:g} < {self.lease_duration:g}"
            )


class LeaseStore(Protocol):
    """One Lease object: read it, create it, replace it (guarded by its resourceVersion)."""

    @property
    def name(self) -> str: ...

    async def read(self) -> dict[str, Any] | None: ...

    async def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """None when it exists already."""
        ...

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        """Raises `kube.ConflictError` when it changed since it was read."""
        ...


@dataclass(frozen=True)
class KubeLease:
    """The Lease in the cluster."""

    namespace: str
    name: str

    async def read(self) -> dict[str, Any] | None:
        return await kube.read_lease(self.namespace, self.name)

    async def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return await kube.create_lease(self.namespace, body)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        return await kube.replace_lease(self.namespace, self.name, body)


def identity() -> str:
    """The pod's name (downward API) or the host's, and a random part: a restarted process is a new
    candidate, so two processes can never believe they are the same holder."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def lease_namespace(given: str | None = None) -> str:
    """The namespace given, else the pod's (POD_NAMESPACE, or the one beside its token)."""
    if given:
        return given
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise ValueError(
        "leader election needs the Lease's namespace: --leader-election-namespace or POD_NAMESPACE"
    )


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """Acquires and renews one Lease; `leading` says whether this replica may act now."""

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        timing: Timing | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.identity = identity
        self.timing = timing or Timing()
        self._monotonic = monotonic
        self._wall = wall
        self._sleep = sleep
        self._renewed_at: float | None = None  # when the last successful renewal *began*
        self._seen_version: str | None = None  # the Lease's resourceVersion when last read
        self._seen_at = 0.0  # when that version was first seen here
        self._was_leading = False
        self._opened: asyncio.Event | None = None
        self._listeners: list[Callable[[bool], None]] = []

    # ---------------------------------------------------------------- what the rest asks

    @property
    def leading(self) -> bool:
        renewed = self._renewed_at
        return renewed is not None and self._monotonic() - renewed < self.timing.renew_deadline

    def is_open(self) -> bool:
        """The scheduler's gate: open while this replica leads."""
        return self.leading

    async def wait_open(self) -> None:
        """Until this replica leads (returns at once when it does)."""
        while not self.leading:
            opened = self._event()
            opened.clear()
            await opened.wait()

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(True)` when this replica starts leading, `listener(False)` when it stops."""
        self._listeners.append(listener)

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Renew (or try to acquire) every retry period, forever; notice a lapse the moment it happens."""
        while True:
            self.notice()
            await self.try_acquire_or_renew()
            self.notice()
            delay = self.timing.retry_period
            if self._renewed_at is not None and self.leading:
                lapses_in = self._renewed_at + self.timing.renew_deadline - self._monotonic()
                delay = min(delay, max(lapses_in, 0.0) + 0.001)
            await self._sleep(delay)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afresh."""
        began = self._monotonic()
        try:
            record = await self.store.read()
        except Exception as error:  # the renew deadline decides what a failure means
            logger.warning("could not read the Lease: %s", error)
            return False
        if record is None:
            made = await self._attempt(self.store.create, self._new_lease(None))
            return self._held(made, began)
        self._see(record)
        spec: dict[str, Any] = record.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder and holder != self.identity and not self._expired(spec):
            if self._renewed_at is not None:
                logger.warning("the Lease is held by %s: standing down", holder)
                self._renewed_at = None
            return False
        made = await self._attempt(self.store.replace, self._new_lease(record))
        return self._held(made, began)

    async def release(self) -> None:
        """Stop acting, then give the Lease up so that a standby takes over at once (a clean
        shutdown, e.g. a rolling update). Best effort: otherwise it simply expires."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        self.notice()
        try:
            record = await self.store.read()
            spec = dict((record or {}).get("spec") or {})
            if record is None or spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity", None)
            await self.store.replace({**record, "spec": spec})
            logger.info("released the Lease")
        except Exception as error:
            logger.warning("could not release the Lease (it expires by itself): %s", error)

    def notice(self) -> None:
        """Tell the listeners when leadership began or lapsed since last asked."""
        leading = self.leading
        if leading:
            self._event().set()
        if leading == self._was_leading:
            return
        self._was_leading = leading
        logger.info("%s as %s", "leading" if leading else "standing by", self.identity)
        for listener in self._listeners:
            listener(leading)

    # ---------------------------------------------------------------- inside

    def _event(self) -> asyncio.Event:
        if self._opened is None:
            self._opened = asyncio.Event()
        return self._opened

    def _see(self, record: dict[str, Any]) -> None:
        version = (record.get("metadata") or {}).get("resourceVersion")
        if version != self._seen_version:
            self._seen_version, self._seen_at = version, self._monotonic()

    def _expired(self, spec: dict[str, Any]) -> bool:
        duration = spec.get("leaseDurationSeconds") or self.timing.lease_duration
        return self._monotonic() - self._seen_at >= float(duration)

    def _new_lease(self, record: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro_time(self._wall())
        old: dict[str, Any] = (record or {}).get("spec") or {}
        mine = old.get("holderIdentity") == self.identity
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.timing.lease_duration),
            "acquireTime": old.get("acquireTime") if mine and old.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": (old.get("leaseTransitions") or 0) + (0 if mine or record is None else 1),
        }
        if record is None:
            return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.store.name}, "spec": spec}  # fmt: skip
        return {**record, "spec": spec}

    async def _attempt(
        self, write: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]], body: dict[str, Any]
    ) -> dict[str, Any] | None:
        try:
            return await write(body)
        except kube.ConflictError:  # another replica wrote first: whatever it did, stop acting now
            self._renewed_at = None
            return None
        except Exception as error:
            logger.warning("could not write the Lease: %s", error)
            return None

    def _held(self, made: dict[str, Any] | None, began: float) -> bool:
        if made is None:
            return False
        self._see(made)
        if self._renewed_at is None:
            logger.info("acquired the Lease as %s", self.identity)
        self._renewed_at = began
        return True
