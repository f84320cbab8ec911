"""Retrieval measures: mean average precision and precision@k by cosine similarity (docs/design.md §4).

Every query is ranked against the database by cosine similarity (float32, clamped to [−1, 1]); an
item is relevant when it shares a label with the query; ``exclude_self`` removes the query from
its own ranking. AP and P@k as eq. (4.5) of docs/design.md §4.3; a query with no relevant item
scores 0 (torchmetrics' ``empty_target_action="neg"``); ties rank non-relevant items first. The
ranking is one integer sort per row (:func:`_ranked_relevance`), in chunks of queries on worker
threads (:func:`per_query_retrieval`).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_SELF_KEY = np.iinfo(np.int32).min + 1  # below every real key; odd = non-relevant


def cosine_scores(query: Tensor, db: Tensor) -> Tensor:
    """cos(q_i, d_j) as a float32 (Q, N) tensor clamped to [−1, 1] (a zero vector scores 0)."""
    q = F.normalize(query.detach().float(), dim=1)
    d = F.normalize(db.detach().float(), dim=1)
    return (q @ d.T).clamp_(-1.0, 1.0)


def relevance(query_labels: Tensor, db_labels: Tensor) -> Tensor:
    """(Q, N) bool: query i and item j share at least one label (multi-hot (·, C) labels)."""
    return (query_labels.detach().float() @ db_labels.detach().float().T) > 0


def _ranked_relevance(scores: np.ndarray, relevant: np.ndarray, self_cols: np.ndarray | None) -> np.ndarray:
    """Bool (Q, N): row i, column t = relevance of the item ranked N − t (ascending order of keys).

    No full argsort, no gather: each score is mapped to its order-preserving 32-bit integer,
    shifted left one bit, with the free low bit set to 1 for non-relevant items, so one
    ``numpy.sort`` per row (a SIMD int32 sort) gives the ranking and the relevance of every rank at
    once, ties ranked non-relevant first. ``scores`` (float32) is overwritten by the keys.
    """
    scores += np.float32(0.0)  # −0.0 → +0.0
    key = scores.view(np.int32)
    flip = key >> 31
    flip &= np.int32(0x7FFFFFFF)
    key ^= flip  # order-preserving signed integer
    key <<= 1  # |key| ≤ 0x3F800000 for |score| ≤ 1: no overflow
    key |= ~relevant
    if self_cols is not None:
        key[np.arange(key.shape[0]), self_cols] = _SELF_KEY
    key.sort(axis=1)
    return (key & 1) == 0


def ap_and_precision(
    scores: Tensor, relevant: Tensor, k: int, self_cols: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-query AP and P@k (float64 (Q,)) for float32 scores in [−1, 1] and bool relevance.

    ``self_cols[i]`` (optional) is the column removed from row i's ranking.
    """
    s = np.array(scores.detach().cpu().numpy(), dtype=np.float32, order="C", copy=True)
    lo, hi = s.min(initial=0.0), s.max(initial=0.0)  # NaN propagates and fails the test
    if not (-1.0 <= lo and hi <= 1.0):
        raise ValueError("scores must be finite and within [-1, 1] (cosine similarities)")
    rel = np.ascontiguousarray(relevant.detach().cpu().numpy(), dtype=bool)
    cols = None if self_cols is None else self_cols.detach().cpu().numpy()
    r = _ranked_relevance(s, rel, cols)
    Q, N = r.shape
    n_rel = r.sum(axis=1)
    rows, pos = np.nonzero(r)
    # the t-th relevant item from the bottom (t = 0, 1, …) has R − t relevant items at or above it
    t = np.arange(rows.size) - np.repeat(np.cumsum(n_rel) - n_rel, n_rel)
    prec = (n_rel[rows] - t) / (N - pos)
    ap = np.bincount(rows, weights=prec, minlength=Q) / np.maximum(n_rel, 1)
    p_at_k = r[:, max(N - k, 0) :].sum(axis=1) / k
    return torch.from_numpy(ap), torch.from_numpy(p_at_k.astype(np.float64))


def _check(query_reps: Tensor, db_reps: Tensor, query_labels: Tensor, db_labels: Tensor, k: int) -> None:
    if query_reps.dim() != 2 or db_reps.dim() != 2 or query_reps.shape[1] != db_reps.shape[1]:
        raise ValueError(
            f"representations must be (Q, D) and (N, D); got {query_reps.shape}, {db_reps.shape}"
        )
    if query_labels.shape[0] != query_reps.shape[0] or db_labels.shape[0] != db_reps.shape[0]:
        raise ValueError("one label row per representation row is needed")
    if query_labels.dim() != 2 or db_labels.dim() != 2 or query_labels.shape[1] != db_labels.shape[1]:
        raise ValueError("labels must be multi-hot (N, C) tensors with the same C")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not (torch.isfinite(query_reps).all() and torch.isfinite(db_reps).all()):
        raise ValueError("representations contain NaN or inf")


