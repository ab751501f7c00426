"""Risk from what a change touches (spec §2's decision matrix): docs and tests are zero, new
unwired code low, middleware, APIs and compatible migrations medium, and auth, payments, data
writes and breaking migrations high. The riskiest entry decides; `spec.risk` always wins."""

from __future__ import annotations

import pytest

from parachute.api import CHANGE_ANNOTATION, Risk
from parachute.plan.risk import risk_of_change
from parachute.reconcile import risk_from_change
from tests.unit.world import spec


@pytest.mark.parametrize(
    ("change", "risk"),
    [
        ("docs", Risk.zero),
        ("docs/setup.md, README.md", Risk.zero),
        ("tests/test_cart.py services/cart/cart_test.go", Risk.zero),
        ("unwired", Risk.low),
        ("docs unwired", Risk.low),
        ("middleware", Risk.medium),
        ("services/checkout/api/v2/orders.go", Risk.medium),
        ("db/migrations/0042_add_column.sql", Risk.medium),
        ("payments", Risk.high),
        ("services/auth/login.go", Risk.high),
        ("docs, services/billing/invoice.py", Risk.high),
        ("breaking-migration", Risk.high),
        ("data-writes\nmiddleware", Risk.high),
        ("tests/auth/test_login.py", Risk.zero),  # a test of the auth code is still a test
    ],
)
def test_the_riskiest_thing_a_change_touches_sets_its_risk(change: str, risk: Risk) -> None:
    judged = risk_of_change(change)
    assert judged is not None and judged[0] == risk


def test_the_reason_names_what_decided_and_what_was_not_understood() -> None:
    judged = risk_of_change("docs, payments, frobnicator")
    assert judged is not None
    assert (
        judged[1]
        == "high from the change (payments: auth, payments, data writes, breaking migrations); not classified: frobnicator"
    )
    assert risk_of_change("frobnicator src/cart/view.go") is None


def body(annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"annotations": annotations or {}}}


def test_an_explicit_risk_wins_over_the_change() -> None:
    chosen, reason = risk_from_change(spec(risk="low"), body({CHANGE_ANNOTATION: "payments"}), body())
    assert chosen.risk == Risk.low and reason == ""


def test_the_deployment_s_declaration_is_read_before_the_rollout_s() -> None:
    chosen, reason = risk_from_change(
        spec(), body({CHANGE_ANNOTATION: "docs"}), body({CHANGE_ANNOTATION: "auth"})
    )
    assert chosen.risk == Risk.high and "auth" in reason
    chosen, reason = risk_from_change(spec(), body({CHANGE_ANNOTATION: "docs"}), body())
    assert chosen.risk == Risk.zero


def test_a_change_that_names_nothing_known_stays_medium_and_says_so() -> None:
    chosen, reason = risk_from_change(spec(), body({CHANGE_ANNOTATION: "frobnicator"}), body())
    assert chosen.risk is None and "names nothing known" in reason
