"""Linear probes on representations (docs/design.md §4, §6): single-label error and multi-label mAP.

:func:`linear_probe_error`: multinomial logistic regression, C from the grid by validation error
(:func:`select_C`, extending the grid at an end), refit on train + validation or kept as fitted on
train; ``classify/err_<name>`` in percent (docs/design.md §6.4). :func:`multilabel_probe`: one
L2-regularised logistic regression per class, every class and every C solved at once by L-BFGS in
torch on one (D, |grid|·K) weight matrix; ``classify/map_<name>`` and
``classify/precision_at_50_<name>`` (docs/design.md §4.4).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from torch import Tensor
from torchmetrics.functional.classification import multilabel_average_precision

from mmvi.evaluation.softmax import SoftmaxPath, Whitened, minimise_l2

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
REFITS = ("train_val", "train")


def select_C(
    loss: Callable[[float], float], Cs: Sequence[float], max_extensions: int = 3, factor: float = 10.0
) -> tuple[float, bool, dict[float, float]]:
    """The C of lowest validation ``loss`` on the grid, extending the grid where the choice is at an end.

    While the best C is the largest (smallest) of the grid, C·``factor`` (C/``factor``) is added and
    scored, at most ``max_extensions`` times in all (a one-value grid is kept as given). Ties go to
    the smaller C.

    Returns:
        (chosen C, whether it is still at an end of the extended grid, {C: loss}).
    Raises:
        ValueError: an empty grid or a C <= 0.
    """
    grid = sorted(float(c) for c in Cs)
    if not grid or grid[0] <= 0:
        raise ValueError(f"classifier.Cs must be positive numbers, got {list(Cs)}")
    scores = {c: loss(c) for c in grid}
    best = min(grid, key=lambda c: (scores[c], c))
    for _ in range(int(max_extensions) if len(grid) > 1 else 0):
        if best == grid[-1]:
            new = grid[-1] * factor
            grid.append(new)
        elif best == grid[0]:
            new = grid[0] / factor
            grid.insert(0, new)
        else:
            break
        scores[new] = loss(new)
        best = min(grid, key=lambda c: (scores[c], c))
    return best, len(grid) > 1 and best in (grid[0], grid[-1]), scores


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


# ------------------------------------------------------------------ single-label
def _fit_multinomial(X: np.ndarray, y: np.ndarray, C: float, max_iter: int) -> LogisticRegression:
    """``LogisticRegression(C, max_iter)`` fitted with one BLAS/OpenMP thread: with more, the
    gradient's sums run in another order, the L-BFGS path (stopped at scikit-learn's tolerance) ends
    elsewhere, and the chosen C and the test errors would depend on the machine's thread count."""
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X, y)


SOLVERS = ("torch", "sklearn")


def linear_probe_error(
    train_X,
    train_y,
    val_X,
    val_y,
    test_sets: Mapping[str, object],
    test_y,
    Cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 500,
    max_extensions: int = 3,
    refit: str = "train_val",
    records=None,
    solver: str = "sklearn",
    tol: float = 1e-5,
    seconds: dict | None = None,
    keep_probe: dict | None = None,
) -> tuple[dict[str, float], float, bool]:
    """``({"classify/err_<name>": percent}, chosen C, C at the grid's bound)`` of a multinomial probe.

    ``solver``: ``sklearn`` (default) fits ``LogisticRegression(C, max_iter)`` afresh at every C;
    ``torch`` solves the same objective by preconditioned L-BFGS along a warm-started
    regularisation path (:class:`mmvi.evaluation.softmax.SoftmaxPath`; ``tol`` on its scaled
    gradient; experimental: slower than scikit-learn on raw pixels). ``records`` (a
    :class:`~mmvi.evaluation.records.Records`, optional) receives each test item's
    100·(1 − correct), prediction and label per test set. ``seconds`` (optional) receives the wall
    seconds of the C search (``C_search``) and of the refit (``refit``); ``keep_probe`` (optional)
    receives the fitted probe's ``predict`` ((N, D) array → (N,) classes).

    Raises:
        ValueError: an unknown ``refit`` or ``solver``.
    """
    if refit not in REFITS:
        raise ValueError(f"classifier.refit={refit!r}; allowed: {', '.join(REFITS)}")
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r}; allowed: {', '.join(SOLVERS)}")
    Xtr, ytr, Xva, yva = _np(train_X), _np(train_y).ravel(), _np(val_X), _np(val_y).ravel()
    if solver == "sklearn":
        predict = _sklearn_probe(Xtr, ytr, Xva, yva, Cs, max_iter, max_extensions, refit, seconds)
    else:
        predict = _torch_probe(Xtr, ytr, Xva, yva, Cs, max_iter, max_extensions, refit, tol, seconds)
    best, at_bound = predict.C, predict.at_bound
    if keep_probe is not None:
        keep_probe["predict"] = predict
    yte = _np(test_y).ravel()
    out = {}
    for name, X in test_sets.items():
        pred = predict(_np(X))
        err = 100.0 * (pred != yte).astype(np.float64)
        out[f"classify/err_{name}"] = float(err.mean())
        if records is not None:
            records.add(f"classify/err_{name}", err, prediction=pred, label=yte)
    return out, best, at_bound


