"""A Rollout's Prometheus provider: built once per address and Secret version, not per round;
the CA kept in memory (the Pod's root filesystem is read-only); a bad Secret named by field."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import certifi
import pytest

from parachute import kube
from parachute.analysis import connect
from parachute.analysis.connect import AnalysisSetupError, provider_for
from parachute.api import Analysis

# Any PEM certificate will do as a CA bundle here: the first of certifi's.
CA = Path(certifi.where()).read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"


class Secrets:
    """The Secrets of a namespace, by (name, key): a value and a resourceVersion."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], kube.SecretValue] = {}
        self.reads = 0

    def put(self, name: str, key: str, value: str, version: str) -> None:
        self.data[(name, key)] = kube.SecretValue(value, version)

    async def read(self, namespace: str, name: str, key: str) -> kube.SecretValue | None:
        self.reads += 1
        return self.data.get((name, key))


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Secrets:
    found = Secrets()
    monkeypatch.setattr(kube, "read_secret_key", found.read)
    monkeypatch.setattr(connect, "_providers", type(connect._providers)())
    return found


def analysis(**prometheus: object) -> Analysis:
    return Analysis.model_validate({"prometheus": {"address": "https://prometheus.test:9090", **prometheus}})


BASIC_TLS = {
    "auth": {"type": "basic", "secretRef": {"name": "prom", "key": "password"},
             "usernameSecretRef": {"name": "prom", "key": "user"}},
    "tls": {"caSecretRef": {"name": "prom-ca", "key": "ca.crt"}},
}  # fmt: skip


def provider(spec: Analysis) -> object:
    return asyncio.run(provider_for(spec, "shop"))


def test_a_round_reuses_the_provider_built_for_the_same_secret_versions(secrets: Secrets) -> None:
    secrets.put("prom", "user", "reader", "10")
    secrets.put("prom", "password", "pw-1", "10")
    secrets.put("prom-ca", "ca.crt", CA, "11")
    first = provider(analysis(**BASIC_TLS))
    assert provider(analysis(**BASIC_TLS)) is first
    assert secrets.reads == 6  # each round still reads the Secrets: a rotation is seen at once


def test_a_rotated_secret_builds_a_new_provider(secrets: Secrets) -> None:
    secrets.put("prom", "token", "tok-1", "10")
    bearer = analysis(auth={"secretRef": {"name": "prom", "key": "token"}})
    first = provider(bearer)
    secrets.put("prom", "token", "tok-2", "12")
    second = provider(bearer)
    assert second is not first and provider(bearer) is second


def test_other_addresses_and_timeouts_get_their_own_provider(secrets: Secrets) -> None:
    first = provider(analysis())
    assert provider(analysis(timeout="3s")) is not first
    other = Analysis.model_validate({"prometheus": {"address": "http://other.test:9090"}})
    assert provider(other) is not first


def test_the_ca_is_kept_in_memory_not_written_to_a_file(
    secrets: Secrets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    secrets.put("prom", "user", "reader", "10")
    secrets.put("prom", "password", "pw-1", "10")
    secrets.put("prom-ca", "ca.crt", CA, "11")
    for version in ("11", "12", "13"):
        secrets.put("prom-ca", "ca.crt", CA, version)
        provider(analysis(**BASIC_TLS))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("missing", "field"),
    [
        (("prom", "password"), "spec.analysis.prometheus.auth.secretRef"),
        (("prom", "user"), "spec.analysis.prometheus.auth.usernameSecretRef"),
        (("prom-ca", "ca.crt"), "spec.analysis.prometheus.tls.caSecretRef"),
    ],
    ids=["password", "user", "ca"],
)
def test_a_missing_secret_key_is_the_rollouts_mistake_named_by_field(
    secrets: Secrets, missing: tuple[str, str], field: str
) -> None:
    secrets.put("prom", "user", "reader", "10")
    secrets.put("prom", "password", "pw-1", "10")
    secrets.put("prom-ca", "ca.crt", CA, "11")
    del secrets.data[missing]
    with pytest.raises(AnalysisSetupError, match=f"^{field}: Secret shop/{missing[0]} has no key"):
        provider(analysis(**BASIC_TLS))


def test_a_ca_secret_that_holds_no_certificate_is_named_and_not_quoted(secrets: Secrets) -> None:
    secrets.put("prom", "user", "reader", "10")
    secrets.put("prom", "password", "pw-1", "10")
    secrets.put("prom-ca", "ca.crt", "not-a-certificate-s3cr3t", "11")
    with pytest.raises(AnalysisSetupError) as error:
        provider(analysis(**BASIC_TLS))
    assert str(error.value) == (
        "spec.analysis.prometheus.tls.caSecretRef: Secret shop/prom-ca key 'ca.crt' holds no PEM certificate"
    )
