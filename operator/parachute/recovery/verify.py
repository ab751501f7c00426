"""Asking the app whether it serves the release's flags off (spec.featureFlags.verify).

At the flag level, once the store shows the flags off, the reconcile asks each ready pod serving
the rolled-back revision (`plan.flag_check` picks them and judges the answers): `GET <path>` on
the pod's IP and port, as Prometheus scrapes a pod, since a Service would answer from whichever
pod it picks, stable or canary, and one pod's cached flags would hide behind another's answer.
An operator that runs outside the cluster network reaches the pods through the HTTP proxy named
by `--app-proxy` (`PARACHUTE_APP_PROXY`); in a cluster it dials them directly, whatever proxy the
environment names. Each request is bounded in time (the whole exchange) and in the size of the
answer read, a few go at once on threads of their own, and nothing here raises: a pod that
cannot be asked is an answer that proves nothing.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import urllib.error
from typing import Any

from parachute import transport
from parachute.api import RolloutSpec, RolloutStatus
from parachute.kube_api import KubeApi
from parachute.plan import flag_check
from parachute.plan.desired_workload import label_selector
from parachute.plan.model import FlagCheckView, Observed
from parachute.plan.rollback import current_incident
from parachute.redaction import redact

PROXY_ENV = "PARACHUTE_APP_PROXY"
TIMEOUT_SECONDS = 2.0
# An answer is read up to this many bytes; a longer one is no answer (a health document is small).
MAX_BODY = 64 * 1024
AT_ONCE = 8


# A pod that hangs holds only these threads, for TIMEOUT_SECONDS at most (the whole exchange).
# A look asks AT_ONCE pods at a time, each given its whole deadline once it is asked; threads
# enough for a few Rollouts looking at once.
_THREADS = transport.Threads("flag check", AT_ONCE * 4)


def _proxies() -> dict[str, str]:
    """The proxy the operator is told of, else none: never an environment's proxy, which is for
    leaving the cluster, not for reaching its pods."""
    proxy = os.environ.get(PROXY_ENV, "").strip()
    return {"http": proxy} if proxy else {}


async def _get(url: str) -> tuple[int | None, bytes | None, str]:
    """(status, body, error) of one GET; the body only when it is small enough."""
    try:
        code, body = await _THREADS.send(
            "GET", url, None, {}, timeout=TIMEOUT_SECONDS, proxies=_proxies(), limit=MAX_BODY + 1
        )
    except urllib.error.HTTPError as error:
        return error.code, b"", ""
    except (urllib.error.URLError, TimeoutError, OSError, ValueError, http.client.HTTPException) as error:
        return None, None, redact(str(getattr(error, "reason", error)))
    if len(body) > MAX_BODY:
        return code, None, f"the answer is longer than {MAX_BODY // 1024} KiB"
    return code, body, ""


async def observe(
    cluster: KubeApi,
    namespace: str,
    spec: RolloutSpec,
    target: dict[str, Any],
    *,
    status: RolloutStatus,
    observed: Observed,
) -> FlagCheckView:
    """What the pods serving the rolled-back revision say of the flags."""
    check = spec.feature_flags.verify if spec.feature_flags is not None else None
    incident = current_incident(status.incidents)
    assert check is not None and incident is not None
    pods = await cluster.list_pods(namespace, label_selector(target))
    addresses, answers = flag_check.pods_to_ask(pods, observed, incident, check)
    gate = asyncio.Semaphore(AT_ONCE)

    async def ask(address: flag_check.Address) -> flag_check.PodAnswer:
        async with gate:
            code, body, error = await _get(address.url)
        return flag_check.answer(check, address.pod, code, body, error)

    answers += await asyncio.gather(*(ask(a) for a in addresses))
    return flag_check.summarise(answers, incident.revision)
