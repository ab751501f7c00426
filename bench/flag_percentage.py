"""A bad variant behind a flag at 10% of users: the time from the failed verdict to every app
serving the off variant again, as the apps' own flagd evaluators answer.

The new code runs in every pod (the flag-gated way: the code to everyone with the flag off),
then the flag goes on for 10% of users and its new path fails every request it serves. The
clock starts when the Rollout is seen `RollingBack` (the reconcile that reads the Failed
verdict writes it, then switches the flag off) and stops when each pod's app, asked through
OpenFeature's SDK with the flagd provider in-process, serves the off variant to users that
`fractional` had given the on one. What lies between is the operator's write of the flag store,
the ConfigMap projected into the pods' file (a kubelet takes up to a minute and more; the
testbed's projector 0.25 s) and the provider noticing the file (it polls every 0.2 s).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from parachute.plan import flags as flag_documents
from testbed.cluster import LocalCluster
from testbed.dataplane import App, DataPlane
from testbed.demoapp import Behaviour, FlagdFlag
from testbed.loadgen import LoadGenerator
from testbed.projector import ConfigMapVolume
from testbed.prometheus import PodDiscovery, PodPrometheus

GROUP, VERSION, PLURAL = "parachute.dev", "v1alpha1", "rollouts"
FLAG = "new-path"
OFF = {"flags": {FLAG: {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}}}
Figure = Callable[..., None]


def users_on_at(percent: int, population: int = 2000, sample: int = 50) -> list[str]:
    """Users flagd's `fractional` gives the on variant at `percent`, in the document Parachute writes."""
    document, _ = flag_documents.flagd_set(OFF, [FLAG], f"{percent}%")
    core = FlagdCore()
    core.set_flags(json.dumps(document))
    users = (f"user-{i}" for i in range(population))
    on = [
        u for u in users if core.resolve_boolean_value(FLAG, False, EvaluationContext(targeting_key=u)).value
    ]
    return on[:sample]


def bench_flag_off(
    cluster: LocalCluster, operator: Callable[[str], Any], workdir: Path, figure: Figure, runs: int = 3
) -> None:
    api = cluster.api_client()
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    namespace = "bench-flag-percentage"
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "flags"}, "data": {"flags.json": json.dumps(OFF)}}
    )
    volume = ConfigMapVolume(core, namespace, "flags", workdir / "flags-percentage").start()
    bad = App(flag=FlagdFlag(volume.path("flags.json"), FLAG), when_flag_on=Behaviour(error_rate=1.0))
    plane = DataPlane(api, namespace, {f"bench:{run + 2}": bad for run in range(runs)}).start()
    core.create_namespaced_service(namespace, {"metadata": {"name": "checkout"}, "spec": {
        "selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]}})  # fmt: skip
    labels = {"app": "checkout"}
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "checkout", "labels": labels}, "spec": {
        "replicas": 4, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "bench:1"}]}}}})  # fmt: skip
    prometheus = PodPrometheus(workdir / "prometheus-flag-percentage", PodDiscovery(cluster.admin_kubeconfig,
                                                                                    (namespace,))).start()  # fmt: skip
    load = LoadGenerator(
        rate=100, duration=600, picker=plane.service_picker("checkout"), users=1_000_000
    ).start()
    running = operator("operator-flag-percentage.log")
    watched = users_on_at(10)
    seconds: list[float] = []
    try:
        prometheus.wait_for_value(
            f'sum(increase(http_requests_total{{namespace="{namespace}",app="checkout"}}[2s]))', 60
        )
        spec = {
            "targetRef": {"name": "checkout"},
            "analysis": {"prometheus": {"address": prometheus.url}, "interval": "2s"},
            "featureFlags": {"configMapRef": {"name": "flags"}, "format": "flagd", "flags": [FLAG]},
            "steps": [{"name": "infrastructure", "weight": 100, "flags": "off"},
                      {"name": "canary", "weight": 100, "flags": "10%", "minWait": "5m"}],
        }  # fmt: skip
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Rollout", "metadata": {"name": "checkout"}, "spec": spec})  # fmt: skip

        def status() -> dict[str, Any]:
            found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "checkout")
            return dict(found.get("status") or {})

        _until(lambda: status().get("phase") == "Healthy", 60)
        for run in range(runs):
            image = f"bench:{run + 2}"
            apps.patch_namespaced_deployment("checkout", namespace, {"spec": {"template": {"spec": {
                "containers": [{"name": "app", "image": image}]}}}})  # fmt: skip
            failed_at = _until(lambda: status().get("phase") == "RollingBack", 120, interval=0.05)

            def all_off(image: str = image) -> bool:
                versions = [e.version for e in plane.endpoints() if e.image == image]
                return bool(versions) and not any(v.serves_flagged(u) for v in versions for u in watched)

            off_at = _until(all_off, 60, interval=0.01)
            seconds.append(off_at - failed_at)
            _until(lambda: status().get("phase") == "RolledBack", 120)  # the next image starts anew
            incident = (status().get("incidents") or [{}])[-1]
            print(f"  run {run + 1}: {seconds[-1]:.2f} s; recovered by the {incident.get('level')} level in "
                  f"{incident.get('recoverySeconds')} s from the first critical verdict", flush=True)  # fmt: skip
        figure("flag at 10%: failed verdict to off served", f"{sorted(seconds)[len(seconds) // 2]:.2f} s",
               f"median of {runs} (max {max(seconds):.2f} s): RollingBack seen to every pod's flagd "
               "evaluator serving off; analysis every 2 s")  # fmt: skip
    finally:
        running.stop()
        load.stop()
        prometheus.stop()
        plane.stop()
        volume.stop()


def _until(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    """The monotonic moment `check` first held; raises after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except client.ApiException:
            pass
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout}s: {check}")
