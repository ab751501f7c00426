"""A routed Rollout's life on the real cluster, apart from traffic: a set-up that cannot work is
`Invalid` naming the field, with nothing written, and recovers once fixed; removing the router
or deleting the Rollout (with the operator running, or while it is down) gives the user's
route back exactly as it was, before the -stable/-canary Services and the routing record go,
and the Deployment back unpaused; a router whose grant the install leaves off is `Invalid`
naming the chart value. The chart's router toggles add exactly their rules."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from parachute import rbac
from parachute.routing.client import ApiServerClient
from parachute.routing.objects import Ref
from testbed import crds as router_crds
from testbed import routes
from testbed.cluster import tool
from testbed.install import install_operator_account
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

CHART = Path(__file__).resolve().parents[2] / "helm" / "parachute"
GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
ROUTE = Ref(routes.GATEWAY_V1, "HTTPRoute", "", "checkout")
GATEWAY = {
    "gatewayAPI": {"httpRoute": "checkout", "service": "checkout", "ruleName": "main"},
    "scaleDownDelay": "2s",
}  # a canary sent nothing drains 2s: the suite stays short


def helm_rendered(*values: str) -> list[dict[str, Any]]:
    flags = [item for value in values for item in ("--set", value)]
    text = subprocess.run(
        [str(tool("helm")), "template", "parachute", str(CHART), "--namespace", "parachute-system", *flags],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize(
    ("values", "backends"),
    [
        pytest.param([], rbac.DEFAULT_BACKENDS, id="default-gateway-api-and-istio"),
        pytest.param(["rbac.nginx=true"], rbac.BACKENDS, id="every-router"),
        pytest.param(["rbac.gatewayAPI=false", "rbac.istio=false"], (), id="no-router"),
        pytest.param(
            ["rbac.istio=false", "rbac.nginx=true"], ("gatewayAPI", "nginx"), id="gateway-api-and-nginx"
        ),
    ],
)
def test_the_chart_toggles_add_exactly_their_routers_rules(
    values: list[str], backends: tuple[str, ...]
) -> None:
    role = next(d for d in helm_rendered(*values) if d["kind"] == "ClusterRole")
    assert role["rules"] == rbac.cluster_role_rules_document(backends)
    namespaced = helm_rendered("rbac.scope=namespaced", "watchNamespaces={shop}", *values)
    assert next(d for d in namespaced if d["kind"] == "Role")["rules"] == rbac.namespaced_role_rules_document(
        backends
    )


def test_the_plain_manifests_grant_what_the_chart_does_by_default() -> None:
    manifests = yaml.safe_load_all((CHART.parents[1] / "manifests" / "operator.yaml").read_text())
    role = next(d for d in manifests if d and d["kind"] == "ClusterRole")
    assert role["rules"] == rbac.cluster_role_rules_document()


# ---------------------------------------------------------------------------- on the cluster


class World:
    """The user's Service and HTTPRoute, and Deployment `checkout`, in a test namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.client = ApiServerClient(cluster.api)
        self.route = Ref(ROUTE.api_version, ROUTE.kind, namespace, "checkout")

    def create(self, *bodies: dict[str, Any]) -> None:
        for body in bodies:
            asyncio.run(self.client.create(body))

    def users_route(self) -> dict[str, Any]:
        return routes.http_route(self.namespace, routes.gateway_parent())

    def spec_of_route(self) -> dict[str, Any]:
        found = asyncio.run(self.client.get(self.route))
        assert found is not None
        return dict(found["spec"])

    def apply_rollout(self, **spec: Any) -> None:
        body = rollout("checkout", targetRef={"name": "checkout"}, **spec)
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def status(self) -> dict[str, Any]:
        return rollout_status(self.cluster, self.namespace)

    def services(self) -> set[str]:
        return {s.metadata.name for s in self.cluster.core.list_namespaced_service(self.namespace).items}

    def config_maps(self) -> set[str]:
        return {c.metadata.name for c in self.cluster.core.list_namespaced_config_map(self.namespace).items}

    def at_stage_one(self) -> None:
        """A release at 10%, read back from the route."""
        wait_adopted(self.cluster, self.namespace)
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
        self.cluster.apps.patch_namespaced_deployment("checkout", self.namespace, patch)
        eventually(lambda: (self.status().get("traffic") or {}).get("applied") == 10, timeout=60,
                   what="stage 1 at 10% on the route")  # fmt: skip

    def given_back(self, original: dict[str, Any]) -> None:
        """The route as the user made it; nothing of Parachute's left but the canary Deployment it owned."""
        eventually(lambda: self.spec_of_route() == original, timeout=30, what="the route given back")
        eventually(lambda: self.services() == {"checkout", routes.OTHER}, timeout=30, what="the copies gone")
        # The record goes last, after what it names, so a give-back cut short is done again.
        eventually(lambda: not [c for c in self.config_maps() if c.startswith("parachute-routing-")],
                   timeout=30, what="the routing record removed")  # fmt: skip
        eventually(
            lambda: not self.cluster.apps.read_namespaced_deployment("checkout", self.namespace).spec.paused,
            timeout=30, what="the Deployment given back unpaused",
        )  # fmt: skip

    def canary_gone(self) -> bool:
        try:
            self.cluster.apps.read_namespaced_deployment("checkout-canary", self.namespace)
        except ApiException as error:
            return error.status == 404
        return False


