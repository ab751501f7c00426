"""A release by flag percentage on the real cluster, measured: the flag is flagd JSON in a
ConfigMap, projected into a file that each pod's app reads through OpenFeature's SDK with the
flagd provider in-process (flagd's own evaluator, not ours). Every request carries its user, the
targeting key `fractional` buckets, and the app counts the variant it served; Prometheus, which
discovers the pods, counts the share. Parachute only writes the flag.

- The flag-gated plan of a flagd store, as the playbook has it: the code to everyone with the
  flag off, then the flag on for 10%, 50% and everyone, each share counted by Prometheus
  within ±3 points.
- A bad variant at 10% is recovered by the flag level: off for everyone, counted, the recovery
  time in the incident.
- A plain ConfigMap cannot hold a percentage: the API server refuses the step, naming the field.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from testbed.dataplane import App
from testbed.demoapp import Behaviour, FlagdFlag
from testbed.loadgen import LoadGenerator
from testbed.projector import ConfigMapVolume
from tests.integration.analysed import NEW, Analysed
from tests.integration.conftest import Cluster, RunningOperator, eventually, load_example, rollout

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.slow]

FLAG = "new-checkout"
STORE = "checkout-flags"
# Requests per second, each from one of this many users: over a 15 s window some 3,000 requests,
# where a 50% share counts within ±3 points but once in a thousand runs.
RATE, USERS, WINDOW = 200, 1_000_000, 15
# Long enough that the flag reaches every app (projected within 0.25 s, read within 0.2 s) and
# each pod's counter of the variant it now serves has been scraped (every second).
SETTLE = 3
FLAGS_SPEC = {"configMapRef": {"name": STORE}, "format": "flagd", "flags": [FLAG]}
OFF = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
PROMOTE = "parachute.dev/promote"


class FlagPercentages(Analysed):
    """`checkout` under load from many users, its flag in a flagd ConfigMap its pods' apps read."""

    def __init__(self, cluster: Cluster, namespace: str, workdir: Path) -> None:
        cluster.core.create_namespaced_config_map(
            namespace,
            {"metadata": {"name": STORE}, "data": {"flags.json": json.dumps({"flags": {FLAG: OFF}})}},
        )
        self.volume = ConfigMapVolume(cluster.core, namespace, STORE, workdir / STORE).start()
        super().__init__(cluster, namespace, workdir)

    def _callers(self) -> LoadGenerator:
        return LoadGenerator(rate=RATE, duration=600, picker=self.plane.service_picker("checkout"),
                             users=USERS).start()  # fmt: skip

    def new_code(self, when_on: Behaviour | None = None) -> None:
        """Image 2.0 evaluates the flag per request: its new path (behaving as `when_on`) for the
        users flagd gives the on variant."""
        self.set_app(
            NEW,
            App(flag=FlagdFlag(self.volume.path("flags.json"), FLAG), when_flag_on=when_on or Behaviour()),
        )

    def share_on(self, seconds: int = WINDOW) -> tuple[float, float]:
        """The on variant's share of the flag evaluations Prometheus counted over the next
        `seconds` (one per request), and how many; every pod's count over the same window."""
        time.sleep(SETTLE)
        time.sleep(seconds + 1)  # the window ends after a scrape of every pod
        result = self.prometheus.query(
            f'sum by (variant) (increase(feature_flag_evaluations_total{{namespace="{self.namespace}",'
            f'flag="{FLAG}"}}[{seconds}s]))'
        )
        counted = {r["metric"].get("variant", ""): float(r["value"][1]) for r in result}
        total = sum(counted.values())
        return (100 * counted.get("on", 0.0) / total if total else float("nan")), total

    def flag(self) -> dict[str, Any]:
        data = self.cluster.core.read_namespaced_config_map(STORE, self.namespace).data
        return dict(json.loads(data["flags.json"])["flags"][FLAG])

    def flags_at(self, exposure: str) -> dict[str, Any]:
        """Wait for the flags asked for and read back at `exposure`: the stage is reached."""
        return eventually(
            lambda: (f := self.status().get("flags") or {}).get("state") == exposure and f.get("inPlaceAt") and f,
            timeout=60, what=f"flags {exposure} in place",
        )  # fmt: skip

    def promote(self) -> None:
        stage = self.status().get("stage")
        self.cluster.custom.patch_namespaced_custom_object(
            "parachute.dev", "v1alpha1", self.namespace, "rollouts", "checkout",
            {"metadata": {"annotations": {PROMOTE: str(time.time())}}},
        )  # fmt: skip
        eventually(lambda: self.status().get("stage") != stage or self.released(), timeout=30,
                   what=f"stage {stage} promoted")  # fmt: skip

    def stop(self) -> None:
        self.volume.stop()
        super().stop()