class _Predictor:
    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], C: float, at_bound: bool) -> None:
        self.fn, self.C, self.at_bound = fn, C, at_bound

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.fn(X)


def _sklearn_probe(Xtr, ytr, Xva, yva, Cs, max_iter, max_extensions, refit, seconds=None) -> _Predictor:
    fits: dict[float, LogisticRegression] = {}

    def val_error(C: float) -> float:
        fits[C] = _fit_multinomial(Xtr, ytr, C, max_iter)
        return float(np.mean(fits[C].predict(Xva) != yva))

    t0 = time.perf_counter()
    best, at_bound, _ = select_C(val_error, Cs, max_extensions)
    t1 = time.perf_counter()
    clf = fits[best]
    if refit == "train_val":
        clf = _fit_multinomial(np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva]), best, max_iter)
    _times(seconds, t0, t1)
    return _Predictor(clf.predict, best, at_bound)


def _times(seconds: dict | None, t0: float, t1: float) -> None:
    if seconds is not None:
        seconds["C_search"] = seconds.get("C_search", 0.0) + t1 - t0
        seconds["refit"] = seconds.get("refit", 0.0) + time.perf_counter() - t1


def _torch_probe(Xtr, ytr, Xva, yva, Cs, max_iter, max_extensions, refit, tol, seconds=None) -> _Predictor:
    classes = np.unique(ytr)  # as scikit-learn: the classes seen in training, predicted by label
    index = np.searchsorted(classes, ytr)
    path = SoftmaxPath(torch.as_tensor(Xtr), torch.as_tensor(index), len(classes), max_iter, tol)
    Xva_t = torch.as_tensor(Xva)

    def val_error(C: float) -> float:
        return float(np.mean(classes[path.predict(C, Xva_t).numpy()] != yva))

    t0 = time.perf_counter()
    best, at_bound, _ = select_C(val_error, Cs, max_extensions)
    t1 = time.perf_counter()
    if refit == "train_val":
        # warm start of the refit: the train solution at the chosen C
        both = SoftmaxPath(
            torch.as_tensor(np.concatenate([Xtr, Xva])),
            torch.as_tensor(np.searchsorted(classes, np.concatenate([ytr, yva]))),
            len(classes),
            max_iter,
            tol,
        )
        both.solve(best, start=path.solve(best))
        path = both
    _times(seconds, t0, t1)
    return _Predictor(lambda X: classes[path.predict(best, torch.as_tensor(X)).numpy()], best, at_bound)


# ------------------------------------------------------------------ multi-label
def _lbfgs_fit(Z: Tensor, Y: Tensor, pen: Tensor, u: Tensor, b: Tensor, max_iter: int, tol: float) -> None:
    """Minimise mean_i logloss(Z u + b, Y) + ½ Σ_j pen_j ‖u_j‖² over u (D, K), b (K,), in place."""
    n = Z.shape[0]

    def data_loss(u: Tensor, b: Tensor) -> Tensor:
        logits = torch.addmm(b, Z, u)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, Y, reduction="sum") / n

    minimise_l2(data_loss, pen, u, b, max_iter, tol, tolerance_change=1e-12)


