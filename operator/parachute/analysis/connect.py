"""Build a Rollout's metric provider and find its templates: the I/O before an evaluation.

A missing Secret or key is the Rollout's mistake, not Prometheus's: it is reported as
Invalid with the field that names it, not as a stream of Error verdicts.
"""

from __future__ import annotations

import tempfile

from parachute import kube
from parachute.analysis.prometheus import PrometheusProvider
from parachute.api import Analysis, MetricTemplateSpec, RolloutSpec, SecretKeyRef, parse_duration


class AnalysisSetupError(ValueError):
    """The Rollout's analysis cannot be set up as written; the message names the field."""


async def _secret(namespace: str, ref: SecretKeyRef, field: str) -> str:
    value = await kube.read_secret_key(namespace, ref.name, ref.key)
    if value is None:
        raise AnalysisSetupError(f"{field}: Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return value.strip()


async def provider_for(analysis: Analysis, namespace: str) -> PrometheusProvider:
    prometheus = analysis.prometheus
    headers: dict[str, str] = {}
    basic: tuple[str, str] | None = None
    field = "spec.analysis.prometheus"
    if prometheus.auth is not None:
        secret = await _secret(namespace, prometheus.auth.secret_ref, f"{field}.auth.secretRef")
        if prometheus.auth.type == "basic":
            assert prometheus.auth.username_secret_ref is not None  # the CRD's rule
            user = await _secret(
                namespace, prometheus.auth.username_secret_ref, f"{field}.auth.usernameSecretRef"
            )
            basic = (user, secret)
        else:
            headers["Authorization"] = f"Bearer {secret}"
    verify: bool | str = True
    if prometheus.tls is not None:
        if prometheus.tls.insecure_skip_verify:
            verify = False
        elif prometheus.tls.ca_secret_ref is not None:
            ca = await _secret(namespace, prometheus.tls.ca_secret_ref, f"{field}.tls.caSecretRef")
            with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as bundle:
                bundle.write(ca)
            verify = bundle.name
    timeout = parse_duration(prometheus.timeout).total_seconds()
    return PrometheusProvider(
        prometheus.address, timeout=timeout, headers=headers, basic_auth=basic, verify=verify
    )


async def templates_for(spec: RolloutSpec, namespace: str) -> dict[str, MetricTemplateSpec]:
    """The template resources the Rollout's metrics reference (none are read otherwise)."""
    assert spec.analysis is not None
    if not any(m.template_ref for m in spec.analysis.metrics or []):
        return {}
    found = await kube.list_metric_templates(namespace)
    return {key: MetricTemplateSpec.model_validate(item.get("spec") or {}) for key, item in found.items()}
