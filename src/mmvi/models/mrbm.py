"""Multimodal RBM: named visible modalities sharing one binary hidden layer (docs/design.md §2).

    E(v, h) = Σ_m E_m(v_m) − Σ_m v_mᵀ W_m h − cᵀh
    F(v)    = Σ_m E_m(v_m) − Σ_k softplus(c_k + Σ_m (W_mᵀ v_m)_k)

The hidden layer may instead be stepped-sigmoid (``hidden_units="stepped_sigmoid"``,
:mod:`mmvi.models.units`): softplus above becomes that type's log-partition and σ its mean.

Visibles are passed as ``{name: tensor (batch, n_m)}``. The model knows energies and
conditionals only; objectives turn them into losses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvi.constraints import INT1, POSITIVE, Interval, MappingOf, Options, Settings, check_arguments
from mmvi.models.units import LAYER_UNIT_TYPES, UNIT_OPTIONS, UNIT_TYPES, Units, make_hidden_units, make_units

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


#: a modality spec of a model or data config: its size and unit type (and the unit type's options)
MODALITY = Settings({"size": INT1, "units": Options(tuple(UNIT_TYPES) + tuple(LAYER_UNIT_TYPES))}, open=True)
# null in a config: the data module's modalities (read from its files), filled in before the model is built
MODALITIES = MappingOf(MODALITY, allow_none=True, example="{left: {size: 392, units: bernoulli}}")


class MultimodalRBM(nn.Module):
    """RBM over any number of named modalities with a shared (by default Bernoulli) hidden layer.

    Args:
        modalities: ``{name: {"size": int, "units": "bernoulli"|"gaussian"|"softmax"}}``.
        n_hidden: number of hidden units.
        init_std: std of the N(0, init_std²) weight initialisation (paper: 0.01).
        hidden_units: ``"bernoulli"`` (default), ``"stepped_sigmoid"`` or
            ``{"type": ..., "n_steps": 5, "sample_mode": "exact"}``.
        visible_bias_clip: a Bernoulli modality's data means are clipped to [clip, 1 − clip]
            before the logit of :meth:`init_visible_bias_from_data` (the reference code: 0.01).
    """

    constraints = {
        "modalities": MODALITIES,
        "n_hidden": INT1,
        "init_std": POSITIVE,
        "visible_bias_clip": Interval(0, 0.5, closed="neither"),
    }

    def __init__(
        self,
        modalities: Mapping[str, Mapping],
        n_hidden: int,
        init_std: float = 0.01,
        hidden_units: str | Mapping = "bernoulli",
        visible_bias_clip: float = 1e-3,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("MultimodalRBM needs at least one modality")
        check_arguments(
            self,
            modalities=modalities,
            n_hidden=n_hidden,
            init_std=init_std,
            visible_bias_clip=visible_bias_clip,
        )
        self.visible_bias_clip = float(visible_bias_clip)
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
        """Visible bias = logit of the data mean clipped to [c, 1 − c] (Bernoulli; c =
        ``visible_bias_clip``), the data mean (Gaussian)."""
        for m, b in self.visible_bias_of_means(means).items():
            self.b[m].copy_(b)

    @torch.no_grad()
    def visible_bias_of_means(self, means: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{m: (n_m,)}`` visible biases whose unit means are the data means ``means[m]`` (n_m,):
        logit of the mean clamped to [c, 1 − c], c = ``visible_bias_clip`` (Bernoulli), the mean (Gaussian), the log of
        the normalised mean (counts)."""
        out = {}
        for m, mu in means.items():
            mu = mu.to(self.b[m])
            if self.units[m].name == "bernoulli":
                mu = mu.clamp(self.visible_bias_clip, 1 - self.visible_bias_clip)
                out[m] = torch.log(mu) - torch.log1p(-mu)
            elif self.units[m].name == "gaussian":
                out[m] = mu.clone()
            elif hasattr(self.units[m], "bias_from_mean"):
                out[m] = self.units[m].bias_from_mean(mu)
            else:
                out[m] = torch.log(mu.clamp_min(1e-6) / mu.clamp_min(1e-6).sum())
        return out

    def check_visibles(self, v: Mapping[str, Tensor], names: Iterable[str] | None = None) -> None:
        """Clear error for unknown modality names or wrong shapes."""
        check_visibles(v, self.sizes, names)

    # ------------------------------------------------------------- conditionals
    def bottom_up(
        self, v: Mapping[str, Tensor], scale: Mapping[str, float] | None = None, start: Tensor | None = None
    ) -> Tensor | float:
        """``start`` + Σ_m s_m W_mᵀ v_m over the modalities present in ``v`` (0.0 if both are empty).

        Each product is accumulated by one fused ``addmm`` (no separate scaling or addition pass).
        """
        total: Tensor | float = 0.0 if start is None else start
        for m, x in v.items():
            s = 1.0 if scale is None else float(scale.get(m, 1.0))
            if isinstance(total, Tensor):
                total = torch.addmm(total, x, self.W[m], alpha=s)
            else:
                total = x @ self.W[m] if s == 1.0 else torch.mm(x, self.W[m]).mul_(s)
        return total

    def hidden_bias_scale(self, v: Mapping[str, Tensor]) -> Tensor | float:
        """D (batch, 1) when a replicated-softmax modality is in ``v`` (Salakhutdinov & Hinton 2009), else 1."""
        bias_scale: Tensor | float = 1.0
        for m, x in v.items():
            hs = self.units[m].hidden_scale(x)
            if not isinstance(hs, float):
                bias_scale = hs
        return bias_scale

    @torch.no_grad()
    def scale_length_gradients(self, v: Mapping[str, Tensor]) -> None:
        """Divide the gradients that grow with the document length by the batch's mean length D̄.

        A replicated-softmax modality m of a document of D words enters the model D times: its
        energy −Σ_k v_k b_k − Σ_jk v_k W_kj h_j − D Σ_j c_j h_j is a sum over the D words
        (Salakhutdinov & Hinton 2009, "Replicated Softmax: an Undirected Topic Model", NIPS), so
        the gradients of W_m, b_m and (through the D-scaled bias) c are sums of D per-word terms
        and grow with D: at a learning rate that suits short documents, long ones diverge. After
        the backward pass this divides those gradients by D̄ (the mean of v_m's row sums in the
        batch, at least 1), so that the step is that of the gradient per word, the same for
        documents of any length: the counts are read as D draws from one word distribution, as
        Hinton & Salakhutdinov's document models do when they divide the counts by D (Hinton,
        CSC321 lecture notes on semantic hashing: "divide the counts in a bag of words vector by
        N", the document's number of words). Batches of one-word documents (D̄ = 1) are unchanged.
        ``c`` is scaled by the D̄ of the modality that scales the hidden bias
        (:meth:`hidden_bias_scale`).

        Args:
            v: the training batch ``{modality: (B, n_m)}`` (its replicated-softmax modalities are read).
        """
        scaled_c = False
        for m in reversed(self.names):
            if m not in v or not isinstance(self.units[m].hidden_scale(v[m][:1]), Tensor):
                continue
            inv = 1.0 / v[m].sum(-1).mean().clamp_min(1.0)
            for p in (self.W[m], self.b[m]):
                if p.grad is not None:
                    p.grad.mul_(inv.to(p.grad))
            if not scaled_c and self.c.grad is not None:
                self.c.grad.mul_(inv.to(self.c.grad))
            scaled_c = True

    def hidden_bias(self, v: Mapping[str, Tensor]) -> Tensor:
        """c, scaled by the document length D when a replicated-softmax modality is in ``v``."""
        return self.c * self.hidden_bias_scale(v)

    def hidden_input(self, v: Mapping[str, Tensor], scale: Mapping[str, float] | None = None) -> Tensor:
        """c·D + Σ_m s_m W_mᵀ v_m over the modalities present in ``v``.

        ``scale`` multiplies a modality's input (to stand in for missing modalities,
        docs/paper.md §2); a replicated-softmax modality scales the hidden bias by its length D.
        """
        return self.bottom_up(v, scale, start=self.hidden_bias(v))

    def hidden_probs(self, v: Mapping[str, Tensor], scale: Mapping[str, float] | None = None) -> Tensor:
        """P(h = 1 | v) = σ(c + Σ_m W_mᵀ v_m) (E[h | v] for non-binary hidden units)."""
        return self.hidden.mean(self.hidden_input(v, scale))

    def visible_input(self, m: str, h: Tensor) -> Tensor:
        """b_m + W_m h."""
        return F.linear(h, self.W[m], self.b[m])

    def visible_mean(self, m: str, h: Tensor, length: Tensor | None = None) -> Tensor:
        """E[v_m | h]; ``length``: document lengths D (batch,) of a replicated-softmax modality."""
        return self.units[m].mean(self.visible_input(m, h), length)

    def sample_visible(self, m: str, h: Tensor, length: Tensor | None = None) -> Tensor:
        """A draw of v_m | h; a replicated-softmax modality draws ``length`` (batch,) words per row."""
        return self.units[m].sample(self.visible_input(m, h), length)

    def lengths(self, v: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Document lengths D (batch,) of the replicated-softmax modalities in ``v``."""
        out = {}
        for m, x in v.items():
            d = self.units[m].length(x)
            if d is not None:
                out[m] = d
        return out

    # ---------------------------------------------------------------- energies
    def visible_energy(self, v: Mapping[str, Tensor]) -> Tensor | float:
        """Σ_m E_m(v_m) over the modalities in ``v``, per example (0.0 if ``v`` is empty)."""
        return sum((self.units[m].energy(x, self.b[m]) for m, x in v.items()), 0.0)

    def free_energy_from_input(self, v: Mapping[str, Tensor], act: Tensor) -> Tensor:
        """F(v) per example given its hidden input ``act`` = :meth:`hidden_input` of all of ``v``."""
        return self.visible_energy({m: v[m] for m in self.names}) - self.hidden.log_partition(act).sum(-1)

    def free_energy(self, v: Mapping[str, Tensor]) -> Tensor:
        """F(v) per example; v must hold every modality."""
        full = {m: v[m] for m in self.names}
        return self.free_energy_from_input(full, self.hidden_input(full))

    def mean_free_energy_given_input(self, v: Mapping[str, Tensor], act: Tensor) -> Tensor:
        """mean_n F(v_n) (a scalar) for samples ``v`` whose hidden input ``act`` is already known.

        Value and gradient equal those of ``free_energy(v).mean()`` for constant ``v``, but the
        weight gradient is formed by one product v_mᵀ E[h | v] / n instead of a forward and a
        backward product through F: ∂F/∂W_m = −v_m E[h | v]ᵀ, ∂F/∂c = −D·E[h | v] (D: the
        hidden-bias scale), ∂F/∂b_m = ∂E_m/∂b_m (by autograd). Used by the negative phases of
        CD/PCD and of the conditional samplers, whose chains computed ``act`` in their last step.

        Args:
            v: ``{name: (n, n_m)}`` states of every modality (treated as constants).
            act: (n, H) their hidden input c·D + Σ_m W_mᵀ v_m.
        """
        full = {m: v[m].detach() for m in self.names}
        act = act.detach()
        mu = self.hidden.mean(act)
        n = act.shape[0]
        value = self.visible_energy(full).mean() - self.hidden.log_partition(act).sum(-1).mean()
        c_stat = (mu * self.hidden_bias_scale(full)).sum(0) / n
        linear = sum((self.W[m] * ((full[m].T @ mu) / n)).sum() for m in self.names)
        linear = linear + (self.c * c_stat).sum()
        return value - (linear - linear.detach())

    def energy(self, v: Mapping[str, Tensor], h: Tensor) -> Tensor:
        """E(v, h) per example (for stepped-sigmoid hiddens, without the copies' offset term)."""
        full = {m: v[m] for m in self.names}
        return self.visible_energy(full) - (self.hidden_input(full) * h).sum(-1)

    # ------------------------------------------------------------------ Gibbs
    def gibbs_step(self, v: Visibles, clamp: Iterable[str] = ()) -> tuple[Visibles, Tensor]:
        """One block-Gibbs sweep h ~ P(h|v), v_m ~ P(v_m|h) for unclamped m.

        A replicated-softmax modality keeps each document's length. Returns the new visibles
        (clamped ones unchanged) and the hidden sample.
        """
        clamp = set(clamp)
        h = self.hidden.sample(self.hidden_input(v))
        out = {
            m: (v[m] if m in clamp else self.sample_visible(m, h, self.units[m].length(v[m])))
            for m in self.names
        }
        return out, h

    def gibbs_chain(self, v: Visibles, steps: int, clamp: Iterable[str] = ()) -> Visibles:
        for _ in range(steps):
            v, _ = self.gibbs_step(v, clamp)
        return v

    def clamped_chain(
        self, given: Mapping[str, Tensor], target: str, start: Tensor, steps: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Gibbs chain over (h, v_target) with ``given`` clamped (all other modalities).

        Yields ``(v_target, F(given, v_target), act)`` for the start state and after each of
        ``steps`` sweeps, ``act`` (batch, H) being the state's hidden input. The clamped
        modalities' hidden input and energy are computed once, and each state's hidden input
        serves its free energy, the next hidden sample and the caller's statistics. A
        replicated-softmax target keeps the start state's document lengths (so the hidden-bias
        scale D is constant along the chain).
        """
        fixed = self.hidden_bias({**given, target: start}) + self.bottom_up(given)
        const = self.visible_energy(given)
        units, W, b = self.units[target], self.W[target], self.b[target]
        length = units.length(start)
        x = start
        for t in range(steps + 1):
            act = fixed + x @ W
            yield x, const + units.energy(x, b) - self.hidden.log_partition(act).sum(-1), act
            if t < steps:
                x = self.sample_visible(target, self.hidden.sample(act), length)

    # ------------------------------------------------------ missing modalities
    def missing_scale(
        self, given: Iterable[str], missing_units: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Scale of each given modality's hidden input standing in for missing units.

        s = 1 + (number of missing visible units) / (number of given visible units);
        for two equal halves with one missing this is 2 (docs/paper.md §2: s = 1 + 1 − p).
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
        lengths: Mapping[str, Tensor] | None = None,
    ) -> tuple[Visibles, Tensor]:
        """Mean-field inference of the modalities absent from ``given`` (docs/paper.md §2, evaluation).

        h₀ = E[h | s·Σ_given W_mᵀ v_m] (s from :meth:`missing_scale` if ``scale_init``), then
        ``steps`` updates v_miss ← E[v_miss | h]; h ← E[h | v] (stopping early once the mean
        absolute change of h is below ``tol``), then v_miss ← E[v_miss | h]: the reference
        code's order, so ``steps`` = T is the T-step inference an MP model is trained for.
        ``lengths[m]`` (batch,) gives the document lengths of a missing replicated-softmax
        modality (its mean is then D·softmax; without it, the word probabilities).
        Returns the completed visibles (given ones unchanged) and the final hidden means (B, H).
        """
        self.check_visibles(given)
        lengths = lengths or {}
        missing = [m for m in self.names if m not in given]
        scale = self.missing_scale(given) if (scale_init and missing) else None
        h = self.hidden_probs(given, scale)
        for _ in range(steps if missing else 0):
            means = {m: self.visible_mean(m, h, lengths.get(m)) for m in missing}
            new = self.hidden_probs({**given, **means})
            change = float((new - h).detach().abs().mean()) if tol is not None else None
            h = new
            if change is not None and change < tol:
                break
        v: Visibles = dict(given)
        v.update({m: self.visible_mean(m, h, lengths.get(m)) for m in missing})
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
