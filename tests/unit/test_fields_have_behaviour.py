"""No field without behaviour: every field a user may write is read by the operator's code.

The test walks the spec models (Rollout, MetricTemplate, ReleasePolicy) through every
nested model and looks, in the syntax trees of `operator/parachute/**/*.py` other than the
schema modules, for a read of each field: the python attribute (`spec.waits`) or, for code
that reads raw dicts, the camelCase key (`body["waits"]`, `body.get("waits")`). A dict
literal that merely *writes* a key is not a read, and neither is handing a field on under
its own name (`flags_on=step.flags_on`): that copy has behaviour only if something reads
it. A field counts as read only when its parent is read too: a nested field of a section
no code reaches has no behaviour, however common its name.

A field marked not supported yet (`api.not_supported`) is refused by the API server, so
it and everything under it are exempt. A field that is only data goes in ALLOWED with its
reason. Status is left out: code writes it, and what code writes is tested where it is
written.
"""

from __future__ import annotations

import ast
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from parachute import api

PACKAGE = Path(api.__file__).resolve().parent
SCHEMA_MODULES = {PACKAGE / "api.py", PACKAGE / "crd.py"}
# The kubectl plugin shows what a Rollout says; showing a field is not acting on it.
DISPLAY_ONLY = PACKAGE / "cli"
ROOTS: dict[str, type[BaseModel]] = {
    "spec": api.RolloutSpec,
    "MetricTemplate.spec": api.MetricTemplateSpec,
    "ReleasePolicy.spec": api.ReleasePolicySpec,
}

# Fields that are only data, with the reason no code needs to read them.
ALLOWED: dict[str, str] = {
    # Like replicas below: the one value accepted is the default and what the engine does.
    "spec.strategy": "only canary is accepted; a CEL rule refuses blueGreen and phased",
}


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation holds: `X`, `X | None`, `list[X]`, `Annotated[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


def _is_list(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return False


def fields(
    model: type[BaseModel], path: str, parent: str | None
) -> Iterator[tuple[str, str, str, str | None]]:
    """(path, attribute, wire key, parent path) of every field under `model`, marked ones left out."""
    for attribute, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and api.NOT_SUPPORTED in extra:
            continue
        key = info.alias or attribute
        here = f"{path}.{key}"
        yield here, attribute, key, parent
        for nested in _models_in(info.annotation):
            yield from fields(nested, f"{here}[]" if _is_list(info.annotation) else here, here)


def _reads() -> tuple[set[str], set[str]]:
    """Attribute names read, and string keys read (subscript or `.get`), outside the schema modules."""
    attributes: set[str] = set()
    keys: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        if source in SCHEMA_MODULES or DISPLAY_ONLY in source.parents:
            continue
        tree = ast.parse(source.read_text(), str(source))
        copies = {
            id(k.value)
            for k in ast.walk(tree)
            if isinstance(k, ast.keyword) and isinstance(k.value, ast.Attribute) and k.value.attr == k.arg
        }
        for node in ast.walk(tree):
            if id(node) in copies:
                continue
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                attributes.add(node.attr)
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                    keys.add(node.slice.value)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                keys.add(node.args[0].value)
    return attributes, keys


def read_and_unread(roots: dict[str, type[BaseModel]] = ROOTS) -> tuple[set[str], list[str]]:
    """Paths of the fields some code reads, and of those none does (in walking order)."""
    attributes, keys = _reads()
    read: set[str] = set()
    unread = []
    for root, model in roots.items():
        for path, attribute, key, parent in fields(model, root, None):
            reached = parent is None or parent in read
            if reached and (attribute in attributes or key in keys):
                read.add(path)
            else:
                unread.append(path)
    return read, unread


def test_every_field_is_read_by_code_outside_the_schema() -> None:
    unread = [path for path in read_and_unread()[1] if path not in ALLOWED]
    assert not unread, "accepted, but read by no code: refuse these or allow-list them with a reason\n" + (
        "\n".join(f"  {path}" for path in unread)
    )


def test_the_allow_list_holds_only_fields_that_exist_and_are_unread() -> None:
    """A stale entry would hide the next unread field at that path."""
    read, unread = read_and_unread()
    assert set(ALLOWED) <= set(unread), f"exists and is unread: {sorted(set(ALLOWED) - set(unread))}"
    assert not set(ALLOWED) & read


class _Section(api.Model):
    name: str = ""  # a name code reads everywhere, but not here: nothing reaches the section


class _Probe(api.Model):
    waits: api.Waits | None = None  # read by the stage planner, and so are its fields
    never_read_by_anything: int = 0
    orphan: _Section | None = None
    orphans: list[_Section] | None = None
    refused: _Section | None = Field(None, json_schema_extra=api.not_supported("a probe"))


def test_the_guard_finds_every_field_no_code_reads() -> None:
    read, unread = read_and_unread({"probe": _Probe})
    assert unread == [
        "probe.neverReadByAnything",
        "probe.orphan",
        "probe.orphan.name",
        "probe.orphans",
        "probe.orphans[].name",
    ]
    assert {"probe.waits", "probe.waits.min", "probe.waits.firstStageMax"} <= read
