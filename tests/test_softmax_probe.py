"""The torch softmax probe solves scikit-learn's multinomial objective (known answer: its minimiser)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mmvi.evaluation.classify import linear_probe_error
from mmvi.evaluation.softmax import SoftmaxPath


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 5, generator=g) * 1.5
    y = torch.randint(0, 3, (n,), generator=g)
    return (centres[y] + torch.randn(n, 5, generator=g)).double(), y


def test_path_solutions_equal_scikit_learn_converged_fits():
    X, y = _data(300, 0)
    path = SoftmaxPath(X, y, 3, max_iter=1000, tol=1e-9)
    for C in (0.01, 1.0, 100.0, 0.1):  # warm starts in both directions
        W, b = path.solve(C)
        ref = LogisticRegression(C=C, max_iter=10000, tol=1e-12).fit(X.numpy(), y.numpy())
        # the softmax is invariant to a common shift of the intercepts; the weights are penalised
        assert np.allclose(W.T.numpy(), ref.coef_, atol=1e-5)
        db = b.numpy() - ref.intercept_
        assert np.allclose(db - db.mean(), 0.0, atol=1e-5)


def test_torch_probe_chooses_the_same_C_and_errors_as_scikit_learn():
    Xtr, ytr = _data(300, 0)
    Xva, yva = _data(200, 1)
    Xte, yte = _data(200, 2)
    args = (Xtr.numpy(), ytr.numpy(), Xva.numpy(), yva.numpy(), {"all": Xte.numpy()}, yte.numpy())
    ours = linear_probe_error(*args, solver="torch", tol=1e-9, max_iter=1000)
    ref = linear_probe_error(*args, solver="sklearn", max_iter=10000)
    assert ours[1:] == ref[1:]
    assert abs(ours[0]["classify/err_all"] - ref[0]["classify/err_all"]) <= 0.5  # at most one item of 200
