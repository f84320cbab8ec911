"""Test-set likelihoods: conditional −log P(v_m | v_rest) per modality and joint −log P(v) (docs/design.md §4).

Eq. (4.1)–(4.2) of docs/design.md §4.1, with F̂, Ẑ of the conditional RBM
(:mod:`mmvi.evaluation.partition`), exact or AIS, free energies in float64. Bernoulli test data
are binarised once by :func:`binarize` (fixed-seed draws); replicated-softmax modalities are
conditioned on their lengths (nats per document as a word sequence). Metrics
``cond_nll/<m>_given_rest``, ``cond_nll/vi``, ``nll``, each with ``…_stderr`` (the AIS standard
error of the mean; 0.0 when exact).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from mmvi.constraints import INT0, INT1, Flag, Interval, Options
from mmvi.evaluation import partition as P
from mmvi.models.mrbm import MultimodalRBM

log = logging.getLogger(__name__)


def binarize(v: Mapping[str, Tensor], seed: int = 0, names: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Fixed-seed Bernoulli draw x ~ Bernoulli(v) of each modality in ``names`` (default: all).

    One CPU ``torch.Generator().manual_seed(seed)`` draws u ~ U[0, 1) for the modalities in the
    order of ``v`` and sets x = 1{u < v}; binary inputs come back unchanged. Others are copied.
    """
    g = torch.Generator().manual_seed(int(seed))
    keep = None if names is None else set(names)
    out = {}
    for m, x in v.items():
        if keep is not None and m not in keep:
            out[m] = x
            continue
        u = torch.rand(x.shape, generator=g)
        out[m] = (u < x.detach().cpu().float()).to(device=x.device, dtype=x.dtype)
    return out


#: the joint AIS base model's hidden units (:func:`joint_log_likelihood`)
JOINT_HIDDEN_BASES = ("uniform", "data")


def _view64(view: P.FreeView, v: Mapping[str, Tensor]) -> Tensor:
    """−F̂(v_free; ĉ) in float64."""
    return -view.to(torch.float64).free_energy({m: v[m].double() for m in view.names})


@torch.no_grad()
def conditional_log_likelihood(
    model: MultimodalRBM,
    v: Mapping[str, Tensor],
    target: str,
    exact_limit: int = P.EXACT_LIMIT,
    n_ais_runs: int = 16,
    n_betas: int = 1000,
    schedule: str = "piecewise",
    ais_base: str = "meanfield",
    base_mean: Tensor | None = None,
    generator: torch.Generator | int | None = None,
    batch_size: int = 500,
    ais_hidden_base: str = "uniform",
) -> tuple[Tensor, Tensor, bool]:
    """(log P(v_target | v_rest) per example (B,), its stderr (B,), exact?) — float64.

    Exact when enumeration fits ``exact_limit``; otherwise AIS with ``n_ais_runs`` runs and
    ``n_betas`` steps per example, from the base model ``ais_base``: ``"meanfield"`` (per-example
    factorial model at the mean-field prediction of v_target; closest to the target, so lowest
    variance) or ``"marginal"`` (``base_mean``: data means of v_target; None = 0.5), with hidden
    units ``ais_hidden_base`` (``uniform`` or ``meanfield``: see
    :func:`mmvi.evaluation.partition.ais_conditional_logz`). A replicated-softmax target is
    conditioned on its document lengths (those of ``v[target]``).
    """
    rest = {m: x for m, x in v.items() if m != target}
    length = model.units[target].length(v[target])
    view = P.free_view(model, [target], rest, None if length is None else {target: length})
    method = P.choose_exact_method(view, exact_limit)
    neg_f = _view64(view, v)
    if method is not None:
        logz = P.exact_view_logz(view, exact_limit, method)
        return neg_f - logz, torch.zeros_like(neg_f), True
    if ais_base not in ("meanfield", "marginal"):
        raise ValueError(f"ais_base must be 'meanfield' or 'marginal', got {ais_base!r}")
    g = P.make_generator(generator, model.c.device)
    B = neg_f.shape[0]
    logz, se = [], []
    for start in range(0, B, batch_size):
        rows = slice(start, start + batch_size)
        given = {m: x[rows] for m, x in rest.items()}
        d = None if length is None else length[rows]
        base = P.meanfield_base_mean(model, given, target, length=d) if ais_base == "meanfield" else base_mean
        res = P.ais_conditional_logz(
            model,
            given,
            target,
            base,
            n_ais_runs,
            n_betas,
            schedule,
            generator=g,
            length=d,
            hidden_base=ais_hidden_base,
        )
        logz.append(res.logz)
        se.append(res.stderr)
    return neg_f - torch.cat(logz).to(neg_f.device), torch.cat(se).to(neg_f.device), False