@pytest.fixture(scope="module")
def gateway_crds(crds: Cluster) -> Cluster:
    router_crds.install(crds.api, *router_crds.GATEWAY_API)
    return crds


@pytest.fixture
def world(gateway_crds: Cluster, namespace: str) -> Iterator[World]:
    found = World(gateway_crds, namespace)
    found.cluster.apps.create_namespaced_deployment(namespace, deployment("checkout", replicas=2))
    yield found


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("broken", "field", "says"),
    [
        pytest.param("no-route", "spec.trafficRouting.gatewayAPI.httpRoute", "HTTPRoute {ns}/checkout does not exist",
                     id="route-missing"),
        pytest.param("no-service", "spec.trafficRouting.gatewayAPI.service", "Service {ns}/checkout does not exist",
                     id="service-missing"),
        pytest.param("elsewhere", "spec.trafficRouting.gatewayAPI.ruleName",
                     "rule 'main' does not send to Service checkout", id="route-does-not-send-to-the-service"),
    ],
)  # fmt: skip
def test_a_set_up_that_cannot_work_is_invalid_with_nothing_written_and_recovers_once_fixed(
    world: World, operator: RunningOperator, broken: str, field: str, says: str
) -> None:
    ns = world.namespace
    if broken != "no-service":
        world.create(routes.service(ns))
    if broken == "elsewhere":
        world.create(
            routes.service(ns, "payments"), routes.http_route(ns, routes.gateway_parent(), "payments")
        )
    elif broken != "no-route":
        world.create(world.users_route())
    world.apply_rollout(trafficRouting=GATEWAY)
    status = eventually(
        lambda: (s := world.status()).get("phase") == "Invalid" and s, timeout=30, what="Invalid"
    )
    invalid = next(c for c in status["conditions"] if c["type"] == "Invalid")
    assert invalid["status"] == "True" and invalid["message"].startswith(field)
    assert says.format(ns=ns) in invalid["message"]
    assert not [s for s in world.services() if s.endswith(("-stable", "-canary"))]  # nothing half-applied
    assert not [c for c in world.config_maps() if c.startswith("parachute-routing-")]
    # Fixed outside the Rollout, where no watch looks: it recovers by itself.
    if broken == "no-service":
        world.create(routes.service(ns))
    elif broken == "no-route":
        world.create(world.users_route())
    else:
        asyncio.run(world.client.patch(world.route, [
            {"op": "replace", "path": "/spec/rules/1/backendRefs/0/name", "value": "checkout"}]))  # fmt: skip
    eventually(lambda: world.status().get("phase") == "Healthy" and (world.status().get("traffic") or {}).get("applied") == 0,
               timeout=45, what="recovered, the route set up")  # fmt: skip


@pytest.mark.cluster
def test_a_router_whose_grant_is_off_is_invalid_naming_the_chart_value(world: World, tmp_path: Path) -> None:
    ns = world.namespace
    world.create(routes.service(ns), routes.ingress(ns))
    # An account with the chart's defaults, whatever other tests granted the shared one.
    kubeconfig = install_operator_account(
        world.cluster.kubeconfig, tmp_path / "defaults.kubeconfig", account="parachute-defaults"
    )
    running = RunningOperator(kubeconfig, tmp_path / "operator.log").start()
    try:
        world.apply_rollout(trafficRouting={"nginx": {"ingress": "shop", "service": "checkout"}})
        status = eventually(
            lambda: (s := world.status()).get("phase") == "Invalid" and s, timeout=30, what="Invalid"
        )
    finally:
        running.stop()
    assert status["message"].startswith("spec.trafficRouting.nginx: ")
    assert "rbac.nginx=true" in status["message"]
    assert world.services() == {"checkout"}  # nothing written


