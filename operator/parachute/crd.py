"""Generate the CustomResourceDefinition from the pydantic models in `parachute.api`.

Pydantic emits JSON Schema with `$ref`s, `anyOf [T, null]` for optional fields, titles and
defaults. Kubernetes wants a *structural* schema: everything inlined, a `type` on every
node, `nullable` instead of a null branch. This module does that translation and nothing
else. `make crds` writes the result (`python -m parachute.crd`); a unit test fails when the
committed YAML drifts from the models.

Defaults stay in the models and are not written to the schema: server-side defaulting
would add fields the user never wrote, which GitOps tools then report as drift. The
default is appended to the field's description instead, so `kubectl explain` shows it.

A field marked not supported yet in the models (`api.not_supported`) is refused by a CEL
rule on its parent object, with a message naming the field; the marker itself never
reaches the emitted schema, and the reference lists the field as refused.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from parachute import api, install, rbac

# Keywords the API server's structural schema accepts and we keep as they are.
_KEPT = {
    "type", "description", "properties", "required", "items", "enum", "format", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "minItems", "maxItems", "uniqueItems", "nullable", "additionalProperties",
}  # fmt: skip


NOT_SUPPORTED_TEXT = "Not supported yet: refused by the API server."


def structural(schema: dict[str, Any], root: str = "spec") -> dict[str, Any]:
    """Inline `$ref`s and rewrite a pydantic JSON schema into a structural OpenAPI v3 schema.

    `root` is the schema's path in the resource, for the messages that name refused fields.
    """
    result: dict[str, Any] = _ordered(_refuse_not_supported(_marked(schema), root))
    return result


def _marked(schema: dict[str, Any]) -> dict[str, Any]:
    """The structural schema with the not-supported markers still on their fields (for the reference)."""
    defs = schema.get("$defs", {})
    return _convert({k: v for k, v in schema.items() if k != "$defs"}, defs)


def _refuse_not_supported(node: dict[str, Any], path: str) -> dict[str, Any]:
    """A copy in which each marked field is refused by a CEL rule on its parent, its marker gone.

    The field's own schema stays, so accepting it later is removing the marker, and
    `kubectl explain` says that it is refused.
    """
    out = dict(node)
    if "properties" in out:
        properties = {}
        rules = list(out.get("x-kubernetes-validations", []))
        for name, marked in out["properties"].items():
            child, child_path = marked, f"{path}.{name}"
            if api.NOT_SUPPORTED in marked:
                child = {k: v for k, v in marked.items() if k != api.NOT_SUPPORTED}
                child["description"] = NOT_SUPPORTED_TEXT
                refusal = api.cel(f"!has(self.{name})", f"{child_path} is not supported yet", f".{name}")
                rules.append(dict(sorted(refusal.items())))  # in the order pydantic writes the others
            properties[name] = _refuse_not_supported(child, child_path)
        out["properties"] = properties
        if rules:
            out["x-kubernetes-validations"] = rules
    if isinstance(out.get("items"), dict):
        out["items"] = _refuse_not_supported(out["items"], f"{path}[]")
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _refuse_not_supported(out["additionalProperties"], f"{path}{{}}")
    return out


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
    # The field's own words win over the referenced model's docstring.
    target.update({k: v for k, v in node.items() if k != "$ref"})
    return _resolve(target, defs)


def _unwrap_optional(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`anyOf: [T, null]` becomes T, nullable. Any other union cannot be structural."""
    any_of = node.get("anyOf")
    if any_of is None:
        return node, False
    branches = [b for b in any_of if b.get("type") != "null"]
    if len(branches) != 1:
        raise ValueError(f"cannot express a union of {len(branches)} types structurally: {node}")
    merged = _resolve(branches[0], defs) | {k: v for k, v in node.items() if k != "anyOf"}
    return merged, len(branches) < len(any_of)


def _described_default(node: dict[str, Any], description: str) -> str:
    default = node.get("default")
    if default is None:
        return description
    shown = default if isinstance(default, str) else json.dumps(default)
    return f"{description.rstrip('.')}. Default: {shown}.".lstrip(". ")


