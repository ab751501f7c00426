"""A flag on for a percentage of users: the flagd document Parachute writes, judged by flagd's own
evaluator (OpenFeature's flagd core, which the flagd provider runs in-process), never by ours.

The document must load as flagd flags, give the on variant to the stated share of users (and
keep it for them as the share grows), keep the user's other flags and the users their own rule
picks, read back as that percentage, and go back to off (or on) for everyone."""

from __future__ import annotations

import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from parachute.plan import flags, fractional
from testbed.demoapp import Behaviour, FlagdFlag, Version
from testbed.loadgen import LoadGenerator

FLAG = "new-checkout"
USERS = [f"user-{i}" for i in range(20_000)]
BETA = {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", None]}  # picks some users


def definition(**fields: Any) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off", **fields}


def document(**fields: Any) -> dict[str, Any]:
    return {"flags": {FLAG: definition(**fields)}}


def evaluator(doc: dict[str, Any]) -> FlagdCore:
    """flagd's evaluator with `doc` loaded: it raises on anything that is not flagd flags."""
    core = FlagdCore()
    core.set_flags(json.dumps(doc))
    return core


def share_on(doc: dict[str, Any], users: list[str] = USERS, flag: str = FLAG) -> float:
    core = evaluator(doc)
    on = sum(core.resolve_boolean_value(flag, False, EvaluationContext(targeting_key=u)).value for u in users)
    return 100 * on / len(users)


def on_users(doc: dict[str, Any], users: list[str]) -> set[str]:
    core = evaluator(doc)
    return {
        u for u in users if core.resolve_boolean_value(FLAG, False, EvaluationContext(targeting_key=u)).value
    }


def at(doc: dict[str, Any], exposure: str) -> dict[str, Any]:
    written, _ = flags.flagd_set(doc, [FLAG], exposure)
    return written


# ---------------------------------------------------------------------------- what is written


@pytest.mark.parametrize("percent", [1, 10, 50, 90, 99])
def test_the_on_variant_goes_to_the_stated_share_of_users(percent: int) -> None:
    written = at(document(), f"{percent}%")
    assert written["flags"][FLAG]["targeting"] == {"fractional": [["on", percent], ["off", 100 - percent]]}
    # 20,000 users: flagd's hash puts the share within half a point of what was asked.
    assert share_on(written) == pytest.approx(percent, abs=0.5)
    assert flags.flagd_state(written, [FLAG]) == f"{percent}%"


def test_a_user_who_has_the_new_path_keeps_it_as_the_share_grows() -> None:
    doc = document()
    exposed = [on_users(doc := at(doc, f"{p}%"), USERS[:5000]) for p in (1, 10, 25, 50, 75, 99)]
    for smaller, larger in itertools.pairwise(exposed):
        assert smaller <= larger


def test_an_evaluation_without_a_targeting_key_stays_off() -> None:
    written = at(document(defaultVariant="on"), "50%")
    assert written["flags"][FLAG]["defaultVariant"] == "off"
    assert evaluator(written).resolve_boolean_value(FLAG, True, None).value is False


def test_the_users_own_rule_keeps_deciding_for_the_users_it_picks() -> None:
    written = at(document(targeting=BETA), "10%")
    core = evaluator(written)
    for i in range(200):  # everyone at example.com, as their rule says
        context = EvaluationContext(targeting_key=f"u{i}", attributes={"email": f"u{i}@example.com"})
        assert core.resolve_boolean_value(FLAG, False, context).value is True
    others = [f"u{i}" for i in range(20_000)]  # the percentage for everyone else
    assert share_on(written, others) == pytest.approx(10, abs=0.5)
    # Moving the percentage moves only the percentage: the rule is kept once, not wrapped again.
    moved = at(written, "50%")
    assert moved["flags"][FLAG]["targeting"] == fractional.targeting(BETA, "on", "off", 50)
    assert flags.flagd_state(moved, [FLAG]) == "50%"


def test_a_percentage_of_the_users_own_is_replaced() -> None:
    theirs = {"fractional": [{"var": "email"}, ["on", 30], ["off", 70]]}
    written = at(document(targeting=theirs), "10%")
    assert written["flags"][FLAG]["targeting"] == {"fractional": [["on", 10], ["off", 90]]}


@pytest.mark.parametrize("exposure", ["off", "on"])
def test_off_and_on_are_for_everyone_again(exposure: str) -> None:
    split = at(document(targeting=BETA), "50%")
    written = at(split, exposure)
    assert "targeting" not in written["flags"][FLAG]
    assert share_on(written, USERS[:2000]) == (100 if exposure == "on" else 0)
    assert flags.flagd_state(written, [FLAG]) == exposure


def test_what_was_changed_is_said() -> None:
    _, changed = flags.flagd_set(
        document(targeting=BETA, defaultVariant="on", state="DISABLED"), [FLAG], "10%"
    )
    assert changed == [
        "new-checkout: on for 10% of users (fractional targeting)",
        "new-checkout: its targeting kept for the users it picks",
        "new-checkout: defaultVariant on -> off",
        "new-checkout: state ENABLED",
    ]
    again, nothing = flags.flagd_set(at(document(), "10%"), [FLAG], "10%")
    assert nothing == [] and flags.flagd_state(again, [FLAG]) == "10%"


@pytest.mark.parametrize(
    ("variants", "why"),
    [
        pytest.param({"on": True, "blue": "x"}, "without a false or off variant", id="no-off"),
        pytest.param({"red": "r", "blue": "b"}, "without a true or on variant", id="no-on"),
    ],
)
def test_a_flag_that_cannot_be_split_is_left_as_it_is_and_says_why(
    variants: dict[str, Any], why: str
) -> None:
    doc = {
        "flags": {FLAG: {"state": "ENABLED", "variants": variants, "defaultVariant": next(iter(variants))}}
    }
    written, changed = flags.flagd_set(doc, [FLAG], "10%")
    assert written == doc and changed == [
        f"new-checkout: no {'false or off' if 'off' in why else 'true or on'} variant, not split"
    ]
    problems = flags.flagd_cannot_switch_on(doc, [FLAG]) + flags.flagd_cannot_split(doc, [FLAG])
    assert why in problems


@pytest.mark.parametrize(
    "targeting",
    [
        pytest.param({"fractional": [["on", 10], ["off", 80]]}, id="weights-not-100"),
        pytest.param({"fractional": [["off", 90], ["on", 10]]}, id="off-first"),
        pytest.param({"fractional": [{"var": "email"}, ["on", 10], ["off", 90]]}, id="bucketed-otherwise"),
        pytest.param(BETA, id="a-rule-alone"),
    ],
)
def test_targeting_that_is_not_a_percentage_as_written_reads_as_neither(targeting: dict[str, Any]) -> None:
    assert flags.flagd_state(document(targeting=targeting), [FLAG]) is None


def test_flags_at_different_percentages_read_as_no_one_state() -> None:
    doc = {"flags": {FLAG: definition(), "other": definition()}}
    doc = flags.flagd_set(doc, [FLAG], "10%")[0]
    doc = flags.flagd_set(doc, ["other"], "50%")[0]
    assert flags.flagd_state(doc, [FLAG, "other"]) is None
    assert flags.flagd_state(flags.flagd_set(doc, [FLAG, "other"], "50%")[0], [FLAG, "other"]) == "50%"


# ---------------------------------------------------------------------------- invariants

VARIANT_VALUES = st.one_of(st.booleans(), st.text(max_size=5), st.integers(-5, 5))
OTHER_FLAG = st.fixed_dictionaries(
    {
        "state": st.sampled_from(["ENABLED", "DISABLED"]),
        "variants": st.dictionaries(
            st.sampled_from(["a", "b", "c", "on", "off"]), VARIANT_VALUES, min_size=1
        ),
    }
).map(lambda d: {**d, "defaultVariant": sorted(d["variants"])[0]})
USER_RULES = st.sampled_from(
    [
        None,
        BETA,
        {"if": [{"in": [{"var": "country"}, ["NZ", "AU"]]}, "off", None]},
        {"fractional": [["on", 30], ["off", 70]]},
        fractional.targeting(BETA, "on", "off", 20),
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    others=st.dictionaries(st.text("xyz-", min_size=1, max_size=6), OTHER_FLAG, max_size=4),
    rule=USER_RULES,
    default=st.sampled_from(["on", "off"]),
    state=st.sampled_from(["ENABLED", "DISABLED"]),
    percent=st.integers(1, 99),
)
def test_any_percentage_of_any_flag_is_valid_flagd_leaves_the_rest_and_reads_back(
    others: dict[str, Any], rule: dict[str, Any] | None, default: str, state: str, percent: int
) -> None:
    ours = definition(defaultVariant=default, state=state, **({"targeting": rule} if rule else {}))
    doc = {"flags": {**others, FLAG: ours}, "metadata": {"team": "checkout"}}
    before = copy.deepcopy(doc)
    written, _ = flags.flagd_set(doc, [FLAG], f"{percent}%")
    assert doc == before  # the input is not touched
    core = evaluator(written)  # flagd's own parser accepts it
    for user in USERS[:20]:  # and evaluates it, for a user with or without the rule's attributes
        core.resolve_boolean_value(FLAG, False, EvaluationContext(targeting_key=user))
        core.resolve_boolean_value(FLAG, False, EvaluationContext(user, {"email": "a@example.com"}))
    # The user's other flags and the document's metadata are as they were.
    assert {k: v for k, v in written["flags"].items() if k != FLAG} == others
    assert written["metadata"] == {"team": "checkout"}
    found = fractional.split_of(written["flags"][FLAG]["targeting"])
    assert found is not None
    weights = found[1]
    assert [w[0] for w in weights] == ["on", "off"] and sum(w[1] for w in weights) == 100
    assert flags.flagd_state(written, [FLAG]) == f"{percent}%"
    off, _ = flags.flagd_off(written, [FLAG])
    assert flags.flagd_state(off, [FLAG]) == "off" and "targeting" not in off["flags"][FLAG]


# ---------------------------------------------------------------------------- the demo app


def test_the_demo_app_serves_each_user_the_path_of_the_variant_flagd_gives_them(tmp_path: Path) -> None:
    flag_file = tmp_path / "flags.json"
    doc = at(document(), "30%")
    flag_file.write_text(json.dumps(doc))
    version = Version("new", labelled=False, every_code=False).start()
    version.follow_flag(FlagdFlag(flag_file, FLAG), Behaviour(error_rate=1.0, latency_ms=0))
    version.set_behaviour(Behaviour(latency_ms=0))
    try:
        users = USERS[:3000]
        codes = {user: version.serve_one(user) for user in users}
        on = on_users(doc, users)
        assert {u for u, code in codes.items() if code == 500} == on  # the bad path, for them alone
        served = {
            s.labels["variant"]: s.value
            for metric in version.registry.collect()
            for s in metric.samples
            if s.name == "feature_flag_evaluations_total"
        }
        assert served == {"on": len(on), "off": len(users) - len(on)}
        assert 100 * len(on) / len(users) == pytest.approx(30, abs=2)
    finally:
        version.stop()


def test_the_load_generators_requests_carry_users_the_app_buckets(tmp_path: Path) -> None:
    flag_file = tmp_path / "flags.json"
    flag_file.write_text(json.dumps(at(document(), "50%")))
    version = Version("new", labelled=False, every_code=False).start()
    version.follow_flag(FlagdFlag(flag_file, FLAG), Behaviour(latency_ms=0))
    version.set_behaviour(Behaviour(latency_ms=0))
    load = LoadGenerator(rate=400, duration=1.5, picker=lambda: version.url, users=1_000_000).start()
    try:
        load._thread.join(timeout=10)
        served = {}
        for _ in range(50):  # the last requests in flight
            served = {
                s.labels["variant"]: s.value
                for metric in version.registry.collect()
                for s in metric.samples
                if s.name == "feature_flag_evaluations_total"
            }
            if sum(served.values()) >= load.sent:
                break
            time.sleep(0.1)
        assert sum(served.values()) == load.sent > 400
        assert 100 * served["on"] / load.sent == pytest.approx(50, abs=10)  # users, not one key
    finally:
        load.stop()
        version.stop()
