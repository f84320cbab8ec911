"""Multimodal RBM: named visible modalities sharing one binary hidden layer (DESIGN.md §2).

    E(v, h) = Σ_m E_m(v_m) − Σ_m v_mᵀ W_m h − cᵀh
    F(v)    = Σ_m E_m(v_m) − Σ_k softplus(c_k + Σ_m (W_mᵀ v_m)_k)

The hidden layer may instead be stepped-sigmoid (``hidden_units="stepped_sigmoid"``,
:mod:`mmvi.models.hidden_units`): softplus above becomes that type's log-partition and σ its mean.

Visibles are passed as ``{name: tensor (batch, n_m)}``. The model knows energies and
conditionals only; objectives turn them into losses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvi.models.hidden_units import make_hidden_units
from mmvi.models.units import UNIT_OPTIONS, Units, make_units

Visibles = dict[str, Tensor]


def check_visibles(
    v: Mapping[str, Tensor], sizes: Mapping[str, int], required: Iterable[str] | None = None
) -> None:
    """Raise ValueError for a modality not in ``sizes``, a wrong shape, or a missing required one."""
    for m, x in v.items():
        if m not in sizes:
            raise ValueError(f"unknown modality {m!r}; the model has {list(sizes)}")
        if x.dim() != 2 or x.shape[1] != sizes[m]:
            raise ValueError(f"modality {m!r}: expected shape (batch, {sizes[m]}), got {tuple(x.shape)}")
    for m in required or ():
        if m not in v:
            raise ValueError(f"modality {m!r} missing; given {sorted(v)}")


class MultimodalRBM(nn.Module):
    """RBM over any number of named modalities with a shared (by default Bernoulli) hidden layer.

    Args:
        modalities: ``{name: {"size": int, "units": "bernoulli"|"gaussian"|"softmax"}}``.
        n_hidden: number of hidden units.
        init_std: std of the N(0, init_std²) weight initialisation (paper: 0.01).
        hidden_units: ``"bernoulli"`` (default), ``"stepped_sigmoid"`` or
            ``{"type": ..., "n_steps": 5, "sample_mode": "exact"}``.
    """

    def __init__(
        self,
        modalities: Mapping[str, Mapping],
        n_hidden: int,
        init_std: float = 0.01,
        hidden_units: str | Mapping = "bernoulli",
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("MultimodalRBM needs at least one modality")
        if n_hidden <= 0:
            raise ValueError(f"model.n_hidden must be positive, got {n_hidden}")
        self.names: list[str] = list(modalities)
        self.sizes: dict[str, int] = {m: int(spec["size"]) for m, spec in modalities.items()}
        self.units: dict[str, Units] = {
            m: make_units(
                str(spec.get("units", "bernoulli")), **{k: spec[k] for k in UNIT_OPTIONS if k in spec}
            )
            for m, spec in modalities.items()
        }
        self.hidden: Units = make_hidden_units(hidden_units)
        self.n_hidden = int(n_hidden)
        self.W = nn.ParameterDict(
            {m: nn.Parameter(init_std * torch.randn(n, n_hidden)) for m, n in self.sizes.items()}
        )
        self.b = nn.ParameterDict({m: nn.Parameter(torch.zeros(n)) for m, n in self.sizes.items()})
        self.c = nn.Parameter(torch.zeros(n_hidden))

    # ------------------------------------------------------------------ set-up
    @torch.no_grad()
    def init_visible_bias_from_data(self, means: Mapping[str, Tensor]) -> None:
        """Visible bias = logit of the data mean (Bernoulli), the data mean (Gaussian)."""
        for m, mu in means.items():
            mu = mu.to(self.b[m])
            if self.units[m].name == "bernoulli":
                mu = mu.clamp(1e-3, 1 - 1e-3)
                self.b[m].copy_(torch.log(mu) - torch.log1p(-mu))
            elif self.units[m].name == "gaussian":
                self.b[m].copy_(mu)
            elif hasattr(self.units[m], "bias_from_mean"):
                self.b[m].copy_(self.units[m].bias_from_mean(mu))
            else:
                self.b[m].copy_(torch.log(mu.clamp_min(1e-6) / mu.clamp_min(1e-6).sum()))

    def check_visibles(self, v: Mapping[str, Tensor], names: Iterable[str] | None = None) -> None:
        """Clear error for unknown modality names or wrong shapes."""
        check_visibles(v, self.sizes, names)

    # ------------------------------------------------------------- conditionals
    def bottom_up(self, v: Mapping[str, Tensor], scale: Mapping[str, float] | None = None) -> Tensor | float:
        """Σ_m s_m W_mᵀ v_m over the modalities present in ``v`` (no bias; 0.0 if ``v`` is empty)."""
        total: Tensor | float = 0.0
        for m, x in v.items():
            term = x @ self.W[m]
            if scale is not None and m in scale:
                term = term * scale[m]
            total = total + term
        return total

    def hidden_bias(self, v: Mapping[str, Tensor]) -> Tensor:
        """c, scaled by the document length D when a replicated-softmax modality is in ``v``."""
        bias_scale: Tensor | float = 1.0
        for m, x in v.items():
            hs = self.units[m].hidden_scale(x)
            if not isinstance(hs, float):
                bias_scale = hs
        return self.c * bias_scale

    def hidden_input(self, v: Mapping[str, Tensor], scale: Mapping[str, float] | None = None) -> Tensor:
        """c·D + Σ_m s_m W_mᵀ v_m over the modalities present in ``v``.

        ``scale`` multiplies a modality's input (to stand in for missing modalities,
        PAPER.md §2); a replicated-softmax modality scales the hidden bias by its length D.
        """
        return self.hidden_bias(v) + self.bottom_up(v, scale)

    def hidden_probs(self, v: Mapping[str, Tensor], scale: Mapping[str, float] | None = None) -> Tensor:
        """P(h = 1 | v) = σ(c + Σ_m W_mᵀ v_m) (E[h | v] for non-binary hidden units)."""
        return self.hidden.mean(self.hidden_input(v, scale))

    def visible_input(self, m: str, h: Tensor) -> Tensor:
        """b_m + W_m h."""
        return F.linear(h, self.W[m], self.b[m])

    def visible_mean(self, m: str, h: Tensor) -> Tensor:
        return self.units[m].mean(self.visible_input(m, h))

    def sample_visible(self, m: str, h: Tensor) -> Tensor:
        return self.units[m].sample(self.visible_input(m, h))

    # ---------------------------------------------------------------- energies
    def free_energy(self, v: Mapping[str, Tensor]) -> Tensor:
        """F(v) per example; v must hold every modality."""
        e = sum(self.units[m].energy(v[m], self.b[m]) for m in self.names)
        return e - self.hidden.log_partition(self.hidden_input({m: v[m] for m in self.names})).sum(-1)

    def energy(self, v: Mapping[str, Tensor], h: Tensor) -> Tensor:
        """E(v, h) per example (for stepped-sigmoid hiddens, without the copies' offset term)."""
        e = sum(self.units[m].energy(v[m], self.b[m]) for m in self.names)
        return e - (self.hidden_input({m: v[m] for m in self.names}) * h).sum(-1)

    # ------------------------------------------------------------------ Gibbs
    def gibbs_step(self, v: Visibles, clamp: Iterable[str] = ()) -> tuple[Visibles, Tensor]:
        """One block-Gibbs sweep h ~ P(h|v), v_m ~ P(v_m|h) for unclamped m.

        Returns the new visibles (clamped ones unchanged) and the hidden sample.
        """
        clamp = set(clamp)
        h = self.hidden.sample(self.hidden_input(v))
        out = {m: (v[m] if m in clamp else self.sample_visible(m, h)) for m in self.names}
        return out, h

    def gibbs_chain(self, v: Visibles, steps: int, clamp: Iterable[str] = ()) -> Visibles:
        for _ in range(steps):
            v, _ = self.gibbs_step(v, clamp)
        return v

    def clamped_chain(
        self, given: Mapping[str, Tensor], target: str, start: Tensor, steps: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Gibbs chain over (h, v_target) with ``given`` clamped (all other modalities).

        Yields ``(v_target, F(given, v_target))`` for the start state and after each of ``steps``
        sweeps. The clamped modalities' hidden input and energy are computed once, and each
        state's hidden input serves both its free energy and the next hidden sample.
        """
        fixed = self.c + self.bottom_up(given)
        const = sum(self.units[m].energy(x, self.b[m]) for m, x in given.items())
        units, W, b = self.units[target], self.W[target], self.b[target]
        x = start
        for t in range(steps + 1):
            act = fixed + x @ W
            yield x, const + units.energy(x, b) - self.hidden.log_partition(act).sum(-1)
            if t < steps:
                x = self.sample_visible(target, self.hidden.sample(act))

    # ------------------------------------------------------ missing modalities
    def missing_scale(
        self, given: Iterable[str], missing_units: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Scale of each given modality's hidden input standing in for missing units.

        s = 1 + (number of missing visible units) / (number of given visible units);
        for two equal halves with one missing this is 2 (PAPER.md §2: s = 1 + 1 − p).
        ``missing_units`` overrides the count of missing units per missing modality.
        """
        given = list(given)
        n_given = sum(self.sizes[m] for m in given)
        if missing_units is None:
            n_missing = sum(self.sizes[m] for m in self.names if m not in given)
        else:
            n_missing = float(sum(missing_units.values()))
        s = 1.0 + n_missing / max(n_given, 1)
        return {m: s for m in given}

    def infer_missing(
        self,
        given: Mapping[str, Tensor],
        steps: int = 100,
        tol: float | None = 1e-5,
        scale_init: bool = True,
    ) -> tuple[Visibles, Tensor]:
        """Mean-field inference of the modalities absent from ``given``.

        h₀ = σ(c + s·Σ_given W_mᵀ v_m) (s from :meth:`missing_scale` if ``scale_init``), then
        repeat: v_miss ← E[v_miss | h]; h ← σ(c + Σ_m W_mᵀ v_m), for ``steps`` updates or until
        the mean absolute change of the missing means is below ``tol``.
        Returns the completed visibles (given ones unchanged) and the final hidden means.
        """
        self.check_visibles(given)
        missing = [m for m in self.names if m not in given]
        scale = self.missing_scale(given) if (scale_init and missing) else None
        h = self.hidden_probs(given, scale)
        v: Visibles = dict(given)
        for m in missing:
            v[m] = self.visible_mean(m, h)
        for _ in range(steps if missing else 0):
            h = self.hidden_probs(v)
            new = {m: self.visible_mean(m, h) for m in missing}
            change = max(float((new[m] - v[m]).detach().abs().mean()) for m in missing)
            v.update(new)
            if tol is not None and change < tol:
                break
        h = self.hidden_probs(v)
        return v, h

    def representation(
        self, given: Mapping[str, Tensor], steps: int = 100, tol: float | None = 1e-5
    ) -> Tensor:
        """Joint representation: hidden means with missing modalities inferred by mean-field."""
        if all(m in given for m in self.names):
            return self.hidden_probs({m: given[m] for m in self.names})
        return self.infer_missing(given, steps=steps, tol=tol)[1]

    def extra_repr(self) -> str:
        mods = ", ".join(f"{m}:{self.sizes[m]}({self.units[m].name})" for m in self.names)
        return f"modalities=[{mods}], n_hidden={self.n_hidden}({self.hidden.name})"
