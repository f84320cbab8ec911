"""Two optional details of the reference code's SGD update (``mrbm_train_bin_bin.m`` and its
``update_params.m``; docs/paper.md §2), used by :class:`mmvi.lit.module.MultimodalLitModule`.

* ``optim.momentum_negative=false``: momentum smooths the positive statistics (with the weight
  decay and the sparsity gradient) only; the negative statistics of a likelihood objective
  (:attr:`mmvi.objectives.nll.ContrastiveDivergence.negative_part`) are applied directly,
  θ ← θ + u − ε·∂(negative part), u ← μu + (1 − μ)ε·(positive gradient) as the reference's
  ``usepcd`` branch. ``true`` (the default) puts the whole gradient through the momentum.
* ``optim.velocity_init=zero``: the velocity starts at 0, so the first step is (1 − μ)εg as the
  reference's; ``gradient`` (the default, PyTorch's SGD) starts it at the first gradient (step εg).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def check(optim: Mapping, objective) -> None:
    """Raise ValueError when ``optim.momentum_negative=false`` meets an objective without a
    negative phase (the settings' own values are declared constraints of the LightningModule)."""
    if not optim.get("momentum_negative", True) and not hasattr(objective, "negative_part"):
        raise ValueError(
            "optim.momentum_negative=false needs an objective with a negative phase (objective=nll_cd or nll_pcd)"
        )


def negative_gradients(optim: Mapping, objective, params: Sequence[Tensor]) -> tuple | None:
    """∂(negative part)/∂θ per parameter (None entries for unused ones), or None when the whole
    gradient goes through the momentum. Call after the loss was computed, before its backward."""
    if optim.get("momentum_negative", True):
        return None
    return torch.autograd.grad(objective.negative_part, list(params), retain_graph=True, allow_unused=True)


@torch.no_grad()
def apply_negative(
    optimizer: torch.optim.Optimizer, params: Sequence[Tensor], negative: tuple | None
) -> None:
    """θ ← θ − ε·∂(negative part) with each parameter's current learning rate (after the step)."""
    if negative is None:
        return
    lr = {id(p): float(group["lr"]) for group in optimizer.param_groups for p in group["params"]}
    for p, g in zip(params, negative, strict=True):
        if g is not None:
            p.add_(g, alpha=-lr[id(p)])


def init_velocity(optim: Mapping, optimizer: torch.optim.Optimizer) -> None:
    """With ``velocity_init=zero``, a zero momentum buffer for every parameter that has none."""
    if optim.get("velocity_init", "gradient") != "zero":
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