def _convert(raw: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node, nullable = _unwrap_optional(_resolve(raw, defs), defs)
    out = {
        k: v for k, v in node.items() if k in _KEPT or k.startswith("x-kubernetes-") or k == api.NOT_SUPPORTED
    }
    if "const" in node:
        out["enum"] = [node["const"]]
    if "enum" in out:
        out.setdefault("type", "string")
    if "default" in node:
        out["description"] = _described_default(node, out.get("description", ""))
    if nullable:
        out["nullable"] = True
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: _convert(v, defs) for k, v in out["properties"].items()}
        out.pop("additionalProperties", None)
        if not out["properties"] and "x-kubernetes-validations" not in out:
            del out["properties"]  # an empty marker object such as `replicas: {}`
    elif out.get("type") == "object":
        _shape_free_object(out, defs)
    if "items" in out:
        out["items"] = _convert(out["items"], defs)
    if out.get("x-kubernetes-int-or-string"):
        # The one union a structural schema allows, spelled the way the API server wants it.
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise ValueError(f"schema node without a type is not structural: {node}")
    return out


def _shape_free_object(out: dict[str, Any], defs: dict[str, Any]) -> None:
    """A map keeps its value schema; a free-form object (e.g. metadata) keeps what the user wrote."""
    extra = out.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        out["additionalProperties"] = _convert(extra, defs)
    else:
        out.pop("additionalProperties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True


_FIRST = ("type", "description", "required")


def _ordered(node: Any) -> Any:
    """type and description first, so the YAML reads like `kubectl explain`."""
    if isinstance(node, list):
        return [_ordered(item) for item in node]
    if not isinstance(node, dict):
        return node
    keys = [k for k in _FIRST if k in node] + [k for k in node if k not in _FIRST]
    return {k: (node[k] if k in ("enum", "required") else _ordered(node[k])) for k in keys}


def _envelope(spec: dict[str, Any], status: dict[str, Any] | None, description: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
    }
    if status is not None:
        properties["status"] = status
    return {"type": "object", "description": description, "required": ["spec"], "properties": properties}


def rollout_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the Rollout: spec and status from the models, the envelope by hand."""
    return _envelope(
        structural(api.RolloutSpec.model_json_schema(by_alias=True), "spec"),
        structural(api.RolloutStatus.model_json_schema(by_alias=True), "status"),
        (api.Rollout.__doc__ or "").strip(),
    )


def _crd(
    kind: str, plural: str, scope: str, schema: dict[str, Any], *, short_names: list[str] | None = None,
    status: bool = False, columns: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    version: dict[str, Any] = {"name": api.VERSION, "served": True, "storage": True}
    if status:
        version["subresources"] = {"status": {}}
    if columns:
        version["additionalPrinterColumns"] = columns
    version["schema"] = {"openAPIV3Schema": schema}
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
    }
    if short_names:
        names["shortNames"] = short_names
    names["categories"] = ["parachute"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "parachute", "app.kubernetes.io/component": "crd"},
        },
        "spec": {"group": api.GROUP, "scope": scope, "names": names, "versions": [version]},
    }


def rollout_crd() -> dict[str, Any]:
    return _crd(api.KIND, api.PLURAL, "Namespaced", rollout_schema(), short_names=api.SHORT_NAMES, status=True,
                columns=api.PRINTER_COLUMNS)  # fmt: skip


def metric_template_crd(cluster_wide: bool) -> dict[str, Any]:
    spec = structural(api.MetricTemplateSpec.model_json_schema(by_alias=True))
    kind = "ClusterMetricTemplate" if cluster_wide else "MetricTemplate"
    scope = "cluster-wide" if cluster_wide else "namespaced"
    description = f"A {scope} metric template: PromQL and thresholds that Rollouts reference by name."
    columns = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    return _crd(kind, f"{kind.lower()}s", "Cluster" if cluster_wide else "Namespaced",
                _envelope(spec, None, description), columns=columns)  # fmt: skip


def release_policy_crd() -> dict[str, Any]:
    spec = structural(api.ReleasePolicySpec.model_json_schema(by_alias=True))
    description = (api.ReleasePolicy.__doc__ or "").strip()
    columns = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    return _crd(
        "ReleasePolicy", "releasepolicies", "Cluster", _envelope(spec, None, description), columns=columns
    )


def all_crds() -> list[dict[str, Any]]:
    return [
        rollout_crd(),
        metric_template_crd(cluster_wide=False),
        metric_template_crd(cluster_wide=True),
        release_policy_crd(),
    ]


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(node.get("type", "any"))
    if kind == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_of(node['additionalProperties'])}"
    return kind


def _constraints(node: dict[str, Any], rules: list[str]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node or "maximum" in node:
        parts.append(f"{node.get('minimum', '')}..{node.get('maximum', '')}")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    return "; ".join(parts + rules)


def reference_markdown() -> str:
    """A field reference of the Rollout, generated from the same schema as the CRD."""
    lines = [
        "<!-- Generated from operator/parachute/api.py by `make crds`. Do not edit by hand. -->",
        "# Rollout field reference",
        "",
        f"`apiVersion: {api.API_VERSION}`, `kind: {api.KIND}`. Durations are Go-style (`30s`, `5m`, `1h30m`).",
        "",
    ]
    sections = {
        "spec": _marked(api.RolloutSpec.model_json_schema(by_alias=True)),
        "status": _marked(api.RolloutStatus.model_json_schema(by_alias=True)),
    }
    for section, schema in sections.items():
        lines += [f"## {section}", "", "| field | type | required | description |", "|---|---|---|---|"]
        lines += _reference_rows(schema, section, required=True, top=True)
        lines.append("")
    return "\n".join(lines)


def _reference_rows(
    node: dict[str, Any], path: str, *, required: bool, top: bool = False, rules: tuple[str, ...] = ()
) -> list[str]:
    """Rows of `node` and everything under it; `rules` are its parent's rules about it."""
    if api.NOT_SUPPORTED in node:
        # Refused, with everything under it: nothing here to document as working.
        return [f"| `{path}` | {_type_of(node)} |  | {NOT_SUPPORTED_TEXT} |"]
    is_list = node.get("type") == "array"
    child = node.get("items", {}) if is_list else node
    properties = child.get("properties", {})
    validations = child.get("x-kubernetes-validations", [])
    # A rule that names one field (its fieldPath) is shown on that field's row.
    about = {
        name: tuple(r["message"] for r in validations if r.get("fieldPath") == f".{name}")
        for name in properties
    }
    own = [r["message"] for r in validations if r.get("fieldPath", "").removeprefix(".") not in properties]
    rows = []
    if not top:
        text = " ".join(node.get("description", "").split())
        extra = _constraints(node, [*rules, *own])
        text = f"{text} ({extra})" if extra and text else text or extra
        cell = text.replace("|", "\\|")
        rows.append(f"| `{path}` | {_type_of(node)} | {'yes' if required else ''} | {cell} |")
    for name, sub_node in properties.items():
        sub_path = f"{path}{'[]' if is_list else ''}.{name}"
        rows += _reference_rows(
            sub_node, sub_path, required=name in child.get("required", []), rules=about[name]
        )
    return rows


GENERATED_HEADER = "# Generated from operator/parachute by `make crds`. Do not edit by hand.\n"


def dump(document: dict[str, Any] | list[dict[str, Any]]) -> str:
    docs = document if isinstance(document, list) else [document]
    body = "---\n".join(yaml.safe_dump(d, sort_keys=False, width=100) for d in docs)
    return GENERATED_HEADER + body


def generated_files() -> dict[str, str]:
    """Every file generated from the models, by path relative to the repository root."""

    def rules(document: list[dict[str, Any]]) -> str:
        """One YAML list, pasted under `rules:` by the chart's template."""
        return GENERATED_HEADER + yaml.safe_dump(document, sort_keys=False)

    files = {}
    for document in all_crds():
        text = dump(document)
        files[f"crds/{document['metadata']['name']}.yaml"] = text
        files[f"helm/parachute/crds/{document['metadata']['name']}.yaml"] = text
    return {
        **files,
        "manifests/crds.yaml": dump(all_crds()),
        # The chart adds each router's rules by its toggle (rbac.gatewayAPI, rbac.istio, rbac.nginx).
        "helm/parachute/files/clusterrole-rules.yaml": rules(rbac.cluster_role_rules_document(backends=())),
        "helm/parachute/files/role-rules.yaml": rules(rbac.namespaced_role_rules_document(backends=())),
        **{
            f"helm/parachute/files/{backend}-rules.yaml": rules(rbac.backend_rules_document(backend))
            for backend in rbac.BACKENDS
        },
        "helm/parachute/files/namespaced-clusterrole-rules.yaml": rules(
            rbac.namespaced_cluster_role_rules_document()
        ),
        "helm/parachute/files/leader-election-rules.yaml": rules(rbac.leader_election_rules_document()),
        "manifests/operator.yaml": dump(install.documents()),
        "manifests/policy-playbook.yaml": dump(install.playbook_policy()),
        "helm/parachute/files/playbook-window.yaml": GENERATED_HEADER
        + yaml.safe_dump(
            {k: v for k, v in install.playbook_policy()["spec"]["window"].items() if k != "timeZone"},
            sort_keys=False,
        ),
        "docs/reference.md": reference_markdown(),
    }


def write(root: Path) -> list[Path]:
    written = []
    for relative, text in generated_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    import sys

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    for path in write(root):
        print(f"wrote {path.relative_to(root)}")
