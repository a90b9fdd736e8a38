"""Counts, intervals and tests against chance, checked against values computed independently (exact binomial
sums by hand, published Student-t quantiles, Wilson intervals from their formula's textbook examples)."""

import math

import pytest

from alignlab.evidence.stats import (
    Proportion,
    beats_chance,
    binomial_tail,
    interval_text,
    mean_interval,
    median,
    paired_gain,
    pairs_to_decide,
    t_quantile,
    wilson_interval,
)


def test_a_coin_matches_four_of_five_nineteen_percent_of_the_time():
    assert binomial_tail(4, 5) == pytest.approx(6 / 32)  # C(5,4) + C(5,5) of 32
    assert binomial_tail(5, 5) == pytest.approx(1 / 32)
    assert binomial_tail(5, 6) == pytest.approx(7 / 64) and binomial_tail(6, 6) == pytest.approx(1 / 64)
    assert binomial_tail(0, 5) == 1.0 and binomial_tail(6, 5) == 0.0
    # on 5 pairs only 5/5 beats chance at the 5% level, on 6 pairs only 6/6, on 14 pairs 11/14 does
    assert [k for k in range(6) if beats_chance(k, 5)] == [5]
    assert [k for k in range(7) if beats_chance(k, 6)] == [6]
    assert [k for k in range(15) if beats_chance(k, 14)] == [11, 12, 13, 14]
    assert not beats_chance(0, 0)


def test_wilson_intervals_stay_inside_zero_and_one_and_contain_the_share():
    low, high = wilson_interval(5, 5)
    assert (round(low, 3), high) == (0.566, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(81, 263)  # Newcombe (1998)'s worked example: 0.2553 to 0.3662
    assert (low, high) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    for n in (1, 5, 14, 75):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
    assert wilson_interval(0, 0) is None


def test_how_many_pairs_at_the_same_rate_would_decide():
    assert pairs_to_decide(4, 5) == 13  # 10/13 (77%) is the first at 80% or less that beats a coin
    assert beats_chance(10, 13) and not beats_chance(9, 12)
    assert pairs_to_decide(4, 4) == 5 and pairs_to_decide(5, 5) == 5  # decided already: its own count
    assert pairs_to_decide(3, 6) is None and pairs_to_decide(1, 4) is None  # a coin's rate never decides


def test_student_t_quantiles_and_the_interval_of_a_mean():
    assert t_quantile(1) == 12.706 and t_quantile(13) == 2.160 and t_quantile(30) == 2.042
    assert t_quantile(40) == pytest.approx(2.021, abs=1e-3) and t_quantile(120) == pytest.approx(1.980, abs=1e-3)
    low, high = mean_interval([1.0, 2.0, 3.0, 4.0])  # mean 2.5, sd 1.291, t(3) 3.182
    assert (low + high) / 2 == pytest.approx(2.5) and high - 2.5 == pytest.approx(3.182 * 1.291 / 2, abs=1e-3)
    assert mean_interval([1.0]) is None and mean_interval([2.0, 2.0]) == (2.0, 2.0)
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0, float("nan")]) == 1.5 and math.isnan(median([]))


def test_a_paired_sign_test_leaves_ties_out():
    assert paired_gain([1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]) == (3, 0, pytest.approx(1 / 8))
    gains, losses, p = paired_gain([1.0] * 11 + [0.0], [0.5] * 11 + [0.5])
    assert (gains, losses) == (11, 1) and p == pytest.approx(binomial_tail(11, 12)) and p < 0.05


def test_a_proportion_says_its_count_interval_and_how_sure():
    four = Proportion.of(0.8, 5)
    assert (four.k, four.n, four.text()) == (4, 5, "4/5 (38–96%)")
    assert "p = 0.19: a coin does as well 19% of the time" in four.undecided_text()
    assert "about 13 pairs at this rate would decide it" in four.undecided_text()
    assert Proportion(14, 14).chance_text().endswith("under 1% of the time") and Proportion(14, 14).beats_chance
    assert Proportion.of(None, 5) is None and Proportion.of(0.5, 0) is None and Proportion.of(float("nan"), 4) is None
    assert interval_text([0.05, 0.15]) == "+0.050 to +0.150" and interval_text(None) == ""
