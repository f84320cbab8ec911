"""Minimum variation of information (MinVI): maximise Σ_m log P(v_m | v_rest) (docs/design.md §3).

Three estimators, each run for every direction (modality m predicted from the others):
:class:`ConditionalCD` (``minvi_ccd``, docs/design.md §3.2), :class:`CDPercLoss` (``minvi_cdpl``,
§3.3, docs/paper.md §2) and :class:`MultiPrediction` (``minvi_mp``, §3.4: mask, scaled start,
T mean-field updates, loss on the unobserved units, truncated back-propagation). The two sampling
estimators form their negative statistics from the hidden input their chain computed for the kept
state (:meth:`MultimodalRBM.mean_free_energy_given_input`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.constraints import INT0, INT1, PROBABILITY, Interval, NameList, check_arguments
from mmvi.models.mrbm import MultimodalRBM
from mmvi.models.units import bernoulli, observe
from mmvi.objectives.base import Hidden, Objective


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

    constraints = {"k": INT1, "directions": NameList(allow_none=True, what="modalities")}

    def __init__(self, k: int = 1, directions: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        check_arguments(self, k=k, directions=directions)
        self.k = int(k)
        self.directions = directions

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Hidden, dict]:
        dirs = _directions(model, self.directions)
        full = {m: v[m] for m in model.names}
        act = model.hidden_input(full)
        pos_f = model.free_energy_from_input(full, act)
        neg_f = 0.0
        for m in dirs:
            rest = {n: full[n] for n in model.names if n != m}
            with torch.no_grad():
                *_, (last, _, last_act) = model.clamped_chain(rest, m, full[m], self.k)
            neg_f = neg_f + model.mean_free_energy_given_input({**rest, m: last}, last_act) / len(dirs)
        loss = pos_f.mean() - neg_f
        return loss, model.hidden.mean(act), {"free_energy": pos_f.detach().mean()}


class CDPercLoss(Objective):
    """CD-PercLoss (the paper's MinVI sampler): lowest-free-energy negative along a clamped chain."""

    constraints = {"k": INT1, "directions": NameList(allow_none=True, what="modalities")}

    def __init__(self, k: int = 10, directions: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        check_arguments(self, k=k, directions=directions)
        self.k = int(k)
        self.directions = directions

    @torch.no_grad()
    def lowest_energy_prediction(
        self, model: MultimodalRBM, v: Mapping[str, Tensor], m: str
    ) -> tuple[Tensor, Tensor]:
        """Per example, the v_m of lowest F(v_rest, v_m) among the k+1 states of the clamped chain,
        and that state's hidden input (B, H). The chain starts from v_m ~ P(v_m | h),
        h ~ P(h | s·v_rest) (a replicated-softmax v_m keeps the data's document lengths)."""
        rest = {n: v[n] for n in model.names if n != m}
        act0 = model.hidden_bias({**rest, m: v[m]}) + model.bottom_up(rest, model.missing_scale(rest))
        start = model.sample_visible(m, model.hidden.sample(act0), model.units[m].length(v[m]))
        best, best_f, best_act = None, None, None
        for x, f, act in model.clamped_chain(rest, m, start, self.k):
            if best is None:
                best, best_f, best_act = x, f, act
                continue
            better = (f < best_f).unsqueeze(-1)
            best = torch.where(better, x, best)
            best_act = torch.where(better, act, best_act)
            best_f = torch.where(better.squeeze(-1), f, best_f)
        return best, best_act

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Hidden, dict]:
        dirs = _directions(model, self.directions)
        full = {m: v[m] for m in model.names}
        act = model.hidden_input(full)
        pos_f = model.free_energy_from_input(full, act)
        neg_f = 0.0
        for m in dirs:
            best, best_act = self.lowest_energy_prediction(model, full, m)
            neg_f = neg_f + model.mean_free_energy_given_input({**full, m: best}, best_act) / len(dirs)
        loss = pos_f.mean() - neg_f
        return loss, model.hidden.mean(act), {"free_energy": pos_f.detach().mean()}


class MultiPrediction(Objective):
    """Multi-prediction (MP) training of the conditionals by unrolled mean-field.

    Args:
        mask_rate: p; each unit of the predicted modality stays observed with probability p·u,
            u ~ U(0, 1) drawn once per batch (p = 0 hides the modality whole).
        mf_steps: T mean-field updates.
        bptt_steps: K_max; the gradient flows back through the last K updates, as the reference
            code's ``nstop``: the visible state feeding update T − K is held constant (K ≥ T:
            back-propagation through every step, down to the initial hidden state).
        grow_every: K = min(K_max, 1 + epoch // grow_every); 0 uses K_max from the start.
        directions: modalities to predict (default all, each from the rest).
        p_modality: if > 0, generalised mask over any number of modalities: in each direction,
            every other modality is also hidden whole with this probability.
        hidden_clamp: ε; binary hidden means are clamped to [ε, 1 − ε] inside the unrolled loop
            (docs/paper.md §2; null: no clamp).
    """

    loss_is_value = True  # the cross-entropy of the predictions

    constraints = {
        "mask_rate": PROBABILITY,
        "mf_steps": INT1,
        "bptt_steps": INT1,
        "grow_every": INT0,
        "directions": NameList(allow_none=True, what="modalities"),
        "p_modality": Interval(0, 1, closed="left"),
        "hidden_clamp": Interval(0, 0.5, closed="left", allow_none=True),
    }

    def __init__(
        self,
        mask_rate: float = 0.25,
        mf_steps: int = 5,
        bptt_steps: int = 5,
        grow_every: int = 20,
        directions: list[str] | None = None,
        p_modality: float = 0.0,
        hidden_clamp: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_arguments(
            self,
            mask_rate=mask_rate,
            mf_steps=mf_steps,
            bptt_steps=bptt_steps,
            grow_every=grow_every,
            directions=directions,
            p_modality=p_modality,
            hidden_clamp=hidden_clamp,
        )
        self.mask_rate = float(mask_rate)
        self.mf_steps = int(mf_steps)
        self.bptt_steps = int(bptt_steps)
        self.grow_every = int(grow_every)
        self.directions = directions
        self.p_modality = float(p_modality)
        self.hidden_clamp = None if hidden_clamp is None else float(hidden_clamp)

    @property
    def native_inference_steps(self) -> int:
        """MP trains a T-step mean-field predictor: its inference is T steps."""
        return self.mf_steps

    def truncation(self) -> int:
        """K for the current epoch."""
        if self.grow_every == 0:
            return self.bptt_steps
        return min(self.bptt_steps, 1 + self.epoch // self.grow_every)

    def _hidden(self, model: MultimodalRBM, x: Tensor) -> Tensor:
        h = model.hidden.mean(x)
        if self.hidden_clamp and model.hidden.name == "bernoulli":
            h = h.clamp(self.hidden_clamp, 1 - self.hidden_clamp)
        return h

    def predict(
        self,
        model: MultimodalRBM,
        v: Mapping[str, Tensor],
        observed: Mapping[str, Tensor | None],
        rates: Mapping[str, float] | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Unrolled mean-field given per-unit observation masks (1 = observed; None = all observed).

        h₀ = σ(c + s·Σ_full W_mᵀv_m + Σ_part W_mᵀ(o_m ⊙ v_m)) with s = 1 + Σ_part (1 − p_m)·n_m /
        Σ_full n_m, p_m the nominal observed rate of a partly observed modality (``rates``; the
        reference's s = 2 − p for two halves); then T × [v_part ← o ⊙ v + (1 − o) ⊙ E[v | h];
        h ← σ(c + Σ W_mᵀ v_m)]. The steps before the back-propagation window (:meth:`truncation`)
        run without a graph; the fully observed modalities' input is computed once. Returns the
        final visible activations (b + W h) of the partly observed modalities and the final h.
        """
        rates = rates or {}
        full = {m: v[m] for m in model.names if observed[m] is None}
        part = [m for m in model.names if observed[m] is not None]
        n_missing = sum((1.0 - rates.get(m, 0.0)) * model.sizes[m] for m in part)
        s = 1.0 + n_missing / max(sum(model.sizes[m] for m in full), 1)
        grad = torch.is_grad_enabled()
        steps = self.mf_steps
        cut = steps - self.truncation() - 1  # the visible state of step `cut` is held constant
        bias = model.hidden_bias(v)
        up = model.bottom_up(full)  # Σ_full W_mᵀ v_m, computed once
        fixed = bias + up
        with torch.set_grad_enabled(grad and cut < 0):
            start = torch.add(bias, up, alpha=s)
            h = self._hidden(model, model.bottom_up({m: observed[m] * v[m] for m in part}, start=start))
        for t in range(steps):
            with torch.set_grad_enabled(grad and t > cut):
                state = {m: observe(model.visible_mean(m, h), v[m], observed[m]) for m in part}
            with torch.set_grad_enabled(grad and t >= cut):
                h = self._hidden(model, model.bottom_up(state, start=fixed))
        return {m: model.visible_input(m, h) for m in part}, h

    def sample_masks(
        self, model: MultimodalRBM, v: Mapping[str, Tensor], target: str
    ) -> tuple[dict[str, Tensor | None], dict[str, float]]:
        """Observation masks and nominal observed rates: ``target`` keeps each unit with
        probability p·u (u ~ U(0,1) per batch); other modalities are observed (None), or hidden
        whole with probability ``p_modality``."""
        obs: dict[str, Tensor | None] = {m: None for m in model.names}
        q = self.mask_rate * float(torch.rand(()))
        obs[target] = bernoulli(torch.full_like(v[target], q))
        rates = {target: self.mask_rate}
        if self.p_modality > 0:
            for m in model.names:
                if m != target and float(torch.rand(())) < self.p_modality:
                    obs[m] = torch.zeros_like(v[m])
                    rates[m] = 0.0
        return obs, rates

    def terms(self, model: MultimodalRBM, v: Mapping[str, Tensor]) -> tuple[Tensor, Hidden, dict]:
        dirs = _directions(model, self.directions)
        loss = 0.0
        hiddens = []
        logs: dict[str, Tensor] = {}
        for m in dirs:
            observed, rates = self.sample_masks(model, v, m)
            acts, h = self.predict(model, v, observed, rates)
            nll = 0.0
            for n, act in acts.items():
                lp = model.units[n].log_prob_units(v[n], act)
                nll = nll - ((1 - observed[n]) * lp).sum(-1).mean()
            logs[f"mp_nll/{m}"] = nll.detach()
            loss = loss + nll
            hiddens.append(h)
        logs["mp_truncation"] = torch.tensor(float(self.truncation()))
        return loss, hiddens, logs