def fit_logistic_l2(
    X: Tensor,
    Y: Tensor,
    Cs: Sequence[float],
    max_iter: int = 500,
    tol: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Independent L2 logistic regressions of every class (columns of Y), for every C.

    X (n, D), Y (n, K) in {0, 1}. Returns W (len(Cs), D, K) and b (len(Cs), K) minimising, for each
    C and class c, C Σ_i logloss_ic + ½‖w_c‖², divided by C n (same minimiser):
    f(w, b) = mean_i logloss_ic + (λ/2)‖w‖², λ = 1/(C n). The classes are separable, so one L-BFGS
    run per C solves all K at once (a (n, D) × (D, K) product per step). Exact changes of variables
    speed it up: X is centred (the intercept absorbs the mean) and w = V (d ⊙ u) with V the
    eigenvectors of the centred covariance and d = (s/4 + λ)^(−1/2), so the Hessian in u is close
    to the identity; the penalty stays (λ/2)‖w‖² = (λ/2) Σ_j d_j² ‖u_j‖². The Cs are solved in
    increasing order, each started at the previous solution. L-BFGS stops when every gradient
    entry (in u) is below ``tol`` or after ``max_iter`` iterations.
    """
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    dt = X.dtype
    Y = Y.to(dt)
    white = Whitened(X)
    n, D, K = X.shape[0], X.shape[1], Y.shape[1]
    prior = Y.mean(0).clamp(1e-4, 1 - 1e-4)
    b = torch.log(prior / (1 - prior))
    w = torch.zeros(D, K, dtype=dt)  # in the eigenbasis: w_eig = d ⊙ u
    W_out = torch.zeros(len(Cs), D, K, dtype=dt)
    b_out = torch.zeros(len(Cs), K, dtype=dt)
    for g in sorted(range(len(Cs)), key=lambda i: Cs[i]):
        lam = 1.0 / (float(Cs[g]) * n)
        d = white.scale(lam, 0.25)
        u = (w / d.unsqueeze(1)).clone()
        _lbfgs_fit(white.XV * d, Y, lam * d * d, u, b, max_iter, tol)
        w = d.unsqueeze(1) * u
        W_out[g] = white.V @ w
        b_out[g] = b - white.mean @ W_out[g]
    return W_out, b_out


def precision_at_k_per_class(scores: Tensor, Y: Tensor, k: int = 50) -> Tensor:
    """(K,) fraction of positives among the top-k items of each class's scores (ties: lower index)."""
    k = min(k, scores.shape[0])
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices[:k]
    return torch.gather(Y.to(torch.float64), 0, order).mean(0)


def multilabel_class_scores(scores: Tensor, Y: Tensor, k: int = 50) -> tuple[Tensor, Tensor, Tensor]:
    """(class indices with a positive test item, their AP by torchmetrics, their precision@k), (K',) each."""
    Y = Y.long()
    keep = torch.nonzero(Y.sum(0) > 0).flatten()
    if keep.numel() == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return keep, empty, empty
    s, y = scores[:, keep].double(), Y[:, keep]
    ap = multilabel_average_precision(s, y, num_labels=int(keep.numel()), average="none", thresholds=None)
    return keep, ap.double(), precision_at_k_per_class(s, y, k)


def multilabel_scores(scores: Tensor, Y: Tensor, k: int = 50) -> tuple[float, float]:
    """(macro mAP by torchmetrics, mean precision@k) over classes with at least one positive."""
    keep, ap, p_k = multilabel_class_scores(scores, Y, k)
    if keep.numel() == 0:
        return float("nan"), float("nan")
    return float(ap.mean()), float(p_k.mean())


def multilabel_probe(
    train_X,
    train_Y,
    val_X,
    val_Y,
    test_sets: Mapping[str, object],
    test_Y,
    Cs: Sequence[float] = DEFAULT_CS,
    k: int = 50,
    max_iter: int = 500,
    dtype: torch.dtype = torch.float32,
    max_extensions: int = 3,
    refit: str = "train_val",
    records=None,
    seconds: dict | None = None,
    keep_probe: dict | None = None,
) -> tuple[dict[str, float], float, bool]:
    """``({"classify/map_<name>", "classify/precision_at_<k>_<name>"}, chosen C, C at the bound)``.

    ``records`` (optional) receives each class's AP and precision@k (unit ``class``); ``keep_probe``
    (optional) receives the fitted probe's ``scores`` ((N, D) → (N, K) logits); ``seconds`` the
    C search's and the refit's wall seconds.
    """
    if refit not in REFITS:
        raise ValueError(f"classifier.refit={refit!r}; allowed: {', '.join(REFITS)}")

    def t(x) -> Tensor:
        return torch.as_tensor(_np(x)).to(dtype)

    Xtr, Ytr, Xva, Yva = t(train_X), t(train_Y), t(val_X), t(val_Y)
    fits: dict[float, tuple[Tensor, Tensor]] = {}

    def val_loss(C: float) -> float:
        W, b = fit_logistic_l2(Xtr, Ytr, [C], max_iter)
        fits[C] = (W[0], b[0])
        m_ap = multilabel_scores(torch.addmm(b[0], Xva, W[0]), Yva, k)[0]
        return -m_ap if np.isfinite(m_ap) else float("inf")

    t0 = time.perf_counter()
    best, at_bound, _ = select_C(val_loss, Cs, max_extensions)
    t1 = time.perf_counter()
    W, b = fits[best]
    if refit == "train_val":
        Wr, br = fit_logistic_l2(torch.cat([Xtr, Xva]), torch.cat([Ytr, Yva]), [best], max_iter)
        W, b = Wr[0], br[0]
    _times(seconds, t0, t1)
    if keep_probe is not None:
        keep_probe["scores"] = lambda X: torch.addmm(b, t(X), W)
    Yte = t(test_Y)
    out: dict[str, float] = {}
    for name, X in test_sets.items():
        keep, ap, p_k = multilabel_class_scores(torch.addmm(b, t(X), W), Yte, k)
        empty = keep.numel() == 0
        out[f"classify/map_{name}"] = float("nan") if empty else float(ap.mean())
        out[f"classify/precision_at_{k}_{name}"] = float("nan") if empty else float(p_k.mean())
        if records is not None and not empty:
            records.add(f"classify/map_{name}", ap, unit="class", index=keep)
            records.add(f"classify/precision_at_{k}_{name}", p_k, unit="class", index=keep)
    return out, best, at_bound
