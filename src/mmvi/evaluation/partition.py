"""Partition functions of multimodal RBMs: exact enumeration and annealed importance sampling.

Both the joint model and the conditional model of some modalities given the others are handled
as one object, a *free view*: the RBM over the free modalities whose hidden bias is

    ĉ = c + Σ_{m' clamped} W_{m'}ᵀ v_{m'}                      (per example when clamped)

(``model.hidden_input`` of the clamped modalities, so a replicated-softmax modality scales c).
Its free energy and partition function are

    F̂(v_free; ĉ) = Σ_{m free} E_m(v_m) − Σ_k softplus(ĉ_k + Σ_{m free} (W_mᵀ v_m)_k)
    Ẑ(ĉ)         = Σ_{v_free} exp(−F̂(v_free; ĉ))

so that −F(v) = −Σ_{m' clamped} E_{m'}(v_{m'}) − F̂(v_free; ĉ) and
log P(v_free | v_clamped) = −F̂(v_free; ĉ) − log Ẑ(ĉ). With nothing clamped, ĉ = c and Ẑ = Z.

Exact: enumerate the hidden states, log Ẑ = logsumexp_h [ĉᵀh + Σ_{m free} log Σ_{v_m} exp(−E_m(v_m)
+ v_mᵀW_m h)], or the free visible states, log Ẑ = logsumexp_v [−F̂(v; ĉ)]; the cheaper side is used.

AIS (Salakhutdinov & Murray 2008): base-rate model A with visible biases b_A (logit of the data
means), no weights, hidden bias 0; for a conditional, b_A may instead be per example (the logit of
the model's mean-field prediction of v_free, :func:`meanfield_base_mean`: any factorial base gives
an unbiased estimate of Ẑ, one close to the target a much smaller variance). The intermediate
distributions interpolate the joint energies,
E_β(v, h) = (1 − β) E_A(v) + β Ê(v, h), so that, summing out h,

    log p*_β(v) = −(1 − β) E_A(v) − β E_free(v) + Σ_k softplus(β (ĉ_k + Σ_m (W_mᵀ v_m)_k))

with p*_0 the base model (log Z_0 = log Z_A + H log 2, analytic) and p*_1 = exp(−F̂). One
transition at β is one Gibbs sweep: h ~ σ(β a(v)), v_m ~ units_m((1 − β) b_A,m + β (b_m + W_m h)).
Runs start from exact samples of the base model; log w = Σ_k [log p*_{β_k}(v_{k−1}) −
log p*_{β_{k−1}}(v_{k−1})] and log Ẑ ≈ log mean_runs exp(log w).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mmvi.models.mrbm import MultimodalRBM
from mmvi.models.units import Units, bernoulli

EXACT_LIMIT = 20
CHUNK_ELEMENTS = 1 << 22  # elements of the largest temporary tensor of an enumeration chunk
_AIS_UNITS = ("bernoulli", "gaussian")


# --------------------------------------------------------------------------- free views
@dataclass
class FreeView:
    """RBM over the free modalities ``names`` with hidden bias ``hbias`` (H,) or (B, H)."""

    names: list[str]
    W: dict[str, Tensor]
    b: dict[str, Tensor]
    units: dict[str, Units]
    hbias: Tensor

    @property
    def n_hidden(self) -> int:
        return int(self.hbias.shape[-1])

    @property
    def n_visible(self) -> int:
        return sum(int(self.b[m].shape[0]) for m in self.names)

    @property
    def batch(self) -> int:
        return 1 if self.hbias.dim() == 1 else int(self.hbias.shape[0])

    def to(self, dtype: torch.dtype) -> FreeView:
        return FreeView(
            list(self.names),
            {m: w.detach().to(dtype) for m, w in self.W.items()},
            {m: b.detach().to(dtype) for m, b in self.b.items()},
            dict(self.units),
            self.hbias.detach().to(dtype),
        )

    def free_energy(self, v: Mapping[str, Tensor]) -> Tensor:
        """F̂(v_free; ĉ) per row (rows of ``v`` match the rows of ``hbias`` or broadcast)."""
        act = self.hbias + sum(v[m] @ self.W[m] for m in self.names)
        energy = sum(self.units[m].energy(v[m], self.b[m]) for m in self.names)
        return energy - F.softplus(act).sum(-1)


def free_view(
    model: MultimodalRBM, free: Sequence[str], given: Mapping[str, Tensor] | None = None
) -> FreeView:
    """The view of ``model`` with ``free`` modalities and every other modality clamped to ``given``."""
    free = list(free)
    unknown = [m for m in free if m not in model.names]
    if unknown or not free:
        raise ValueError(f"free modalities {free} must be a non-empty subset of {model.names}")
    clamped = [m for m in model.names if m not in free]
    given = given or {}
    missing = [m for m in clamped if m not in given]
    if missing:
        raise ValueError(f"modalities {missing} must be given (clamped) when {free} are free")
    model.check_visibles({m: given[m] for m in clamped})
    hbias = model.hidden_input({m: given[m] for m in clamped}) if clamped else model.c
    return FreeView(
        free,
        {m: model.W[m] for m in free},
        {m: model.b[m] for m in free},
        {m: model.units[m] for m in free},
        hbias,
    )


def conditional_free_energy(model: MultimodalRBM, v: Mapping[str, Tensor], target: str) -> Tensor:
    """F̂(v_target; ĉ(v_rest)) = F(v) − Σ_{m ≠ target} E_m(v_m), per example."""
    view = free_view(model, [target], {m: x for m, x in v.items() if m != target})
    return view.free_energy({target: v[target]})


# --------------------------------------------------------------------------- enumeration
def binary_states(start: int, stop: int, n_bits: int, dtype: torch.dtype, device=None) -> Tensor:
    """Rows start..stop−1 of the 2^n binary states; row i is i in binary, most significant bit first."""
    idx = torch.arange(start, stop, device=device, dtype=torch.int64)
    shifts = torch.arange(n_bits - 1, -1, -1, device=device, dtype=torch.int64)
    return ((idx.unsqueeze(1) >> shifts) & 1).to(dtype)


def _log_visible_sum(units: Units, bias: Tensor, top_down: Tensor) -> Tensor:
    """log Σ_v exp(−E(v) + vᵀ t) for t = W h (rows of ``top_down``), summed/integrated over v."""
    act = bias + top_down
    if units.name == "bernoulli":
        return F.softplus(act).sum(-1)
    if units.name == "gaussian":
        n = bias.shape[0]
        return 0.5 * n * math.log(2 * math.pi) + 0.5 * (act**2).sum(-1) - 0.5 * (bias**2).sum()
    raise ValueError(f"exact partition functions support bernoulli/gaussian units, not {units.name!r}")


def _logz_by_hidden(view: FreeView, chunk: int) -> Tensor:
    """log Ẑ by enumerating the 2^H hidden states, chunked; returns (B,)."""
    H, dt, dev = view.n_hidden, view.hbias.dtype, view.hbias.device
    hbias = view.hbias.reshape(-1, H)
    size = max(1, chunk // max(hbias.shape[0], view.n_visible, 1))
    parts = []
    for start in range(0, 2**H, size):
        hs = binary_states(start, min(start + size, 2**H), H, dt, dev)
        vis = sum(_log_visible_sum(view.units[m], view.b[m], hs @ view.W[m].T) for m in view.names)
        parts.append(torch.logsumexp(hbias @ hs.T + vis, dim=1))
    return torch.logsumexp(torch.stack(parts, 1), dim=1)


def _logz_by_visible(view: FreeView, chunk: int) -> Tensor:
    """log Ẑ by enumerating the free (Bernoulli) visible states, chunked; returns (B,)."""
    for m in view.names:
        if view.units[m].name != "bernoulli":
            raise ValueError(f"visible enumeration needs bernoulli units; {m!r} is {view.units[m].name}")
    n, H, dt, dev = view.n_visible, view.n_hidden, view.hbias.dtype, view.hbias.device
    hbias = view.hbias.reshape(-1, H)
    size = max(1, chunk // max(hbias.shape[0] * H, 1))
    parts = []
    for start in range(0, 2**n, size):
        states = binary_states(start, min(start + size, 2**n), n, dt, dev)
        v, offset = {}, 0
        for m in view.names:
            k = view.b[m].shape[0]
            v[m] = states[:, offset : offset + k]
            offset += k
        top = sum(v[m] @ view.W[m] for m in view.names)  # (S, H)
        energy = sum(view.units[m].energy(v[m], view.b[m]) for m in view.names)  # (S,)
        neg_f = F.softplus(hbias.unsqueeze(1) + top.unsqueeze(0)).sum(-1) - energy  # (B, S)
        parts.append(torch.logsumexp(neg_f, dim=1))
    return torch.logsumexp(torch.stack(parts, 1), dim=1)


def choose_exact_method(view: FreeView, limit: int = EXACT_LIMIT) -> str | None:
    """``"hidden"`` or ``"visible"`` (the cheaper enumeration within ``limit`` units), else None."""
    H, n, B = view.n_hidden, view.n_visible, view.batch
    binary = all(view.units[m].name == "bernoulli" for m in view.names)
    options = []
    if H <= limit and all(view.units[m].name in _AIS_UNITS for m in view.names):
        options.append((2.0**H * (B + n) * H, "hidden"))
    if n <= limit and binary:
        options.append((2.0**n * B * H, "visible"))
    return min(options)[1] if options else None


@torch.no_grad()
def exact_view_logz(
    view: FreeView, limit: int = EXACT_LIMIT, method: str = "auto", chunk_elements: int = CHUNK_ELEMENTS
) -> Tensor:
    """Exact log Ẑ of a view in float64: (B,) (B = 1 for an unbatched hidden bias)."""
    if method == "auto":
        method = choose_exact_method(view, limit)
        if method is None:
            raise ValueError(
                f"exact enumeration refused: {view.n_hidden} hidden and {view.n_visible} free visible "
                f"units, both above the limit of {limit} (raise exact_limit or use AIS)"
            )
    elif method in ("hidden", "visible"):
        n_units = view.n_hidden if method == "hidden" else view.n_visible
        if n_units > limit:
            raise ValueError(f"{method} enumeration refused: {n_units} units, above the limit of {limit}")
    view = view.to(torch.float64)
    if method == "hidden":
        return _logz_by_hidden(view, chunk_elements)
    if method == "visible":
        return _logz_by_visible(view, chunk_elements)
    raise ValueError(f"unknown method {method!r}; use 'auto', 'hidden' or 'visible'")


def exact_logz(
    model: MultimodalRBM, limit: int = EXACT_LIMIT, method: str = "auto", chunk_elements: int = CHUNK_ELEMENTS
) -> Tensor:
    """Exact log Z of the joint model (float64 scalar), by hidden or visible enumeration."""
    return exact_view_logz(free_view(model, model.names), limit, method, chunk_elements)[0]


def exact_conditional_logz(
    model: MultimodalRBM,
    given: Mapping[str, Tensor],
    target: str,
    limit: int = EXACT_LIMIT,
    method: str = "auto",
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Tensor:
    """Exact log Ẑ(v_rest) of P(v_target | v_rest), one per example: (B,) float64."""
    given = {m: x for m, x in given.items() if m != target}
    with torch.no_grad():
        view = free_view(model, [target], given)
    return exact_view_logz(view, limit, method, chunk_elements)


# --------------------------------------------------------------------------- AIS
@dataclass
class AISResult:
    """AIS estimate of log Ẑ: ``logz``/``stderr``/``base_logz`` are () for the joint, (B,) for a
    conditional; ``log_weights`` is (M,) or (B, M); all float64."""

    logz: Tensor
    stderr: Tensor
    log_weights: Tensor
    base_logz: Tensor
    n_betas: int

    @property
    def n_runs(self) -> int:
        return int(self.log_weights.shape[-1])


def ais_betas(n_betas: int = 10000, schedule: str = "piecewise") -> Tensor:
    """``n_betas`` + 1 inverse temperatures 0 = β_0 < … < β_K = 1 (float64).

    ``piecewise``: the schedule of Salakhutdinov & Murray (2008) scaled to K steps — uniform
    steps on [0, 0.5], [0.5, 0.9], [0.9, 1] holding 500/14500, 4000/14500, 10000/14500 of them.
    ``linear``: uniform on [0, 1].
    """
    K = int(n_betas)
    if schedule == "linear":
        if K < 1:
            raise ValueError(f"n_betas must be >= 1, got {K}")
        return torch.linspace(0.0, 1.0, K + 1, dtype=torch.float64)
    if schedule != "piecewise":
        raise ValueError(f"unknown AIS schedule {schedule!r}; use 'piecewise' or 'linear'")
    if K < 3:
        raise ValueError(f"the piecewise schedule needs n_betas >= 3, got {K}")
    k1 = max(1, round(K * 500 / 14500))
    k2 = max(1, round(K * 4000 / 14500))
    k3 = K - k1 - k2
    parts = [
        torch.linspace(0.0, 0.5, k1 + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.5, 0.9, k2 + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.9, 1.0, k3 + 1, dtype=torch.float64),
    ]
    return torch.cat(parts)


def check_betas(betas: Tensor) -> None:
    """A schedule must run from 0 to 1 without decreasing."""
    b = betas.detach().double().cpu()
    if b.dim() != 1 or b.numel() < 2 or b[0] != 0 or b[-1] != 1 or bool((b.diff() < 0).any()):
        raise ValueError("AIS betas must be a 1-D non-decreasing sequence from 0 to 1")


def base_rate_bias(mean: Tensor, units: Units, eps: float = 1e-3) -> Tensor:
    """Base-model visible bias from data means: logit(clamp(mean, eps, 1 − eps)) or the mean (Gaussian)."""
    if units.name == "bernoulli":
        mu = mean.clamp(eps, 1 - eps)
        return torch.log(mu) - torch.log1p(-mu)
    if units.name == "gaussian":
        return mean.clone()
    raise ValueError(f"AIS supports bernoulli/gaussian units, not {units.name!r}")


def _base_log_partition(units: Units, bias: Tensor) -> Tensor:
    """log Σ_v exp(−E_A(v)) of a factorial base model (no hidden units)."""
    if units.name == "bernoulli":
        return F.softplus(bias.double()).sum(-1)
    return torch.tensor(0.5 * bias.shape[-1] * math.log(2 * math.pi), dtype=torch.float64)


def _sample(units: Units, act: Tensor, generator: torch.Generator) -> Tensor:
    """A draw of v given its total input, from ``generator``."""
    mean = units.mean(act)
    if units.name == "bernoulli":
        return bernoulli(mean, generator)
    return mean + torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)


def _energy(units: Units, v: Tensor, bias: Tensor) -> Tensor:
    """E(v) per row with a shared (n,) or a per-row (rows, n) bias."""
    if bias.dim() == 1:
        return units.energy(v, bias)
    return torch.vmap(units.energy)(v, bias)


def make_generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device``: the one given, or a new one seeded with ``seed`` (0 if None)."""
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(0 if seed is None else int(seed))


