"""The blue/green switch on the API server's objects (an in-memory client): the active Service's
selector pinned to one side in one guarded write and read back, the preview Service made, a
foreign preview refused, and the user's selector given back when the Rollout is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parachute import switch
from parachute.api import RolloutSpec
from parachute.plan.model import TrafficIntent
from parachute.routing.fake import FakeClient
from parachute.routing.objects import Ref
from parachute.routing.router import RoutingSetupError

ROLLOUT = {"metadata": {"name": "checkout", "namespace": "shop", "uid": "u-1"}}
SPEC = RolloutSpec.model_validate(
    {"targetRef": {"name": "checkout"}, "strategy": "blueGreen", "blueGreen": {"activeService": "checkout"}}
)
ACTIVE = Ref("v1", "Service", "shop", "checkout")
PREVIEW = Ref("v1", "Service", "shop", "checkout-preview")


def service(name: str, selector: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop", **meta},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]}}  # fmt: skip


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize(
    ("selector", "side"),
    [
        pytest.param({"app": "checkout"}, None, id="the-user's-selector-selects-both"),
        pytest.param({"app": "checkout", "pod-template-hash": "abc"}, 0, id="pinned-to-stable"),
        pytest.param({"app": "checkout", "parachute.dev/canary": "true"}, 100, id="switched-to-the-copy"),
    ],
)
def test_the_side_is_read_from_the_selector(selector: dict[str, str], side: int | None) -> None:
    client = FakeClient([service("checkout", selector)])
    assert run(switch.observe(ROLLOUT, SPEC, client)).applied.weight == side


def test_the_switch_is_one_write_and_reads_back_and_the_preview_selects_the_copy() -> None:
    client = FakeClient([service("checkout", {"app": "checkout"})])
    run(switch.act(ROLLOUT, SPEC, TrafficIntent(share=0, stable="abc"), client))
    assert client.look(ACTIVE)["spec"]["selector"] == {"app": "checkout", "pod-template-hash": "abc"}
    assert client.look(PREVIEW)["spec"]["selector"] == {"app": "checkout", "parachute.dev/canary": "true"}
    steered = run(switch.act(ROLLOUT, SPEC, TrafficIntent(share=100, stable="abc"), client))
    assert client.look(ACTIVE)["spec"]["selector"] == {"app": "checkout", "parachute.dev/canary": "true"}
    assert steered.changed == ["Service shop/checkout switched to the new copy"]
    assert run(switch.observe(ROLLOUT, SPEC, client)).applied.weight == 100
    # Not ready yet (held at 0): stays on stable.
    run(switch.act(ROLLOUT, SPEC, TrafficIntent(share=100, open=False, stable="abc"), client))
    assert run(switch.observe(ROLLOUT, SPEC, client)).applied.weight == 0


def test_a_preview_service_that_is_not_the_rollouts_is_refused() -> None:
    client = FakeClient([service("checkout", {"app": "checkout"}), service("checkout-preview", {"app": "x"})])
    with pytest.raises(RoutingSetupError, match="is not this Rollout's"):
        run(switch.observe(ROLLOUT, SPEC, client))


def test_a_missing_active_service_is_a_setup_error_naming_the_field() -> None:
    with pytest.raises(RoutingSetupError) as caught:
        run(switch.observe(ROLLOUT, SPEC, FakeClient()))
    assert caught.value.field == "spec.blueGreen.activeService"


def test_the_user_selector_is_given_back_when_the_rollout_is_gone() -> None:
    client = FakeClient([service("checkout", {"app": "checkout"}, annotations={"keep": "me"})])
    run(switch.act(ROLLOUT, SPEC, TrafficIntent(share=0, stable="abc"), client))
    assert not run(switch.give_back(client, "shop", "checkout", "another"))
    assert run(switch.give_back(client, "shop", "checkout", "checkout"))
    given = client.look(ACTIVE)
    assert given["spec"]["selector"] == {"app": "checkout"}
    assert given["metadata"]["annotations"] == {"keep": "me"}
