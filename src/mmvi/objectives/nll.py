"""Maximum likelihood of the joint (NLL): CD-k and PCD-k (DESIGN.md §3).

    loss = mean F(v_data) − mean F(v_model.detach())

``v_model`` comes from k block-Gibbs steps started at the data (CD) or from persistent
chains kept as module buffers (PCD). Buffers are checkpointed and, under DDP with
``broadcast_buffers=False``, kept per rank.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.base import Objective


class ContrastiveDivergence(Objective):
    """CD-k (``persistent=False``) or PCD-k (``persistent=True``) on the joint.

    Args:
        k: Gibbs steps per update.
        persistent: keep ``n_chains`` persistent chains (PCD) instead of restarting at the data.
        n_chains: number of persistent chains (paper: 500).
    """

    def __init__(self, k: int = 1, persistent: bool = False, n_chains: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"objective.k must be >= 1, got {k}")
        if persistent and n_chains < 1:
            raise ValueError(f"objective.n_chains must be >= 1, got {n_chains}")
        self.k = int(k)
        self.persistent = bool(persistent)
        self.n_chains = int(n_chains)
        self.chain_names: list[str] = []

    def setup(self, model: MultimodalRBM) -> None:
        if not self.persistent:
            return
        self.chain_names = list(model.names)
        for m in model.names:
            self.register_buffer(
                f"chains_{m}", torch.zeros(self.n_chains, model.sizes[m], dtype=model.c.dtype)
            )
        self.register_buffer("chains_ready", torch.zeros((), dtype=torch.bool))

    def chains(self) -> dict[str, Tensor]:
        return {m: getattr(self, f"chains_{m}") for m in self.chain_names}

    @torch.no_grad()
    def _start(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if not self.persistent:
            return {m: v[m] for m in model.names}
        if not bool(self.chains_ready):
            # start the chains from samples of the visible biases (data marginals at init)
            zeros = torch.zeros(self.n_chains, model.n_hidden, device=model.c.device, dtype=model.c.dtype)
            for m in model.names:
                getattr(self, f"chains_{m}").copy_(model.sample_visible(m, zeros))
            self.chains_ready.fill_(True)
        return self.chains()

    @torch.no_grad()
    def negative_sample(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Run k Gibbs steps from the data (CD) or the persistent chains (PCD)."""
        neg = model.gibbs_chain(self._start(model, v), self.k)
        if self.persistent:
            for m in model.names:
                getattr(self, f"chains_{m}").copy_(neg[m])
        return neg

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, dict]:
        neg = self.negative_sample(model, v)
        pos_f = model.free_energy(v)
        loss = pos_f.mean() - model.free_energy(neg).mean()
        hidden = model.hidden_probs({m: v[m] for m in model.names})
        return loss, hidden, {"free_energy": pos_f.detach().mean()}