@torch.no_grad()
def ais_log_weights(
    view: FreeView,
    base_bias: Mapping[str, Tensor],
    betas: Tensor,
    n_rows: int,
    generator: torch.Generator,
) -> Tensor:
    """Log importance weights (n_rows,) float64 of independent AIS runs on a view.

    ``view.hbias`` is (H,) or (n_rows, H) (one row per run); ``base_bias[m]`` is (n_m,) or
    (n_rows, n_m). The chains run in the view's dtype; each step's increment
    Σ_k [softplus(β_k a_k) − softplus(β_{k−1} a_k)] − (β_k − β_{k−1}) (E_free(v) − E_A(v)) is
    summed over units and accumulated in float64.
    """
    check_betas(betas)
    dt, dev = view.hbias.dtype, view.hbias.device
    b64 = betas.to(torch.float64).tolist()
    ba = {m: base_bias[m].to(dev, dt) for m in view.names}
    units, W, b = view.units, view.W, view.b
    v = {m: _sample(units[m], ba[m].expand(n_rows, -1), generator) for m in view.names}
    logw = torch.zeros(n_rows, dtype=torch.float64, device=dev)
    K = len(b64) - 1
    for k in range(1, K + 1):
        act = view.hbias
        for m in view.names:
            act = torch.addmm(act, v[m], W[m])
        de = sum(units[m].energy(v[m], b[m]) - _energy(units[m], v[m], ba[m]) for m in view.names)
        dsp = F.softplus(b64[k] * act) - F.softplus(b64[k - 1] * act)
        logw += dsp.sum(-1, dtype=torch.float64) - (b64[k] - b64[k - 1]) * de.double()
        if k == K:
            break
        h = bernoulli(torch.sigmoid(b64[k] * act), generator)
        for m in view.names:
            vis_act = torch.addmm(b[m], h, W[m].T, beta=b64[k], alpha=b64[k]) + (1.0 - b64[k]) * ba[m]
            v[m] = _sample(units[m], vis_act, generator)
    return logw


