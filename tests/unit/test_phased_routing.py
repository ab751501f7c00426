"""Each router writes a phased release's audience, over the in-memory client: a rule of
Parachute's own (Gateway API, Istio) or the canary Ingress's annotations (NGINX) that sends the
audience's requests to the canary while everyone else follows the weight; it is read back, and
counts only as Parachute writes it; the user's other rules are untouched; removing the audience
(a rollback, an abort, the last stage) takes the rule away, and so does giving the route back.
Where a request goes is read from the raw objects as the testbed's data plane reads them.
(tests/integration/test_router_contract.py runs the same on the real API server.)"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parachute import api
from parachute.plan.model import TrafficIntent
from parachute.routing import record, teardown, wiring
from parachute.routing.fake import FakeClient
from parachute.routing.objects import Body, Ref
from parachute.routing.router import Applied, AudienceMatch, Release, RoutingSetupError
from parachute.routing.weighted import cookie_in, cookie_pattern
from testbed.routes import BACKENDS, GATEWAY_V1, OTHER, SERVICE, Backend, audience_rule, reaches, service

T = TypeVar("T")
NS = "shop"
RELEASE = Release(NS, "checkout", "11111111-2222-3333-4444-555555555555", stable_hash="5d4f8c7b9")
EMPLOYEES = AudienceMatch("header", "x-employee", "true")
BETA = AudienceMatch("cookie", "beta", "yes")
ALWAYS = AudienceMatch("cookie", "beta", "always")  # NGINX's canary-by-cookie routes this value only
EMPLOYEE = {"x-employee": "true"}
ANYONE: dict[str, str] = {}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.param
    return found


def ready(backend: Backend) -> tuple[FakeClient, Any]:
    fake = FakeClient([service(NS), service(NS, OTHER), *backend.user_objects(NS, SERVICE)])
    router = backend.router(fake, RELEASE)
    run(router.ensure())
    run(router.set_weight(0))
    return fake, router


def goes(backend: Backend, fake: FakeClient, headers: dict[str, str]) -> dict[str, int]:
    return reaches(backend, fake.look, NS, headers)


def cookie_audience(backend: Backend) -> AudienceMatch:
    return ALWAYS if backend.id == "nginx" else BETA


def users_rules(backend: Backend, fake: FakeClient) -> Any:
    """What of the user's objects Parachute must leave alone: every rule but its audience rules,
    the managed rule's destinations aside (the weight's); for NGINX, the user's Ingress."""
    if backend.id == "nginx":
        return fake.look(Ref("networking.k8s.io/v1", "Ingress", NS, "shop"))["spec"]
    route = fake.look(backend.weighted(NS))
    key, destinations = ("rules", "backendRefs") if backend.id.startswith("gateway") else ("http", "route")
    rules = [r for r in route["spec"][key] if not audience_rule(r)]
    return [{k: v for k, v in r.items() if k != destinations} for r in rules], rules[0]


def test_an_audience_goes_to_the_canary_and_everyone_else_by_the_weight(backend: Backend) -> None:
    fake, router = ready(backend)
    assert run(router.set_weight(0, EMPLOYEES)) == Applied(0, wrote=True, audience=EMPLOYEES)
    assert run(router.read()) == Applied(0, audience=EMPLOYEES)
    assert goes(backend, fake, EMPLOYEE) == {"canary": 100}
    assert goes(backend, fake, ANYONE) == {"stable": 100}
    assert goes(backend, fake, {"x-employee": "false"}) == {"stable": 100}
    # The weight still holds for everyone else, beside the audience.
    run(router.set_weight(10, EMPLOYEES))
    assert goes(backend, fake, ANYONE) == {"stable": 90, "canary": 10}
    assert goes(backend, fake, EMPLOYEE) == {"canary": 100}


def test_a_cookie_audience_goes_to_the_canary(backend: Backend) -> None:
    fake, router = ready(backend)
    audience = cookie_audience(backend)
    assert run(router.set_weight(0, audience)).audience == audience
    assert run(router.read()) == Applied(0, audience=audience)
    assert goes(backend, fake, {"cookie": f"session=1; beta={audience.value}; theme=dark"}) == {"canary": 100}
    assert goes(backend, fake, {"cookie": f"beta={audience.value}"}) == {"canary": 100}
    assert goes(backend, fake, {"cookie": f"notbeta={audience.value}"}) == {"stable": 100}
    assert goes(backend, fake, {"cookie": "beta=no"}) == {"stable": 100}
    assert goes(backend, fake, ANYONE) == {"stable": 100}


def test_nothing_is_written_when_the_audience_holds(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(0, EMPLOYEES))
    writes = len(fake.writes)
    assert run(router.set_weight(0, EMPLOYEES)) == Applied(0, audience=EMPLOYEES)
    assert run(router.ensure()) == []
    assert len(fake.writes) == writes


