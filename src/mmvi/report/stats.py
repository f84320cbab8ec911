"""Paired comparison of two configurations on the same test items, with seeds and items as sources of error.

Arm A (e.g. a MinVI configuration) and arm B (the baseline, e.g. NLL) are scored on the same test
items: ``a[s, i]`` is the value of one measure for item ``i`` in A's seed ``s`` (shape
``(k_A, n)``), ``b`` likewise ``(k_B, n)``, columns aligned on the item index. The quantity
compared is the difference of the means, ``D = mean(a) − mean(b)`` (the difference of the
``results.json`` figures averaged over seeds).

Method (:func:`paired_difference`):

* **Two-level bootstrap** (``n_boot`` draws, fixed seed, vectorised): each draw resamples the seeds
  of each arm with replacement (independently: seed ``s`` of A has nothing to do with seed ``s`` of
  B), then the items with replacement *jointly* for both arms (paired on the item index). Before
  resampling, each arm's seed rows are spread about their per-item mean by ``sqrt(k / (k − 1))``,
  the usual small-sample correction (a plain bootstrap of ``k`` seeds gives ``(k − 1)/k`` of the
  seed variance: half of it with two seeds). The bootstrap standard error ``se`` is the sd of the
  draws.
* **Interval and test.** With 2–3 seeds the seed level has 1–2 degrees of freedom, so a normal or
  percentile interval is too short. The interval is ``D ± t(0.975, ν) · se`` and the p-value that
  of ``T = D / se`` against Student's t with ``ν`` degrees of freedom (``scipy.stats.t``), ``ν`` the
  Welch–Satterthwaite degrees of freedom of the three variance components (seeds of A: ``k_A − 1``,
  seeds of B: ``k_B − 1``, items: ``n − 1``). The bootstrap's percentile interval is kept beside it.
  An arm with one seed has no seed variance to estimate: its seed level is left out and the
  result says so (``method``); with one seed per arm this is the paired t-test over items
  (``scipy.stats.ttest_rel`` on the per-item differences).
* **Effect size** ``d_z``: the mean of the per-item differences of the seed means divided by their
  standard deviation (Cohen's d_z for paired samples; item level only).

Without per-item records (:func:`welch_difference`): Welch's t-test over the seeds' run-level
figures (``scipy.stats.ttest_ind(equal_var=False)``), its interval, and Cohen's d with the pooled
sd over seeds as the effect size; marked ``Welch over seeds``.

:func:`correct` adjusts a family of p-values for multiple comparisons (Holm by default, or
Benjamini–Hochberg) with ``statsmodels.stats.multitest.multipletests``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as st

N_BOOT = 2000
SEED = 20240601
LEVEL = 0.95
CORRECTIONS = ("holm", "fdr_bh")
CORRECTION_NAMES = {"holm": "Holm", "fdr_bh": "Benjamini–Hochberg"}
TWO_LEVEL = "two-level bootstrap (seeds, items)"
ITEMS_ONLY = "paired t over items (1 seed per arm: seed variation not estimable)"
WELCH = "Welch over seeds (no per-item records)"
# blocks of bootstrap draws built at once (memory: block × n item weights)
BLOCK = 250


@dataclass(frozen=True)
class PairedResult:
    """One comparison A − B of a measure.

    ``diff``: mean(A) − mean(B) in the measure's unit; ``ci_low``/``ci_high``: its ``level``
    interval; ``p``: two-sided p-value of no difference; ``effect``: the effect size of kind
    ``effect_kind``; ``se``: standard error of ``diff``; ``df``: degrees of freedom of the t
    reference; ``boot_low``/``boot_high``: the bootstrap percentile interval (NaN without one);
    ``n_a``/``n_b``: seeds per arm; ``n_items``: paired items (0 without records).
    """

    diff: float
    ci_low: float
    ci_high: float
    p: float
    effect: float
    effect_kind: str
    se: float
    df: float
    n_a: int
    n_b: int
    n_items: int
    method: str
    mean_a: float
    mean_b: float
    boot_low: float = math.nan
    boot_high: float = math.nan
    level: float = LEVEL

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=4)
def _item_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each of ``n_boot`` resamples: ``(n_boot, n)`` float32.

    Cached: every comparison on the same number of items shares the draws (common random
    numbers); read-only.
    """
    rng = np.random.default_rng([seed, n])
    out = np.empty((n_boot, n), dtype=np.float32)
    for start in range(0, n_boot, BLOCK):
        stop = min(n_boot, start + BLOCK)
        idx = rng.integers(0, n, size=(stop - start, n))
        flat = idx + (np.arange(stop - start)[:, None] * n)
        out[start:stop] = np.bincount(flat.ravel(), minlength=(stop - start) * n).reshape(stop - start, n)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class SeedLevel:
    """One arm's seed level: ``k`` seeds, their mean's deviations ``offsets`` (spread so that their
    bootstrap variance is ``variance / k``) and ``variance`` = the seed variance component."""

    k: int
    offsets: np.ndarray
    variance: float


