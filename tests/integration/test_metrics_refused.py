"""Metric settings that cannot work are refused where they are written: by the API server when
the schema can tell, and as an Invalid Rollout naming the field when only the operator can."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import (
    Cluster,
    RunningOperator,
    deployment,
    eventually,
    rollout,
    rollout_status,
)

pytestmark = pytest.mark.cluster

PROMETHEUS = {"address": "http://127.0.0.1:9"}


def analysis(**fields: Any) -> dict[str, Any]:
    return {"targetRef": {"name": "checkout"}, "analysis": {"prometheus": PROMETHEUS, **fields}}


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        pytest.param(analysis(metrics=[{"template": "latency-p95", "judge": "compare"}]),
                     "spec.analysis.metrics[0].judge", "judge and confidence apply to the built-in rates",
                     id="judge-on-latency"),
        pytest.param(analysis(metrics=[{"name": "p", "query": "p", "critical": "1", "confidence": "99%"}]),
                     "spec.analysis.metrics[0].judge", "judge and confidence apply to the built-in rates",
                     id="confidence-on-a-query"),
        pytest.param(analysis(metrics=[{"template": "error-rate", "onNoData": "retry"}]),
                     "spec.analysis.metrics[0].onNoData", "supported values", id="unknown-on-no-data"),
        pytest.param(analysis(app={"statusLabel": "status-code"}), "spec.analysis.app.statusLabel",
                     "should match", id="not-a-label-name"),
        pytest.param(analysis(source="datadog"), "spec.analysis.source", "supported values", id="unknown-source"),
    ],
)  # fmt: skip
def test_what_the_schema_can_tell_is_refused_naming_the_field(
    crds: Cluster, namespace: str, spec: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ApiException) as refused:
        crds.custom.create_namespaced_custom_object("parachute.dev", "v1alpha1", namespace, "rollouts",
                                                    rollout("bad", **spec))  # fmt: skip
    assert refused.value.status == 422
    assert field in refused.value.body and says in refused.value.body


def test_a_retired_placeholder_makes_the_rollout_invalid_saying_what_to_write(
    crds: Cluster, namespace: str, operator: RunningOperator
) -> None:
    crds.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=1))
    query = 'sum(rate(payments_failed_total{app="checkout",version="{{canary}}"}[{{window}}]))'
    spec = analysis(metrics=[{"name": "payments", "query": query, "critical": "1"}])
    crds.custom.create_namespaced_custom_object("parachute.dev", "v1alpha1", namespace, "rollouts",
                                                rollout("checkout", **spec))  # fmt: skip
    status = eventually(lambda: (s := rollout_status(crds, namespace)).get("phase") == "Invalid" and s,
                        timeout=60, what="Invalid")  # fmt: skip
    assert status["message"].startswith(
        "spec.analysis.metrics[0].query: {{canary}} was a version label value"
    )
    assert 'pod=~"{{pods}}"' in status["message"]
