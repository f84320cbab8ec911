"""Partition functions of multimodal RBMs: exact enumeration and annealed importance sampling.

The joint and every conditional are one object, a *free view*: the RBM over the free modalities
with hidden bias ĉ = c + Σ_clamped W_m'ᵀv_m' (per example when clamped), free energy F̂ and
partition function Ẑ of eq. (4.3), so log P(v_free | v_clamped) = −F̂ − log Ẑ (docs/design.md
§4.2). Exact: enumerate the hidden or the free visible states, whichever is cheaper. AIS
(Salakhutdinov & Murray 2008): from a factorial base model along eq. (4.4), one Gibbs sweep per β,
batched over examples × runs. Replicated softmax: states are documents of the example's length D,
Ẑ sums over word sequences (exp(D·logsumexp(a))), Z once per distinct length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from mmvi.models.mrbm import MultimodalRBM
from mmvi.models.units import Units, bernoulli

EXACT_LIMIT = 20
CHUNK_ELEMENTS = 1 << 22  # elements of the largest temporary tensor of an enumeration chunk
SUPPORTED_UNITS = ("bernoulli", "gaussian", "softmax")


# --------------------------------------------------------------------------- free views
@dataclass
class FreeView:
    """RBM over the free modalities ``names`` with hidden bias ``hbias`` (H,) or (B, H).

    ``lengths[m]`` (B,): the document lengths D of a free replicated-softmax modality m, one per
    row of ``hbias`` (which then includes c·D).
    """

    names: list[str]
    W: dict[str, Tensor]
    b: dict[str, Tensor]
    units: dict[str, Units]
    hbias: Tensor
    lengths: dict[str, Tensor] = field(default_factory=dict)

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
            {m: d.detach().to(dtype) for m, d in self.lengths.items()},
        )

    def rows(self, index: slice, repeat: int = 1) -> FreeView:
        """The view of rows ``index`` (an unbatched view has one row), each repeated ``repeat`` times."""
        hbias = self.hbias.reshape(-1, self.n_hidden)[index].detach().repeat_interleave(repeat, dim=0)
        lengths = {m: d[index].repeat_interleave(repeat, dim=0) for m, d in self.lengths.items()}
        return FreeView(list(self.names), self.W, self.b, dict(self.units), hbias, lengths)

    def free_energy(self, v: Mapping[str, Tensor]) -> Tensor:
        """F̂(v_free; ĉ) per row (rows of ``v`` match the rows of ``hbias`` or broadcast)."""
        act = self.hbias + sum(v[m] @ self.W[m] for m in self.names)
        energy = sum(self.units[m].energy(v[m], self.b[m]) for m in self.names)
        return energy - F.softplus(act).sum(-1)


def _check_lengths(lengths: Mapping[str, Tensor], rows: int | None) -> None:
    for m, d in lengths.items():
        if d.dim() != 1 or (rows is not None and d.shape[0] != rows):
            raise ValueError(
                f"lengths[{m!r}]: expected shape ({rows if rows is not None else 'B'},), got {tuple(d.shape)}"
            )
        if d.numel() and bool(((d < 0) | (d != d.round()) | ~torch.isfinite(d)).any()):
            raise ValueError(f"lengths[{m!r}]: document lengths must be non-negative whole numbers")
        rows = d.shape[0]


def free_view(
    model: MultimodalRBM,
    free: Sequence[str],
    given: Mapping[str, Tensor] | None = None,
    lengths: Mapping[str, Tensor] | None = None,
) -> FreeView:
    """The view of ``model`` with ``free`` modalities and every other modality clamped to ``given``.

    Args:
        model: the RBM.
        free: names of the free modalities (a non-empty subset of ``model.names``).
        given: ``{name: (B, n_m)}`` values of every other modality.
        lengths: ``{name: (B,)}`` document lengths D (word counts) of each free replicated-softmax
            modality; the view's hidden bias is then c·D + Σ_clamped W_{m'}ᵀ v_{m'} (B, H).
    Raises:
        ValueError: unknown or no free modalities, a clamped modality not given, lengths missing
            for a free replicated-softmax modality (or given for another), wrong shapes.
    """
    free = list(free)
    unknown = [m for m in free if m not in model.names]
    if unknown or not free:
        raise ValueError(f"free modalities {free} must be a non-empty subset of {model.names}")
    clamped = [m for m in model.names if m not in free]
    given = given or {}
    missing = [m for m in clamped if m not in given]
    if missing:
        raise ValueError(f"modalities {missing} must be given (clamped) when {free} are free")
    clamped_v = {m: given[m] for m in clamped}
    model.check_visibles(clamped_v)
    lengths = {m: torch.as_tensor(d).to(model.c) for m, d in (lengths or {}).items()}
    need = [m for m in free if model.units[m].name == "softmax"]
    if [m for m in need if m not in lengths]:
        raise ValueError(
            f"free replicated-softmax modalities {need} need their document lengths "
            f"(lengths={{name: (batch,) word counts}}); given for {sorted(lengths)}"
        )
    if [m for m in lengths if m not in need]:
        raise ValueError(f"lengths given for {sorted(lengths)}; only free softmax modalities {need} take one")
    _check_lengths(lengths, next(iter(clamped_v.values())).shape[0] if clamped_v else None)
    # c scaled as MultimodalRBM.hidden_bias scales it for the full visible set, a free document of
    # length D standing in as a one-word count vector (D,) (its hidden_scale is D)
    scale_src = {
        m: clamped_v[m] if m in clamped_v else lengths[m].unsqueeze(-1)
        for m in model.names
        if m in clamped_v or m in lengths
    }
    hbias = model.hidden_bias(scale_src) + model.bottom_up(clamped_v) if scale_src else model.c
    return FreeView(
        free,
        {m: model.W[m] for m in free},
        {m: model.b[m] for m in free},
        {m: model.units[m] for m in free},
        hbias,
        lengths,
    )


def conditional_free_energy(model: MultimodalRBM, v: Mapping[str, Tensor], target: str) -> Tensor:
    """F̂(v_target; ĉ(v_rest)) = F(v) − Σ_{m ≠ target} E_m(v_m), per example."""
    view = free_view(
        model, [target], {m: x for m, x in v.items() if m != target}, model.lengths({target: v[target]})
    )
    return view.free_energy({target: v[target]})


# --------------------------------------------------------------------------- enumeration
def binary_states(start: int, stop: int, n_bits: int, dtype: torch.dtype, device=None) -> Tensor:
    """Rows start..stop−1 of the 2^n binary states; row i is i in binary, most significant bit first."""
    idx = torch.arange(start, stop, device=device, dtype=torch.int64)
    shifts = torch.arange(n_bits - 1, -1, -1, device=device, dtype=torch.int64)
    return ((idx.unsqueeze(1) >> shifts) & 1).to(dtype)


def _log_visible_sum(units: Units, bias: Tensor, top_down: Tensor, length: Tensor | None = None) -> Tensor:
    """log Σ_v exp(−E(v) + vᵀ t) for t = W h (rows of ``top_down``, (S, n)), summed/integrated over v.

    Returns (S,); for replicated softmax, whose sum runs over the word sequences of length D_b
    (``length`` (B,)), D_b·logsumexp(b + t_s): (B, S).
    """
    act = bias + top_down
    if units.name == "bernoulli":
        return F.softplus(act).sum(-1)
    if units.name == "gaussian":
        n = bias.shape[0]
        return 0.5 * n * math.log(2 * math.pi) + 0.5 * (act**2).sum(-1) - 0.5 * (bias**2).sum()
    if units.name == "softmax":
        if length is None:
            raise ValueError("a replicated-softmax sum needs the document lengths")
        return length.unsqueeze(-1) * torch.logsumexp(act, dim=-1)
    raise ValueError(
        f"exact partition functions support {'/'.join(SUPPORTED_UNITS)} units, not {units.name!r}"
    )


def _logz_by_hidden(view: FreeView, chunk: int) -> Tensor:
    """log Ẑ by enumerating the 2^H hidden states, chunked; returns (B,)."""
    H, dt, dev = view.n_hidden, view.hbias.dtype, view.hbias.device
    hbias = view.hbias.reshape(-1, H)
    size = max(1, chunk // max(hbias.shape[0], view.n_visible, 1))
    parts = []
    for start in range(0, 2**H, size):
        hs = binary_states(start, min(start + size, 2**H), H, dt, dev)
        vis = sum(
            _log_visible_sum(view.units[m], view.b[m], hs @ view.W[m].T, view.lengths.get(m))
            for m in view.names
        )
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
    if H <= limit and all(view.units[m].name in SUPPORTED_UNITS for m in view.names):
        options.append((2.0**H * (B + n) * H, "hidden"))
    if n <= limit and binary:
        options.append((2.0**n * B * H, "visible"))
    return min(options)[1] if options else None


@torch.no_grad()
def exact_view_logz(
    view: FreeView, limit: int = EXACT_LIMIT, method: str = "auto", chunk_elements: int = CHUNK_ELEMENTS
) -> Tensor:
    """Exact log Ẑ of a view in float64: (B,) (B = 1 for an unbatched hidden bias).

    Raises:
        ValueError: both enumerations above ``limit`` units, or the method cannot enumerate the view.
    """
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
    model: MultimodalRBM,
    limit: int = EXACT_LIMIT,
    method: str = "auto",
    chunk_elements: int = CHUNK_ELEMENTS,
    lengths: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Exact log Z of the joint model, by hidden or visible enumeration: a float64 scalar.

    With replicated-softmax modalities, Z depends on the document lengths: ``lengths[m]`` (U,)
    gives U length settings and the result is log Z(D_u), (U,).
    """
    view = free_view(model, model.names, lengths=lengths)
    logz = exact_view_logz(view, limit, method, chunk_elements)
    return logz if view.lengths else logz[0]


def exact_conditional_logz(
    model: MultimodalRBM,
    given: Mapping[str, Tensor],
    target: str,
    limit: int = EXACT_LIMIT,
    method: str = "auto",
    chunk_elements: int = CHUNK_ELEMENTS,
    length: Tensor | None = None,
) -> Tensor:
    """Exact log Ẑ(v_rest) of P(v_target | v_rest), one per example: (B,) float64.

    ``length`` (B,): the document lengths of a replicated-softmax target (required for one).
    """
    given = {m: x for m, x in given.items() if m != target}
    with torch.no_grad():
        view = free_view(model, [target], given, None if length is None else {target: length})
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


#: the base models' probability floor (visible means and hidden probabilities kept in [ε, 1 − ε])
BASE_EPS = 1e-3
#: the conditional AIS base model's hidden units (:func:`ais_conditional_logz`)
HIDDEN_BASES = ("uniform", "meanfield")


def _clamped_logit(p: Tensor, eps: float = BASE_EPS) -> Tensor:
    """logit(clamp(p, eps, 1 − eps)): the bias of a Bernoulli base unit of probability p."""
    mu = p.clamp(eps, 1 - eps)
    return torch.log(mu) - torch.log1p(-mu)


def base_rate_bias(mean: Tensor, units: Units, eps: float = BASE_EPS) -> Tensor:
    """Base-model visible bias from data means (n,) or per-example means (B, n).

    Bernoulli: logit(clamp(mean, eps, 1 − eps)); Gaussian: the mean; replicated softmax: the log
    word probabilities log((1 − eps)·p + eps/n), p = mean / Σ mean the row's word frequencies (of
    counts or probabilities; uniform for an all-zero row), so every word keeps probability ≥ eps/n.
    """
    if units.name == "bernoulli":
        return _clamped_logit(mean, eps)
    if units.name == "gaussian":
        return mean.clone()
    if units.name == "softmax":
        mean = mean.clamp_min(0)
        n = mean.shape[-1]
        total = mean.sum(-1, keepdim=True)
        p = torch.where(total > 0, mean / total.clamp_min(torch.finfo(mean.dtype).tiny), 1.0 / n)
        return torch.log((1 - eps) * p + eps / n)
    raise ValueError(f"AIS supports {'/'.join(SUPPORTED_UNITS)} units, not {units.name!r}")


def _base_log_partition(units: Units, bias: Tensor, length: Tensor | None = None) -> Tensor:
    """log Σ_v exp(−E_A(v)) of a factorial base model (no hidden units), float64: () or (rows,).

    Replicated softmax (sum over word sequences of length D, ``length`` (rows,)): D·logsumexp(b_A).
    """
    if units.name == "bernoulli":
        return F.softplus(bias.double()).sum(-1)
    if units.name == "softmax":
        return length.double() * torch.logsumexp(bias.double(), dim=-1)
    return torch.tensor(0.5 * bias.shape[-1] * math.log(2 * math.pi), dtype=torch.float64)


def _view_base_logz(
    view: FreeView, base_bias: Mapping[str, Tensor], base_hbias: Tensor | None = None
) -> Tensor:
    """log Z_0 of the AIS base model of a view, () or (B,) float64: Σ_m log Z_A,m plus the hidden
    units' H log 2 (uniform), or Σ_k softplus(c_A,k) given the base's hidden biases (B, H)."""
    parts = [_base_log_partition(view.units[m], base_bias[m], view.lengths.get(m)) for m in view.names]
    visible = sum(p.to(view.hbias.device) for p in parts)
    if base_hbias is None:
        return visible + view.n_hidden * math.log(2)
    return visible + F.softplus(base_hbias.double()).sum(-1).to(view.hbias.device)


def _sample(units: Units, act: Tensor, generator: torch.Generator, length: Tensor | None = None) -> Tensor:
    """A draw of v given its total input, from ``generator`` (``length``: replicated-softmax D)."""
    if units.name == "softmax":
        return units.sample(act, length, generator=generator)
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
    base_hbias: Tensor | None = None,
) -> Tensor:
    """Log importance weights (n_rows,) float64 of independent AIS runs on a view.

    ``view.hbias`` is (H,) or (n_rows, H) (one row per run), ``view.lengths[m]`` (n_rows,) the
    document length of each run's replicated-softmax modality m; ``base_bias[m]`` is (n_m,) or
    (n_rows, n_m). The base model is factorial: visible biases ``base_bias``, hidden units uniform
    (``base_hbias`` None) or with biases ``base_hbias`` c_A (H,) or (n_rows, H). Intermediate model
    k: p_k(v, h) ∝ exp(−(1 − β_k) E_A(v) − β_k E_free(v) + ((1 − β_k) c_A + β_k a)·h), a the view's
    hidden input. The chains run in the view's dtype; each step's increment
    Σ_k [softplus(c_A + β_k d) − softplus(c_A + β_{k−1} d)] − (β_k − β_{k−1}) (E_free(v) − E_A(v)),
    d = a − c_A, is summed over units and accumulated in float64 (Salakhutdinov & Murray 2008).
    """
    check_betas(betas)
    dt, dev = view.hbias.dtype, view.hbias.device
    b64 = betas.to(torch.float64).tolist()
    ba = {m: base_bias[m].to(dev, dt) for m in view.names}
    ca = None if base_hbias is None else base_hbias.to(dev, dt)
    units, W, b = view.units, view.W, view.b
    lengths = view.lengths
    v = {m: _sample(units[m], ba[m].expand(n_rows, -1), generator, lengths.get(m)) for m in view.names}
    logw = torch.zeros(n_rows, dtype=torch.float64, device=dev)
    K = len(b64) - 1
    start = view.hbias if ca is None else view.hbias - ca  # with a hidden base the products give d
    for k in range(1, K + 1):
        act = start
        for m in view.names:
            act = torch.addmm(act, v[m], W[m])
        de = sum(units[m].energy(v[m], b[m]) - _energy(units[m], v[m], ba[m]) for m in view.names)
        if ca is None:
            hin = b64[k] * act
            dsp = F.softplus(hin) - F.softplus(b64[k - 1] * act)
            step = dsp.sum(-1, dtype=torch.float64)
        else:  # the row sum in the chains' dtype (no float64 copy of the block; ≤ 1e-5 nats a step)
            hin = torch.add(ca, act, alpha=b64[k])
            dsp = F.softplus(hin).sub_(F.softplus(torch.add(ca, act, alpha=b64[k - 1])))
            step = dsp.sum(-1).double()
        logw += step - (b64[k] - b64[k - 1]) * de.double()
        if k == K:
            break
        h = bernoulli(torch.sigmoid(hin), generator)
        for m in view.names:
            if ca is None:
                vis_act = torch.addmm(b[m], h, W[m].T, beta=b64[k], alpha=b64[k]) + (1.0 - b64[k]) * ba[m]
            else:  # (1 − β) b_A + β b in one pass, then the product added onto it
                vis_act = torch.addmm(torch.lerp(ba[m], b[m], b64[k]), h, W[m].T, alpha=b64[k])
            v[m] = _sample(units[m], vis_act, generator, lengths.get(m))
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
        if view.units[m].name not in SUPPORTED_UNITS:
            raise ValueError(
                f"AIS supports {'/'.join(SUPPORTED_UNITS)} free modalities; {m!r} is {view.units[m].name}"
            )