def test_the_users_other_rules_are_untouched_through_every_audience(backend: Backend) -> None:
    fake, router = ready(backend)
    before = users_rules(backend, fake)
    for weight, audience in ((0, EMPLOYEES), (0, cookie_audience(backend)), (100, None), (0, None)):
        run(router.set_weight(weight, audience))
        assert users_rules(backend, fake) == before
    # The user's legacy rule still takes its own requests.
    if backend.id != "nginx":
        run(router.set_weight(0, EMPLOYEES))
        assert goes(backend, fake, {"x-legacy": "1"}) == {OTHER: 100}


def test_the_next_audience_replaces_the_last_in_one_write(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(0, EMPLOYEES))
    writes = len(fake.writes)
    audience = cookie_audience(backend)
    assert run(router.set_weight(0, audience)).audience == audience
    assert len(fake.writes) == writes + 1
    assert goes(backend, fake, EMPLOYEE) == {"stable": 100}
    assert goes(backend, fake, {"cookie": f"beta={audience.value}"}) == {"canary": 100}


def test_no_audience_removes_the_rule_and_reset_does_too(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(0, EMPLOYEES))
    assert run(router.set_weight(100)) == Applied(100, wrote=True)  # everyone: the rule goes with it
    assert goes(backend, fake, EMPLOYEE) == {"canary": 100} == goes(backend, fake, ANYONE)
    run(router.set_weight(0, EMPLOYEES))
    assert run(router.reset()) == Applied(0, wrote=True)
    assert goes(backend, fake, EMPLOYEE) == {"stable": 100}
    assert run(router.read()).audience is None


def test_a_hand_removed_audience_reads_back_as_none_and_is_written_again(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(0, EMPLOYEES))
    where = backend.weighted(NS)
    fake.edit(where, _remove_audience(backend))
    assert run(router.read()) == Applied(0)
    assert run(router.set_weight(0, EMPLOYEES)).audience == EMPLOYEES
    assert goes(backend, fake, EMPLOYEE) == {"canary": 100}


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.id != "nginx"], ids=lambda b: b.id)
def test_an_audience_rule_someone_changed_is_not_taken_for_the_audience(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(0, EMPLOYEES))
    where = backend.weighted(NS)
    fake.edit(where, _widen_audience(backend))  # now every request with the header, whatever its value
    seen = run(router.read())
    assert seen.weight is None and seen.unverified is not None
    assert "is not the audience rule Parachute writes" in seen.unverified
    assert run(router.set_weight(0, EMPLOYEES)).audience == EMPLOYEES
    assert goes(backend, fake, {"x-employee": "no"}) == {"stable": 100}


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.id != "nginx"], ids=lambda b: b.id)
def test_the_audience_rule_stands_just_before_the_users_rule_with_its_settings(backend: Backend) -> None:
    fake, router = ready(backend)
    run(router.set_weight(0, EMPLOYEES))
    key = "rules" if backend.id.startswith("gateway") else "http"
    rules = fake.look(backend.weighted(NS))["spec"][key]
    assert [r.get("name") for r in rules] == ["legacy", "parachute-audience-0.checkout", rules[2].get("name")]
    ours, users = rules[1], rules[2]
    if key == "rules":
        assert ours["filters"] == users["filters"]  # the request is treated as the user's rule treats it
        assert ours["matches"] == [{"path": {"type": "PathPrefix", "value": "/"},
                                    "headers": [{"type": "Exact", "name": "x-employee", "value": "true"}]}]  # fmt: skip
        assert [b["name"] for b in ours["backendRefs"]] == ["checkout-canary"]
        assert ours["backendRefs"][0]["filters"] == users["backendRefs"][0]["filters"]
    else:
        assert ours["retries"] == users["retries"]
        assert ours["match"] == [{"headers": {"x-employee": {"exact": "true"}}}]
        assert len(ours["route"]) == 1 and ours["route"][0]["weight"] == 100


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.id != "nginx"], ids=lambda b: b.id)
def test_giving_the_route_back_removes_the_audience_rule(backend: Backend) -> None:
    fake = FakeClient([service(NS), service(NS, OTHER), *backend.user_objects(NS, SERVICE)])
    original = fake.look(backend.weighted(NS))["spec"]
    router = backend.router(fake, RELEASE)
    saved = run(router.snapshot())
    run(router.ensure())
    run(router.set_weight(0, EMPLOYEES))
    changed = run(router.restore(saved))
    assert any("removed the audience" in c for c in changed)
    assert fake.look(backend.weighted(NS))["spec"] == original


