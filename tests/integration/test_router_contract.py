"""The router contract on the real API server, with the published Gateway API and Istio CRDs.

One suite, run against every backend (HTTPRoute attached to a Gateway and, GAMMA, to a
Service; Istio VirtualService; NGINX canary Ingress): a weight set is read back; nothing is
written when nothing changed (resourceVersion and generation stay); the user's second rule
and filters are untouched through a whole release; a hand edit is reported and put back;
reset sends everything to stable; a missing CRD, a route that does not send to the Service
and a missing object are setup errors naming the field, with nothing written. A phased
release's audience (a header, a cookie) is written, read back as the server stores it, sends
that audience's requests to the canary and no one else's, leaves the user's rules alone, and
goes with a reset. What only a cluster shows is checked here: the CRDs' own defaults and
validation, the server's verdict on a failed `test` op, and which pods the stable and canary
Services really reach.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from parachute.routing.client import ApiServerClient
from parachute.routing.objects import Body, ConflictError, Ref
from parachute.routing.router import Applied, AudienceMatch, Release, Router, RoutingSetupError
from testbed import crds as router_crds
from testbed.routes import BACKENDS, OTHER, SERVICE, Backend, audience_rule, reaches, service
from tests.integration.conftest import Cluster, deployment, eventually, rollout

pytestmark = pytest.mark.cluster
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def routers_installed(crds: Cluster) -> Cluster:
    router_crds.install(crds.api, *router_crds.GATEWAY_API, *router_crds.ISTIO)
    return crds


class World:
    """A namespace with the user's Service and route, a Rollout to own what Parachute makes,
    and the real client a router uses."""

    def __init__(self, cluster: Cluster, namespace: str, backend: Backend, send_to: str = SERVICE) -> None:
        self.cluster, self.namespace, self.backend = cluster, namespace, backend
        self.client = ApiServerClient(cluster.api)
        owner = cluster.custom.create_namespaced_custom_object(
            "parachute.dev",
            "v1alpha1",
            namespace,
            "rollouts",
            rollout("checkout", targetRef={"name": "checkout"}),
        )
        self.release = Release(namespace, "checkout", owner["metadata"]["uid"], stable_hash="5d4f8c7b9")
        for body in (
            service(namespace),
            service(namespace, OTHER),
            *backend.user_objects(namespace, send_to),
        ):
            run(self.client.create(body))

    def router(self, release: Release | None = None) -> Router:
        return self.backend.router(self.client, release or self.release)

    def look(self, ref: Ref | None = None) -> Body:
        found = run(self.client.get(ref or self.backend.weighted(self.namespace)))
        assert found is not None
        return found

    def by_hand(self, weight: int) -> None:
        where = self.backend.weighted(self.namespace)
        run(self.client.patch(where, self.backend.hand_edit(self.look(where), weight)))

    def backends(self) -> list[Ref]:
        """What the split destinations send to: the Service copies, or the DestinationRule."""
        if self.backend.services:
            return [Ref("v1", "Service", self.namespace, n) for n in ("checkout-stable", "checkout-canary")]
        return [Ref("networking.istio.io/v1", "DestinationRule", self.namespace, "checkout")]

    def user_route(self) -> Ref:
        where = self.backend.weighted(self.namespace)
        return Ref(where.api_version, where.kind, self.namespace, self.backend.route_name)


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.param
    return found


@pytest.fixture
def world(routers_installed: Cluster, namespace: str, backend: Backend) -> World:
    return World(routers_installed, namespace, backend)


def test_a_weight_set_is_read_back(world: World) -> None:
    router = world.router()
    made = run(router.ensure())
    if world.backend.services:
        assert {
            f"created Service {world.namespace}/{n}" for n in ("checkout-stable", "checkout-canary")
        } <= set(made)
    else:
        assert made == [f"updated DestinationRule {world.namespace}/checkout subsets stable "
                        "(pod-template-hash=5d4f8c7b9) and canary"]  # fmt: skip
    for weight in (1, 10, 50, 100):
        assert run(router.set_weight(weight)) == Applied(weight, wrote=True)
        assert run(router.read()) == Applied(weight)
        assert world.backend.weights(world.look()) == (100 - weight, weight)


def test_nothing_is_written_when_nothing_changed(world: World) -> None:
    router = world.router()
    run(router.ensure())
    run(router.set_weight(10))
    before = world.look()["metadata"]
    services = {ref: world.look(ref) for ref in world.backends()}
    assert run(router.set_weight(10)) == Applied(10, wrote=False)
    assert run(router.ensure()) == []
    after = world.look()["metadata"]
    assert (after["resourceVersion"], after["generation"]) == (
        before["resourceVersion"],
        before["generation"],
    )
    for ref, found in services.items():
        assert world.look(ref)["metadata"]["resourceVersion"] == found["metadata"]["resourceVersion"]


def test_the_users_second_rule_and_filters_are_untouched(world: World) -> None:
    router = world.router()
    run(router.ensure())
    users_service = world.look(Ref("v1", "Service", world.namespace, SERVICE))
    run(router.set_weight(0))
    parts = world.backend.users_parts(world.look())
    for weight in (10, 50, 100, 0):
        run(router.set_weight(weight))
        assert world.backend.users_parts(world.look()) == parts
    # The user's Service is read, never written.
    after = world.look(Ref("v1", "Service", world.namespace, SERVICE))
    assert after["metadata"]["resourceVersion"] == users_service["metadata"]["resourceVersion"]


def test_a_hand_edit_is_reported_and_put_back(world: World) -> None:
    router = world.router()
    run(router.ensure())
    run(router.set_weight(10))
    world.by_hand(30)
    seen = run(router.read())
    assert seen.weight == 30 and seen.hand_edit is not None and "someone else" in seen.hand_edit
    fixed = run(router.set_weight(10))
    assert fixed.weight == 10 and fixed.wrote
    assert fixed.hand_edit is not None and fixed.hand_edit.endswith("put back to canary 10%")
    assert world.backend.weights(world.look()) == (90, 10)
    assert run(router.read()) == Applied(10)


def test_reset_sends_everything_to_stable(world: World) -> None:
    router = world.router()
    run(router.ensure())
    run(router.set_weight(50))
    assert run(router.reset()) == Applied(0, wrote=True)
    assert world.backend.weights(world.look()) == (100, 0)
    assert run(router.reset()) == Applied(0, wrote=False)


def test_an_audience_is_read_back_and_only_its_requests_reach_the_canary(world: World) -> None:
    router = world.router()
    run(router.ensure())
    run(router.set_weight(0))
    users = _users_rules(world)
    employees = AudienceMatch("header", "x-employee", "true")
    cookie = AudienceMatch("cookie", "beta", "always" if world.backend.id == "nginx" else "yes")

    def goes(headers: dict[str, str]) -> dict[str, int]:
        return reaches(world.backend, world.look, world.namespace, headers)

    assert run(router.set_weight(0, employees)) == Applied(0, wrote=True, audience=employees)
    assert run(router.read()) == Applied(0, audience=employees)  # as the server stored it, defaults and all
    before = world.look()["metadata"]
    assert run(router.set_weight(0, employees)) == Applied(0, audience=employees)
    assert world.look()["metadata"]["resourceVersion"] == before["resourceVersion"]
    assert goes({"x-employee": "true"}) == {"canary": 100}
    assert goes({}) == {"stable": 100} == goes({"x-employee": "false"})

    assert run(router.set_weight(0, cookie)).audience == cookie
    assert run(router.read()) == Applied(0, audience=cookie)
    assert goes({"cookie": f"session=1; beta={cookie.value}"}) == {"canary": 100}
    assert goes({"x-employee": "true"}) == {"stable": 100}
    assert _users_rules(world) == users

    assert run(router.set_weight(100)) == Applied(100, wrote=True)
    assert run(router.reset()) == Applied(0, wrote=True)
    assert goes({"cookie": f"beta={cookie.value}"}) == {"stable": 100}
    assert _users_rules(world) == users


def _users_rules(world: World) -> Any:
    """The user's rules as the server holds them, Parachute's audience rules and the managed
    rule's destinations aside; for NGINX, the user's Ingress."""
    if world.backend.id == "nginx":
        return world.look(world.user_route())["spec"]
    key, destinations = (
        ("rules", "backendRefs") if world.backend.id.startswith("gateway") else ("http", "route")
    )
    rules = [r for r in world.look()["spec"][key] if not audience_rule(r)]
    return [{k: v for k, v in r.items() if k != destinations} for r in rules], rules[0]


def test_a_route_that_does_not_send_to_the_service_is_a_setup_error(
    routers_installed: Cluster, namespace: str, backend: Backend
) -> None:
    world = World(routers_installed, namespace, backend, send_to="payments")
    with pytest.raises(RoutingSetupError) as error:
        run(world.router().ensure())
    assert error.value.field.endswith((".service", ".ruleName"))
    assert "Service checkout" in error.value.message
    assert run(world.client.get(Ref("v1", "Service", namespace, "checkout-stable"))) is None


@pytest.mark.parametrize("missing", ["service", "route"])
def test_a_missing_object_is_a_setup_error_and_nothing_is_written(world: World, missing: str) -> None:
    gone = Ref("v1", "Service", world.namespace, SERVICE) if missing == "service" else world.user_route()
    if missing == "service":
        world.cluster.core.delete_namespaced_service(SERVICE, world.namespace)
    else:
        _delete(world.cluster, gone)
    with pytest.raises(RoutingSetupError) as error:
        run(world.router().ensure())
    assert f"{gone} does not exist" in str(error.value)
    assert run(world.client.get(Ref("v1", "Service", world.namespace, "checkout-stable"))) is None


@pytest.fixture
def without_crd(routers_installed: Cluster, backend: Backend) -> Iterator[str]:
    """The backend's CRD removed for one test, and installed again after it."""
    assert backend.crd is not None
    router_crds.uninstall(routers_installed.api, backend.crd)
    try:
        yield backend.crd
    finally:
        router_crds.install(routers_installed.api, backend.crd)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.crd], ids=lambda b: b.id)