def _ais_rows(
    view: FreeView,
    base_bias: Mapping[str, Tensor],
    betas: Tensor,
    n_runs: int,
    generator: torch.Generator,
    max_rows: int,
    dtype: torch.dtype,
    base_hbias: Tensor | None = None,
) -> Tensor:
    """Log weights (B, M) (without log Z_0) of M runs for every row of a batched view.

    The B rows × M runs run as one (B·M, ·) batch of chains in blocks of at most ``max_rows``
    rows (small blocks stay in cache); ``base_bias[m]`` is (n_m,) or per row (B, n_m),
    ``base_hbias`` None or per row (B, H).
    """
    M, B = int(n_runs), view.batch
    per_block = max(1, int(max_rows) // M)
    parts = []
    for start in range(0, B, per_block):
        rows = slice(start, start + per_block)
        block = view.rows(rows, M).to(dtype)
        bb = {m: b[rows].repeat_interleave(M, dim=0) if b.dim() == 2 else b for m, b in base_bias.items()}
        bh = None if base_hbias is None else base_hbias[rows].repeat_interleave(M, dim=0)
        parts.append(ais_log_weights(block, bb, betas, block.batch, generator, bh).reshape(-1, M))
    return torch.cat(parts)


def _base_biases(
    model: MultimodalRBM, names: Sequence[str], base_means: Mapping[str, Tensor] | None
) -> dict[str, Tensor]:
    out = {}
    for m in names:
        if base_means is not None and m in base_means:
            mean = base_means[m].detach().to(model.b[m])
        elif model.units[m].name == "bernoulli":
            mean = torch.full_like(model.b[m], 0.5)
        elif model.units[m].name == "softmax":
            mean = torch.softmax(model.b[m], dim=-1)
        else:
            mean = model.b[m]
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
    lengths: Mapping[str, Tensor] | None = None,
    max_rows: int = 1024,
    base_hidden_mean: Tensor | None = None,
) -> AISResult:
    """AIS estimate of the joint log Z with ``n_runs`` parallel runs.

    ``base_means[m]`` are data means of modality m (the base-rate model's biases are their logits;
    for replicated softmax the mean counts, whose word frequencies give the base multinomial); a
    missing entry means 0.5 (Bernoulli), the model's bias (Gaussian) or softmax of it (softmax).
    ``base_hidden_mean`` (H,): the base's hidden probabilities (e.g. the data means of
    P(h = 1 | v), clamped to [10⁻³, 1 − 10⁻³]); None = 1/2 (uniform hidden units).
    With replicated-softmax modalities Z depends on the document lengths: ``lengths[m]`` (U,) gives
    U length settings, estimated with ``n_runs`` runs each (U·M chains in blocks of ``max_rows``),
    and ``logz``/``stderr``/``base_logz`` are (U,), ``log_weights`` (U, M).
    """
    view = free_view(model, model.names, lengths=lengths)
    _check_ais_units(view)
    g = make_generator(generator, model.c.device)
    betas = ais_betas(n_betas, schedule) if betas is None else betas
    ba = _base_biases(model, view.names, base_means)
    ca = None if base_hidden_mean is None else _clamped_logit(base_hidden_mean.detach().to(model.c))
    if view.lengths:
        rows = None if ca is None else ca.expand(view.batch, -1)
        base = _view_base_logz(view, ba, rows).to(torch.float64)
        log_w = _ais_rows(view, ba, betas, int(n_runs), g, max_rows, model.c.dtype, rows) + base.unsqueeze(1)
    else:
        base = _view_base_logz(view, ba, ca).to(torch.float64)
        log_w = ais_log_weights(view.to(model.c.dtype), ba, betas, int(n_runs), g, ca) + base
    logz, se = log_mean_exp_and_stderr(log_w)
    return AISResult(logz, se, log_w, base, len(betas) - 1)