def seed_level(x: np.ndarray) -> SeedLevel:
    """The seed variance component of one arm ``x`` ``(k, n)`` by two-way ANOVA (seeds × items).

    The variance of the seeds' means ``S²`` also holds the seed × item noise averaged over ``n``
    items, ``MS_e / n`` (``MS_e`` = residual mean square), which the item level counts already;
    the seed component is ``max(0, S² − MS_e / n)`` (method of moments, truncated at 0). ``k = 1``:
    none (variance 0).
    """
    k, n = x.shape
    if k < 2:
        return SeedLevel(k, np.zeros(k), 0.0)
    rows = x.mean(axis=1)
    s2 = float(rows.var(ddof=1))
    resid = x - rows[:, None] - x.mean(axis=0, keepdims=True) + x.mean()
    ms_e = float((resid**2).sum()) / ((k - 1) * (n - 1))
    var = max(0.0, s2 - ms_e / n)
    dev = rows - rows.mean()
    scale = math.sqrt(k / (k - 1) * var / s2) if s2 > 0 else 0.0
    return SeedLevel(k, dev * scale, var)


def bootstrap_draws(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """``n_boot`` two-level bootstrap draws of mean(A) − mean(B), shape ``(n_boot,)``.

    ``a``: ``(k_A, n)``, ``b``: ``(k_B, n)``, columns the same items. Each draw resamples the items
    jointly for both arms (the per-item differences of the seed means, so items stay paired) and,
    independently within each arm, the seeds (their mean's deviations from :func:`seed_level`,
    which carry the seed variance component only, so the seed × item noise is not counted twice).
    Vectorised: item counts ``(n_boot, n)`` @ differences, seed counts @ deviations.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = a.shape[1]
    d = a.mean(axis=0) - b.mean(axis=0)
    counts = _item_counts(n, n_boot, seed)
    out = (counts @ d.astype(np.float32)).astype(np.float64) / n
    out += float(d.mean() - d.astype(np.float32).mean())  # float32 rounding of the centre
    rng = np.random.default_rng([seed, n, a.shape[0], b.shape[0]])
    for sign, arm in ((1.0, seed_level(a)), (-1.0, seed_level(b))):
        if arm.k > 1 and arm.variance > 0:
            draws = rng.multinomial(arm.k, np.full(arm.k, 1.0 / arm.k), size=n_boot)
            out += sign * (draws @ arm.offsets) / arm.k
    return out


def satterthwaite(variances: list[float], dfs: list[float]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of independent variance estimates."""
    num = sum(variances) ** 2
    den = sum(v * v / d for v, d in zip(variances, dfs) if d > 0 and v > 0)
    return num / den if den > 0 else math.inf


def paired_difference(
    a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL
) -> PairedResult:
    """A − B from per-item values of both arms on the same items (module docstring: the method).

    ``a``: ``(k_A, n)``, ``b``: ``(k_B, n)``: rows = seeds, columns = the same ``n`` items in the
    same order. Raises ``ValueError`` for other shapes, fewer than 2 items or non-finite values.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] < 2 or 0 in a.shape + b.shape:
        raise ValueError(f"need (seeds, items) arrays on the same ≥ 2 items, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-item values must be finite")
    k_a, k_b, n = a.shape[0], b.shape[0], a.shape[1]
    d = a.mean(axis=0) - b.mean(axis=0)  # per-item difference of the seed means
    diff = float(d.mean())
    sd_d = float(d.std(ddof=1))
    effect = diff / sd_d if sd_d > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    alpha = 1.0 - level
    if k_a == 1 and k_b == 1:
        if sd_d == 0:
            return _degenerate(diff, a, b, effect, n, ITEMS_ONLY, level)
        test = st.ttest_rel(a[0], b[0])
        ci = test.confidence_interval(level)
        return PairedResult(
            diff, float(ci.low), float(ci.high), float(test.pvalue), effect, "d_z (items)",
            sd_d / math.sqrt(n), float(test.df), 1, 1, n, ITEMS_ONLY, float(a.mean()), float(b.mean()),
            level=level,
        )  # fmt: skip
    draws = bootstrap_draws(a, b, n_boot, seed)
    se = float(draws.std(ddof=1))
    variances, dfs = [sd_d**2 / n], [n - 1]
    for arm in (seed_level(a), seed_level(b)):
        if arm.k > 1:
            variances.append(arm.variance / arm.k)
            dfs.append(arm.k - 1)
    df = satterthwaite(variances, dfs)
    method = (
        TWO_LEVEL if k_a > 1 and k_b > 1 else TWO_LEVEL + "; the 1-seed arm's seed variation not estimable"
    )
    if se == 0:
        return _degenerate(diff, a, b, effect, n, method, level)
    q = float(st.t.ppf(1 - alpha / 2, df))
    p = float(2 * st.t.sf(abs(diff) / se, df))
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return PairedResult(
        diff, diff - q * se, diff + q * se, p, effect, "d_z (items)", se, df, k_a, k_b, n, method,
        float(a.mean()), float(b.mean()), float(low), float(high), level,
    )  # fmt: skip


def _degenerate(diff, a, b, effect, n, method, level) -> PairedResult:
    """No variation at all: the interval is the point; p = 1 when equal, 0 when not."""
    return PairedResult(
        diff, diff, diff, 1.0 if diff == 0 else 0.0, effect, "d_z (items)", 0.0, math.inf,
        a.shape[0], b.shape[0], n, method, float(a.mean()), float(b.mean()), diff, diff, level,
    )  # fmt: skip


def welch_difference(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> PairedResult:
    """A − B from the seeds' run-level figures alone (no per-item records): Welch's t-test.

    ``a``, ``b``: 1-d arrays of one figure per seed. Fewer than 2 seeds in an arm: no test
    (``p``, interval and effect NaN; the method says why).
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    mean_a = float(a.mean()) if len(a) else math.nan
    mean_b = float(b.mean()) if len(b) else math.nan
    nan = math.nan
    if len(a) < 2 or len(b) < 2:
        method = WELCH + f": needs ≥ 2 seeds per arm, has {len(a)} and {len(b)}"
        return PairedResult(
            diff, nan, nan, nan, nan, "d (seeds)", nan, nan, len(a), len(b), 0, method, mean_a, mean_b
        )
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    effect = diff / pooled if pooled > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    if pooled == 0:
        return PairedResult(
            diff, diff, diff, 1.0 if diff == 0 else 0.0, effect, "d (seeds)", 0.0, nan, len(a), len(b), 0,
            WELCH, mean_a, mean_b, level=level,
        )  # fmt: skip
    test = st.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(level)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return PairedResult(
        diff, float(ci.low), float(ci.high), float(test.pvalue), effect, "d (seeds)", se, float(test.df),
        len(a), len(b), 0, WELCH, mean_a, mean_b, level=level,
    )  # fmt: skip


def correct(
    p: list[float] | np.ndarray, method: str = "holm", alpha: float = 1 - LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values and which comparisons survive at ``alpha``, for one family of tests.

    ``method``: ``holm`` (family-wise error, Holm 1979) or ``fdr_bh`` (false discovery rate,
    Benjamini & Hochberg 1995), via ``statsmodels.stats.multitest.multipletests``. NaN p-values
    (no test) stay NaN and never survive; they do not count in the family. Raises ``ValueError``
    for another method.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {method!r}")
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    survives = np.zeros(p.shape, dtype=bool)
    ok = np.isfinite(p)
    if ok.any():
        reject, adj, _, _ = multipletests(p[ok], alpha=alpha, method=method)
        adjusted[ok], survives[ok] = adj, reject
    return adjusted, survives