def test_a_missing_crd_is_a_setup_error_naming_it(
    without_crd: str, routers_installed: Cluster, namespace: str, backend: Backend
) -> None:
    client = ApiServerClient(routers_installed.api)
    run(client.create(service(namespace)))
    release = Release(namespace, "checkout", str(uuid.uuid4()), stable_hash="5d4f8c7b9")
    router = backend.router(client, release)
    for call in (router.ensure, router.read, lambda: router.set_weight(10)):
        with pytest.raises(RoutingSetupError) as error:
            run(call())
        assert str(error.value) == f"spec.trafficRouting.{_backend_field(backend)}: {backend.crd_message}"
    assert run(client.get(Ref("v1", "Service", namespace, "checkout-stable"))) is None


def test_the_server_refuses_a_patch_whose_test_fails_as_a_conflict(world: World) -> None:
    router = world.router()
    run(router.ensure())
    run(router.set_weight(10))
    where = world.backend.weighted(world.namespace)
    stale = world.look()["metadata"]["resourceVersion"]
    world.by_hand(30)
    with pytest.raises(ConflictError):
        run(world.client.patch(where, [{"op": "test", "path": "/metadata/resourceVersion", "value": stale},
                                       {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]))  # fmt: skip
    # A schema violation is not a conflict: it says what is wrong.
    if world.backend.id.startswith("gateway"):
        with pytest.raises(ApiException) as refused:
            run(world.client.patch(where, [{"op": "replace", "path": "/spec/rules/1/backendRefs/0/weight", "value": 2_000_000}]))  # fmt: skip
        assert refused.value.status == 422 and "weight" in str(refused.value.body)


def test_stable_and_canary_services_reach_only_their_pods(routers_installed: Cluster, namespace: str) -> None:
    """The stable Service selects the paused target's ReplicaSet by pod-template-hash, the
    canary Service the canary's label: EndpointSlices show each reaches only its own pods."""
    cluster = routers_installed
    backend = BACKENDS[1]
    world = World(cluster, namespace, backend)
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    canary = deployment("checkout-canary", replicas=1, image="registry.example/checkout:2.0")
    labels = {"app": "checkout", "parachute.dev/canary": "true"}
    canary["spec"]["selector"]["matchLabels"] = labels
    canary["spec"]["template"]["metadata"]["labels"] = labels
    cluster.apps.create_namespaced_deployment(namespace, canary)

    def pods(selector: str) -> dict[str, str]:
        found = cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
        return {p.status.pod_ip: p.metadata.labels.get("pod-template-hash") for p in found if p.status.pod_ip}

    eventually(lambda: len(pods("app=checkout")) == 3, timeout=60, what="three pods with IPs")
    stable_pods = pods("app=checkout,!parachute.dev/canary")
    stable_hash = next(iter(stable_pods.values()))
    release = Release(namespace, "checkout", world.release.rollout_uid, stable_hash=stable_hash)
    run(world.router(release).ensure())

    def addresses(service_name: str) -> set[str]:
        slices = client.DiscoveryV1Api(cluster.api).list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service_name}"
        )
        return {a for s in slices.items for e in s.endpoints or [] for a in e.addresses}

    eventually(lambda: addresses("checkout-stable") == set(stable_pods), timeout=30, what="stable endpoints")
    canary_pods = set(pods("parachute.dev/canary=true"))
    eventually(lambda: addresses("checkout-canary") == canary_pods, timeout=30, what="canary endpoints")
    # The user's Service reaches both: why it is never a weighted backend itself.
    eventually(
        lambda: addresses("checkout") == set(stable_pods) | canary_pods, timeout=30, what="all endpoints"
    )

    # At a full stage the target rolls to the new template: the stable Service follows its hash.
    image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
    cluster.apps.patch_namespaced_deployment("checkout", namespace, image)
    rolled = eventually(
        lambda: (found := pods("app=checkout,!parachute.dev/canary")) and len(found) == 2
        and stable_hash not in found.values() and found,
        timeout=60, what="the target's pods replaced",
    )  # fmt: skip
    new_hash = next(iter(rolled.values()))
    changes = run(world.router(Release(namespace, "checkout", world.release.rollout_uid, new_hash)).ensure())
    assert changes == [
        f"updated Service {namespace}/checkout-stable (selector app=checkout,pod-template-hash={new_hash})"
    ]
    eventually(
        lambda: addresses("checkout-stable") == set(rolled), timeout=30, what="stable endpoints follow"
    )