@pytest.mark.cluster
def test_removing_the_router_gives_the_route_back(world: World, operator: RunningOperator) -> None:
    ns = world.namespace
    world.create(routes.service(ns), routes.service(ns, routes.OTHER), world.users_route())
    original = {"spec": world.spec_of_route()}  # as the API server keeps it, its defaults filled in
    world.apply_rollout(trafficRouting=GATEWAY, steps=[{"weight": 10, "minWait": "5m"}, {"weight": 100}])
    eventually(lambda: (world.status().get("traffic") or {}).get("applied") == 0, timeout=60, what="set up")
    assert world.spec_of_route() != original["spec"]
    assert {"checkout-stable", "checkout-canary"} <= world.services()
    world.cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "checkout",
                                                         {"spec": {"trafficRouting": None}})  # fmt: skip
    eventually(lambda: world.spec_of_route() == original["spec"], timeout=30, what="the route given back")
    eventually(lambda: world.services() == {"checkout", routes.OTHER}, timeout=30, what="the copies gone")
    assert world.status().get("traffic") is None


@pytest.mark.cluster
def test_weights_edited_by_hand_mid_release_are_put_back_and_said_so(
    world: World, operator: RunningOperator
) -> None:
    ns = world.namespace
    world.create(routes.service(ns), routes.service(ns, routes.OTHER), world.users_route())
    world.apply_rollout(trafficRouting=GATEWAY, steps=[{"weight": 10, "minWait": "5m"}, {"weight": 100}])
    eventually(lambda: (world.status().get("traffic") or {}).get("applied") == 0, timeout=60, what="set up")
    world.at_stage_one()
    rules = world.spec_of_route()["rules"]
    index = next(i for i, rule in enumerate(rules) if rule.get("name") == "main")
    refs = rules[index]["backendRefs"]
    assert [r["name"] for r in refs] == ["checkout-stable", "checkout-canary"]
    asyncio.run(world.client.patch(world.route, [
        {"op": "replace", "path": f"/spec/rules/{index}/backendRefs/0/weight", "value": 50},
        {"op": "replace", "path": f"/spec/rules/{index}/backendRefs/1/weight", "value": 50}]))  # fmt: skip
    eventually(
        lambda: "WeightsPutBack" in event_reasons(world.cluster, ns),
        timeout=60,
        what="a WeightsPutBack Event",
    )
    weights = [r.get("weight") for r in world.spec_of_route()["rules"][index]["backendRefs"]]
    assert weights == [90, 10]
    # The reconcile that puts the weights back tells it; the next one reads them back into status.
    eventually(
        lambda: (world.status().get("traffic") or {}).get("applied") == 10, timeout=30, what="read back"
    )


@pytest.mark.cluster
@pytest.mark.parametrize("operator_down", [False, True], ids=["operator-running", "operator-down"])
def test_deleting_the_rollout_mid_release_gives_the_route_back_first(
    world: World, operator_kubeconfig: Path, tmp_path: Path, operator_down: bool
) -> None:
    ns = world.namespace
    world.create(routes.service(ns), routes.service(ns, routes.OTHER), world.users_route())
    original = {"spec": world.spec_of_route()}  # as the API server keeps it, its defaults filled in
    running = RunningOperator(operator_kubeconfig, tmp_path / "operator.log").start()
    try:
        world.apply_rollout(trafficRouting=GATEWAY, steps=[{"weight": 10, "minWait": "5m"}, {"weight": 100}])
        eventually(
            lambda: (world.status().get("traffic") or {}).get("applied") == 0, timeout=60, what="set up"
        )
        world.at_stage_one()
        if operator_down:
            running.stop()
        world.cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "checkout")
        if operator_down:
            with pytest.raises(ApiException):
                world.status()
            # The garbage collector took what the Rollout owned (the canary Deployment), but not
            # the Services the route still sends to; nobody gave the route back yet.
            eventually(world.canary_gone, timeout=30, what="the canary Deployment collected")
            assert {"checkout-stable", "checkout-canary"} <= world.services()
            assert world.spec_of_route() != original["spec"]
            running.start()
        world.given_back(original["spec"])
    finally:
        running.stop()
    assert 'is forbidden: User "system:serviceaccount:' not in running.output
