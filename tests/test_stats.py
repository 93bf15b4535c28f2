import numpy as np
import pytest

from l2lcli.stats import bootstrap_ratio


def test_a_constant_ratio_has_a_point_interval():
    b = np.random.default_rng(0).uniform(1, 2, 30)
    assert bootstrap_ratio(0.5 * b, b) == pytest.approx((0.5, 0.5, 0.5))


def test_the_interval_matches_the_normal_approximation_for_many_problems():
    """Ratio of means of a ~ N(1, 0.2^2) to b = 2 exactly: the ratio's standard error is 0.2 / sqrt(n) / 2."""
    rng = np.random.default_rng(1)
    n = 2000
    a, b = rng.normal(1.0, 0.2, n), np.full(n, 2.0)
    ratio, low, high = bootstrap_ratio(a, b, samples=4000)
    se = 0.2 / np.sqrt(n) / 2
    assert ratio == pytest.approx(a.mean() / 2)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.1) and low < ratio < high


def test_pairs_are_resampled_together():
    """Losses that move together across problems give a narrower interval than the same losses unpaired."""
    rng = np.random.default_rng(2)
    scale = rng.lognormal(0, 1, 50)
    a, b = 0.8 * scale * rng.uniform(0.95, 1.05, 50), scale
    paired = bootstrap_ratio(a, b)
    unpaired = bootstrap_ratio(a, rng.permutation(b))
    assert paired[2] - paired[1] < 0.5 * (unpaired[2] - unpaired[1])


def test_non_finite_losses_give_no_interval():
    assert all(np.isnan(bootstrap_ratio([1.0, np.inf], [1.0, 1.0])))
    with pytest.raises(ValueError):
        bootstrap_ratio([1.0], [1.0, 2.0])
