"""Linear probes on real data (sklearn's digits) and against sklearn's solvers and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from mmvi.evaluation.classify import (
    DEFAULT_CS,
    fit_logistic_l2,
    linear_probe_error,
    multilabel_probe,
    multilabel_scores,
    precision_at_k_per_class,
    select_C,
)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.RandomState(0).permutation(len(X))
    return X[perm], y[perm]


def multilabels(y: np.ndarray) -> np.ndarray:
    """10 overlapping classes: class c = digit c or digit c + 1 (mod 10)."""
    return np.stack([(y == c) | (y == (c + 1) % 10) for c in range(10)], 1).astype(np.float64)


def test_linear_probe_error_on_digits(digits):
    X, y = digits
    tr, va, te = slice(0, 1000), slice(1000, 1300), slice(1300, None)
    left = X[te] * (np.arange(64) % 8 < 4)  # a degraded "single modality" test set
    out, C, at_bound = linear_probe_error(
        X[tr], y[tr], X[va], y[va], {"multimodal": X[te], "left": left}, y[te]
    )
    assert set(out) == {"classify/err_multimodal", "classify/err_left"}
    assert 0.01 / 1000 <= C <= 100 * 1000 and isinstance(at_bound, bool)
    assert out["classify/err_multimodal"] < 5.0
    assert out["classify/err_multimodal"] < out["classify/err_left"] <= 100.0
    # the reported error is that of the probe refitted on train + validation with the chosen C
    clf = LogisticRegression(C=C, max_iter=500).fit(X[:1300], y[:1300])
    assert out["classify/err_multimodal"] == pytest.approx(100 * np.mean(clf.predict(X[te]) != y[te]))
    # refit="train" reports the probe fitted on train alone
    out_tr, C_tr, _ = linear_probe_error(
        X[tr], y[tr], X[va], y[va], {"multimodal": X[te]}, y[te], refit="train"
    )
    clf = LogisticRegression(C=C_tr, max_iter=500).fit(X[tr], y[tr])
    assert out_tr["classify/err_multimodal"] == pytest.approx(100 * np.mean(clf.predict(X[te]) != y[te]))


def test_a_c_at_the_grid_end_extends_the_grid_until_an_interior_optimum():
    calls = []

    def loss(C):  # minimum at C = 1000, beyond the default grid's top (100)
        calls.append(C)
        return (np.log10(C) - 3.0) ** 2

    best, at_bound, scores = select_C(loss, DEFAULT_CS, max_extensions=5)
    assert best == pytest.approx(1000.0) and not at_bound
    assert sorted(scores) == pytest.approx([0.01, 0.1, 1, 10, 100, 1000, 10000])
    # downwards, and a bound reached: the choice is flagged
    best, at_bound, scores = select_C(lambda C: C, DEFAULT_CS, max_extensions=2)
    assert best == pytest.approx(1e-4) and at_bound and len(scores) == 7
    # ties go to the smaller C; an interior optimum adds nothing
    best, at_bound, scores = select_C(lambda C: 0.0 if C in (1.0, 10.0) else 1.0, DEFAULT_CS)
    assert (best, at_bound, len(scores)) == (1.0, False, 5)
    # a one-value grid is the user's choice
    assert select_C(lambda C: 0.0, [3.0]) == (3.0, False, {3.0: 0.0})
    with pytest.raises(ValueError, match="positive"):
        select_C(lambda C: 0.0, [0.0, 1.0])


def test_joint_solver_equals_sklearn(digits):
    X, y = digits
    Y = multilabels(y)
    Xt, Yt = torch.tensor(X[:800]), torch.tensor(Y[:800])
    W, b = fit_logistic_l2(Xt, Yt, [10.0, 0.1], max_iter=1000, tol=1e-7)
    for g, C in enumerate([10.0, 0.1]):
        for c in range(0, 10, 3):
            ref = LogisticRegression(C=C, max_iter=10_000, tol=1e-10).fit(X[:800], Y[:800, c])
            ours = X[800:] @ W[g, :, c].numpy() + float(b[g, c])
            assert np.abs(ours - ref.decision_function(X[800:])).max() < 5e-3


def test_multilabel_scores_equal_sklearn_and_brute_force():
    gen = torch.Generator().manual_seed(0)
    Y = (torch.rand(300, 6, generator=gen) < 0.3).long()
    scores = torch.randn(300, 6, generator=gen, dtype=torch.float64) + Y  # informative, tie-free
    m_ap, p50 = multilabel_scores(scores, Y, k=50)
    assert m_ap == pytest.approx(
        average_precision_score(Y.numpy(), scores.numpy(), average="macro"), abs=1e-6
    )
    brute = np.mean([Y[np.argsort(-scores[:, c].numpy())[:50], c].double().mean() for c in range(6)])
    assert p50 == pytest.approx(float(brute), abs=1e-12)
    # ties: lower index first
    tied = precision_at_k_per_class(torch.zeros(4, 1), torch.tensor([[0], [1], [1], [1]]), k=2)
    assert tied.tolist() == [0.5]
    # a class without test positives is left out of both averages
    Y2 = Y.clone()
    Y2[:, 0] = 0
    m_ap2, _ = multilabel_scores(scores, Y2, k=50)
    ref = average_precision_score(Y.numpy()[:, 1:], scores.numpy()[:, 1:], average="macro")
    assert m_ap2 == pytest.approx(ref, abs=1e-6)


def test_multilabel_probe_on_digits(digits):
    X, y = digits
    Y = multilabels(y)
    tr, va, te = slice(0, 1000), slice(1000, 1300), slice(1300, None)
    out, C, _ = multilabel_probe(
        X[tr], Y[tr], X[va], Y[va], {"multimodal": X[te], "noise": np.random.rand(497, 64)}, Y[te]
    )
    assert 0.01 / 1000 <= C <= 100 * 1000
    assert set(out) == {
        f"classify/{m}_{q}" for m in ("map", "precision_at_50") for q in ("multimodal", "noise")
    }
    assert out["classify/map_multimodal"] > 0.9 and out["classify/precision_at_50_multimodal"] > 0.9
    assert out["classify/map_noise"] < 0.4


def test_the_probe_is_the_same_whatever_the_thread_count(shared_data):
    """scikit-learn's fit on 4,000 MNIST images (pixels of both halves) under 1 and 2 BLAS/OpenMP
    threads: the probe fits with one thread either way, so the errors and predictions agree exactly
    (with two threads the gradient's sums change order and the L-BFGS path ends elsewhere)."""
    from threadpoolctl import threadpool_limits

    from mmvi.data.mnist import MNISTHalves

    dm = MNISTHalves(data_dir=str(shared_data / "mnist"))
    dm.setup()
    tr, te = dm.splits["train"], dm.splits["test"]
    X = np.concatenate([tr.modalities[m][:4000].numpy() for m in ("left", "right")], 1)
    y = tr.labels[:4000].argmax(1).numpy()
    Xte = np.concatenate([te.modalities[m][:2000].numpy() for m in ("left", "right")], 1)
    yte = te.labels[:2000].argmax(1).numpy()
    out = {}
    for threads in (1, 2):
        keep: dict = {}
        with threadpool_limits(limits=threads):
            metrics, C, _ = linear_probe_error(
                X,
                y,
                Xte[:500],
                yte[:500],
                {"both": Xte},
                yte,
                Cs=[10.0],
                max_extensions=0,
                refit="train",
                keep_probe=keep,
            )
        out[threads] = (metrics, C, keep["predict"](Xte))
    assert out[1][0] == out[2][0] and out[1][1] == out[2][1]
    np.testing.assert_array_equal(out[1][2], out[2][2])
