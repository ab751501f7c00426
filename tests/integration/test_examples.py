"""Every file in examples/ works as its comment says: applied beside what it names (its
Deployment, ConfigMaps, Secrets and policy, its Service and route with their CRDs, and the
router's grant where the chart leaves it off), it reaches the phase its `# Reaches:` line
promises. An example with a `# First stage: <name>` line then gets a new image, and the
release reaches that stage: its workload and traffic in place, its wait begun (judged by a
Prometheus nobody runs here, so held there).

The test is parametrised over the directory, so a new example is tested by being there; every
strategy has an example that is taken to its first stage.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from parachute import rbac
from parachute.routing.client import ApiServerClient
from testbed import crds as router_crds
from testbed import routes
from testbed.install import grant_router, revoke_router
from tests.integration.conftest import Cluster, RunningOperator, deployment, eventually, rollout_status

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GROUP, VERSION = "parachute.dev", "v1alpha1"
REACHES = re.compile(r"^# Reaches: (\w+)", re.MULTILINE)
FIRST_STAGE = re.compile(r"^# First stage: ([\w-]+)", re.MULTILINE)
STRATEGIES = ("canary", "blueGreen", "phased", "flagPercentage")


def promised_phase(path: Path) -> str:
    found = REACHES.search(path.read_text())
    assert found, f"{path.name} does not say which phase it reaches (a '# Reaches: <Phase> (...)' line)"
    return found.group(1)


def first_stage(path: Path) -> str | None:
    found = FIRST_STAGE.search(path.read_text())
    return found.group(1) if found else None


def strategy(spec: dict[str, Any]) -> str:
    """How the example releases: its `strategy`, and a canary whose plan is the flag-gated one
    with flagd flags (no steps of its own) counted as a release by flag percentage."""
    flags = spec.get("featureFlags") or {}
    if spec.get("strategy", "canary") == "canary" and flags.get("format") == "flagd" and "steps" not in spec:
        return "flagPercentage"
    return str(spec.get("strategy", "canary"))


def the_rollout(path: Path) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert [d["kind"] for d in documents] == ["Rollout"], f"{path.name}: one Rollout per example"
    rollout: dict[str, Any] = documents[0]
    return rollout


def secret_refs(node: Any) -> Iterator[dict[str, str]]:
    """Every `{name, key}` a `...SecretRef` (or `secretRef`) field points at."""
    if isinstance(node, dict):
        for field, value in node.items():
            if field == "secretRef" or field.endswith("SecretRef"):
                yield value
            else:
                yield from secret_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from secret_refs(item)


def flag_store(flags: dict[str, Any]) -> dict[str, str]:
    """The flags off, in the store format the example names."""
    if flags.get("format") == "flagd":
        definitions = {
            name: {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
            for name in flags["flags"]
        }
        return {flags.get("key") or "flags.json": json.dumps({"flags": definitions})}
    return {name: "false" for name in flags["flags"]}


def create_what_it_names(cluster: Cluster, namespace: str, spec: dict[str, Any]) -> list[str]:
    """The objects the example refers to; returns the cluster-wide policies this created."""
    cluster.apps.create_namespaced_deployment(namespace, deployment(spec["targetRef"]["name"], replicas=2))
    flags = spec.get("featureFlags") or {}
    if "configMapRef" in flags:
        body = {"metadata": {"name": flags["configMapRef"]["name"]}, "data": flag_store(flags)}
        cluster.core.create_namespaced_config_map(namespace, body)
    for ref in spec.get("configRefs") or []:
        cluster.core.create_namespaced_config_map(
            namespace, {"metadata": {"name": ref["name"]}, "data": {"a": "1"}}
        )
    for ref in secret_refs(spec):
        secret = {"metadata": {"name": ref["name"]}, "stringData": {ref["key"]: "http://127.0.0.1:9/unused"}}
        try:
            cluster.core.create_namespaced_secret(namespace, secret)
        except ApiException as error:
            if error.status != 409:
                raise
            cluster.core.patch_namespaced_secret(ref["name"], namespace, {"stringData": secret["stringData"]})
    created = []
    if "blueGreen" in spec:  # the active Service it switches
        name = spec["blueGreen"]["activeService"]
        service = {"metadata": {"name": name}, "spec": {"selector": {"app": spec["targetRef"]["name"]},
                                                        "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip
        cluster.core.create_namespaced_service(namespace, service)
    granted = create_route(cluster, namespace, spec.get("trafficRouting") or {})
    if granted:
        created.append(f"router:{granted}")  # turned off again with the policies
    if "policyRef" in spec:
        name = spec["policyRef"]["name"]
        manifest = ROOT / "manifests" / f"policy-{name}.yaml"
        assert manifest.exists(), f"policyRef {name}: no manifests/policy-{name}.yaml to install"
        try:
            cluster.custom.create_cluster_custom_object(
                GROUP, VERSION, "releasepolicies", yaml.safe_load(manifest.read_text())
            )
            created.append(name)
        except ApiException as error:
            if error.status != 409:  # already installed, as a cluster would have it
                raise
    return created


def create_route(cluster: Cluster, namespace: str, routing: dict[str, Any]) -> str | None:
    """The Service and the route a router drives, with the router's CRDs; returns the router
    whose grant was turned on for it (the chart leaves it off), to turn off again."""
    objects: list[dict[str, Any]] = []
    if "gatewayAPI" in routing:
        settings = routing["gatewayAPI"]
        router_crds.install(cluster.api, *router_crds.GATEWAY_API)
        objects = [
            routes.http_route(namespace, routes.gateway_parent(), settings["service"], settings["httpRoute"])
        ]
    elif "istio" in routing:
        settings = routing["istio"]
        router_crds.install(cluster.api, *router_crds.ISTIO)
        objects = [routes.virtual_service(namespace, settings["service"], settings["virtualService"])]
        if "destinationRule" in settings:
            objects.append(routes.destination_rule(namespace, settings["destinationRule"]["name"]))
    elif "nginx" in routing:
        settings = routing["nginx"]
        objects = [routes.ingress(namespace, settings["service"], settings["ingress"])]
    else:
        return None
    backend = next(name for name in rbac.BACKENDS if name in routing)
    granted = None
    if backend not in rbac.DEFAULT_BACKENDS:
        grant_router(cluster.api, backend)
        granted = backend
    client = ApiServerClient(cluster.api)
    for body in (
        routes.service(namespace, settings["service"]),
        routes.service(namespace, routes.OTHER),
        *objects,
    ):
        asyncio.run(client.create(body))
    return granted


def reaches_first_stage(cluster: Cluster, namespace: str, rollout: dict[str, Any], stage: str) -> None:
    """A new image on the target: the release enters `stage` first and reaches it (the strategy's
    workload and traffic in place, the flags seen in their state), then is judged there."""
    target, name = rollout["spec"]["targetRef"]["name"], rollout["metadata"]["name"]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "checkout:2.0"}]}}}}
    cluster.apps.patch_namespaced_deployment(target, namespace, patch)

    def reached() -> dict[str, Any] | None:
        status = rollout_status(cluster, namespace, name)
        plan, message, index = status.get("plan") or [], status.get("message") or "", status.get("stageIndex")
        if status.get("phase") != "Progressing" or not plan or index is None:
            return None
        if index > 0:  # a stage without a wait (flag-gated `infrastructure`) is left once reached
            return status
        if message.startswith(f"stage 1/{len(plan)} ({stage})") and ": waiting for" not in message:
            return status
        return None

    status = eventually(reached, timeout=90, what=f"{name}: stage {stage} reached on a new image")
    assert status["plan"][0]["name"] == stage


def test_every_strategy_has_an_example_taken_to_its_first_stage() -> None:
    staged = {strategy(the_rollout(p)["spec"]) for p in EXAMPLES if first_stage(p)}
    assert set(STRATEGIES) <= staged, f"no example taken to its first stage for {set(STRATEGIES) - staged}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_example_reaches_the_phase_it_promises(
    crds: Cluster, namespace: str, operator: RunningOperator, path: Path
) -> None:
    phase = promised_phase(path)
    rollout = the_rollout(path)
    rollout["metadata"]["namespace"] = namespace
    policies = create_what_it_names(crds, namespace, rollout["spec"])
    try:
        crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "rollouts", rollout)
        name = rollout["metadata"]["name"]
        status = eventually(
            lambda: (s := rollout_status(crds, namespace, name)).get("phase") == phase and s,
            timeout=60,
            what=f"{path.name} reaches {phase}",
        )
        assert not any(
            c["type"] == "Invalid" and c["status"] == "True" for c in status.get("conditions") or []
        )
        tracked = [ref["name"] for ref in rollout["spec"].get("configRefs") or []]
        assert [s["name"] for s in status.get("configSnapshots") or []] == tracked
        if "trafficRouting" in rollout["spec"] and set(rollout["spec"]["trafficRouting"]) - {"replicas"}:
            # The route is set up and read back: nothing to the canary yet.
            eventually(lambda: (rollout_status(crds, namespace, name).get("traffic") or {}).get("applied") == 0,
                       timeout=30, what=f"{path.name}: the route set up at 0%")  # fmt: skip
        stage = first_stage(path)
        if stage is not None:
            reaches_first_stage(crds, namespace, rollout, stage)
    finally:
        for policy in policies:
            if policy.startswith("router:"):
                revoke_router(crds.api, policy.removeprefix("router:"))
                continue
            crds.custom.delete_cluster_custom_object(GROUP, VERSION, "releasepolicies", policy)
