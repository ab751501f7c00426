"""The CRD is generated from the models, is structural, and the committed copies do not drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from parachute import api, crd

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", sorted(crd.generated_files()), ids=str)
def test_committed_file_matches_the_models(relative: str) -> None:
    committed = ROOT / relative
    assert committed.exists(), f"{relative} is missing; run `make crds`"
    assert committed.read_text() == crd.generated_files()[relative], f"{relative} drifted; run `make crds`"


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    if not isinstance(node, dict):
        return []
    nodes = [(path, node)]
    for name, child in node.get("properties", {}).items():
        nodes += walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        nodes += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        nodes += walk(node["additionalProperties"], f"{path}{{}}")
    return nodes


SCHEMA = crd.rollout_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize(("path", "node"), walk(SCHEMA), ids=[p or "root" for p, _ in walk(SCHEMA)])
def test_schema_is_structural(path: str, node: dict[str, Any]) -> None:
    assert "$ref" not in node and "allOf" not in node and "oneOf" not in node
    if node.get("x-kubernetes-int-or-string"):
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}] and "type" not in node
    else:
        assert "anyOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
    assert not ("properties" in node and "additionalProperties" in node), path
    assert "default" not in node and "title" not in node, path


def test_the_resource_is_named_as_the_spec_says() -> None:
    document = crd.rollout_crd()
    names = document["spec"]["names"]
    assert document["metadata"]["name"] == "rollouts.parachute.dev"
    assert (names["kind"], names["plural"], names["shortNames"]) == ("Rollout", "rollouts", ["pr"])
    assert document["spec"]["scope"] == "Namespaced"


def test_status_is_a_subresource_with_printer_columns() -> None:
    version = crd.rollout_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Phase", "Stage", "Weight", "Risk", "Verdict", "Age"]


def test_validation_the_api_server_can_do_is_in_the_schema() -> None:
    spec = SCHEMA["properties"]["spec"]
    assert spec["required"] == ["targetRef"]
    assert spec["properties"]["risk"]["enum"] == ["zero", "low", "medium", "high"]
    weight = spec["properties"]["steps"]["items"]["properties"]["weight"]
    assert (weight["minimum"], weight["maximum"]) == (0, 100)
    rules = spec["properties"]["steps"]["items"]["x-kubernetes-validations"]
    assert any("duration(self.minWait) <= duration(self.maxWait)" in r["rule"] for r in rules)


SPEC_RULES = SCHEMA["properties"]["spec"]["x-kubernetes-validations"]


@pytest.mark.parametrize(
    ("field_path", "rule", "says"),
    [
        pytest.param(".steps", "!has(self.steps) || self.steps.map(s, s.weight).isSorted()",
                     "spec.steps: weights must not decrease", id="weights-never-decrease"),
        pytest.param(".waits", "!has(self.steps) || !has(self.waits)", "spec.waits", id="waits-not-with-steps"),
        pytest.param(".watchAfterRelease", "!has(self.steps) || !has(self.watchAfterRelease)",
                     "spec.watchAfterRelease", id="watch-after-release-not-with-steps"),
        pytest.param(".phased", "(has(self.strategy) && self.strategy == 'phased') == has(self.phased)",
                     "spec.phased: set it exactly when", id="phased-settings-with-its-strategy"),
        pytest.param(".trafficRouting",
                     "!has(self.phased) || (has(self.trafficRouting) && (has(self.trafficRouting.gatewayAPI) || "
                     "has(self.trafficRouting.istio) || has(self.trafficRouting.nginx)))",
                     "spec.trafficRouting: a phased release needs a router", id="phased-needs-a-router"),
        pytest.param(".blueGreen", "(has(self.strategy) && self.strategy == 'blueGreen') == has(self.blueGreen)",
                     "spec.blueGreen: set it exactly when", id="blue-green-settings-with-its-strategy"),
    ],
)  # fmt: skip
def test_plans_that_would_not_run_as_written_are_refused(field_path: str, rule: str, says: str) -> None:
    found = [r for r in SPEC_RULES if r.get("fieldPath") == field_path and r["rule"] == rule]
    assert found, f"no rule {rule!r} at {field_path}"
    assert found[0]["message"].startswith(says)


def test_the_strategies_not_supported_stay_in_the_enum_so_accepting_one_lifts_a_rule() -> None:
    assert SCHEMA["properties"]["spec"]["properties"]["strategy"]["enum"] == ["canary", "blueGreen", "phased"]


NOT_SUPPORTED = {
    "spec.phased.audiences[].flagTargeting",
    "spec.steps[].audience",
}


def marked(node: Any, root: str) -> set[str]:
    """Paths of the fields marked not supported in a schema that still has its markers."""
    return {f"{root}{path}" for path, sub in walk(node) if api.NOT_SUPPORTED in sub}


def test_the_fields_no_code_acts_on_yet_are_marked_not_supported() -> None:
    assert marked(crd._marked(api.RolloutSpec.model_json_schema(by_alias=True)), "spec") == NOT_SUPPORTED
    for model in (api.MetricTemplateSpec, api.ReleasePolicySpec, api.RolloutStatus):
        assert not marked(crd._marked(model.model_json_schema(by_alias=True)), "x")


def _parent(path: str) -> dict[str, Any]:
    nodes = dict(walk(SCHEMA))
    parent = nodes["." + path.rsplit(".", 1)[0]]
    return parent


@pytest.mark.parametrize("path", sorted(NOT_SUPPORTED))
def test_a_field_not_supported_is_refused_by_a_rule_on_its_parent_naming_it(path: str) -> None:
    name = path.rsplit(".", 1)[1]
    assert {
        "fieldPath": f".{name}",
        "message": f"{path} is not supported yet",
        "rule": f"!has(self.{name})",
    } in (_parent(path)["x-kubernetes-validations"])
    assert _parent(path)["properties"][name]["description"] == crd.NOT_SUPPORTED_TEXT


def test_no_marker_reaches_the_emitted_schemas() -> None:
    for document in crd.all_crds():
        schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert not [p for p, node in walk(schema) if any(k.startswith("x-parachute") for k in node)]


def test_the_reference_shows_refused_fields_as_refused_and_nothing_under_them() -> None:
    rows = crd.reference_markdown().splitlines()
    for path in NOT_SUPPORTED:
        row = next(r for r in rows if r.startswith(f"| `{path}` |"))
        assert row.endswith(f"| {crd.NOT_SUPPORTED_TEXT} |")
        assert not [r for r in rows if r.startswith(f"| `{path}.") or r.startswith(f"| `{path}[]")]


def test_smi_is_gone() -> None:
    """SMI was archived by the CNCF on 2023-10-03; its users moved to Gateway API (GAMMA)."""
    routing = SCHEMA["properties"]["spec"]["properties"]["trafficRouting"]
    assert "smi" not in routing["properties"]
    assert not re.search(r"\bsmi\b|TrafficSplit", crd.reference_markdown(), re.IGNORECASE)
    assert not any("smi" in "".join(map(str, rule.values())) for rule in routing["x-kubernetes-validations"])


def test_optional_fields_are_nullable_and_defaults_are_described() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["risk"]["nullable"] is True
    assert "Default: canary" in spec["strategy"]["description"]


def test_conditions_are_a_map_keyed_by_type() -> None:
    conditions = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status"}


def test_the_yaml_round_trips() -> None:
    text = crd.dump(crd.rollout_crd())
    assert yaml.safe_load(text) == crd.rollout_crd()
    assert api.GROUP in text
