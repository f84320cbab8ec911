"""Mixture of objectives: loss = α·MinVI + (1 − α)·NLL (docs/design.md §3, docs/paper.md ``hybrid``)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mmvi.constraints import PROBABILITY, check_arguments
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.base import Hidden, Objective


class Mixture(Objective):
    """α·``minvi`` + (1 − α)·``nll`` on the same batch; α = 1 is pure MinVI, α = 0 pure NLL.

    Each part is computed as on its own (its data preparation, e.g. the NLL part's dynamic
    binarisation, and its own sparsity form and weight) and weighted by its mixture weight, as the
    reference's hybrid does (docs/paper.md §2: the MP part's exact sparsity ×α, the PCD part's
    running-average sparsity ×(1 − α)); sparsity is therefore set on the parts.

    Raises:
        ValueError: α outside [0, 1], or a sparsity weight on the mixture itself.
    """

    constraints = {"alpha": PROBABILITY}

    def __init__(self, minvi: Objective, nll: Objective, alpha: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.sparsity_weight > 0:
            raise ValueError(
                "the hybrid's sparsity is set on its parts: objective.minvi.sparsity_weight and "
                "objective.nll.sparsity_weight (objective.sparsity_weight must be 0)"
            )
        check_arguments(self, alpha=alpha)
        self.alpha = float(alpha)
        self.minvi = minvi
        self.nll = nll

    @property
    def native_inference_steps(self) -> int:
        """The MinVI part's inference (the reference's hybrid is evaluated like its MP part)."""
        return self.minvi.native_inference_steps if self.alpha > 0 else self.nll.native_inference_steps

    def setup(self, model: MultimodalRBM) -> None:
        super().setup(model)
        self.minvi.setup(model)
        self.nll.setup(model)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.minvi.set_epoch(epoch)
        self.nll.set_epoch(epoch)

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Hidden, dict]:
        loss = 0.0
        logs: dict = {}
        for weight, part, name in ((self.alpha, self.minvi, "minvi"), (1 - self.alpha, self.nll, "nll")):
            if weight == 0:
                continue
            part_loss, part_logs = part.loss_terms(model, v)
            loss = loss + weight * part_loss
            logs.update({f"{name}/{k}": x for k, x in part_logs.items()})
        return loss, None, logs
