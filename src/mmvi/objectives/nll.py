"""Maximum likelihood of the joint (NLL): CD-k and PCD-k (docs/design.md §3.1).

    loss = mean F(v_data) − mean F(v_model)        (v_model constant)

``v_model`` comes from k block-Gibbs steps from the data (CD) or from persistent chains kept in
hidden space as module buffers (PCD: checkpointed; per rank under DDP with
``broadcast_buffers=False``); the negative statistics reuse the last step's hidden input, one
product per step and modality. ``k_schedule=ramp`` is the reference's ramp
k_t = min(1 + ⌊(t − 1)/10⌋, k) (docs/paper.md §2); ``fixed`` uses k throughout.

Negative statistics (``negative_statistics``): ``free_energy`` pairs the chains' visible states
v_k with E[h | v_k] (−∂F(v_k), h summed out); ``hidden_states`` is the reference code's: the
chains' last hidden states h_k with E[v | h_k], i.e. −∂E(E[v|h_k], h_k). Both estimate the model
expectation of the gradient. The negative term of the last loss is kept in
:attr:`ContrastiveDivergence.negative_part` (for ``optim.momentum_negative=false``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.constraints import INT1, Flag, Options, check_arguments
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.base import Hidden, Objective

K_SCHEDULES = ("fixed", "ramp")
NEGATIVE_STATISTICS = ("free_energy", "hidden_states")
RAMP_EVERY = 10


class ContrastiveDivergence(Objective):
    """CD-k (``persistent=False``) or PCD-k (``persistent=True``) on the joint.

    Args:
        k: Gibbs steps per update (the maximum of the ramp).
        persistent: keep ``n_chains`` persistent chains (PCD) instead of restarting at the data.
        n_chains: number of persistent chains (paper: 500).
        k_schedule: ``fixed`` or ``ramp`` (docs/design.md §3.1).
        negative_statistics: ``free_energy`` or ``hidden_states`` (module docstring).
    """

    constraints = {
        "k": INT1,
        "persistent": Flag(),
        "n_chains": INT1,
        "k_schedule": Options(K_SCHEDULES),
        "negative_statistics": Options(NEGATIVE_STATISTICS),
    }

    def __init__(
        self,
        k: int = 1,
        persistent: bool = False,
        n_chains: int = 100,
        k_schedule: str = "fixed",
        negative_statistics: str = "free_energy",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_arguments(
            self,
            k=k,
            persistent=persistent,
            n_chains=n_chains,
            k_schedule=k_schedule,
            negative_statistics=negative_statistics,
        )
        self.negative_statistics = negative_statistics
        self.negative_part: Tensor | None = None
        self.k = int(k)
        self.persistent = bool(persistent)
        self.n_chains = int(n_chains)
        self.k_schedule = k_schedule
        self.length_names: list[str] = []

    def steps(self) -> int:
        """k for the current epoch (0-based ``self.epoch``, i.e. t = epoch + 1)."""
        if self.k_schedule == "ramp":
            return min(1 + self.epoch // RAMP_EVERY, self.k)
        return self.k

    def setup(self, model: MultimodalRBM) -> None:
        super().setup(model)
        if not self.persistent:
            return
        dtype = model.c.dtype
        self.register_buffer("chains_hidden", torch.zeros(self.n_chains, model.n_hidden, dtype=dtype))
        self.length_names = [m for m in model.names if model.units[m].name == "softmax"]
        for m in self.length_names:
            self.register_buffer(f"chain_lengths_{m}", torch.zeros(self.n_chains, dtype=dtype))
        self.register_buffer("chains_ready", torch.zeros((), dtype=torch.bool))

    def chain_lengths(self) -> dict[str, Tensor]:
        return {m: getattr(self, f"chain_lengths_{m}") for m in self.length_names}

    @torch.no_grad()
    def _init_chains(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> None:
        """Chains start at samples of the visible biases (the data marginals after the
        logit-of-the-mean initialisation), with document lengths drawn from the batch's."""
        n = self.n_chains
        zeros = torch.zeros(n, model.n_hidden, device=model.c.device, dtype=model.c.dtype)
        lengths = model.lengths(v)
        for m in self.length_names:
            pick = torch.randint(0, lengths[m].shape[0], (n,), device=lengths[m].device)
            getattr(self, f"chain_lengths_{m}").copy_(lengths[m][pick])
        vis = {m: model.sample_visible(m, zeros, self.chain_lengths().get(m)) for m in model.names}
        self.chains_hidden.copy_(model.hidden.sample(model.hidden_input(vis)))
        self.chains_ready.fill_(True)

    @torch.no_grad()
    def negative_sample(
        self, model: MultimodalRBM, v: Mapping[str, Tensor], act: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """k steps h → v → h from the data's hidden sample (CD) or the chains (PCD).

        Args:
            v: the (prepared) batch; ``act`` (B, H): its hidden input (CD starts from it).
        Returns:
            the final visible states and their hidden input (n, H); the final hidden states (n, H)
            are kept in ``last_hidden``.
        """
        if self.persistent:
            if not bool(self.chains_ready):
                self._init_chains(model, v)
            h, lengths = self.chains_hidden, self.chain_lengths()
        else:
            h, lengths = model.hidden.sample(act.detach()), model.lengths(v)
        for _ in range(self.steps()):
            vis = {m: model.sample_visible(m, h, lengths.get(m)) for m in model.names}
            neg_act = model.hidden_input(vis)
            h = model.hidden.sample(neg_act)
        if self.persistent:
            self.chains_hidden.copy_(h)
        self.last_hidden = h
        return vis, neg_act

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Hidden, dict]:
        full = {m: v[m] for m in model.names}
        act = model.hidden_input(full)
        pos_f = model.free_energy_from_input(full, act)
        neg, neg_act = self.negative_sample(model, full, act)
        neg_h = self.last_hidden
        if self.negative_statistics == "hidden_states":
            lengths = self.chain_lengths() if self.persistent else model.lengths(full)
            with torch.no_grad():
                means = {m: model.visible_mean(m, neg_h, lengths.get(m)) for m in model.names}
            negative = -model.energy(means, neg_h).mean()
        else:
            negative = -model.mean_free_energy_given_input(neg, neg_act)
        self.negative_part = negative
        loss = pos_f.mean() + negative
        logs = {"free_energy": pos_f.detach().mean(), "k": torch.tensor(float(self.steps()))}
        return loss, model.hidden.mean(act), logs
