"""Minimum variation of information (MinVI): maximise Σ_m log P(v_m | v_rest) (DESIGN.md §3).

Three estimators, each run for every direction (modality m predicted from the others):

* :class:`ConditionalCD` (``minvi_ccd``): clamp v_rest, k Gibbs steps over (v_m, h) from the data;
  loss += F(v) − F(v_m^model, v_rest).
* :class:`CDPercLoss` (``minvi_cdpl``, PAPER.md §2): the chain starts from a prediction given
  v_rest only (hidden input scaled up for the missing v_m); the negative v_m is, per example, the
  lowest-free-energy state seen along the chain; each direction's negative term weighted 1/M.
* :class:`MultiPrediction` (``minvi_mp``, PAPER.md §2): hide v_m except a random observed
  fraction, T mean-field updates, loss = −log p(true unobserved units | predicted means),
  back-propagated through the last K steps (K grows by one every ``grow_every`` epochs).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.base import Objective


def _directions(model: MultimodalRBM, only: list[str] | None) -> list[str]:
    names = list(only) if only else list(model.names)
    unknown = [m for m in names if m not in model.names]
    if unknown:
        raise ValueError(
            f"objective.directions names unknown modalities {unknown}; the model has {model.names}"
        )
    return names


class ConditionalCD(Objective):
    """Conditional CD-k: estimates −∇ log P(v_m | v_rest) for each direction m."""

    def __init__(self, k: int = 1, directions: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"objective.k must be >= 1, got {k}")
        self.k = int(k)
        self.directions = directions

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, dict]:
        dirs = _directions(model, self.directions)
        pos_f = model.free_energy(v)
        neg_f = 0.0
        for m in dirs:
            rest = {n: v[n] for n in model.names if n != m}
            with torch.no_grad():
                *_, (last, _) = model.clamped_chain(rest, m, v[m], self.k)
            neg_f = neg_f + model.free_energy({**rest, m: last}).mean() / len(dirs)
        loss = pos_f.mean() - neg_f
        return (
            loss,
            model.hidden_probs({m: v[m] for m in model.names}),
            {"free_energy": pos_f.detach().mean()},
        )


class CDPercLoss(Objective):
    """CD-PercLoss (the paper's MinVI sampler): lowest-free-energy negative along a clamped chain."""

    def __init__(self, k: int = 10, directions: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"objective.k must be >= 1, got {k}")
        self.k = int(k)
        self.directions = directions

    @torch.no_grad()
    def lowest_energy_prediction(self, model: MultimodalRBM, v: Mapping[str, Tensor], m: str) -> Tensor:
        """Per example, the v_m of lowest F(v_rest, v_m) among the k+1 states of the clamped chain."""
        rest = {n: v[n] for n in model.names if n != m}
        h = model.hidden.sample(model.hidden_input(rest, model.missing_scale(rest)))
        best, best_f = None, None
        for x, f in model.clamped_chain(rest, m, model.sample_visible(m, h), self.k):
            if best is None:
                best, best_f = x, f
                continue
            better = f < best_f
            best = torch.where(better.unsqueeze(-1), x, best)
            best_f = torch.where(better, f, best_f)
        return best

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, dict]:
        dirs = _directions(model, self.directions)
        pos_f = model.free_energy(v)
        neg_f = 0.0
        for m in dirs:
            neg = dict(v)
            neg[m] = self.lowest_energy_prediction(model, v, m)
            neg_f = neg_f + model.free_energy(neg).mean() / len(dirs)
        loss = pos_f.mean() - neg_f
        return (
            loss,
            model.hidden_probs({m: v[m] for m in model.names}),
            {"free_energy": pos_f.detach().mean()},
        )


