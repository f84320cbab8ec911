"""Joint representations of a split, from all modalities, each modality alone, and all but one.

Representation = mean-field hidden probabilities (docs/paper.md §2): with all modalities
h = σ(c + Σ_m W_mᵀ v_m); with some missing, those are inferred by mean-field first.

Query types (the ``<query>`` of ``classify/err_<query>`` and ``retrieval/map_<query>``):
``multimodal`` (every modality given), ``<m>`` (only modality m given) and, with three or more
modalities, ``no_<m>`` (every modality but m given; with two modalities that is the other one's
single-modality query).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.data.base import Split
from mmvi.models.mrbm import MultimodalRBM

LEAVE_OUT = "no_"


def query_types(model: MultimodalRBM) -> list[str]:
    """``multimodal``, one query per modality, and one leave-one-out query per modality when M ≥ 3."""
    names = list(model.names)
    leave_out = [f"{LEAVE_OUT}{m}" for m in names] if len(names) >= 3 else []
    return ["multimodal", *names, *leave_out]


def query_given(query: str, names: list[str]) -> list[str]:
    """The modalities a query gives (the others are inferred).

    Raises:
        ValueError: a query that is none of :func:`query_types`.
    """
    if query == "multimodal":
        return list(names)
    if query in names:
        return [query]
    if query.startswith(LEAVE_OUT) and query[len(LEAVE_OUT) :] in names:
        return [m for m in names if m != query[len(LEAVE_OUT) :]]
    raise ValueError(f"unknown query {query!r}; queries: multimodal, a modality of {names}, or no_<modality>")


@torch.no_grad()
def split_representations(
    model: MultimodalRBM,
    split: Split,
    batch_size: int = 1000,
    steps: int = 100,
    tol: float | None = 1e-5,
    queries: list[str] | None = None,
) -> dict[str, Tensor]:
    """``{query: (N, H) hidden means}``, computed in chunks of ``batch_size`` on the model's device."""
    device = model.c.device
    queries = queries or query_types(model)
    given = {q: query_given(q, list(model.names)) for q in queries}
    out: dict[str, list[Tensor]] = {q: [] for q in queries}
    n = len(split)
    for start in range(0, n, batch_size):
        v = {m: x[start : start + batch_size].to(device) for m, x in split.modalities.items()}
        for q in queries:
            out[q].append(model.representation(_pick(v, given[q]), steps=steps, tol=tol).float().cpu())
    return {q: torch.cat(parts) for q, parts in out.items()}


def _pick(v: Mapping[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    return {m: v[m] for m in names}