def log_mean_exp_and_stderr(log_w: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """log mean exp(log_w) and its delta-method standard error std(w) / (√M · mean(w)).

    Computed with w scaled by exp(−max log_w), so nothing overflows; the stderr is NaN for M = 1.
    """
    M = log_w.shape[dim]
    top = log_w.max(dim=dim, keepdim=True).values
    w = torch.exp(log_w - top)
    mean = w.mean(dim=dim)
    logz = top.squeeze(dim) + torch.log(mean)
    if M < 2:
        return logz, torch.full_like(logz, float("nan"))
    return logz, w.std(dim=dim, correction=1) / (math.sqrt(M) * mean)


def _check_ais_units(view: FreeView) -> None:
    for m in view.names:
        if view.units[m].name not in _AIS_UNITS:
            raise ValueError(
                f"AIS supports bernoulli/gaussian free modalities; {m!r} is {view.units[m].name}"
            )


def _base_biases(
    model: MultimodalRBM, names: Sequence[str], base_means: Mapping[str, Tensor] | None
) -> dict[str, Tensor]:
    out = {}
    for m in names:
        if base_means is not None and m in base_means:
            mean = base_means[m].detach().to(model.b[m])
        else:
            mean = torch.full_like(model.b[m], 0.5) if model.units[m].name == "bernoulli" else model.b[m]
        out[m] = base_rate_bias(mean.detach(), model.units[m])
    return out


@torch.no_grad()
def ais_logz(
    model: MultimodalRBM,
    base_means: Mapping[str, Tensor] | None = None,
    n_runs: int = 100,
    n_betas: int = 10000,
    schedule: str = "piecewise",
    betas: Tensor | None = None,
    generator: torch.Generator | int | None = None,
) -> AISResult:
    """AIS estimate of the joint log Z with ``n_runs`` parallel runs.

    ``base_means[m]`` are data means of modality m (the base-rate model's biases are their logits);
    a missing entry means 0.5 (Bernoulli) or the model's bias (Gaussian).
    """
    view = free_view(model, model.names)
    _check_ais_units(view)
    g = make_generator(generator, model.c.device)
    betas = ais_betas(n_betas, schedule) if betas is None else betas
    ba = _base_biases(model, view.names, base_means)
    log_w = ais_log_weights(view.to(model.c.dtype), ba, betas, int(n_runs), g)
    base = sum(_base_log_partition(model.units[m], ba[m]) for m in view.names) + view.n_hidden * math.log(2)
    logz, se = log_mean_exp_and_stderr(log_w + base)
    return AISResult(logz, se, log_w + base, torch.as_tensor(base, dtype=torch.float64), len(betas) - 1)


@torch.no_grad()
def meanfield_base_mean(
    model: MultimodalRBM, given: Mapping[str, Tensor], target: str, steps: int = 50, tol: float | None = 1e-5
) -> Tensor:
    """Per-example base means (B, n): the mean-field prediction E[v_target | v_rest] of the model."""
    given = {m: x for m, x in given.items() if m != target}
    return model.infer_missing(given, steps=steps, tol=tol)[0][target]


@torch.no_grad()
def ais_conditional_logz(
    model: MultimodalRBM,
    given: Mapping[str, Tensor],
    target: str,
    base_mean: Tensor | None = None,
    n_runs: int = 16,
    n_betas: int = 1000,
    schedule: str = "piecewise",
    betas: Tensor | None = None,
    generator: torch.Generator | int | None = None,
    max_rows: int = 1024,
) -> AISResult:
    """AIS estimate of log Ẑ(v_rest) of P(v_target | v_rest) for every example, (B,).

    ``base_mean``: (n,) data means shared by all examples, or (B, n) per-example means (e.g.
    :func:`meanfield_base_mean`); None = 0.5. The B examples × M runs run as one (B·M, ·) batch
    of chains, in blocks of at most ``max_rows`` rows (small blocks stay in cache), each
    example's runs sharing its clamped hidden bias ĉ.
    """
    given = {m: x for m, x in given.items() if m != target}
    view = free_view(model, [target], given)
    _check_ais_units(view)
    g = make_generator(generator, model.c.device)
    betas = ais_betas(n_betas, schedule) if betas is None else betas
    M, B = int(n_runs), view.batch
    units = view.units[target]
    if base_mean is not None and base_mean.dim() == 2:
        if base_mean.shape[0] != B:
            raise ValueError(f"per-example base means: expected {B} rows, got {base_mean.shape[0]}")
        ba = base_rate_bias(base_mean.detach().to(model.b[target]), units)
    else:
        ba = _base_biases(model, [target], None if base_mean is None else {target: base_mean})[target]
    base = _base_log_partition(units, ba).to(view.hbias.device) + view.n_hidden * math.log(2)
    per_block = max(1, int(max_rows) // M)
    parts = []
    for start in range(0, B, per_block):
        hb = view.hbias[start : start + per_block].detach().repeat_interleave(M, dim=0)
        block = FreeView(view.names, view.W, view.b, view.units, hb).to(model.c.dtype)
        bb = ba[start : start + per_block].repeat_interleave(M, dim=0) if ba.dim() == 2 else ba
        parts.append(ais_log_weights(block, {target: bb}, betas, hb.shape[0], g).reshape(-1, M))
    base = base.expand(B).to(torch.float64)
    log_w = torch.cat(parts) + base.unsqueeze(1)
    logz, se = log_mean_exp_and_stderr(log_w)
    return AISResult(logz, se, log_w, base, len(betas) - 1)
