"""Theorem 2.1 measures, a synthetic data table with known dependence, sampling and plotting."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax, logsumexp

from mmvi.theory.chains import stationary_joint
from mmvi.theory.identities import check_pair, check_table, conditionals, identity_terms
from mmvi.theory.rbm_tables import binary_states, state_index

MEASURE_KEYS = (
    "theory/pi_x_l2",
    "theory/pi_y_l2",
    "theory/tv_joint",
    "theory/l_vi",
    "theory/l_nll",
    "theory/kl_x",
    "theory/kl_y",
)


def theorem21_measures(p_data: Any, p_model: Any) -> dict[str, float]:
    """Distances between the Gibbs chain of the model's conditionals and the data (Theorem 2.1).

    π(X), π(Y): stationary vectors of T^X, T^Y built from P_θ(x|y), P_θ(y|x) (eq. S9–S11);
    ``pi_x_l2`` = ‖π(X) − P_D(X)‖₂, ``pi_y_l2`` likewise; ``tv_joint`` = ½ Σ |P_θ(x|y) π(y) − P_D(x, y)|;
    ``l_vi``, ``l_nll``, ``kl_x``, ``kl_y``: exact terms of eq. S3 for (P_D, P_θ).
    Raises ValueError if a model marginal is zero or the chain is reducible.
    """
    pd, pm = check_pair(p_data, p_model)
    x_given_y, y_given_x = conditionals(pm, strict=True)
    pi_x, pi_y, joint = stationary_joint(x_given_y, y_given_x)
    terms = identity_terms(pd, pm)
    return {
        "theory/pi_x_l2": float(np.linalg.norm(pi_x - pd.sum(axis=1))),
        "theory/pi_y_l2": float(np.linalg.norm(pi_y - pd.sum(axis=0))),
        "theory/tv_joint": float(0.5 * np.abs(joint - pd).sum()),
        "theory/l_vi": terms.l_vi,
        "theory/l_nll": terms.l_nll,
        "theory/kl_x": terms.kl_x,
        "theory/kl_y": terms.kl_y,
    }


def make_data_table(
    n_x_bits: int = 4, n_y_bits: int = 4, seed: int = 0, strength: float = 2.0, noise: float = 0.5
) -> np.ndarray:
    """A fixed, strictly positive data joint P_D(x, y) of shape (2^n_x, 2^n_y) with dependent x, y.

    P(x) ∝ exp(g_x), g_x ~ N(0, 1). Y is a noisy copy of f(x) = A x + o (mod 2), a random affine
    map over GF(2) (A has no zero row): P(y|x) ∝ exp(strength · #{j: y_j = f_j(x)} + e_xy),
    e_xy ~ N(0, noise²). Each bit of y thus disagrees with f(x) w.p. ≈ σ(−strength), and the
    mutual information I(X; Y) is clearly positive (≈ 1.1 nats for the defaults).
    Bit order as in :func:`mmvi.theory.rbm_tables.binary_states`.
    """
    rng = np.random.default_rng(seed)
    xs, ys = binary_states(n_x_bits), binary_states(n_y_bits)
    log_px = rng.normal(0.0, 1.0, len(xs))
    a = rng.integers(0, 2, (n_y_bits, n_x_bits))
    if n_x_bits > 0:
        zero_rows = np.flatnonzero(a.sum(axis=1) == 0)
        a[zero_rows, rng.integers(0, n_x_bits, len(zero_rows))] = 1
    f = (xs @ a.T + rng.integers(0, 2, n_y_bits)) % 2
    agree = f @ ys.T + (1 - f) @ (1 - ys).T
    logits = strength * agree + rng.normal(0.0, noise, (len(xs), len(ys)))
    log_p = log_softmax(log_px)[:, None] + log_softmax(logits, axis=1)
    return np.exp(log_p - logsumexp(log_p))


def _bits_of_table(p: np.ndarray) -> tuple[int, int]:
    nx, ny = (int(round(np.log2(s))) for s in p.shape)
    if p.shape != (2**nx, 2**ny):
        raise ValueError(f"table shape {p.shape} is not (2^n_x, 2^n_y)")
    return nx, ny


def sample_from_table(p: Any, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n i.i.d. draws (x, y) ~ P as float32 bit arrays of shape (n, n_x_bits), (n, n_y_bits)."""
    p = check_table(p)
    nx, ny = _bits_of_table(p)
    rng = np.random.default_rng(seed)
    flat = p.ravel()
    idx = rng.choice(flat.size, size=int(n), p=flat / flat.sum())
    ix, iy = np.divmod(idx, p.shape[1])
    return binary_states(nx)[ix].astype(np.float32), binary_states(ny)[iy].astype(np.float32)


def empirical_table(x_bits: Any, y_bits: Any, pseudo_count: float = 0.0) -> np.ndarray:
    """(counts(x, y) + pseudo_count) / (n + pseudo_count·|X||Y|) over all 2^n_x × 2^n_y states."""
    ix, iy = state_index(x_bits), state_index(y_bits)
    if len(ix) != len(iy):
        raise ValueError(f"x_bits has {len(ix)} rows but y_bits has {len(iy)}")
    shape = (2 ** np.asarray(x_bits).shape[1], 2 ** np.asarray(y_bits).shape[1])
    counts = np.bincount(ix * shape[1] + iy, minlength=shape[0] * shape[1]).reshape(shape)
    table = counts.astype(np.float64) + pseudo_count
    total = table.sum()
    if total <= 0:
        raise ValueError("no samples and no pseudo-count: the empirical table is empty")
    return table / total


def plot_theorem21(
    rows: Sequence[dict[str, Any]], path: str | Path, measures: Sequence[str] | None = None
) -> Path:
    """One subplot per measure against n (log x), one line per objective (mean over repeats).

    ``rows``: dicts with ``objective``, ``n`` and measure values. ``measures`` defaults to the
    keys of :data:`MEASURE_KEYS` present in the rows. Saves a PNG and returns its path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("no rows to plot")
    if measures is None:
        measures = [k for k in MEASURE_KEYS if any(k in r for r in rows)]
    if not measures:
        raise ValueError("rows contain none of the measures to plot")
    groups: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[str(r["objective"])][float(r["n"])].append(r)

    ncols = min(4, len(measures))
    nrows = -(-len(measures) // ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, measures):
        for objective, by_n in sorted(groups.items()):
            ns = sorted(by_n)
            means = [np.mean([float(r[key]) for r in by_n[n] if key in r] or [np.nan]) for n in ns]
            ax.plot(ns, means, marker="o", label=objective)
        ax.set_xscale("log")
        ax.set_xlabel("n")
        ax.set_title(key.removeprefix("theory/"))
        ax.grid(True, alpha=0.3)
    for ax in axes[len(measures) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
