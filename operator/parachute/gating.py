"""Checking a Rollout's gates: annotations (pure), HTTP checks and Prometheus queries (I/O).

A condition gate passes when the named object has the condition with the wanted status; the
operator must be allowed to read that kind (the chart's `rbac.extraReadRules`). An HTTP gate passes on a whole 2xx answer within its timeout; anything else (another status, a
refused connection, a timeout) leaves it unmet with the reason. Never raises.
"""

from __future__ import annotations

import asyncio
import http.client
import urllib.error

from parachute import kube, transport
from parachute.analysis.connect import provider_for
from parachute.api import ConditionGate, Gate, HTTPGate, PrometheusGate, RolloutSpec, parse_duration
from parachute.kube_api import KubeApi
from parachute.plan.checklist import GateResult, annotation_result, change_ticket_result, condition_result

# A gate that hangs holds one of these threads for its timeout at most (the whole exchange),
# never one that Kubernetes calls or other kinds of request need.
GATE_THREADS = transport.Threads("HTTP gate", 16)


async def _http(gate: HTTPGate) -> tuple[bool, str]:
    timeout = parse_duration(gate.timeout).total_seconds()
    try:
        code, _ = await GATE_THREADS.send("GET", gate.url, None, {}, timeout=timeout)
    except urllib.error.HTTPError as error:
        code = error.code
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException, ValueError) as error:
        return False, f"GET {gate.url} failed: {getattr(error, 'reason', error)}"
    if 200 <= code < 300:
        return True, f"GET {gate.url} answered {code}"
    return False, f"GET {gate.url} answered {code}"


async def _prometheus(spec: RolloutSpec, namespace: str, gate: PrometheusGate) -> tuple[bool, str]:
    if spec.analysis is None:
        return False, "a Prometheus gate needs spec.analysis.prometheus"
    sample = await (await provider_for(spec.analysis, namespace)).sample(gate.query)
    if sample.error is not None or sample.value is None:
        return False, f"query gave no value ({sample.error or 'no data'})"
    value = sample.value
    if gate.min is not None and value < gate.min:
        return False, f"value {value:g} is below {gate.min:g}"
    if gate.max is not None and value > gate.max:
        return False, f"value {value:g} is above {gate.max:g}"
    return True, f"value {value:g} is within bounds"


async def check(
    cluster: KubeApi,
    gate: Gate,
    spec: RolloutSpec,
    namespace: str,
    annotations: dict[str, str],
    *,
    change_ticket: str = "",
) -> GateResult:
    if gate.annotation is not None:
        return annotation_result(gate, annotations)
    if gate.change_ticket is not None:
        return change_ticket_result(gate, change_ticket)
    if gate.http is not None:
        met, message = await _http(gate.http)
        return GateResult(gate.name, met, message)
    if gate.prometheus is not None:
        met, message = await _prometheus(spec, namespace, gate.prometheus)
        return GateResult(gate.name, met, message)
    if gate.condition is not None:
        met, message = await _condition(cluster, gate.condition, namespace)
        return GateResult(gate.name, met, message)
    return GateResult(gate.name, False, "the gate names no check")


async def _condition(cluster: KubeApi, gate: ConditionGate, namespace: str) -> tuple[bool, str]:
    what = f"{gate.kind} {gate.name}"
    try:
        found = await cluster.read_object(gate.api_version, gate.kind, namespace, gate.name)
    except kube.NotPermittedError as error:
        # The ClusterRole is least privilege: reading other kinds is granted per install
        # (the chart's rbac.extraReadRules), and the gate says what is missing.
        return False, f"{error}: grant it with the chart value rbac.extraReadRules"
    except LookupError as error:
        return False, str(error)
    if found is None:
        return False, f"{what} not found"
    return condition_result(gate, found)


async def check_all(
    cluster: KubeApi,
    gates: list[Gate],
    spec: RolloutSpec,
    namespace: str,
    annotations: dict[str, str],
    *,
    change_ticket: str = "",
) -> list[GateResult]:
    return list(
        await asyncio.gather(
            *(check(cluster, g, spec, namespace, annotations, change_ticket=change_ticket) for g in gates)
        )
    )