class MultiPrediction(Objective):
    """Multi-prediction (MP) training of the conditionals by unrolled mean-field.

    Args:
        mask_rate: p; each unit of the predicted modality stays observed with probability p·u,
            u ~ U(0, 1) drawn once per batch (p = 0 hides the modality whole).
        mf_steps: T mean-field updates.
        bptt_steps: K_max, back-propagate through the last K unrolled steps.
        grow_every: K = min(K_max, 1 + epoch // grow_every); 0 uses K_max from the start.
        directions: modalities to predict (default all, each from the rest).
        p_modality: if > 0, generalised mask over any number of modalities: in each direction,
            every other modality is also hidden whole with this probability.
    """

    def __init__(
        self,
        mask_rate: float = 0.25,
        mf_steps: int = 5,
        bptt_steps: int = 5,
        grow_every: int = 20,
        directions: list[str] | None = None,
        p_modality: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= mask_rate <= 1.0:
            raise ValueError(f"objective.mask_rate must be in [0, 1], got {mask_rate}")
        if not 0.0 <= p_modality < 1.0:
            raise ValueError(f"objective.p_modality must be in [0, 1), got {p_modality}")
        if mf_steps < 1 or bptt_steps < 1:
            raise ValueError(f"objective.mf_steps and bptt_steps must be >= 1, got {mf_steps}, {bptt_steps}")
        if grow_every < 0:
            raise ValueError(f"objective.grow_every must be >= 0, got {grow_every}")
        self.mask_rate = float(mask_rate)
        self.mf_steps = int(mf_steps)
        self.bptt_steps = int(bptt_steps)
        self.grow_every = int(grow_every)
        self.directions = directions
        self.p_modality = float(p_modality)

    @property
    def native_inference_steps(self) -> int:
        """MP trains a T-step mean-field predictor: its inference is T steps."""
        return self.mf_steps

    def truncation(self) -> int:
        """K for the current epoch."""
        if self.grow_every == 0:
            return self.bptt_steps
        return min(self.bptt_steps, 1 + self.epoch // self.grow_every)

    def predict(
        self, model: MultimodalRBM, v: Mapping[str, Tensor], observed: Mapping[str, Tensor | None]
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Unrolled mean-field given per-unit observation masks (1 = observed; None = all observed).

        h₀ = σ(c + Σ_m s_m W_mᵀ(o_m ⊙ v_m)) with s_m = 1 + (#unobserved)/(#units of fully observed
        modalities) on fully observed modalities; then T × [v_miss ← E[v | h]; h ← σ(c + Σ W_mᵀ v_m)].
        The input of fully observed modalities is computed once. Returns the final visible
        activations (b + W h) of the partly observed modalities and the final h.
        """
        full = {m: v[m] for m in model.names if observed[m] is None}
        part = [m for m in model.names if observed[m] is not None]
        n_missing = sum(float((1 - observed[m]).sum(-1).mean()) for m in part)
        s = 1.0 + n_missing / max(sum(model.sizes[m] for m in full), 1)
        fixed = model.bottom_up(full)
        bias = model.hidden_bias(v)
        h = model.hidden.mean(bias + s * fixed + model.bottom_up({m: observed[m] * v[m] for m in part}))
        k = self.truncation()
        for t in range(self.mf_steps):
            if k < self.mf_steps and t == self.mf_steps - k:
                h = h.detach()
            state = {m: torch.lerp(model.visible_mean(m, h), v[m], observed[m]) for m in part}
            h = model.hidden.mean(bias + fixed + model.bottom_up(state))
        return {m: model.visible_input(m, h) for m in part}, h

    def sample_masks(
        self, model: MultimodalRBM, v: Mapping[str, Tensor], target: str
    ) -> dict[str, Tensor | None]:
        """Observation masks: ``target`` keeps each unit with probability p·u (u ~ U(0,1) per
        batch); other modalities are observed (None), or hidden whole with prob. ``p_modality``."""
        ref = v[target]
        obs: dict[str, Tensor | None] = {m: None for m in model.names}
        q = self.mask_rate * float(torch.rand(()))
        obs[target] = torch.bernoulli(torch.full_like(ref, q))
        if self.p_modality > 0:
            for m in model.names:
                if m != target and float(torch.rand(())) < self.p_modality:
                    obs[m] = torch.zeros_like(v[m])
        return obs

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, dict]:
        dirs = _directions(model, self.directions)
        loss = 0.0
        hiddens = []
        logs: dict[str, Tensor] = {}
        for m in dirs:
            observed = self.sample_masks(model, v, m)
            acts, h = self.predict(model, v, observed)
            nll = 0.0
            for n, act in acts.items():
                lp = model.units[n].log_prob_units(v[n], act)
                nll = nll - ((1 - observed[n]) * lp).sum(-1).mean()
            logs[f"mp_nll/{m}"] = nll.detach()
            loss = loss + nll
            hiddens.append(h)
        logs["mp_truncation"] = torch.tensor(float(self.truncation()))
        return loss, torch.cat(hiddens), logs
