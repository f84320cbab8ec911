"""Hidden unit types of an RBM layer: Bernoulli and stepped sigmoid (docs/paper.md §3).

For the total input ``x = c + Σ_m Wₘᵀvₘ`` (shape ``(batch, H)``) a type gives ``mean(x)``,
``sample(x)`` and ``log_partition(x)`` = log Σ_h exp(h·x) per unit, the free energy's hidden term.
Stepped sigmoid (Nair & Hinton 2010): N binary copies with offsets i − ½, eq. (2.4) of
docs/design.md §2.2; ``sample_mode="exact"`` draws the copies, ``"noisy_relu"`` the usual
approximation. The same class is the *visible* type of the layer above a stepped-sigmoid layer
(the copy-state reading of docs/design.md §2.2).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from mmvi.models.units import BernoulliUnits, Units, bernoulli

SAMPLE_MODES = ("exact", "noisy_relu")


class BernoulliHiddens(BernoulliUnits):
    """Binary hiddens: E[h | x] = σ(x), log-partition softplus(x)."""

    def log_partition(self, x: Tensor) -> Tensor:
        return F.softplus(x)


class SteppedSigmoidUnits(Units):
    """Sum of N binary copies with offsets i − ½ (ReLU-like); see docs/design.md §2.2.

    Args:
        n_steps: N, the number of copies (paper: 5).
        sample_mode: ``exact`` (sum of N Bernoulli draws) or ``noisy_relu``.
    """

    name = "stepped_sigmoid"

    def __init__(self, n_steps: int = 5, sample_mode: str = "exact") -> None:
        if int(n_steps) < 1:
            raise ValueError(f"stepped_sigmoid n_steps must be >= 1, got {n_steps}")
        if sample_mode not in SAMPLE_MODES:
            raise ValueError(f"stepped_sigmoid sample_mode={sample_mode!r}; allowed: {SAMPLE_MODES}")
        self.n_steps = int(n_steps)
        self.sample_mode = sample_mode

    def offsets(self, like: Tensor) -> Tensor:
        """(i − ½) for i = 1..N, on the device/dtype of ``like``."""
        return torch.arange(self.n_steps, device=like.device, dtype=like.dtype) + 0.5

    def copy_inputs(self, x: Tensor) -> Tensor:
        """a_i = x − i + ½, shape ``(..., N)``."""
        return x.unsqueeze(-1) - self.offsets(x)

    def copy_states(self, v: Tensor) -> Tensor:
        """Canonical copy state t_i = clip(v − i + 1, 0, 1), shape ``(..., N)``."""
        return (v.unsqueeze(-1) - self.offsets(v) + 0.5).clamp(0.0, 1.0)

    # ---------------------------------------------------------------- hidden role
    def mean(self, x: Tensor, length: Tensor | None = None) -> Tensor:
        return torch.sigmoid(self.copy_inputs(x)).sum(-1)

    def log_partition(self, x: Tensor) -> Tensor:
        return F.softplus(self.copy_inputs(x)).sum(-1)

    def sample(self, x: Tensor, length: Tensor | None = None) -> Tensor:
        if self.sample_mode == "noisy_relu":
            noise = torch.randn_like(x) * torch.sigmoid(x).sqrt()
            return (x + noise).clamp(0.0, float(self.n_steps))
        probs = torch.sigmoid(self.copy_inputs(x))
        return bernoulli(probs).sum(-1)

    # --------------------------------------------------------------- visible role
    def energy(self, v: Tensor, bias: Tensor) -> Tensor:
        offset = (self.copy_states(v) * self.offsets(v)).sum((-1, -2))
        return offset - v @ bias

    def log_prob_units(self, v: Tensor, act: Tensor) -> Tensor:
        a = self.copy_inputs(act)
        return (self.copy_states(v) * a - F.softplus(a)).sum(-1)

    def bias_from_mean(self, mu: Tensor, iters: int = 60) -> Tensor:
        """The input x with mean(x) = μ (bisection; μ clipped into (0, N))."""
        target = mu.clamp(1e-3, self.n_steps - 1e-3)
        lo = torch.full_like(target, -20.0)
        hi = torch.full_like(target, self.n_steps + 20.0)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = self.mean(mid) < target
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def __repr__(self) -> str:
        return f"SteppedSigmoidUnits(n_steps={self.n_steps}, sample_mode={self.sample_mode!r})"


HIDDEN_UNIT_TYPES: dict[str, type[Units]] = {
    "bernoulli": BernoulliHiddens,
    SteppedSigmoidUnits.name: SteppedSigmoidUnits,
}
# unit types that only appear inside a deep model (as the visible layer above a hidden layer)
LAYER_UNIT_TYPES: dict[str, type[Units]] = {SteppedSigmoidUnits.name: SteppedSigmoidUnits}


def make_hidden_units(spec: str | Mapping = "bernoulli") -> Units:
    """Hidden units from a name or ``{"type": name, **options}`` (e.g. ``n_steps``, ``sample_mode``)."""
    if isinstance(spec, str):
        name, options = spec, {}
    else:
        options = dict(spec)
        name = str(options.pop("type", "bernoulli"))
    try:
        cls = HIDDEN_UNIT_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown hidden unit type {name!r}; allowed: {sorted(HIDDEN_UNIT_TYPES)}") from None
    return cls(**options)
