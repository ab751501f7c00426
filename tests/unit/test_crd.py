"""The CRD is generated from the models, is structural, and the committed copies do not drift."""

from __future__ import annotations

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