def per_query_retrieval(
    query_reps: Tensor,
    db_reps: Tensor,
    query_labels: Tensor,
    db_labels: Tensor,
    k: int = 50,
    exclude_self: bool = True,
    chunk_size: int = 256,
    n_workers: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-query AP and P@k (float64 (Q,)); see docs/design.md §4.3 for the definitions.

    Chunks of ``chunk_size`` queries (memory O(chunk_size · N_db)) on ``n_workers`` threads
    (default ``torch.get_num_threads()``; numpy's sort releases the GIL).
    """
    _check(query_reps, db_reps, query_labels, db_labels, k)
    Q = query_reps.shape[0]
    if exclude_self and Q != db_reps.shape[0]:
        raise ValueError("exclude_self needs the query set to be the database (same rows)")
    db_reps, db_labels = db_reps.detach().cpu(), db_labels.detach().cpu()
    query_reps, query_labels = query_reps.detach().cpu(), query_labels.detach().cpu()

    def run(start: int) -> tuple[Tensor, Tensor]:
        stop = min(start + chunk_size, Q)
        scores = cosine_scores(query_reps[start:stop], db_reps)
        rel = relevance(query_labels[start:stop], db_labels)
        cols = torch.arange(start, stop) if exclude_self else None
        return ap_and_precision(scores, rel, k, cols)

    workers = max(1, n_workers or torch.get_num_threads())
    starts = range(0, Q, chunk_size)
    if workers == 1 or len(starts) == 1:
        parts = [run(s) for s in starts]
    else:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(run, starts))
    if not parts:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def retrieval_metrics(
    query_reps: Tensor,
    db_reps: Tensor,
    query_labels: Tensor,
    db_labels: Tensor,
    k: int = 50,
    exclude_self: bool = True,
    chunk_size: int = 256,
    n_workers: int | None = None,
) -> dict[str, float]:
    """``{"map": mean AP, "precision_at_k": mean P@k}`` over all queries (cosine similarity)."""
    ap, pk = per_query_retrieval(
        query_reps, db_reps, query_labels, db_labels, k, exclude_self, chunk_size, n_workers
    )
    return {"map": float(ap.mean()), "precision_at_k": float(pk.mean())}


def retrieval_measures(
    reps: Mapping[str, Tensor],
    db_reps: Tensor,
    labels: Tensor,
    k: int = 50,
    exclude_self: bool = True,
    chunk_size: int = 256,
    records=None,
) -> dict[str, float]:
    """``retrieval/map_<q>`` and ``retrieval/precision_at_<k>_<q>`` for each query type q.

    ``records`` (optional) receives each query item's AP and P@k.

    ``reps[q]`` are the split's representations from query type q (``multimodal``, or one
    modality with the others inferred); the database is ``db_reps`` (the multimodal ones) of the
    same split, so each query's own item is excluded by default.
    """
    out: dict[str, float] = {}
    for q, r in reps.items():
        ap, pk = per_query_retrieval(r, db_reps, labels, labels, k, exclude_self, chunk_size)
        out[f"retrieval/map_{q}"] = float(ap.mean())
        out[f"retrieval/precision_at_{k}_{q}"] = float(pk.mean())
        if records is not None:
            records.add(f"retrieval/map_{q}", ap)
            records.add(f"retrieval/precision_at_{k}_{q}", pk)
    return out


def topk_indices(
    query_reps: Tensor,
    db_reps: Tensor,
    k: int,
    exclude_self: bool = False,
    query_index: Tensor | None = None,
    chunk_size: int = 256,
) -> Tensor:
    """(Q, k) database indices of the k most cosine-similar items, best first.

    Ties go to the lower database index. With ``exclude_self``, query i's own item
    (``query_index[i]``, default i) is never returned.
    """
    Q, N = query_reps.shape[0], db_reps.shape[0]
    k = min(k, N - 1 if exclude_self else N)
    if exclude_self and query_index is None:
        query_index = torch.arange(Q)
    out = []
    for start in range(0, Q, chunk_size):
        scores = cosine_scores(query_reps[start : start + chunk_size].cpu(), db_reps.cpu())
        if exclude_self:
            rows = torch.arange(scores.shape[0])
            scores[rows, query_index[start : start + chunk_size].cpu()] = float("-inf")
        out.append(torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k])
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)