@torch.no_grad()
def joint_log_likelihood(
    model: MultimodalRBM,
    v: Mapping[str, Tensor],
    exact_limit: int = P.EXACT_LIMIT,
    n_ais_runs: int = 100,
    n_betas: int = 10000,
    schedule: str = "piecewise",
    base_means: Mapping[str, Tensor] | None = None,
    generator: torch.Generator | int | None = None,
    hidden_base: str = "uniform",
) -> tuple[Tensor, float, bool]:
    """(log P(v) per example (B,) float64, stderr of mean_b log Z, exact?).

    With replicated-softmax modalities, log P(v | D) (documents as word sequences given their
    lengths): log Z(D) is exact or estimated (``n_ais_runs`` runs each) once per distinct length
    (tuple) in ``v``; the stderr is then that of the mean over examples of their log Z(D_b).
    ``hidden_base``: the AIS base model's hidden units, ``uniform`` or ``data`` (the mean over
    ``v`` of P(h = 1 | v)).

    Raises:
        ValueError: an unknown ``hidden_base``.
    """
    if hidden_base not in JOINT_HIDDEN_BASES:
        raise ValueError(
            f"joint_hidden_base must be one of {', '.join(JOINT_HIDDEN_BASES)}, got {hidden_base!r}"
        )
    full = {m: v[m] for m in model.names}

    def ais(lengths: Mapping[str, Tensor] | None = None) -> P.AISResult:
        hidden_mean = model.hidden_probs(full).mean(0) if hidden_base == "data" else None
        return P.ais_logz(
            model,
            base_means,
            n_ais_runs,
            n_betas,
            schedule,
            generator=generator,
            lengths=lengths,
            base_hidden_mean=hidden_mean,
        )

    lengths = model.lengths(full)
    view = P.free_view(model, model.names, lengths=lengths)
    neg_f = _view64(view, full)
    if not lengths:
        method = P.choose_exact_method(view, exact_limit)
        if method is not None:
            return neg_f - P.exact_view_logz(view, exact_limit, method)[0], 0.0, True
        res = ais()
        return neg_f - res.logz.to(neg_f.device), float(res.stderr), False
    table = torch.stack(list(lengths.values()), dim=1)  # (B, number of softmax modalities)
    distinct, inverse, counts = torch.unique(table, dim=0, return_inverse=True, return_counts=True)
    per_length = {m: distinct[:, i] for i, m in enumerate(lengths)}
    view = P.free_view(model, model.names, lengths=per_length)
    method = P.choose_exact_method(view, exact_limit)
    if method is not None:
        logz = P.exact_view_logz(view, exact_limit, method).to(neg_f.device)
        return neg_f - logz[inverse], 0.0, True
    res = ais(per_length)
    share = counts.to(torch.float64) / table.shape[0]
    se = float(torch.sqrt(((share * res.stderr.cpu()) ** 2).sum()))
    return neg_f - res.logz.to(neg_f.device)[inverse], se, False


def _mean_and_se(logp: Tensor, se: Tensor) -> tuple[float, float]:
    return -float(logp.mean()), float(torch.sqrt((se.double() ** 2).sum()) / logp.numel())


def _supported(model: MultimodalRBM, names: Iterable[str]) -> bool:
    return all(model.units[m].name in P.SUPPORTED_UNITS for m in names)