def test_a_reconcile_writes_the_intents_audience_and_nothing_once_it_holds(backend: Backend) -> None:
    fake = FakeClient([service(NS), service(NS, OTHER), *backend.user_objects(NS, SERVICE)])
    users_route = Ref(backend.weighted(NS).api_version, backend.weighted(NS).kind, NS, backend.route_name)
    before = fake.look(users_route)["spec"]
    rollout = {"metadata": {"namespace": NS, "name": "checkout", "uid": RELEASE.rollout_uid}}
    spec = _phased_spec(backend)
    intent = TrafficIntent(share=0, audience=cookie_audience(backend), stable=RELEASE.stable_hash)
    for _ in range(3):  # the record, then what the backend needs, then the route
        seen = run(wiring.observe(rollout, spec, fake))
        run(wiring.act(rollout, spec, intent, seen, fake))
    seen = run(wiring.observe(rollout, spec, fake))
    assert seen is not None and seen.applied == Applied(0, audience=cookie_audience(backend))
    writes = len(fake.writes)
    steered = run(wiring.act(rollout, spec, intent, seen, fake))
    assert steered.changed == [] and len(fake.writes) == writes
    # Given back with the audience in place: the user's objects as they were, Parachute's gone.
    found = run(record.read(fake, NS, "checkout"))
    assert found is not None
    run(teardown.give_back(fake, found))
    assert fake.look(users_route)["spec"] == before
    made = {ref.kind for ref, body in fake.objects.items() if (body["metadata"].get("labels") or {}).get(
        "app.kubernetes.io/managed-by")}  # fmt: skip
    assert made == set()


def _phased_spec(backend: Backend) -> api.RolloutSpec:
    routing = {
        "gateway-north-south": {"gatewayAPI": {"httpRoute": "checkout", "service": SERVICE, "ruleName": "main"}},
        "gateway-gamma": {"gatewayAPI": {"httpRoute": "checkout", "service": SERVICE}},
        "istio": {"istio": {"virtualService": "checkout", "service": SERVICE}},
        "istio-subsets": {"istio": {"virtualService": "checkout", "service": SERVICE,
                                    "destinationRule": {"name": "checkout"}}},
        "nginx": {"nginx": {"ingress": "shop", "service": SERVICE}},
    }[backend.id]  # fmt: skip
    value = "always" if backend.id == "nginx" else "yes"
    audiences = [{"name": "beta", "cookie": {"name": "beta", "value": value}}, {"name": "everyone"}]
    return api.RolloutSpec.model_validate({"targetRef": {"name": "checkout"}, "strategy": "phased",
                                           "phased": {"audiences": audiences}, "trafficRouting": routing})  # fmt: skip


def test_nginx_writes_the_audience_into_the_canary_ingress() -> None:
    backend = next(b for b in BACKENDS if b.id == "nginx")
    fake, router = ready(backend)
    where = backend.weighted(NS)
    run(router.set_weight(0, EMPLOYEES))
    annotations = fake.look(where)["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/canary-by-"
    assert {k: v for k, v in annotations.items() if k.startswith(prefix)} == {
        f"{prefix}header": "x-employee", f"{prefix}header-value": "true"}  # fmt: skip
    run(router.set_weight(0, ALWAYS))
    annotations = fake.look(where)["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith(prefix)} == {f"{prefix}cookie": "beta"}
    # What Parachute does not write is not taken for an audience.
    fake.edit(where, lambda body: body["metadata"]["annotations"].update({f"{prefix}header-pattern": ".*"}))
    seen = run(router.read())
    assert seen.weight is None and "canary-by-header-pattern" in (seen.unverified or "")


def test_a_route_with_no_room_for_the_audience_rule_is_a_setup_error() -> None:
    backend = next(b for b in BACKENDS if b.id == "gateway-north-south")
    fake, router = ready(backend)
    where = backend.weighted(NS)
    legacy = fake.look(where)["spec"]["rules"][0]
    fake.edit(where, lambda body: body["spec"]["rules"].extend(
        {**copy.deepcopy(legacy), "name": f"extra-{i}"} for i in range(14)))  # fmt: skip
    writes = len(fake.writes)
    with pytest.raises(RoutingSetupError) as error:
        run(router.set_weight(0, EMPLOYEES))
    assert error.value.field == "spec.trafficRouting.gatewayAPI.httpRoute"
    assert "would hold 17 rules" in error.value.message
    assert len(fake.writes) == writes


@given(
    name=st.from_regex(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,20}", fullmatch=True),
    value=st.from_regex(r"[!#-+\--:<-\[\]-~]{1,20}", fullmatch=True),
)
def test_a_cookie_pattern_reads_back_as_the_cookie_it_was_made_from(name: str, value: str) -> None:
    pattern = cookie_pattern(name, value)
    assert cookie_in(pattern) == (name, value)


def _remove_audience(backend: Backend) -> Any:
    def change(body: Body) -> None:
        if backend.id == "nginx":
            annotations = body["metadata"]["annotations"]
            for key in [k for k in annotations if "canary-by-" in k]:
                del annotations[key]
            return
        key = "rules" if backend.id.startswith("gateway") else "http"
        body["spec"][key] = [r for r in body["spec"][key] if not audience_rule(r)]

    return change


def _widen_audience(backend: Backend) -> Any:
    def change(body: Body) -> None:
        if body["apiVersion"] == GATEWAY_V1:
            ours = next(r for r in body["spec"]["rules"] if audience_rule(r))
            ours["matches"][0]["headers"][0] = {
                "type": "RegularExpression",
                "name": "x-employee",
                "value": ".*",
            }
        else:
            ours = next(r for r in body["spec"]["http"] if audience_rule(r))
            ours["match"][0]["headers"]["x-employee"] = {"regex": ".*"}

    return change
