import math

import pytest

from neuromas.stats import Accuracy, mcnemar_p, paired_difference


def test_accuracy_carries_its_standard_error_and_count():
    acc = Accuracy.of([1, 1, 0, 0, 0, 0, 0, 0])
    assert acc.mean == 0.25 and acc.n == 8
    assert acc.se == pytest.approx(math.sqrt(0.25 * 0.75 / 8))
    assert str(acc) == "0.250 ± 0.153 (8 questions)"


def test_mcnemar_matches_a_hand_computed_binomial_tail():
    # 1 lost, 6 gained: 2 * P(X <= 1 | n=7, 1/2) = 2 * 8 / 128
    assert mcnemar_p(1, 6) == pytest.approx(16 / 128)
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0


def test_paired_difference_counts_questions_gained_and_lost():
    a = Accuracy.of([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    b = Accuracy.of([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    diff = paired_difference(a, b)
    assert diff.difference == pytest.approx(0.2) and (diff.only_a, diff.only_b) == (1, 3)
    d = [0, 1, 1, 1, -1, 0, 0, 0, 0, 0]
    assert diff.se == pytest.approx(math.sqrt(sum((x - 0.2) ** 2 for x in d) / 9 / 10))
    assert diff.ci[0] <= 0.2 <= diff.ci[1] and diff.ci[0] < diff.ci[1]


def test_paired_difference_of_identical_systems_is_zero():
    a = Accuracy.of([1, 0, 1, 1])
    diff = paired_difference(a, a)
    assert diff.difference == 0 and diff.se == 0 and diff.ci == (0, 0) and diff.mcnemar_p == 1.0


def test_paired_difference_needs_the_same_questions():
    with pytest.raises(ValueError):
        paired_difference(Accuracy.of([1, 0]), Accuracy.of([1]))


def test_over_seeds_t_test_against_tabulated_values():
    from neuromas.stats import OverSeeds, t_quantile, t_two_sided_p

    assert t_two_sided_p(2.0, 10) == pytest.approx(0.07339, abs=1e-5)  # tables / scipy.stats.t.sf(2, 10) * 2
    assert t_two_sided_p(0.5, 1) == pytest.approx(0.70483, abs=1e-5)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4) and t_quantile(0.80, 2) == pytest.approx(1.0607,
                                                                                                          abs=1e-4)
    assert t_quantile(0.975, 10_000) + t_quantile(0.80, 10_000) == pytest.approx(2.80, abs=0.01)  # the 2.8 s.e. rule
    over = OverSeeds((0.10, 0.05, 0.16))
    assert over.mean == pytest.approx(0.10333, abs=1e-5) and over.se == pytest.approx(0.03180, abs=1e-5)
    assert over.p == pytest.approx(t_two_sided_p(0.10333 / 0.03180, 2), abs=1e-3) and 0.05 < over.p < 0.10
    assert over.detectable == pytest.approx((4.3027 + 1.0607) * 0.03180, abs=1e-3)
    assert "over 3 seeds (+0.100, +0.050, +0.160)" in str(over) and "1 seed" in str(OverSeeds((0.2,)))