@torch.no_grad()
def likelihood_metrics(
    model: MultimodalRBM,
    modalities: Mapping[str, Tensor],
    n_examples: int | None = None,
    n_ais_runs: int = 3,
    n_betas: int = 100,
    joint_ais_runs: int = 50,
    joint_betas: int = 10000,
    schedule: str = "piecewise",
    ais_base: str = "meanfield",
    ais_hidden_base: str = "meanfield",
    joint_hidden_base: str = "data",
    seed: int = 0,
    binarize_seed: int | None = 0,
    exact_limit: int = P.EXACT_LIMIT,
    batch_size: int = 500,
    joint: bool = True,
    records=None,
) -> dict[str, float]:
    """``cond_nll/<m>_given_rest``, ``cond_nll/vi``, ``nll`` and their ``_stderr`` on a test split.

    Uses the first ``n_examples`` examples (None = all), binarises the Bernoulli modalities with
    ``binarize_seed`` (None = use as given; the counts of replicated-softmax modalities are never
    binarised), and draws all AIS randomness from one generator seeded with ``seed``.
    Replicated-softmax modalities are evaluated given their document lengths (docs/design.md §4.1):
    nats per document. Modalities of unit types the estimators do not support (none of the data
    unit types) are skipped with a warning (and so are ``vi`` and ``nll``). ``records`` (optional)
    receives each example's −log P (exact or its AIS estimate) of every measure but the stderrs.
    """
    model.eval()
    device = model.c.device
    n = next(iter(modalities.values())).shape[0]
    n = n if n_examples is None else min(int(n_examples), n)
    v = {m: modalities[m][:n] for m in model.names}
    if binarize_seed is not None:
        v = binarize(v, binarize_seed, [m for m in model.names if model.units[m].name == "bernoulli"])
    v = {m: x.to(device=device, dtype=model.c.dtype) for m, x in v.items()}
    g = P.make_generator(seed, device)
    means = {m: x.mean(0) for m, x in v.items()}
    out: dict[str, float] = {}
    vi, vi_var, complete = 0.0, 0.0, True
    vi_items = torch.zeros(n, dtype=torch.float64)
    for m in model.names:
        if not _supported(model, [m]):
            log.warning("cond_nll: modality %r has %s units, not supported; skipped", m, model.units[m].name)
            complete = False
            continue
        logp, se, exact = conditional_log_likelihood(
            model,
            v,
            m,
            exact_limit,
            n_ais_runs,
            n_betas,
            schedule,
            ais_base,
            means[m],
            g,
            batch_size,
            ais_hidden_base,
        )
        nll_m, se_m = _mean_and_se(logp, se)
        log.info(
            "cond_nll/%s_given_rest = %.4f ± %.4f (%s, %d examples)",
            m,
            nll_m,
            se_m,
            "exact" if exact else "AIS",
            n,
        )
        out[f"cond_nll/{m}_given_rest"] = nll_m
        out[f"cond_nll/{m}_given_rest_stderr"] = se_m
        vi, vi_var = vi + nll_m, vi_var + se_m**2
        vi_items += -logp.detach().cpu().double()
        if records is not None:
            records.add(f"cond_nll/{m}_given_rest", -logp)
    if complete:
        out["cond_nll/vi"] = vi
        out["cond_nll/vi_stderr"] = math.sqrt(vi_var)
        if records is not None:
            records.add("cond_nll/vi", vi_items)
    if joint and _supported(model, model.names):
        logp, se, exact = joint_log_likelihood(
            model, v, exact_limit, joint_ais_runs, joint_betas, schedule, means, g, joint_hidden_base
        )
        out["nll"] = -float(logp.mean())
        out["nll_stderr"] = se
        if records is not None:
            records.add("nll", -logp)
        log.info("nll = %.4f ± %.4f (%s)", out["nll"], se, "exact" if exact else "AIS")
    return out


likelihood_metrics.constraints = {
    "n_examples": Interval(1, integer=True, allow_none=True),
    "n_ais_runs": INT1,
    "n_betas": Interval(3, integer=True),
    "joint_ais_runs": INT1,
    "joint_betas": Interval(3, integer=True),
    "schedule": Options(("piecewise", "linear")),
    "ais_base": Options(("meanfield", "marginal")),
    "ais_hidden_base": Options(P.HIDDEN_BASES),
    "joint_hidden_base": Options(JOINT_HIDDEN_BASES),
    "seed": INT0,
    "binarize_seed": Interval(0, integer=True, allow_none=True),
    "exact_limit": Interval(0, 30, integer=True),
    "batch_size": INT1,
    "joint": Flag(),
}
