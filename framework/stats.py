"""Small, dependency-free statistics used by the metric engine."""

from __future__ import annotations

import math


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided pooled two-proportion z-test of x1/n1 against x2/n2.

    Returns None when a proportion is undefined (n = 0) or outside [0, 1]
    (independent mode lets reached exceed entered), or when the pooled
    variance is zero (both proportions 0 or both 1).
    """
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    if not (0.0 <= p1 <= 1.0 and 0.0 <= p2 <= 1.0):
        return None
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if variance <= 0.0:
        return None
    z = (p1 - p2) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2.0))


def ratio(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, None when the denominator is 0."""
    return None if denominator == 0 else numerator / denominator


def _log_binomial_tail_below(x: int, n: int, p: float) -> float:
    """log P(X < x) for X ~ Binomial(n, p), 0 < p < 1, summed in log space."""
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q for k in range(x)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def ratio_lower_bound(successes: int, n: int, alpha: float = 0.01) -> float:
    """One-sided exact (Clopper-Pearson) lower confidence bound for successes/n at 1 - alpha.

    The p at which seeing ``successes`` or more has probability ``alpha``. Used to gate
    ratios measured on samples (orphan records among the records a run read, which for
    an incremental run can be a handful): the gate fails only when the data shows, at
    this confidence, that the true ratio is above its limit. 0 when there are no successes.
    For large counts (over 2,000 successes) the Wilson bound, which is then as exact, is used.
    """
    if n <= 0 or successes <= 0:
        return 0.0
    if successes >= n:
        return alpha ** (1.0 / n)
    if successes > 2000:
        return wilson_lower_bound(successes, n)
    low, high = 0.0, successes / n
    for _ in range(60):  # bisection: P(X >= successes | p) grows with p
        mid = (low + high) / 2
        if mid <= 0.0:
            low = mid
            continue
        tail_at_least = -math.expm1(_log_binomial_tail_below(successes, n, mid))
        if tail_at_least < alpha:
            low = mid
        else:
            high = mid
    return (low + high) / 2


Z_99_ONE_SIDED = 2.326347874  # the one-sided 99% normal quantile


def wilson_lower_bound(successes: int, n: int, z: float = Z_99_ONE_SIDED) -> float:
    """Lower end of the Wilson score interval for successes/n (0.0 when n = 0).

    Used to gate ratios measured on samples (e.g. orphan records among the records an
    incremental run read): the gate fails only when the data shows, at this confidence,
    that the true ratio is above its limit, so a quiet day's handful of records cannot trip
    it by chance while a large sample converges to the plain ratio.
    """
    if n <= 0 or successes <= 0:
        return 0.0
    p = successes / n
    z2 = z * z
    center = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (center - margin) / (1 + z2 / n))
