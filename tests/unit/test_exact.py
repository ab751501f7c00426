"""The comparison judge's exact tails (`plan.exact`) agree with scipy's, which the operator no
longer loads: Fisher's one-sided test and the least p-value of its totals are hypergeometric
tails, the test against a line a binomial one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binom, binomtest, fisher_exact, hypergeom

from parachute.plan.compare import Counts, p_above, p_worse
from parachute.plan.exact import binomial_at_least, hypergeom_at_least


def close(mine: float, theirs: float) -> bool:
    return mine == pytest.approx(theirs, rel=1e-8, abs=1e-300)


@st.composite
def draws(draw: st.DrawFn) -> tuple[int, int, int, int]:
    total = draw(st.integers(1, 5000))  # scipy has no answer for an empty urn (mine: certain)
    marked, drawn = draw(st.integers(0, total)), draw(st.integers(0, total))
    return draw(st.integers(-1, min(marked, drawn) + 1)), total, marked, drawn


@given(draws())
def test_a_hypergeometric_tail_is_scipys(case: tuple[int, int, int, int]) -> None:
    x, total, marked, drawn = case
    assert close(
        hypergeom_at_least(x, total, marked, drawn), float(hypergeom(total, marked, drawn).sf(x - 1))
    )


@given(st.integers(0, 2_000_000), st.floats(0.0, 1.0), st.floats(0.0, 2.0))
def test_a_binomial_tail_is_scipys_up_to_millions_of_requests(trials: int, p: float, where: float) -> None:
    x = min(trials, int(where * trials * p) + 1)
    assert close(binomial_at_least(x, trials, p), float(binom(trials, p).sf(x - 1)))


@given(st.integers(0, 400), st.integers(0, 400), st.integers(0, 400), st.integers(0, 400))
def test_fishers_one_sided_p_value_is_scipys(canary: int, stable: int, mine: int, theirs: int) -> None:
    mine, theirs = min(mine, canary), min(theirs, stable)
    expected = fisher_exact([[mine, canary - mine], [theirs, stable - theirs]], alternative="greater").pvalue
    assert close(p_worse(Counts(canary, mine), Counts(stable, theirs)), float(expected))


@given(st.integers(1, 100_000), st.integers(0, 100_000), st.floats(0.0, 1.0))
def test_the_test_against_a_line_is_scipys_exact_binomial_test(
    requests: int, errors: int, line: float
) -> None:
    errors = min(errors, requests)
    expected = binomtest(errors, requests, line, alternative="greater").pvalue
    assert close(p_above(Counts(requests, errors), line), float(expected))


def test_a_window_of_a_million_requests_keeps_its_tail() -> None:
    # Far past the line: a p-value near 1e-282, neither 0 nor an overflow.
    assert 0 < binomial_at_least(3408, 856_320, 0.002) < 1e-250
