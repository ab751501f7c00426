"""The testbed's pickers for Istio and NGINX send a request where the real objects say, as the
proxies would: the VirtualService http route a `GET /` takes, its destinations by weight, a
subset as the DestinationRule's labels; the Ingress path, and the canary Ingress's
`canary-weight` of `canary-weight-total`. Read from the same objects the routers write."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from parachute.routing.fake import FakeClient
from parachute.routing.objects import Ref
from parachute.routing.router import Release
from testbed.dataplane import (
    IngressPicker,
    Target,
    VirtualServicePicker,
    host_service,
    ingress_backends,
    ingress_service,
    virtual_service_backends,
)
from testbed.routes import BACKENDS, OTHER, SERVICE, destination_rule, ingress, service, virtual_service

NS = "shop"
STABLE, CANARY = f"{SERVICE}-stable", f"{SERVICE}-canary"
RELEASE = Release(NS, "checkout", "uid-1", stable_hash="5d4f8c7b9")


@pytest.mark.parametrize(
    ("host", "service"),
    [
        pytest.param("checkout", "checkout", id="short-name"),
        pytest.param("checkout.shop", "checkout", id="namespaced"),
        pytest.param("checkout.shop.svc.cluster.local", "checkout", id="fqdn"),
        pytest.param("checkout.payments.svc.cluster.local", None, id="another-namespace"),
        pytest.param("checkout.example.com", None, id="outside"),
    ],
)
def test_an_istio_host_names_a_service_of_the_namespace(host: str, service: str | None) -> None:
    assert host_service(host, NS) == service


def test_the_users_virtual_service_sends_everything_to_the_service() -> None:
    # The legacy route matches a header a plain GET lacks: the primary route takes it.
    assert virtual_service_backends(virtual_service(NS)) == [(Target(SERVICE), 100)]


def routed(backend_id: str, weight: int) -> FakeClient:
    """The user's objects after Parachute's router set `weight`% for the canary."""
    backend = next(b for b in BACKENDS if b.id == backend_id)
    fake = FakeClient([service(NS), service(NS, OTHER), *backend.user_objects(NS, SERVICE)])
    router = backend.router(fake, RELEASE)
    asyncio.run(router.ensure())
    asyncio.run(router.set_weight(weight))
    return fake


def test_a_host_level_split_sends_to_the_stable_and_canary_services() -> None:
    fake = routed("istio", 10)
    vs = fake.look(Ref("networking.istio.io/v1", "VirtualService", NS, "checkout"))
    assert virtual_service_backends(vs) == [(Target(STABLE), 90), (Target(CANARY), 10)]


def test_a_subset_level_split_sends_to_the_subsets_pods() -> None:
    fake = routed("istio-subsets", 30)
    vs = fake.look(Ref("networking.istio.io/v1", "VirtualService", NS, "checkout"))
    rule = fake.look(Ref("networking.istio.io/v1", "DestinationRule", NS, "checkout"))
    assert virtual_service_backends(vs, [rule]) == [
        (Target(SERVICE, (("pod-template-hash", "5d4f8c7b9"),)), 70),
        (Target(SERVICE, (("parachute.dev/canary", "true"),)), 30),
    ]
    # Without the DestinationRule's subsets, the requests go nowhere (Istio answers 503).
    assert virtual_service_backends(vs, [destination_rule(NS)]) == [(Target(None), 70), (Target(None), 30)]


def test_unset_weights_are_all_for_a_lone_destination_and_none_beside_others() -> None:
    vs: dict[str, Any] = {"metadata": {"namespace": NS}, "spec": {"http": [{"route": [
        {"destination": {"host": "a"}}, {"destination": {"host": "b"}, "weight": 5}]}]}}  # fmt: skip
    assert virtual_service_backends(vs) == [(Target("a"), 0), (Target("b"), 5)]


def test_the_users_ingress_sends_to_the_service_by_its_longest_path() -> None:
    users = ingress(NS)
    assert ingress_service(users) == SERVICE
    assert ingress_service(users, path="/legacy/x") == OTHER
    assert ingress_service(users, host="elsewhere.example") is None
    assert ingress_backends(users, None) == [(Target(SERVICE), 100)]


def test_the_canary_ingress_takes_its_weight_of_the_requests() -> None:
    fake = routed("nginx", 10)
    users = fake.look(Ref("networking.k8s.io/v1", "Ingress", NS, "shop"))
    canary = fake.look(Ref("networking.k8s.io/v1", "Ingress", NS, "shop-canary"))
    assert ingress_backends(users, canary) == [(Target(STABLE), 90), (Target(CANARY), 10)]
    canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight-total"] = "1000"
    assert ingress_backends(users, canary) == [(Target(STABLE), 990), (Target(CANARY), 10)]
    del canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary"]
    assert ingress_backends(users, canary) == [(Target(STABLE), 100)]  # not marked: ignored


class Plane:
    """Endpoints by Service, and by pod labels within it."""

    def __init__(self, pods: Mapping[str, list[tuple[str, dict[str, str]]]]) -> None:
        self.pods = pods

    def service_endpoints(self, service: str, labels: Mapping[str, str] | None = None) -> list[str]:
        wanted = dict(labels or {})
        return [url for url, have in self.pods.get(service, []) if wanted.items() <= have.items()]


def picked(picker: Any, picks: int = 10_000) -> dict[str | None, float]:
    counts = Counter(picker() for _ in range(picks))
    return {url: 100 * n / picks for url, n in counts.items()}


def test_the_istio_picker_splits_by_weight_then_by_subset_pod() -> None:
    fake = routed("istio-subsets", 25)
    vs = fake.look(Ref("networking.istio.io/v1", "VirtualService", NS, "checkout"))
    rule = fake.look(Ref("networking.istio.io/v1", "DestinationRule", NS, "checkout"))
    stable = {"app": "checkout", "pod-template-hash": "5d4f8c7b9"}
    canary = {"app": "checkout", "pod-template-hash": "aaa", "parachute.dev/canary": "true"}
    plane = Plane({SERVICE: [("s1", stable), ("s2", stable), ("c1", canary)]})
    shares = picked(VirtualServicePicker(plane, lambda: vs, lambda: [rule], random.Random(3)))
    assert shares["c1"] == pytest.approx(25, abs=1.5)
    assert shares["s1"] == pytest.approx(37.5, abs=1.5) and shares["s2"] == pytest.approx(37.5, abs=1.5)


def test_the_ingress_picker_follows_the_canary_weight() -> None:
    fake = routed("nginx", 50)
    users = fake.look(Ref("networking.k8s.io/v1", "Ingress", NS, "shop"))
    canary = fake.look(Ref("networking.k8s.io/v1", "Ingress", NS, "shop-canary"))
    plane = Plane({STABLE: [("s", {})], CANARY: [("c", {})]})
    shares = picked(IngressPicker(plane, lambda: users, lambda: canary, rng=random.Random(5)))
    assert shares["c"] == pytest.approx(50, abs=1.5) and set(shares) == {"s", "c"}