@pytest.fixture
def world(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[FlagPercentages]:
    running = FlagPercentages(crds, namespace, tmp_path)
    yield running
    running.stop()


def test_the_flag_gated_plan_exposes_10_then_50_percent_then_everyone_as_counted_by_prometheus(
    world: FlagPercentages, operator: RunningOperator
) -> None:
    world.new_code()
    # The README's Rollout (examples/flag-percentage.yaml), on the testbed's Prometheus: each stage
    # is promoted once its share is counted, instead of its hours; the first one has no wait.
    example = load_example("flag-percentage.yaml")["spec"]
    assert example["featureFlags"] == {**FLAGS_SPEC, "key": "flags.json"}
    world.release(spec={
        **{k: v for k, v in example.items() if k not in ("targetRef", "analysis")},
        "waits": {"min": "10m", "max": "10m", "firstStageMin": "0s", "firstStageMax": "0s"},
        "watchAfterRelease": "10m",
    })  # fmt: skip
    plan = world.status()["plan"]
    assert [(s["name"], s["weight"], s["flags"]) for s in plan] == [
        ("infrastructure", 100, "off"), ("integration", 100, "off"), ("canary", 100, "10%"),
        ("partial", 100, "50%"), ("full", 100, "on"),
    ]  # fmt: skip
    eventually(lambda: world.status().get("stage") == "2/5", timeout=60, what="the code out, flags off")
    world.flags_at("off")
    off, counted = world.share_on(5)
    assert off == 0 and counted > 0, (off, counted)
    shares = {}
    for stage, exposure, percent in (("3/5", "10%", 10), ("4/5", "50%", 50), ("5/5", "on", 100)):
        world.promote()
        assert world.status()["stage"] == stage
        world.flags_at(exposure)
        share, counted = world.share_on(WINDOW if percent < 100 else 5)
        shares[exposure] = share
        print(f"flags {exposure}: {share:.1f}% of {counted:.0f} evaluations served the on variant")
        assert abs(share - percent) <= 3, (exposure, share, counted)
    # What the store holds at the last percentage stage was the fractional rule; now on for all.
    flag = world.flag()
    assert flag["defaultVariant"] == "on" and "targeting" not in flag, flag
    world.promote()
    eventually(world.released, timeout=30, what="released")
    events = world.cluster.core.list_namespaced_event(
        world.namespace, field_selector="involvedObject.name=checkout,involvedObject.kind=Rollout"
    ).items
    set_messages = {e.message for e in events if e.reason == "FlagsSet"}
    assert any(f"flags {FLAG} on for 10% of users in ConfigMap {STORE}" in m for m in set_messages)
    assert any(f"flags {FLAG} on for 50% of users in ConfigMap {STORE}" in m for m in set_messages)
    # Every document Parachute replaced was copied first: the 10% and the 50% among them.
    copies = world.cluster.core.list_namespaced_config_map(
        world.namespace, label_selector="parachute.dev/rollout=checkout"
    ).items
    kept = [json.loads(c.data["flags.json"])["flags"][FLAG] for c in copies if "flags.json" in (c.data or {})]
    assert {json.dumps(k.get("targeting")) for k in kept} >= {
        json.dumps({"fractional": [["on", 10], ["off", 90]]}),
        json.dumps({"fractional": [["on", 50], ["off", 50]]}),
    }, kept


def test_a_bad_variant_at_10_percent_is_recovered_by_the_flag_level_and_its_share_counted_back_to_0(
    world: FlagPercentages, operator: RunningOperator
) -> None:
    world.new_code(when_on=Behaviour(error_rate=1.0))  # the new path fails every request it serves
    world.release(spec={
        "featureFlags": FLAGS_SPEC,
        "steps": [{"name": "infrastructure", "weight": 100, "flags": "off"},
                  {"name": "canary", "weight": 100, "flags": "10%", "minWait": "5m"}],
    })  # fmt: skip
    incident = eventually(lambda: (world.status().get("incidents") or [{}])[-1].get("recoveredAt")
                          and world.status()["incidents"][-1], timeout=90, what="recovered")  # fmt: skip
    assert [level["level"] for level in incident["levels"]] == ["flag"], incident
    assert incident["reason"].startswith("stage 2/2 (canary) at 100%, flags on for 10% of users"), incident
    assert incident["objectiveMet"] is True and incident["recoverySeconds"] >= 0, incident
    print(f"recovered by the flag level in {incident['recoverySeconds']} s: {incident['levels']}")
    # Off for everyone: the off variant, no targeting left to serve the new path to anyone.
    assert world.flag() == OFF
    share, counted = world.share_on(5)
    assert share == 0 and counted > 0, (share, counted)
    error_rate = next(m for m in world.status()["metrics"] if m["name"] == "error-rate")
    assert error_rate["verdict"] == "Successful", error_rate
    assert world.status()["phase"] == "RolledBack"
    assert "with flags new-checkout off" in world.status()["message"]


def test_a_plain_configmap_asked_for_a_percentage_is_refused_naming_the_field(
    crds: Cluster, namespace: str
) -> None:
    body = rollout("checkout", targetRef={"name": "checkout"},
                   featureFlags={"configMapRef": {"name": STORE}, "flags": [FLAG]},
                   steps=[{"weight": 100, "flags": "off"}, {"weight": 100, "flags": "10%"}])  # fmt: skip
    with pytest.raises(ApiException) as refused:
        crds.custom.create_namespaced_custom_object("parachute.dev", "v1alpha1", namespace, "rollouts", body)
    assert refused.value.status == 422
    assert "spec.steps: Invalid value" in str(refused.value.body)
    assert "a percentage of users needs flagd flags" in str(refused.value.body)
