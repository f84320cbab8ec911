"""Objective interface: turn a model and a batch into one scalar loss (docs/design.md §3).

An objective's loss is a surrogate whose gradient is the estimator; samples are detached. Every
objective may add, as the reference code does (docs/paper.md §2), dynamic binarisation
(``binarize_data``: a fresh Bernoulli draw of each batch from the global RNG, which the training
module re-seeds every epoch) and a sparsity penalty of weight λ and target q in the form
``exact`` or ``running_average`` (docs/design.md §3.6).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmvi.constraints import NON_NEGATIVE, Flag, Interval, Options, check_arguments
from mmvi.models.mrbm import MultimodalRBM
from mmvi.models.units import bernoulli

# mean-field steps the reference code uses at test time for models trained by a likelihood-based
# estimator (docs/paper.md §2, "Test-time mean-field steps")
REFERENCE_TEST_MF_STEPS = 10
SPARSITY_FORMS = ("exact", "running_average")
RUNNING_AVERAGE_DAMPING = 0.9

Hidden = Tensor | Sequence[Tensor] | None


def sparsity_penalty(hidden_probs: Tensor, target: float) -> Tensor:
    """Σ_k CE(q, p̄_k) with p̄ = batch mean of hidden probabilities (clipped to [1e-6, 1 − 1e-6])."""
    p = hidden_probs.mean(0).clamp(1e-6, 1 - 1e-6)
    return -(target * torch.log(p) + (1 - target) * torch.log1p(-p)).sum()


def binarize(model: MultimodalRBM, v: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A fresh draw x ~ Bernoulli(v) of every Bernoulli modality (others unchanged)."""
    return {m: bernoulli(x) if model.units[m].name == "bernoulli" else x for m, x in v.items()}


class Objective(nn.Module, ABC):
    """Base class. Subclasses implement :meth:`terms`.

    Args:
        sparsity_weight: weight λ of the sparsity penalty (0 disables it).
        sparsity_target: target mean activation q of the hidden units.
        sparsity_form: ``exact`` or ``running_average`` (docs/design.md §3.6).
        binarize_data: train on a fresh Bernoulli draw of each batch's Bernoulli modalities.
    """

    #: the loss is the objective's value (e.g. MP's cross-entropy), not a surrogate whose gradient is
    #: the likelihood's (a free-energy difference); the divergence rules watch it only then
    loss_is_value: bool = False

    constraints = {
        "sparsity_weight": NON_NEGATIVE,
        "sparsity_target": Interval(0, 1, closed="neither"),
        "sparsity_form": Options(SPARSITY_FORMS),
        "binarize_data": Flag(),
    }

    def __init__(
        self,
        sparsity_weight: float = 0.0,
        sparsity_target: float = 0.1,
        sparsity_form: str = "exact",
        binarize_data: bool = False,
    ) -> None:
        super().__init__()
        check_arguments(
            self,
            sparsity_weight=sparsity_weight,
            sparsity_target=sparsity_target,
            sparsity_form=sparsity_form,
            binarize_data=binarize_data,
        )
        self.sparsity_weight = float(sparsity_weight)
        self.sparsity_target = float(sparsity_target)
        self.sparsity_form = sparsity_form
        self.binarize_data = bool(binarize_data)
        self.epoch = 0

    @property
    def native_inference_steps(self) -> int:
        """Mean-field steps of the inference this objective trains for (evaluation ``native``)."""
        return REFERENCE_TEST_MF_STEPS

    def setup(self, model: MultimodalRBM) -> None:
        """Called once with the model (to create state such as persistent chains)."""
        if self.sparsity_form == "running_average":
            self.register_buffer("sparsity_running", torch.zeros(model.n_hidden, dtype=model.c.dtype))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def prepare(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The batch this objective trains on: dynamically binarised if ``binarize_data``."""
        return binarize(model, v) if self.binarize_data else dict(v)

    @abstractmethod
    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Hidden, dict]:
        """Return (loss, hidden probabilities for the sparsity penalty — one tensor, a list of
        tensors (one penalty each) or None —, logs) for a prepared batch ``v``."""

    def sparsity(self, model: MultimodalRBM, hidden: Hidden) -> tuple[Tensor | float, Tensor | None]:
        """(loss term, penalty value to log) of the configured sparsity form."""
        if self.sparsity_weight <= 0 or hidden is None:
            return 0.0, None
        groups = [hidden] if isinstance(hidden, Tensor) else list(hidden)
        if self.sparsity_form == "exact":
            pen = sum(sparsity_penalty(h, self.sparsity_target) for h in groups)
            return self.sparsity_weight * pen, pen.detach()
        batch_mean = torch.cat([h.detach() for h in groups]).mean(0)
        if self.training:
            self.sparsity_running.mul_(RUNNING_AVERAGE_DAMPING).add_(
                batch_mean.to(self.sparsity_running), alpha=1 - RUNNING_AVERAGE_DAMPING
            )
        gap = (self.sparsity_running - self.sparsity_target).to(model.c)
        # logged: the same cross-entropy as the exact form, at the running average
        return self.sparsity_weight * (gap * model.c).sum(), sparsity_penalty(
            self.sparsity_running.unsqueeze(0), self.sparsity_target
        )

    def loss_terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, dict]:
        """Loss (with sparsity) and logs of a raw batch: prepare, terms, sparsity."""
        loss, hidden, logs = self.terms(model, self.prepare(model, v))
        term, pen = self.sparsity(model, hidden)
        if pen is not None:
            loss = loss + term
            logs["sparsity"] = pen
        return loss, logs

    def forward(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, dict]:
        loss, logs = self.loss_terms(model, v)
        return loss, {k: (x.detach() if isinstance(x, Tensor) else x) for k, x in logs.items()}
