"""Joint representations of a split, with all modalities and with each modality alone.

Representation = mean-field hidden probabilities (PAPER.md §2): with all modalities
h = σ(c + Σ_m W_mᵀ v_m); with one modality, the others are inferred by mean-field first.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmvi.data.base import Split
from mmvi.models.mrbm import MultimodalRBM


def query_types(model: MultimodalRBM) -> list[str]:
    """``multimodal`` plus one query type per modality."""
    return ["multimodal", *model.names]


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
    out: dict[str, list[Tensor]] = {q: [] for q in queries}
    n = len(split)
    for start in range(0, n, batch_size):
        v = {m: x[start : start + batch_size].to(device) for m, x in split.modalities.items()}
        for q in queries:
            given = v if q == "multimodal" else {q: v[q]}
            out[q].append(model.representation(given, steps=steps, tol=tol).float().cpu())
    return {q: torch.cat(parts) for q, parts in out.items()}
