"""A fault on the operator's side reaches the Rollout, not only the log: a reconcile that
keeps failing (here on a status edited by hand into one the engine cannot follow)
sets `ReconcileFailed` naming the exception, with an Event, while the operator keeps
running and retrying; once the cause is gone the next reconcile clears it."""

from __future__ import annotations

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
    wait_adopted,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def test_a_reconcile_that_keeps_failing_is_reported_in_status_and_cleared_when_it_works(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    body = rollout(
        "checkout", targetRef={"name": "checkout"}, risk="medium", waits={"min": "10m", "max": "20m"}
    )
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_adopted(crds, namespace)
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
    crds.apps.patch_namespaced_deployment("checkout", namespace, image)
    eventually(lambda: rollout_status(crds, namespace).get("stage") == "1/3", timeout=60, what="stage 1")

    # A status edited by hand into one the engine cannot follow (rolling back with no
    # incident): every reconcile now raises.
    crds.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "checkout",
                                                      {"status": {"phase": "RollingBack"}})  # fmt: skip
    failed = eventually(lambda: condition(rollout_status(crds, namespace), "ReconcileFailed"),
                        timeout=60, what="ReconcileFailed in status")  # fmt: skip
    assert failed["status"] == "True" and failed["reason"] == "AssertionError"
    assert failed["message"].startswith("AssertionError")
    eventually(lambda: "ReconcileFailed" in event_reasons(crds, namespace), what="a ReconcileFailed Event")
    assert operator.process is not None and operator.process.poll() is None  # no crash, no crash loop

    crds.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "checkout",
                                                      {"status": {"phase": "Progressing"}})  # fmt: skip
    cleared = eventually(lambda: (c := condition(rollout_status(crds, namespace), "ReconcileFailed"))
                         and c["status"] == "False" and c, timeout=60, what="ReconcileFailed cleared")  # fmt: skip
    assert cleared["reason"] == "Reconciled" and "AssertionError" in cleared["message"]
    assert rollout_status(crds, namespace)["stage"] == "1/3"
