"""Two-block Gibbs chains x → y → x → … on finite spaces (supplement §S2, Theorem 2.1).

Convention: transition matrices are **column-stochastic**, ``T[j, i] = P(next = j | current = i)``,
so a distribution evolves as π ← T π and a stationary vector solves T π = π (eq. S9).
Conditional tables are indexed ``[x, y]`` as in :mod:`mmvi.theory.identities`:
``x_given_y[x, y] = P(x|y)`` (columns sum to 1), ``y_given_x[x, y] = P(y|x)`` (rows sum to 1).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy.sparse.csgraph import connected_components

from mmvi.theory.identities import conditionals

STOCH_TOL = 1e-9


def _as_array(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()
    return np.array(a, dtype=np.float64)


def check_conditionals(x_given_y: Any, y_given_x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check P(x|y) (columns sum to 1) and P(y|x) (rows sum to 1), both shaped (|X|, |Y|)."""
    a, b = _as_array(x_given_y), _as_array(y_given_x)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"conditional tables must both be (|X|, |Y|), got {a.shape} and {b.shape}")
    for name, t, axis in (("x_given_y", a, 0), ("y_given_x", b, 1)):
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError(f"{name} must be finite and non-negative")
        sums = t.sum(axis=axis)
        if np.max(np.abs(sums - 1.0)) > STOCH_TOL:
            bad = np.flatnonzero(np.abs(sums - 1.0) > STOCH_TOL).tolist()
            raise ValueError(
                f"{name} is not a conditional: sums over {'x' if axis == 0 else 'y'} ≠ 1 at {bad}"
            )
    return a, b


def check_transition(t: Any, name: str = "T") -> np.ndarray:
    """Check ``t`` is a square, non-negative, column-stochastic matrix."""
    t = _as_array(t)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    sums = t.sum(axis=0)
    if np.max(np.abs(sums - 1.0)) > STOCH_TOL:
        raise ValueError(
            f"{name} is not column-stochastic: column sums range {sums.min():.6g}..{sums.max():.6g}"
        )
    return t


def transition_y(x_given_y: Any, y_given_x: Any) -> np.ndarray:
    """T^Y[y', y] = Σ_x P(y'|x) P(x|y), shape (|Y|, |Y|), column-stochastic."""
    a, b = check_conditionals(x_given_y, y_given_x)
    return b.T @ a


def transition_x(x_given_y: Any, y_given_x: Any) -> np.ndarray:
    """T^X[x', x] = Σ_y P(x'|y) P(y|x), shape (|X|, |X|), column-stochastic."""
    a, b = check_conditionals(x_given_y, y_given_x)
    return a @ b.T


def gibbs_transitions(p_joint: Any) -> tuple[np.ndarray, np.ndarray]:
    """(T^X, T^Y) from the conditionals of a joint table (marginals must be positive)."""
    x_given_y, y_given_x = conditionals(p_joint, strict=True)
    return transition_x(x_given_y, y_given_x), transition_y(x_given_y, y_given_x)


def strongly_connected_components(t: Any) -> np.ndarray:
    """Label of the strongly connected component of each state in the graph i → j iff T[j, i] > 0."""
    t = check_transition(t)
    _, labels = connected_components(t.T > 0, directed=True, connection="strong")
    return labels


def is_irreducible(t: Any) -> bool:
    """True iff every state reaches every other through positive entries of T."""
    return bool(np.all(strongly_connected_components(t) == 0))


def check_irreducible(t: Any, name: str = "T") -> np.ndarray:
    """Return ``t`` if irreducible; otherwise ValueError listing the communicating classes."""
    t = check_transition(t, name)
    labels = strongly_connected_components(t)
    n_comp = int(labels.max()) + 1
    if n_comp > 1:
        classes = [np.flatnonzero(labels == k).tolist() for k in range(n_comp)]
        shown = "; ".join(str(c) for c in classes[:4]) + ("; …" if n_comp > 4 else "")
        raise ValueError(
            f"{name} is reducible: its positive entries split the {t.shape[0]} states into {n_comp} "
            f"strongly connected classes ({shown}), so the stationary distribution is not unique"
        )
    return t


def stationary_distribution(
    t: Any, method: Literal["solve", "lstsq"] = "solve", check: bool = True
) -> np.ndarray:
    """π with T π = π, 1ᵀπ = 1 (eq. S9).

    ``solve``: the system T̃ π = (0, …, 0, 1)ᵀ of eq. S10–S11, T̃ = T − I with its last row replaced
    by ones. ``lstsq``: least squares on the stacked (n + 1) × n system [T − I; 1ᵀ] π = (0, 1).
    With ``check`` the chain must be irreducible (unique π).
    """
    t = check_irreducible(t) if check else check_transition(t)
    n = t.shape[0]
    if method == "solve":
        a = t - np.eye(n)
        a[-1, :] = 1.0
        rhs = np.zeros(n)
        rhs[-1] = 1.0
        return np.linalg.solve(a, rhs)
    if method == "lstsq":
        a = np.vstack([t - np.eye(n), np.ones((1, n))])
        rhs = np.zeros(n + 1)
        rhs[-1] = 1.0
        return np.linalg.lstsq(a, rhs, rcond=None)[0]
    raise ValueError(f"unknown method {method!r}; use 'solve' or 'lstsq'")


def stationary_power_iteration(
    t: Any, tol: float = 1e-13, max_iter: int = 1_000_000, lazy: bool = True
) -> np.ndarray:
    """π by power iteration π ← K π from uniform, until ‖T π − π‖₁ < tol.

    ``lazy`` uses K = (I + T)/2, which has the same stationary vector and is aperiodic, so the
    iteration converges for every irreducible T. RuntimeError if ``max_iter`` is reached.
    """
    t = check_transition(t)
    n = t.shape[0]
    k = 0.5 * (np.eye(n) + t) if lazy else t
    pi = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        pi = k @ pi
        pi /= pi.sum()
        if np.abs(t @ pi - pi).sum() < tol:
            return pi
    raise RuntimeError(f"power iteration did not converge to tol {tol:g} in {max_iter} steps")


def chain_joint(x_given_y: Any, pi_y: Any) -> np.ndarray:
    """Joint implied by the chain: P(x|y) π(y), shape (|X|, |Y|)."""
    a = _as_array(x_given_y)
    pi = _as_array(pi_y)
    if pi.shape != (a.shape[1],):
        raise ValueError(f"pi_y must have shape ({a.shape[1]},), got {pi.shape}")
    return a * pi[None, :]


def stationary_joint(x_given_y: Any, y_given_x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(π(X), π(Y), P(x|y) π(y)) of the Gibbs chain built from two conditionals (Theorem 2.1)."""
    t_x = check_irreducible(transition_x(x_given_y, y_given_x), "T^X")
    t_y = check_irreducible(transition_y(x_given_y, y_given_x), "T^Y")
    pi_x, pi_y = stationary_distribution(t_x), stationary_distribution(t_y)
    return pi_x, pi_y, chain_joint(x_given_y, pi_y)
