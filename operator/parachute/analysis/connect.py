"""Build a Rollout's metric provider and find its templates: the I/O before an evaluation.

A missing Secret or key is the Rollout's mistake, not Prometheus's: it is reported as
Invalid with the field that names it, not as a stream of Error verdicts.

Providers are kept per address, timeout, TLS mode and the resourceVersions of the Secrets
they were built from. A round reads the Secrets again (so a rotated one is used at once)
but builds a provider, with its connection pool and SSL context, only when one changed.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from collections.abc import Hashable

from pydantic import ValidationError

from parachute import kube
from parachute.analysis.prometheus import PrometheusProvider, trust
from parachute.api import Analysis, MetricTemplateSpec, RolloutSpec, SecretKeyRef, parse_duration

FIELD = "spec.analysis.prometheus"
# Enough for every Prometheus of a large cluster; the least recently used goes first.
CACHED_PROVIDERS = 128


class AnalysisSetupError(ValueError):
    """The Rollout's analysis cannot be set up as written; the message names the field."""


_providers: OrderedDict[Hashable, PrometheusProvider] = OrderedDict()


async def _secret(namespace: str, ref: SecretKeyRef, field: str) -> kube.SecretValue:
    found = await kube.read_secret_key(namespace, ref.name, ref.key)
    if found is None:
        raise AnalysisSetupError(f"{field}: Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return kube.SecretValue(found.value.strip(), found.version)


async def provider_for(analysis: Analysis, namespace: str) -> PrometheusProvider:
    prometheus = analysis.prometheus
    auth, tls = prometheus.auth, prometheus.tls
    insecure = tls is not None and tls.insecure_skip_verify
    refs: dict[str, SecretKeyRef] = {}
    if auth is not None:
        refs[f"{FIELD}.auth.secretRef"] = auth.secret_ref
        if auth.type == "basic":
            assert auth.username_secret_ref is not None  # the CRD's rule
            refs[f"{FIELD}.auth.usernameSecretRef"] = auth.username_secret_ref
    if tls is not None and tls.ca_secret_ref is not None and not insecure:
        refs[f"{FIELD}.tls.caSecretRef"] = tls.ca_secret_ref
    found = {field: await _secret(namespace, ref, field) for field, ref in refs.items()}

    key = (
        prometheus.address, prometheus.timeout, insecure, auth.type if auth else None, namespace,
        tuple((field, ref.name, ref.key, found[field].version) for field, ref in refs.items()),
    )  # fmt: skip
    cached = _providers.get(key)
    if cached is not None:
        _providers.move_to_end(key)
        return cached
    provider = _build(analysis, found, namespace)
    _providers[key] = provider
    while len(_providers) > CACHED_PROVIDERS:
        _providers.popitem(last=False)
    return provider


def _build(analysis: Analysis, found: dict[str, kube.SecretValue], namespace: str) -> PrometheusProvider:
    prometheus = analysis.prometheus
    secret = found.get(f"{FIELD}.auth.secretRef")
    user = found.get(f"{FIELD}.auth.usernameSecretRef")
    ca_pem = found.get(f"{FIELD}.tls.caSecretRef")
    ca: ssl.SSLContext | None = None
    if ca_pem is not None:
        try:
            ca = trust(ca_pem.value)
        except (ssl.SSLError, ValueError) as error:
            ref = prometheus.tls.ca_secret_ref if prometheus.tls else None
            where = f"Secret {namespace}/{ref.name} key {ref.key!r}" if ref else "the Secret"
            raise AnalysisSetupError(f"{FIELD}.tls.caSecretRef: {where} holds no PEM certificate") from error
    basic = (user.value, secret.value) if user is not None and secret is not None else None
    return PrometheusProvider(
        prometheus.address,
        timeout=parse_duration(prometheus.timeout).total_seconds(),
        bearer_token=secret.value if secret is not None and basic is None else None,
        basic_auth=basic,
        ca=ca,
        insecure_skip_verify=prometheus.tls is not None and prometheus.tls.insecure_skip_verify,
    )


async def templates_for(spec: RolloutSpec, namespace: str) -> dict[str, MetricTemplateSpec]:
    """The template resources the Rollout's metrics reference (none are read otherwise).

    Only those are parsed: a broken template the Rollout does not use is not its problem. One
    it uses that the models refuse (stored before the CRD refused it) is named, with its field.
    """
    assert spec.analysis is not None
    used = {
        f"{m.template_ref.kind.value}/{m.template_ref.name}"
        for m in spec.analysis.metrics or []
        if m.template_ref
    }
    if not used:
        return {}
    found = await kube.list_metric_templates(namespace)
    templates = {}
    for key in used & found.keys():
        try:
            templates[key] = MetricTemplateSpec.model_validate(found[key].get("spec") or {})
        except ValidationError as error:
            problem = error.errors()[0]
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in ("spec", *problem["loc"]))
            raise AnalysisSetupError(
                f"{key.replace('/', ' ')}: {field.lstrip('.')}: {problem['msg']}"
            ) from None
    return templates
