"""Mean-field conditional cross-entropy (DESIGN.md §6).

cond_ce(m | rest) = −Σ_i [v_i log p̂_i + (1 − v_i) log(1 − p̂_i)] per example for Bernoulli units,
with p̂ the mean-field prediction of modality m given the others, clipped to [1e-10, 1 − 1e-10];
for other unit types −log p(v_m | b + W ĥ) under the final mean-field hidden ĥ.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.models.mrbm import MultimodalRBM

CLIP = 1e-10


@torch.no_grad()
def conditional_cross_entropy(
    model: MultimodalRBM,
    v: Mapping[str, Tensor],
    target: str,
    steps: int = 100,
    tol: float | None = 1e-5,
) -> Tensor:
    """Per-example cross-entropy of the true ``v[target]`` under its mean-field prediction."""
    given = {m: x for m, x in v.items() if m != target}
    pred, h = model.infer_missing(given, steps=steps, tol=tol)
    x = v[target]
    if model.units[target].name == "bernoulli":
        p = pred[target].clamp(CLIP, 1 - CLIP)
        return -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)
    return -model.units[target].log_prob(x, model.visible_input(target, h))
