"""Mixture of objectives: loss = α·MinVI + (1 − α)·NLL (DESIGN.md §3, PAPER.md ``hybrid``)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.base import Objective


class Mixture(Objective):
    """α·``minvi`` + (1 − α)·``nll`` on the same batch; α = 1 is pure MinVI, α = 0 pure NLL.

    The mixture's own sparsity penalty applies to the MinVI term's hidden activations (the NLL
    term's when α = 0); the parts' sparsity settings are not used.
    """

    def __init__(self, minvi: Objective, nll: Objective, alpha: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"objective.alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.minvi = minvi
        self.nll = nll

    @property
    def native_inference_steps(self) -> int:
        """The MinVI part's inference (the reference's hybrid is evaluated like its MP part)."""
        return self.minvi.native_inference_steps if self.alpha > 0 else self.nll.native_inference_steps

    def setup(self, model: MultimodalRBM) -> None:
        self.minvi.setup(model)
        self.nll.setup(model)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.minvi.set_epoch(epoch)
        self.nll.set_epoch(epoch)

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, dict]:
        loss = 0.0
        hidden = None
        logs: dict = {}
        for weight, part, name in ((self.alpha, self.minvi, "minvi"), (1 - self.alpha, self.nll, "nll")):
            if weight == 0:
                continue
            part_loss, part_hidden, part_logs = part.terms(model, v)
            loss = loss + weight * part_loss
            logs.update({f"{name}/{k}": x for k, x in part_logs.items()})
            hidden = part_hidden if hidden is None else hidden
        return loss, hidden, logs
