"""How sure a figure is: counts, 95% intervals and exact tests against chance for the evidence's small samples.

The evidence ranks a handful of pairs (5 to 75), so a bare percentage says more than it knows: 4 of 5 pairs
ranked right is 80%, and a coin does as well 19% of the time. Every accuracy the lab shows therefore carries
its count and a Wilson 95% interval (:class:`Proportion`), and a reading that claims success is decided by a
one-sided exact binomial test against chance (:func:`binomial_tail`) at :data:`ALPHA`: on 5 pairs only 5/5
beats chance at the 5% level, on 6 pairs only 6/6. A mean (a margin) carries a Student-t 95% interval
(:func:`mean_interval`). Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The level at which a reading of success is decided (one-sided).
ALPHA = 0.05
#: The normal quantile of a two-sided 95% interval.
Z95 = 1.959964
#: Student-t's 97.5% quantile for 1-30 degrees of freedom (a two-sided 95% interval of a mean).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
#: The most pairs :func:`pairs_to_decide` looks at before it says no number would do.
MAX_PAIRS_TO_DECIDE = 10_000


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``k`` successes in ``n`` trials (None when ``n`` is 0).

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0/n and n/n: 5/5 gives 57-100%.
    """
    if n <= 0:
        return None
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if k <= 0 else max(0.0, centre - half)
    high = 1.0 if k >= n else min(1.0, centre + half)  # exact at the ends, where rounding would fall short
    return low, high


def binomial_tail(k: int, n: int, p: float = 0.5) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of ``k`` successes against chance ``p``."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def beats_chance(k: int, n: int, alpha: float = ALPHA) -> bool:
    """Whether ``k`` of ``n`` is more than a coin would give, at level ``alpha`` (one-sided exact test)."""
    return n > 0 and binomial_tail(k, n) < alpha


def pairs_to_decide(k: int, n: int, alpha: float = ALPHA) -> int | None:
    """How many pairs, ranked right at the rate ``k / n``, would beat chance at ``alpha``.

    ``n`` itself when they already do; None when the rate is at or below a coin's (no number of pairs would
    show it beats chance) or more than :data:`MAX_PAIRS_TO_DECIDE` would be needed.
    """
    if n <= 0 or 2 * k <= n:
        return None
    for m in range(n, MAX_PAIRS_TO_DECIDE + 1):
        if beats_chance(math.floor(k * m / n + 1e-9), m, alpha):
            return m
    return None


def t_quantile(df: int) -> float:
    """Student-t's 97.5% quantile (exact to three decimals up to 30 degrees of freedom, a close expansion past)."""
    if df < 1:
        return math.inf
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df * df)


def median(values: list[float]) -> float:
    """The median of the finite ``values`` (NaN when there are none)."""
    ordered = sorted(v for v in values if v is not None and math.isfinite(v))
    if not ordered:
        return float("nan")
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def mean_interval(values: list[float]) -> tuple[float, float] | None:
    """A Student-t 95% interval of the mean of ``values`` (None for fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_quantile(n - 1) * math.sqrt(variance / n)
    return mean - half, mean + half


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` pairs ranked right (or answers won, ...): the figure, its interval and its test."""

    k: int
    n: int

    @classmethod
    def of(cls, accuracy: Any, n: Any) -> Proportion | None:
        """From a reported accuracy and count (None when either is missing or the count is 0)."""
        try:
            accuracy, n = float(accuracy), int(n)
        except (TypeError, ValueError):
            return None
        if n <= 0 or not math.isfinite(accuracy):
            return None
        return cls(round(accuracy * n), n)

    @property
    def value(self) -> float:
        return self.k / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n) or (0.0, 1.0)

    @property
    def p_value(self) -> float:
        """One-sided: how often a coin ranks at least ``k`` of ``n`` right."""
        return binomial_tail(self.k, self.n)

    @property
    def beats_chance(self) -> bool:
        return beats_chance(self.k, self.n)

    @property
    def pairs_to_decide(self) -> int | None:
        return pairs_to_decide(self.k, self.n)

    def text(self) -> str:
        """'5/5 (57–100%)': the count and its 95% interval."""
        return f"{self.k}/{self.n} ({percent_range(self.interval)})"

    def chance_text(self) -> str:
        """How often a coin does as well, in words: 'p = 0.19: a coin does as well 19% of the time'."""
        p = self.p_value
        share = f"{p:.0%}" if p >= 0.01 else "under 1%"
        return f"p = {p:.2g}: a coin does as well {share} of the time"

    def undecided_text(self) -> str:
        """Why a better-than-even figure is not yet a finding, and how many pairs would decide it."""
        needed = self.pairs_to_decide
        more = (
            f"about {needed} pairs at this rate would decide it"
            if needed is not None
            else "no number of pairs at this rate would"
        )
        return f"too few pairs to tell from chance ({self.chance_text()}); {more}"


def paired_gain(after: list[float], before: list[float]) -> tuple[int, int, float]:
    """A sign test of ``after`` against ``before`` on the same items: (gains, losses, one-sided p-value).

    Ties are left out; the p-value is how often a coin gives at least as many gains among the rest.
    """
    gains = sum(a > b for a, b in zip(after, before))
    losses = sum(a < b for a, b in zip(after, before))
    return gains, losses, binomial_tail(gains, gains + losses)


def percent_range(interval: tuple[float, float]) -> str:
    """'57–100%' for an interval of shares."""
    low, high = interval
    return f"{low * 100:.0f}–{high:.0%}"


def interval_text(interval: Any, digits: int = 3) -> str:
    """'+0.120 to +0.300' for a reported interval of a mean; '' when there is none."""
    if not interval or len(interval) != 2 or any(v is None for v in interval):
        return ""
    low, high = interval
    return f"{low:+.{digits}f} to {high:+.{digits}f}"


def finite(value: Any) -> float | None:
    """A float that is a real number, or None (missing, NaN, infinite, or not a number at all)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
