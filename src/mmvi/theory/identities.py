"""Exact NLL / VI decompositions on explicit joint tables (supplement eq. S1–S8).

A *table* is a 2-D float64 array ``p[x, y] = P(X = x, Y = y)`` (rows: states of X, columns:
states of Y) with non-negative entries summing to 1. ``p_data`` is the data distribution P_D,
``p_model`` the model distribution P_θ. All expectations are under P_D and use 0·log 0 = 0, so
cells with P_D(x, y) = 0 contribute nothing; a cell with P_D > 0 and P_θ = 0 gives +inf.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import rel_entr, xlogy

SUM_TOL = 1e-9


def check_table(p: Any, name: str = "table") -> np.ndarray:
    """Return ``p`` as a float64 numpy array after checking it is a 2-D probability table."""
    if hasattr(p, "detach"):  # torch tensor
        p = p.detach().cpu().double().numpy()
    arr = np.array(p, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D table P[x, y], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite entries")
    if np.any(arr < 0):
        raise ValueError(f"{name} has negative entries (min {arr.min():.3g})")
    total = arr.sum()
    if abs(total - 1.0) > SUM_TOL:
        raise ValueError(f"{name} must sum to 1 within {SUM_TOL:g}, sums to {total:.12g}")
    return arr


def check_pair(p_data: Any, p_model: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check both tables and that their shapes match."""
    pd = check_table(p_data, "p_data")
    pm = check_table(p_model, "p_model")
    if pd.shape != pm.shape:
        raise ValueError(f"p_data has shape {pd.shape} but p_model has shape {pm.shape}")
    return pd, pm


def marginals(p: Any) -> tuple[np.ndarray, np.ndarray]:
    """(P(X), P(Y)) = (Σ_y P(x, y), Σ_x P(x, y))."""
    p = check_table(p)
    return p.sum(axis=1), p.sum(axis=0)


