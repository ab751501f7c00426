"""Argo CD's view of a Rollout: the chart's Lua health check, run by a real Lua runtime (lupa)
the way Argo CD runs it — the object as the global `obj`, a table {status, message} returned.

Test infrastructure only.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from lupa import LuaRuntime

SCRIPT = Path(__file__).resolve().parents[1] / "helm" / "parachute" / "files" / "argocd-health.lua"


@cache
def _script() -> str:
    return SCRIPT.read_text()


def _table(lua: LuaRuntime, value: Any) -> Any:
    # Lists become 1-based sequences and dicts tables, as Argo CD's JSON-to-Lua conversion does.
    if isinstance(value, dict):
        return lua.table_from({k: _table(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_table(lua, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD would show them for `obj`."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _table(lua, obj)
    result = lua.execute(_script())
    return str(result["status"]), str(result["message"] or "")
