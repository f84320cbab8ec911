"""L2-regularised multinomial logistic regression by preconditioned L-BFGS in torch (the linear probe).

The single-label probe of :func:`mmvi.evaluation.classify.linear_probe_error` (docs/design.md §6.4)
minimises, for each C, scikit-learn's ``LogisticRegression(C)`` objective (multinomial, unpenalised
intercept) divided by C·n, which has the same minimiser:

    f(W, b) = mean_i −log softmax(x_i W + b)_{y_i} + (λ/2)‖W‖²,  λ = 1/(C n).

Exact changes of variables make it well conditioned: X is centred (the intercept absorbs the mean)
and W = V (d ⊙ U) with V the eigenvectors of the centred covariance (eigenvalues s) and
d = (s/2 + λ)^(−1/2), so the Hessian in U is close to the identity (the softmax Hessian is at
most ½ I per example). A regularisation path is solved warm: each C starts at the solution of the
nearest C already solved, which is how a grid search over C gets cheap.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class Whitened:
    """Centred features in the eigenbasis of their covariance: Xc V, with Xcᵀ Xc / n = V diag(s) Vᵀ."""

    def __init__(self, X: Tensor) -> None:
        self.mean = X.mean(0)
        Xc = X - self.mean
        s, V = torch.linalg.eigh((Xc.T.double() @ Xc.double()) / X.shape[0])
        self.s, self.V = s.clamp_min(0.0).to(X.dtype), V.to(X.dtype)
        self.XV = Xc @ self.V

    def scale(self, lam: float, curvature: float) -> Tensor:
        """d = (curvature·s + λ)^(−1/2): w = V (d ⊙ u) makes the Hessian of the scaled objective ≈ I
        (``curvature``: a bound on the loss's second derivative, ¼ logistic, ½ softmax)."""
        return (self.s * curvature + lam).rsqrt()


def minimise_l2(
    data_loss: Callable[[Tensor, Tensor], Tensor],
    pen: Tensor,
    u: Tensor,
    b: Tensor,
    max_iter: int,
    tol: float,
    tolerance_change: float,
) -> None:
    """Minimise data_loss(u, b) + ½ Σ_j pen_j ‖u_j‖² over u (D, K), b (K,) by L-BFGS (strong Wolfe
    line search, history 20), in place."""
    u.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [u, b],
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tolerance_change,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = data_loss(u, b) + 0.5 * (pen.unsqueeze(1) * u * u).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    u.requires_grad_(False)
    b.requires_grad_(False)


class SoftmaxPath:
    """Solutions of f for any C on fixed data, each warm-started from the nearest C solved so far.

    Args:
        X: (n, D) features (any float dtype; solved in ``dtype``).
        y: (n,) class indices in 0..K−1.
        n_classes: K (default: max(y) + 1).
        max_iter: L-BFGS iterations per C at most.
        tol: stop once every entry of the gradient in the preconditioned variables is below ``tol``.
        dtype: the solver's float type.
    """

    def __init__(
        self,
        X: Tensor,
        y: Tensor,
        n_classes: int | None = None,
        max_iter: int = 500,
        tol: float = 1e-5,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        X = torch.as_tensor(X).to(dtype)
        y = torch.as_tensor(y).long().ravel()
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
        self.n, self.D = X.shape
        self.K = int(n_classes if n_classes is not None else int(y.max()) + 1)
        self.y, self.max_iter, self.tol, self.dtype = y, int(max_iter), float(tol), dtype
        self.white = Whitened(X)
        counts = torch.bincount(y, minlength=self.K).to(dtype).clamp_min(0.5)
        self.b0 = torch.log(counts / counts.sum())
        self.solutions: dict[float, tuple[Tensor, Tensor]] = {}  # C -> (W in the eigenbasis, b)

    def _start(self, C: float) -> tuple[Tensor, Tensor]:
        if not self.solutions:
            return torch.zeros(self.D, self.K, dtype=self.dtype), self.b0.clone()
        near = min(self.solutions, key=lambda c: abs(torch.log(torch.tensor(c / C)).item()))
        w, b = self.solutions[near]
        return w.clone(), b.clone()

    def solve(self, C: float, start: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(W (D, K), b (K,)) minimising f at this C in the original feature space.

        ``start``: (W, b) in the original space to start from (default: the nearest C solved).
        """
        C = float(C)
        if C not in self.solutions:
            lam = 1.0 / (C * self.n)
            d = self.white.scale(lam, 0.5)
            if start is None:
                w, b = self._start(C)
            else:  # centred features in the eigenbasis: x W + b = (x − mean) V (Vᵀ W) + (b + mean W)
                W0, b0 = (t.to(self.dtype) for t in start)
                w, b = self.white.V.T @ W0, b0 + self.white.mean @ W0
            u = (w / d.unsqueeze(1)).contiguous()
            _lbfgs_softmax(self.white.XV, d, self.y, lam * d * d, u, b, self.max_iter, self.tol)
            self.solutions[C] = (d.unsqueeze(1) * u, b)
        w, b = self.solutions[C]
        W = self.white.V @ w
        return W, b - self.white.mean @ W

    def predict(self, C: float, X: Tensor) -> Tensor:
        """(m,) predicted classes (the first of tied maxima, as scikit-learn's ``predict``)."""
        W, b = self.solve(C)
        return torch.addmm(b, torch.as_tensor(X).to(self.dtype), W).argmax(1)


def _lbfgs_softmax(
    Z: Tensor, d: Tensor, y: Tensor, pen: Tensor, u: Tensor, b: Tensor, max_iter: int, tol: float
) -> None:
    """Minimise mean_i CE(softmax(Z (d ⊙ u) + b), y) + ½ Σ_j pen_j ‖u_j‖² over u (D, K), b (K,), in place."""
    n = Z.shape[0]

    def data_loss(u: Tensor, b: Tensor) -> Tensor:
        logits = torch.addmm(b, Z, d.unsqueeze(1) * u)
        return torch.nn.functional.cross_entropy(logits, y, reduction="sum") / n

    minimise_l2(data_loss, pen, u, b, max_iter, tol, tolerance_change=1e-14)