def conditionals(p: Any, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(P(x|y), P(y|x)) as tables indexed ``[x, y]``: P(x, y)/P(y) and P(x, y)/P(x).

    Columns of the first and rows of the second sum to 1. Where the conditioning marginal is
    zero the conditional is undefined and set to 0, unless ``strict`` (then ValueError).
    """
    p = check_table(p)
    px, py = p.sum(axis=1), p.sum(axis=0)
    if strict and (np.any(px <= 0) or np.any(py <= 0)):
        raise ValueError(
            "conditionals undefined: marginal is zero for X states "
            f"{np.flatnonzero(px <= 0).tolist()} and Y states {np.flatnonzero(py <= 0).tolist()}"
        )
    x_given_y = np.divide(p, py[None, :], out=np.zeros_like(p), where=py[None, :] > 0)
    y_given_x = np.divide(p, px[:, None], out=np.zeros_like(p), where=px[:, None] > 0)
    return x_given_y, y_given_x


def entropy(p: np.ndarray) -> float:
    """H(P) = −Σ p log p (nats), 0·log 0 = 0."""
    return float(-xlogy(p, p).sum())


def mutual_information(p: Any) -> float:
    """I(X; Y) = H(X) + H(Y) − H(X, Y)."""
    p = check_table(p)
    return entropy(p.sum(axis=1)) + entropy(p.sum(axis=0)) - entropy(p)


def _neg_expected_log(p_data: np.ndarray, q: np.ndarray) -> float:
    """−Σ P_D · log q with 0·log q = 0 where P_D = 0."""
    with np.errstate(divide="ignore"):
        return float(-xlogy(p_data, q).sum())


def l_nll(p_data: Any, p_model: Any) -> float:
    """L_NLL = −E_PD log P_θ(X, Y)."""
    pd, pm = check_pair(p_data, p_model)
    return _neg_expected_log(pd, pm)


def l_vi(p_data: Any, p_model: Any) -> float:
    """L_VI = −E_PD[log P_θ(X|Y) + log P_θ(Y|X)] (eq. S4)."""
    pd, pm = check_pair(p_data, p_model)
    x_given_y, y_given_x = conditionals(pm)
    return _neg_expected_log(pd, x_given_y) + _neg_expected_log(pd, y_given_x)


def kl_marginals(p_data: Any, p_model: Any) -> tuple[float, float]:
    """(KL(P_D(X) ‖ P_θ(X)), KL(P_D(Y) ‖ P_θ(Y))) (eq. S2)."""
    pd, pm = check_pair(p_data, p_model)
    kl_x = rel_entr(pd.sum(axis=1), pm.sum(axis=1)).sum()
    kl_y = rel_entr(pd.sum(axis=0), pm.sum(axis=0)).sum()
    return float(kl_x), float(kl_y)


def c1(p_data: Any) -> float:
    """C₁ = −E log P_D(X) − E log P_D(Y) = H_D(X) + H_D(Y) (eq. S3)."""
    pd = check_table(p_data, "p_data")
    return entropy(pd.sum(axis=1)) + entropy(pd.sum(axis=0))


def c2(p_data: Any) -> float:
    """C₂ = −E log P_D(X|Y) − E log P_D(Y|X) (eq. S5, S8)."""
    pd = check_table(p_data, "p_data")
    x_given_y, y_given_x = conditionals(pd)
    return _neg_expected_log(pd, x_given_y) + _neg_expected_log(pd, y_given_x)


def conditional_kls(p_data: Any, p_model: Any) -> tuple[float, float]:
    """(E_X KL(P_D(Y|X) ‖ P_θ(Y|X)), E_Y KL(P_D(X|Y) ‖ P_θ(X|Y))) (eq. S6–S8).

    E_Y KL(P_D(X|Y) ‖ P_θ(X|Y)) = Σ_{x,y} P_D(x, y) log[P_D(x|y) / P_θ(x|y)].
    """
    pd, pm = check_pair(p_data, p_model)
    d_x_given_y, d_y_given_x = conditionals(pd)
    m_x_given_y, m_y_given_x = conditionals(pm)
    with np.errstate(divide="ignore"):
        # P_D(x, y) log(ratio) = P_D(y) · rel_entr(P_D(x|y), P_θ(x|y)), zero where P_D(x, y) = 0
        kl_y_given_x = (pd.sum(axis=1)[:, None] * rel_entr(d_y_given_x, m_y_given_x)).sum()
        kl_x_given_y = (pd.sum(axis=0)[None, :] * rel_entr(d_x_given_y, m_x_given_y)).sum()
    return float(kl_y_given_x), float(kl_x_given_y)


@dataclass(frozen=True)
class IdentityTerms:
    """All terms of eq. S3 and S8 for one (P_D, P_θ) pair, in nats."""

    l_nll: float
    l_vi: float
    kl_x: float
    kl_y: float
    c1: float
    c2: float
    cond_kl_y_given_x: float  # E_X KL(P_D(Y|X) ‖ P_θ(Y|X))
    cond_kl_x_given_y: float  # E_Y KL(P_D(X|Y) ‖ P_θ(X|Y))

    @property
    def s3_residual(self) -> float:
        """2·L_NLL − (L_VI + KL_X + KL_Y + C₁); zero by eq. S3."""
        return 2 * self.l_nll - (self.l_vi + self.kl_x + self.kl_y + self.c1)

    @property
    def s8_residual(self) -> float:
        """L_VI − (E_X KL(Y|X) + E_Y KL(X|Y) + C₂); zero by eq. S8."""
        return self.l_vi - (self.cond_kl_y_given_x + self.cond_kl_x_given_y + self.c2)

    def as_dict(self) -> dict[str, float]:
        """All terms plus the two residuals."""
        return {**asdict(self), "s3_residual": self.s3_residual, "s8_residual": self.s8_residual}


def identity_terms(p_data: Any, p_model: Any) -> IdentityTerms:
    """Every term of eq. S3 (2·L_NLL = L_VI + KL_X + KL_Y + C₁) and eq. S8."""
    pd, pm = check_pair(p_data, p_model)
    kl_x, kl_y = kl_marginals(pd, pm)
    ckl_y, ckl_x = conditional_kls(pd, pm)
    return IdentityTerms(
        l_nll=l_nll(pd, pm),
        l_vi=l_vi(pd, pm),
        kl_x=kl_x,
        kl_y=kl_y,
        c1=c1(pd),
        c2=c2(pd),
        cond_kl_y_given_x=ckl_y,
        cond_kl_x_given_y=ckl_x,
    )
