"""Retrieval mAP / precision@k against brute force, torchmetrics and sklearn; the retrieval figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torchmetrics.retrieval import RetrievalMAP, RetrievalPrecision

from mmvi.evaluation.figures import retrieval_figure, retrieval_topk
from mmvi.evaluation.retrieval import (
    cosine_scores,
    per_query_retrieval,
    relevance,
    retrieval_measures,
    retrieval_metrics,
    topk_indices,
)


def brute_force(scores: torch.Tensor, rel: torch.Tensor, k: int, exclude_self: bool) -> tuple[list, list]:
    """Per-query AP and P@k by a Python loop, ranking by (score desc, non-relevant first on ties)."""
    aps, pks = [], []
    for i in range(scores.shape[0]):
        items = [j for j in range(scores.shape[1]) if not (exclude_self and j == i)]
        order = sorted(items, key=lambda j: (-float(scores[i, j]), bool(rel[i, j])))
        hits, precs = 0, []
        for rank, j in enumerate(order, start=1):
            if rel[i, j]:
                hits += 1
                precs.append(hits / rank)
        aps.append(sum(precs) / len(precs) if precs else 0.0)
        pks.append(sum(bool(rel[i, j]) for j in order[:k]) / k)
    return aps, pks


def multi_hot(n: int, c: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, c, generator=gen) < p).float()


def assert_no_ties(scores: torch.Tensor) -> None:
    s = torch.sort(scores, dim=1).values
    assert not bool((s[:, 1:] == s[:, :-1]).any()), "test data must be tie-free"


@pytest.mark.parametrize("exclude_self", [True, False])
def test_equals_brute_force_with_ties(exclude_self):
    gen = torch.Generator().manual_seed(0)
    n, k = 60, 7
    # coarse integer embeddings: many exactly tied cosine scores
    x = torch.randint(-1, 2, (n, 3), generator=gen).float()
    x[0] = 0.0  # a zero vector: cosine 0 with everything
    q = x if exclude_self else torch.randint(-1, 2, (25, 3), generator=gen).float()
    labels = multi_hot(n, 4, 0.3, gen)
    qlabels = labels if exclude_self else multi_hot(25, 4, 0.3, gen)
    scores = cosine_scores(q, x)
    rel = relevance(qlabels, labels)
    assert bool((torch.sort(scores, 1).values.diff(dim=1) == 0).any())
    ap, pk = per_query_retrieval(q, x, qlabels, labels, k=k, exclude_self=exclude_self)
    bap, bpk = brute_force(scores, rel, k, exclude_self)
    np.testing.assert_allclose(ap.numpy(), bap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pk.numpy(), bpk, rtol=0, atol=1e-12)


def torchmetrics_values(scores, rel, k, exclude_self):
    Q, N = scores.shape
    preds = scores.double() + 2.0  # torchmetrics drops items with preds <= 0: shift positive
    idx = torch.arange(Q).unsqueeze(1).expand(Q, N)
    keep = ~torch.eye(Q, N, dtype=torch.bool) if exclude_self else torch.ones(Q, N, dtype=torch.bool)
    args = (preds[keep], rel[keep], idx[keep])
    return float(RetrievalMAP()(*args)), float(RetrievalPrecision(top_k=k)(*args))


@pytest.mark.parametrize("exclude_self", [True, False])
def test_equals_torchmetrics_and_sklearn_without_ties(exclude_self):
    gen = torch.Generator().manual_seed(1)
    n, k = 300, 10
    x = torch.randn(n, 16, generator=gen)
    q = x if exclude_self else torch.randn(120, 16, generator=gen)
    labels = multi_hot(n, 6, 0.15, gen)  # multi-label, some items without labels
    qlabels = labels if exclude_self else multi_hot(120, 6, 0.15, gen)
    scores = cosine_scores(q, x)
    assert_no_ties(scores)
    rel = relevance(qlabels, labels)
    assert bool((rel.sum(1) == 0).any())  # queries with no relevant item are included
    res = retrieval_metrics(q, x, qlabels, labels, k=k, exclude_self=exclude_self)
    tm_map, tm_prec = torchmetrics_values(scores, rel, k, exclude_self)
    assert abs(res["map"] - tm_map) < 1e-6
    assert abs(res["precision_at_k"] - tm_prec) < 1e-6
    # sklearn per query (only defined for queries with a relevant item; others are 0 by convention)
    ap, _ = per_query_retrieval(q, x, qlabels, labels, k=k, exclude_self=exclude_self)
    for i in range(0, scores.shape[0], 7):
        keep = (
            torch.arange(scores.shape[1]) != i
            if exclude_self
            else torch.ones(scores.shape[1], dtype=torch.bool)
        )
        r, s = rel[i][keep].numpy(), scores[i][keep].double().numpy()
        expected = average_precision_score(r, s) if r.any() else 0.0
        assert abs(float(ap[i]) - expected) < 1e-12


def test_chunked_and_threaded_equal_single_pass():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(257, 8, generator=gen)
    labels = torch.nn.functional.one_hot(torch.randint(0, 5, (257,), generator=gen), 5).float()
    one = per_query_retrieval(x, x, labels, labels, k=20, chunk_size=10_000, n_workers=1)
    for chunk, workers in ((1, 1), (16, 2), (100, 3)):
        other = per_query_retrieval(x, x, labels, labels, k=20, chunk_size=chunk, n_workers=workers)
        assert torch.equal(one[0], other[0]) and torch.equal(one[1], other[1])


def test_edge_cases():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]])
    lab = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ap, pk = per_query_retrieval(x, x, lab, lab, k=5)
    # query 2 has no relevant item (only itself): 0; queries 0 and 1 find each other first
    assert ap.tolist() == [1.0, 1.0, 0.0]
    assert pk.tolist() == [0.2, 0.2, 0.0]
    with pytest.raises(ValueError, match="exclude_self"):
        retrieval_metrics(x[:2], x, lab[:2], lab)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.full((3, 2), float("nan")), x, lab, lab)


def test_retrieval_measures_names():
    gen = torch.Generator().manual_seed(3)
    reps = {q: torch.rand(40, 6, generator=gen) for q in ("multimodal", "left", "right")}
    labels = torch.nn.functional.one_hot(torch.arange(40) % 4, 4).float()
    out = retrieval_measures(reps, reps["multimodal"], labels, k=5)
    assert set(out) == {f"retrieval/{m}_{q}" for m in ("map", "precision_at_5") for q in reps}
    single = retrieval_metrics(reps["left"], reps["multimodal"], labels, labels, k=5)
    assert out["retrieval/map_left"] == single["map"]


def test_topk_and_figure(tmp_path):
    gen = torch.Generator().manual_seed(4)
    reps = torch.randn(30, 5, generator=gen)
    top = topk_indices(reps, reps, 4, exclude_self=True)
    scores = cosine_scores(reps, reps).fill_diagonal_(-2.0)
    assert torch.equal(top, torch.argsort(scores, dim=1, descending=True, stable=True)[:, :4])
    chosen = retrieval_topk(reps, reps, [3, 7], 4)
    assert torch.equal(chosen, top[[3, 7]])
    images = torch.rand(30, 8, 8, generator=gen)
    tags = [f"tag{i % 3}" for i in range(30)]
    path = retrieval_figure(images, images, [3, 7], chosen, tmp_path / "retrieval.png", captions=tags)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rel = torch.tensor([[True, False, True, True], [False, False, True, False]])
    path = retrieval_figure(None, None, [3, 7], chosen, tmp_path / "text.png", captions=tags, relevant=rel)
    assert path.is_file()
    with pytest.raises(ValueError):
        retrieval_figure(images, images, [3], chosen, tmp_path / "bad.png")