def test_a_subset_reaches_the_services_ready_endpoints_whose_pods_carry_its_labels(
    routers_installed: Cluster, namespace: str
) -> None:
    """Subset-level, what the weight is held for is what a mesh would reach: the user's Service's
    ready endpoints whose pods carry the subset's labels, read from real EndpointSlices and Pods.
    A canary scaled to nothing leaves its subset with none, while the stable subset keeps its own."""
    cluster = routers_installed
    backend = next(b for b in BACKENDS if b.id == "istio-subsets")
    world = World(cluster, namespace, backend)
    cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    canary = deployment("checkout-canary", replicas=1, image="registry.example/checkout:2.0")
    labels = {"app": "checkout", "parachute.dev/canary": "true"}
    canary["spec"]["selector"]["matchLabels"] = labels
    canary["spec"]["template"]["metadata"]["labels"] = labels
    cluster.apps.create_namespaced_deployment(namespace, canary)
    stable_hash = eventually(
        lambda: next(iter({p.metadata.labels.get("pod-template-hash") for p in cluster.core.list_namespaced_pod(
            namespace, label_selector="app=checkout,!parachute.dev/canary").items}), None),
        timeout=60, what="the target's pods",
    )  # fmt: skip
    router = world.router(Release(namespace, "checkout", world.release.rollout_uid, stable_hash=stable_hash))
    run(router.ensure())
    eventually(lambda: run(router.unready(False)) == "", timeout=60, what="the stable subset reaches a pod")
    eventually(lambda: run(router.unready(True)) == "", timeout=60, what="the canary subset reaches a pod")

    cluster.apps.patch_namespaced_deployment("checkout-canary", namespace, {"spec": {"replicas": 0}})
    why = eventually(lambda: run(router.unready(True)), timeout=60, what="the canary subset reaches none")
    assert why == (
        f"Service {namespace}/checkout lists no ready endpoint of DestinationRule {namespace}/checkout "
        "subset canary (pods parachute.dev/canary=true) yet"
    )
    assert run(router.unready(False)) == ""


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.services], ids=lambda b: b.id)
def test_services_of_someone_else_are_refused(world: World) -> None:
    run(world.client.create(service(world.namespace, "checkout-stable")))
    with pytest.raises(RoutingSetupError) as error:
        run(world.router().ensure())
    assert "checkout-stable exists and is not this Rollout's" in error.value.message
    assert run(world.client.get(Ref("v1", "Service", world.namespace, "checkout-canary"))) is None


def _backend_field(backend: Backend) -> str:
    return "istio" if backend.id.startswith("istio") else "gatewayAPI"


def _delete(cluster: Cluster, ref: Ref) -> None:
    group, version = ref.api_version.split("/")
    if ref.kind == "Ingress":
        cluster.api.call_api(
            f"/apis/{ref.api_version}/namespaces/{ref.namespace}/ingresses/{ref.name}", "DELETE",
            auth_settings=["BearerToken"], _preload_content=False,
        )  # fmt: skip
        return
    plural = {"HTTPRoute": "httproutes", "VirtualService": "virtualservices"}[ref.kind]
    cluster.custom.delete_namespaced_custom_object(group, version, ref.namespace, plural, ref.name)