@torch.no_grad()
def meanfield_base_mean(
    model: MultimodalRBM,
    given: Mapping[str, Tensor],
    target: str,
    steps: int = 50,
    tol: float | None = 1e-5,
    length: Tensor | None = None,
) -> Tensor:
    """Per-example base means (B, n): the mean-field prediction E[v_target | v_rest] of the model.

    ``length`` (B,): the document lengths of a replicated-softmax target (its prediction is then
    D·softmax, with the hidden bias scaled by D).
    """
    given = {m: x for m, x in given.items() if m != target}
    lengths = None if length is None else {target: length}
    return model.infer_missing(given, steps=steps, tol=tol, lengths=lengths)[0][target]


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
    length: Tensor | None = None,
    hidden_base: str = "uniform",
) -> AISResult:
    """AIS estimate of log Ẑ(v_rest) of P(v_target | v_rest) for every example, (B,).

    ``base_mean``: (n,) data means shared by all examples, or (B, n) per-example means (e.g.
    :func:`meanfield_base_mean`); None = 0.5 (Bernoulli), the model's bias (Gaussian) or softmax
    of it (replicated softmax). ``hidden_base``: the base model's hidden units, ``uniform``
    (P(h_k = 1) = 1/2) or ``meanfield`` (P(h_k = 1) = σ(ĉ_k + W_k·μ), μ the visible base's means:
    with the mean-field prediction as ``base_mean`` the base is the whole mean-field solution
    q(v_target) q(h), much closer to the target when the hidden units are sparse; the hidden
    inputs are clamped to ±logit(1 − 10⁻³) as the visible base's). ``length`` (B,): the document
    lengths of a replicated-softmax target (required for one; each example's runs draw documents
    of its length). The B examples × M runs run as one (B·M, ·) batch of chains, in blocks of at
    most ``max_rows`` rows (small blocks stay in cache), each example's runs sharing its clamped
    hidden bias ĉ.

    Raises:
        ValueError: an unknown ``hidden_base``; per-example base means of the wrong length.
    """
    if hidden_base not in HIDDEN_BASES:
        raise ValueError(f"hidden_base must be one of {', '.join(HIDDEN_BASES)}, got {hidden_base!r}")
    given = {m: x for m, x in given.items() if m != target}
    view = free_view(model, [target], given, None if length is None else {target: length})
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
    ca = None
    if hidden_base == "meanfield":
        mu = units.mean(ba.expand(B, -1), length)  # the visible base's means
        limit = math.log((1 - BASE_EPS) / BASE_EPS)
        ca = (view.hbias.expand(B, -1) + mu.to(view.W[target]) @ view.W[target]).clamp(-limit, limit)
    base = _view_base_logz(view, {target: ba}, ca).expand(B).to(torch.float64)
    log_w = _ais_rows(view, {target: ba}, betas, M, g, max_rows, model.c.dtype, ca) + base.unsqueeze(1)
    logz, se = log_mean_exp_and_stderr(log_w)
    return AISResult(logz, se, log_w, base, len(betas) - 1)
