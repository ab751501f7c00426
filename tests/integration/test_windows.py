"""Release windows on the real cluster, with the operator's clock started where each story
needs it: a release applied in a closed window waits and starts at the next open time, a
hotfix starts at once, and a rollback goes ahead during a freeze. A window that cannot work
(an unknown time zone, hours that never open, peak traffic with no Prometheus) makes the
Rollout Invalid, naming the field, until it is fixed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    event_reasons,
    eventually,
    rollout,
    rollout_status,
    start_release,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION = "parachute.dev", "v1alpha1"
TUESDAY_MORNING = {"timeZone": "UTC", "allow": [{"days": ["Tue"], "start": "10:00", "end": "14:00"}]}


@pytest.fixture
def policy(crds: Cluster, namespace: str) -> Iterator[Callable[[dict[str, Any]], str]]:
    """A cluster-wide ReleasePolicy made for this test (named after its namespace)."""
    name = f"policy-{namespace}"

    def make(window: dict[str, Any]) -> str:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ReleasePolicy", "metadata": {"name": name},
                "spec": {"window": window}}  # fmt: skip
        try:
            crds.custom.create_cluster_custom_object(GROUP, VERSION, "releasepolicies", body)
        except Exception:
            current = crds.custom.get_cluster_custom_object(GROUP, VERSION, "releasepolicies", name)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            crds.custom.replace_cluster_custom_object(GROUP, VERSION, "releasepolicies", name, body)
        return name

    yield make
    crds.custom.delete_cluster_custom_object(GROUP, VERSION, "releasepolicies", name)


def test_a_release_in_a_closed_window_waits_and_starts_when_it_opens(
    crds: Cluster, namespace: str, policy: Callable[[dict[str, Any]], str],
    operator_at: Callable[[str], RunningOperator],
) -> None:  # fmt: skip
    operator_at("2026-11-24T09:59:30Z")  # a Tuesday, half a minute before the window opens
    start_release(crds, namespace, policyRef={"name": policy(TUESDAY_MORNING)})

    waiting = eventually(lambda: rollout_status(crds, namespace).get("phase") == "Waiting"
                         and rollout_status(crds, namespace), timeout=20)  # fmt: skip
    assert "outside the allowed hours (UTC)" in waiting["message"]
    assert "next open 2026-11-24T10:00:00Z" in waiting["message"]
    assert waiting["window"] == {"policy": f"policy-{namespace}", "open": False,
                                 "reason": "outside the allowed hours (UTC)",
                                 "nextOpenAt": "2026-11-24T10:00:00Z"}  # fmt: skip
    assert crds.apps.read_namespaced_deployment("checkout", namespace).spec.paused is True

    # 10:00 comes (half a minute later, on the operator's clock): the release starts by itself.
    started = eventually(lambda: rollout_status(crds, namespace).get("phase") == "Progressing"
                         and rollout_status(crds, namespace), timeout=60)  # fmt: skip
    assert started["stage"] == "1/3" and started["window"]["open"] is True
    reasons = eventually(
        lambda: "ReleaseStarted" in event_reasons(crds, namespace) and event_reasons(crds, namespace)
    )
    assert "ReleaseWaiting" in reasons


def test_a_security_hotfix_starts_at_once_in_a_closed_window(
    crds: Cluster, namespace: str, policy: Callable[[dict[str, Any]], str],
    operator_at: Callable[[str], RunningOperator],
) -> None:  # fmt: skip
    operator_at("2026-11-27T17:00:00Z")  # Friday evening
    start_release(crds, namespace, policyRef={"name": policy(TUESDAY_MORNING)}, hotfix=True)
    eventually(lambda: rollout_status(crds, namespace).get("phase") == "Progressing", timeout=30)
    eventually(lambda: "HotfixIgnoresWindow" in event_reasons(crds, namespace), what="the hotfix said so")


def test_a_rollback_goes_ahead_during_a_freeze(
    crds: Cluster, namespace: str, policy: Callable[[dict[str, Any]], str], operator: RunningOperator
) -> None:
    name = policy({"timeZone": "UTC"})  # always open
    start_release(crds, namespace, policyRef={"name": name})
    eventually(lambda: rollout_status(crds, namespace).get("stage") == "1/3", timeout=60)

    now = datetime.now(UTC)
    freeze = {"start": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "end": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "reason": "incident review"}  # fmt: skip
    policy({"timeZone": "UTC", "freezes": [freeze]})
    held = eventually(lambda: "waits for the release window" in (rollout_status(crds, namespace).get("message") or "")
                      and rollout_status(crds, namespace), timeout=30, what="the next stage held by the freeze")  # fmt: skip
    assert held["stage"] == "1/3" and "incident review" in held["message"]

    crds.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "rollouts", "checkout",
                                               {"metadata": {"annotations": {"parachute.dev/abort": "now"}}})  # fmt: skip
    eventually(lambda: rollout_status(crds, namespace).get("phase") == "Aborted", timeout=30, what="aborted")
    eventually(lambda: crds.apps.read_namespaced_deployment("checkout-canary", namespace).spec.replicas == 0)


def invalid(crds: Cluster, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = eventually(
        lambda: rollout_status(crds, namespace).get("phase") == "Invalid" and rollout_status(crds, namespace),
        timeout=30, what="Invalid",
    )  # fmt: skip
    return status


def test_a_policy_with_an_unknown_time_zone_makes_the_rollout_invalid_until_it_is_fixed(
    crds: Cluster, namespace: str, policy: Callable[[dict[str, Any]], str], operator: RunningOperator
) -> None:
    name = policy({"timeZone": "Mars/Olympus"})
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout("checkout", targetRef={"name": "checkout"}, policyRef={"name": name})
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "rollouts", body)

    status = invalid(crds, namespace)
    expected = f"ReleasePolicy {name}: spec.window.timeZone: unknown time zone 'Mars/Olympus'"
    assert status["message"].startswith(expected)
    condition = next(c for c in status["conditions"] if c["type"] == "Invalid")
    assert condition["status"] == "True" and condition["message"].startswith(expected)
    eventually(lambda: "Invalid" in event_reasons(crds, namespace), what="an Invalid Event")

    policy({"timeZone": "Europe/Berlin"})  # fixed: the policy's watch wakes the Rollout
    eventually(
        lambda: rollout_status(crds, namespace).get("phase") == "Healthy", timeout=30, what="valid again"
    )


@pytest.mark.parametrize(
    ("window", "message"),
    [
        pytest.param({"allow": [{"days": ["Mon"], "start": "10:00", "end": "11:00"}],
                      "deny": [{"days": ["Mon"], "start": "09:00", "end": "12:00"}]},
                     "spec.window.allow: never opens", id="a-window-that-never-opens"),
        pytest.param({"peakTraffic": {"query": "sum(up)", "threshold": 1}},
                     "spec.window.peakTraffic: needs a Prometheus to measure it", id="peak-traffic-without-analysis"),
    ],
)  # fmt: skip
def test_a_window_that_cannot_work_makes_the_rollout_invalid(
    crds: Cluster, namespace: str, operator: RunningOperator, window: dict[str, Any], message: str
) -> None:
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout("checkout", targetRef={"name": "checkout"}, window=window)
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "rollouts", body)
    assert invalid(crds, namespace)["message"].startswith(message)
