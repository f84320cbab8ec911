"""Objective interface: turn a model and a batch into one scalar loss (DESIGN.md §3).

An objective's loss is a surrogate whose gradient is the estimator; samples are detached.
A sparsity penalty (cross-entropy between a target q and the batch-mean hidden activation p̄,
Σ_k −q log p̄_k − (1 − q) log(1 − p̄_k)) is added with its own weight.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmvi.models.mrbm import MultimodalRBM

# mean-field steps the reference code uses at test time for models trained by a likelihood-based
# estimator (PAPER.md §2, "Test-time mean-field steps")
REFERENCE_TEST_MF_STEPS = 10


def sparsity_penalty(hidden_probs: Tensor, target: float) -> Tensor:
    """Σ_k CE(q, p̄_k) with p̄ = batch mean of hidden probabilities (clipped to [1e-6, 1 − 1e-6])."""
    p = hidden_probs.mean(0).clamp(1e-6, 1 - 1e-6)
    return -(target * torch.log(p) + (1 - target) * torch.log1p(-p)).sum()


class Objective(nn.Module, ABC):
    """Base class. Subclasses implement :meth:`terms`.

    Args:
        sparsity_weight: weight λ of the sparsity penalty (0 disables it).
        sparsity_target: target mean activation q of the hidden units.
    """

    def __init__(self, sparsity_weight: float = 0.0, sparsity_target: float = 0.1) -> None:
        super().__init__()
        if sparsity_weight < 0:
            raise ValueError(f"objective.sparsity_weight must be >= 0, got {sparsity_weight}")
        if not 0.0 < sparsity_target < 1.0:
            raise ValueError(f"objective.sparsity_target must be in (0, 1), got {sparsity_target}")
        self.sparsity_weight = float(sparsity_weight)
        self.sparsity_target = float(sparsity_target)
        self.epoch = 0

    @property
    def native_inference_steps(self) -> int:
        """Mean-field steps of the inference this objective trains for (evaluation ``native``)."""
        return REFERENCE_TEST_MF_STEPS

    def setup(self, model: MultimodalRBM) -> None:
        """Called once with the model (to create state such as persistent chains)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @abstractmethod
    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, dict]:
        """Return (loss, hidden probabilities for the sparsity penalty or None, logs)."""

    def forward(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, dict]:
        loss, hidden, logs = self.terms(model, v)
        logs = {k: (x.detach() if isinstance(x, Tensor) else x) for k, x in logs.items()}
        if self.sparsity_weight > 0 and hidden is not None:
            pen = sparsity_penalty(hidden, self.sparsity_target)
            loss = loss + self.sparsity_weight * pen
            logs["sparsity"] = pen.detach()
        return loss, logs
