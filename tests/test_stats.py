"""Known answers of the paired statistics (:mod:`mmvi.report.stats`) on simulated data.

The simulation: ``y[s, i] = Δ·[arm A] + u_i + v_i^arm + w_s^arm + e_si`` with item effects ``u``
shared by both arms (paired), item × arm effects ``v``, seed effects ``w`` per arm and seed × item
noise ``e``; the true difference is Δ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from mmvi.report.stats import (
    ITEMS_ONLY,
    TWO_LEVEL,
    WELCH,
    bootstrap_draws,
    correct,
    paired_difference,
    seed_level,
    welch_difference,
)

DRAWS = 200


def simulate(rng, k_a, k_b, n, delta, item=2.0, item_arm=0.5, seed=0.2, noise=1.0):
    u = rng.normal(0, item, n)
    a = (
        delta
        + u
        + rng.normal(0, item_arm, n)
        + rng.normal(0, seed, (k_a, 1))
        + rng.normal(0, noise, (k_a, n))
    )
    b = u + rng.normal(0, item_arm, n) + rng.normal(0, seed, (k_b, 1)) + rng.normal(0, noise, (k_b, n))
    return a, b


@pytest.mark.parametrize(
    ("k_a", "k_b", "n", "seed_sd"),
    [(3, 3, 400, 0.2), (2, 2, 300, 0.25), (3, 2, 600, 0.0)],
    ids=["3x3 seeds", "2x2 seeds", "no seed effect"],
)
def test_interval_covers_the_true_difference_95_percent_of_the_time(k_a, k_b, n, seed_sd):
    rng = np.random.default_rng(7)
    delta = 0.3
    hits = []
    for r in range(DRAWS):
        res = paired_difference(*simulate(rng, k_a, k_b, n, delta, seed=seed_sd), n_boot=800, seed=r)
        hits.append(res.ci_low <= delta <= res.ci_high)
        assert res.n_a == k_a and res.n_b == k_b and res.n_items == n and res.method == TWO_LEVEL
    coverage = float(np.mean(hits))
    print(f"coverage {k_a}x{k_b} seeds, {n} items: {coverage:.3f}")
    assert 0.90 <= coverage <= 0.99, coverage


def test_p_values_are_uniform_under_no_difference():
    rng = np.random.default_rng(11)
    p = np.array(
        [paired_difference(*simulate(rng, 3, 3, 400, 0.0), n_boot=800, seed=r).p for r in range(DRAWS)]
    )
    # rejections at 0.05: within the binomial 99.9 % range of Binomial(200, 0.05)
    low, high = st.binom.ppf([0.0005, 0.9995], DRAWS, 0.05)
    assert low <= (p < 0.05).sum() <= high, (p < 0.05).sum()
    assert st.kstest(p, "uniform").pvalue > 0.001


def test_a_real_difference_is_found():
    rng = np.random.default_rng(3)
    res = paired_difference(*simulate(rng, 3, 3, 2000, 1.0, seed=0.05), n_boot=800)
    assert res.p < 1e-6 and res.ci_low > 0.5 and res.ci_high < 1.5


def test_one_seed_per_arm_is_scipy_paired_t_test():
    rng = np.random.default_rng(5)
    a, b = simulate(rng, 1, 1, 300, 0.2)
    res = paired_difference(a, b)
    ref = st.ttest_rel(a[0], b[0])
    ci = ref.confidence_interval(0.95)
    assert res.method == ITEMS_ONLY and res.n_items == 300
    assert res.p == pytest.approx(ref.pvalue) and (res.ci_low, res.ci_high) == pytest.approx(
        (ci.low, ci.high)
    )


def test_identical_seeds_give_the_item_level_test():
    """Seeds that agree exactly add no variance: the interval is the paired t over items'."""
    rng = np.random.default_rng(6)
    a, b = simulate(rng, 1, 1, 2000, 0.1)
    res = paired_difference(np.repeat(a, 3, axis=0), np.repeat(b, 3, axis=0), n_boot=4000)
    ref = st.ttest_rel(a[0], b[0])
    assert res.df == pytest.approx(1999)
    assert res.se == pytest.approx((a[0] - b[0]).std(ddof=1) / math.sqrt(2000), rel=0.05)
    assert res.p == pytest.approx(ref.pvalue, rel=0.15, abs=0.01)


def test_effect_size_is_d_z_of_the_per_item_differences():
    z = np.random.default_rng(1).normal(size=500)
    z = (z - z.mean()) / z.std(ddof=1)  # mean 0, sd 1 exactly
    b = np.random.default_rng(2).normal(size=(2, 500))
    a = b + 2.0 + 0.5 * z  # per-item differences: mean 2, sd 0.5
    res = paired_difference(a, b, n_boot=200)
    assert res.effect == pytest.approx(4.0) and res.effect_kind == "d_z (items)"
    assert res.diff == pytest.approx(2.0)


def test_seed_component_by_anova():
    """Seed offsets without noise: the component is their variance; pure noise: about 0."""
    offsets = np.array([0.0, 1.0, 3.0])
    x = offsets[:, None] + np.linspace(-1, 1, 50)[None, :]
    assert seed_level(x).variance == pytest.approx(offsets.var(ddof=1))
    noise = np.random.default_rng(0).normal(size=(3, 20000))
    assert seed_level(noise).variance < 1e-3
    assert seed_level(noise[:1]).variance == 0.0


def test_bootstrap_is_reproducible_and_antisymmetric():
    rng = np.random.default_rng(9)
    a, b = simulate(rng, 3, 2, 200, 0.5)
    np.testing.assert_array_equal(bootstrap_draws(a, b, 500, seed=1), bootstrap_draws(a, b, 500, seed=1))
    ab, ba = paired_difference(a, b), paired_difference(b, a)
    assert ba.diff == pytest.approx(-ab.diff) and ba.p == pytest.approx(ab.p, rel=0.05)
    assert abs(np.mean(bootstrap_draws(a, b, 2000)) - ab.diff) < 5 * ab.se / math.sqrt(2000)


def test_welch_over_seeds_is_scipy():
    a, b = np.array([10.0, 11.0, 12.5]), np.array([14.0, 13.0, 15.5])
    res = welch_difference(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert res.method == WELCH and res.n_items == 0 and res.diff == pytest.approx(-3.0)
    assert res.p == pytest.approx(ref.pvalue) and (res.ci_low, res.ci_high) == pytest.approx(
        (ci.low, ci.high)
    )
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert res.effect == pytest.approx(-3.0 / pooled) and res.effect_kind == "d (seeds)"
    one = welch_difference(a[:1], b)
    assert math.isnan(one.p) and "needs ≥ 2 seeds per arm, has 1 and 3" in one.method


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    # Holm: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06
    adj, keep = correct(p, "holm")
    np.testing.assert_allclose(adj[:4], [0.03, 0.06, 0.06, 0.02])
    assert list(keep) == [True, False, False, True, False] and math.isnan(adj[4])
    # BH: p·m/rank = 0.02, 0.02, 0.04, 0.04 (ranks 1..4), running minimum from the top
    adj, keep = correct(p, "fdr_bh")
    np.testing.assert_allclose(adj[:4], [0.02, 0.04, 0.04, 0.02])
    assert list(keep) == [True, True, True, True, False]
    with pytest.raises(ValueError, match="holm, fdr_bh"):
        correct(p, "bonferroni")


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same ≥ 2 items"):
        paired_difference(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.array([[1.0, np.nan]]), np.zeros((1, 2)))
