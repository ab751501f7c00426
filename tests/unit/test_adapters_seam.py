"""The seam the adapters talk through: the real client is `kube`'s functions, whose declared
calls the RBAC rules are made of, and the fake answers the same calls."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from parachute import kube
from parachute.kube_api import KubeApi, KubeClient
from parachute.kube_fake import FakeKube

METHODS = sorted(
    name for name in vars(KubeApi) if not name.startswith("_") and callable(getattr(KubeApi, name))
)


def test_every_call_through_the_seam_is_a_kube_function_that_declares_what_it_asks_of_the_api_server() -> (
    None
):
    assert METHODS
    assert set(METHODS) <= set(kube.CALLS)


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    found = inspect.signature(function).parameters.values()
    return [(p.name, p.kind, p.default) for p in found if p.name != "self"]


@pytest.mark.parametrize("name", METHODS)
def test_the_real_client_and_the_fake_take_what_the_protocol_and_kubes_function_take(name: str) -> None:
    wanted = parameters(getattr(kube, name))
    assert parameters(getattr(KubeApi, name)) == wanted
    assert parameters(getattr(KubeClient, name)) == wanted
    assert parameters(getattr(FakeKube, name)) == wanted


def test_the_real_client_calls_kubes_function_as_it_is_at_the_time_of_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """So a test (or a wrapper) that replaces a `kube` function replaces it for the adapters too."""

    async def read_config_map(namespace: str, name: str) -> dict[str, str]:
        return {"read": f"{namespace}/{name}"}

    monkeypatch.setattr(kube, "read_config_map", read_config_map)
    assert asyncio.run(KubeClient().read_config_map("shop", "settings")) == {"read": "shop/settings"}
