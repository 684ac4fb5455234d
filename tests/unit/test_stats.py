"""two_proportion_p_value and ratio (shared/specs/metrics.md, "Change and significance")."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency, norm

from framework.stats import ratio, two_proportion_p_value


def scipy_pooled_z_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided pooled two-proportion z-test, spelled out with scipy's normal distribution."""
    p1, p2, pooled = x1 / n1, x2 / n2, (x1 + x2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(2 * norm.sf(abs(z)))


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "expected"),
    [
        # pooled 50/80 = .625; se = sqrt(.625*.375*(2/40)) = .108253; z = .25/.108253 = 2.3094 -> p = .020921
        (30, 40, 20, 40, 0.020921335),
        # pooled 3/4; se = sqrt(.75*.25*1) = .433013; z = .5/.433013 = 1.1547 -> p = .248213
        (2, 2, 1, 2, 0.248213079),
        # equal proportions: z = 0 -> p = 1
        (5, 10, 50, 100, 1.0),
        # pooled 75/200 = .375; se = sqrt(.375*.625*(2/100)) = .068465; z = -.15/.068465 = -2.1909 -> p = .028460
        (30, 100, 45, 100, 0.028459737),
    ],
)
def test_hand_values(x1: int, n1: int, x2: int, n2: int, expected: float) -> None:
    assert two_proportion_p_value(x1, n1, x2, n2) == pytest.approx(expected, abs=1e-8)
    assert two_proportion_p_value(x1, n1, x2, n2) == pytest.approx(scipy_pooled_z_p(x1, n1, x2, n2), rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(1, 500), st.data())
def test_matches_scipy_chi_square_without_correction(n1: int, n2: int, data: st.DataObject) -> None:
    # the pooled z-test is the 2x2 chi-square test without continuity correction (chi2 = z^2)
    x1 = data.draw(st.integers(0, n1))
    x2 = data.draw(st.integers(0, n2))
    p = two_proportion_p_value(x1, n1, x2, n2)
    if x1 + x2 in (0, n1 + n2):
        assert p is None  # pooled variance zero
        return
    expected = chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False).pvalue
    assert p == pytest.approx(expected, rel=1e-7, abs=1e-12)
    assert 0.0 <= p <= 1.0
    assert two_proportion_p_value(x2, n2, x1, n1) == pytest.approx(p)  # symmetric


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [
        (0, 0, 5, 10),  # first conversion undefined
        (5, 10, 0, 0),  # second conversion undefined
        (0, 0, 0, 0),
        (12, 10, 5, 10),  # first conversion 1.2 > 1 (independent mode)
        (5, 10, 11, 10),  # second conversion > 1
        (10, 10, 20, 20),  # both 1: pooled variance 0
        (0, 10, 0, 20),  # both 0: pooled variance 0
        (-1, 10, 5, 10),  # negative count: conversion < 0
    ],
)
def test_none_cases(x1: int, n1: int, x2: int, n2: int) -> None:
    assert two_proportion_p_value(x1, n1, x2, n2) is None


def test_extreme_difference_is_tiny_but_valid() -> None:
    p = two_proportion_p_value(1000, 1000, 0, 1000)
    assert p is not None and 0.0 <= p < 1e-100


def test_ratio() -> None:
    assert ratio(3, 4) == 0.75
    assert ratio(6, 5) == 1.2
    assert ratio(0, 5) == 0.0
    assert ratio(0, 0) is None
    assert ratio(3, 0) is None


def test_wilson_lower_bound_hand_values() -> None:
    from framework.stats import wilson_lower_bound

    # 6 of 573 with z = 2.326: p = 0.010471; z^2 = 5.4119;
    # center = p + z^2/2n = 0.010471 + 0.004722 = 0.015193; margin = z*sqrt(p(1-p)/n + z^2/4n^2)
    # = 2.326 * sqrt(1.8086e-5 + 4.121e-6) = 2.326 * 0.0047124 = 0.010963; / (1 + z^2/n = 1.009445)
    assert wilson_lower_bound(6, 573) == pytest.approx((0.015193 - 0.010963) / 1.009445, abs=2e-5)
    assert wilson_lower_bound(0, 100) == 0.0 and wilson_lower_bound(0, 0) == 0.0
    # a large sample converges to the ratio: 2,000 of 100,000 -> just under 0.02
    assert 0.0189 < wilson_lower_bound(2000, 100_000) < 0.02


def test_exact_ratio_lower_bound_hand_values() -> None:
    from framework.stats import ratio_lower_bound

    # 1 of 10: P(X >= 1) = 1 - (1 - p)^10 = 0.01  ->  p = 1 - 0.99^(1/10)
    assert ratio_lower_bound(1, 10) == pytest.approx(1 - 0.99 ** 0.1, rel=1e-9)
    # 10 of 10: P(X >= 10) = p^10 = 0.01  ->  p = 0.01^(1/10)
    assert ratio_lower_bound(10, 10) == pytest.approx(0.01 ** 0.1, rel=1e-12)
    assert ratio_lower_bound(0, 50) == 0.0 and ratio_lower_bound(3, 0) == 0.0
    # 2 of 20: P(X >= 2) = 1 - q^20 - 20 p q^19 must equal 0.01 at the bound
    p = ratio_lower_bound(2, 20)
    assert 1 - (1 - p) ** 20 - 20 * p * (1 - p) ** 19 == pytest.approx(0.01, abs=1e-9)
    # large samples agree with the Wilson bound
    from framework.stats import wilson_lower_bound

    assert ratio_lower_bound(1500, 100_000) == pytest.approx(wilson_lower_bound(1500, 100_000), rel=0.01)
