"""The inference gap: the conditional likelihood against what mean-field inference extracts.

For every direction m | rest (docs/design.md §4; the paper's argument, docs/paper.md §3):

* ``cond_ce_native/<m>_given_<rest>``, ``cond_ce_converged/<m>_given_<rest>``: the mean-field
  cross-entropy (:mod:`mmvi.evaluation.condce`) with the model's native steps and with converged
  inference, on the whole test split (nats per example; the one of ``evaluation.inference`` equals
  ``cond_ce/*``);
* ``gibbs_ce/<m>_given_<rest>``: the Gibbs-sampling estimate of the predictive cross-entropy
  −log (1/S) Σ_s P(v_m | h_s), h_s ~ P(h | v_rest) by a chain over (h, v_m) with v_rest clamped
  (:func:`gibbs_predictive_ce`); since Σ_h P(h | v_rest) P(v_m | h) = P(v_m | v_rest) it converges
  to −log P(v_m | v_rest) as S grows, and lies above it on average for finite S (Jensen);
* ``gap/<m>_given_<rest>`` = CE(native) − ``cond_nll``, ``gap_converged/…`` = CE(converged) −
  ``cond_nll`` and ``gibbs_gap/…`` = ``gibbs_ce`` − ``cond_nll``, per item, on the items of the
  likelihood (the first ``likelihood.n_examples`` test items, binarised with
  ``likelihood.binarize_seed``) when ``evaluation.likelihood.enabled``; ``gibbs_ce`` is computed on
  those same items (with or without the likelihood).

The mean-field CE clips probabilities to [1e-10, 1 − 1e-10] as the reference does; the Gibbs
estimate uses the exact log P(v_m | h).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.constraints import INT0, INT1, Flag
from mmvi.evaluation.condce import conditional_cross_entropy
from mmvi.evaluation.likelihood import binarize
from mmvi.models.mrbm import MultimodalRBM

log = logging.getLogger(__name__)


def direction_name(model: MultimodalRBM, m: str) -> str:
    """``<m>_given_<rest>`` as ``cond_ce/*`` names it (two modalities: the other's name; more: rest)."""
    rest = [n for n in model.names if n != m]
    return f"{m}_given_{rest[0] if len(rest) == 1 else 'rest'}"


@torch.no_grad()
def gibbs_predictive_ce(
    model: MultimodalRBM,
    v: Mapping[str, Tensor],
    target: str,
    n_chains: int = 8,
    n_samples: int = 32,
    burn_in: int = 20,
    thin: int = 1,
    start_steps: int = 10,
    seed: int = 0,
) -> Tensor:
    """Gibbs estimate of −log P(v_target | v_rest) per example, (B,) float64 nats.

    ``n_chains`` chains per example (all examples and chains in one batch of B·n_chains rows) run
    block Gibbs over (h, v_target) with the other modalities clamped (their hidden input computed
    once), started from a draw of the ``start_steps``-step mean-field prediction of v_target; after
    ``burn_in`` sweeps, every ``thin``-th sweep's h ~ P(h | v_rest, v_target) is one draw, whose
    marginal at stationarity is P(h | v_rest). With S = ``n_chains``·``n_samples`` draws the estimate
    is −[logsumexp_s log P(v_target | h_s) − log S] (a replicated-softmax target keeps its document
    lengths). The randomness comes from ``seed`` (the global generator is left as it was).

    Raises:
        ValueError: a target absent from ``v`` or no other modality given.
    """
    if target not in v or len(v) < 2:
        raise ValueError(f"gibbs_predictive_ce needs {target!r} and at least one other modality")
    x = v[target]
    B, C = x.shape[0], int(n_chains)
    given = {m: t.repeat_interleave(C, 0) for m, t in v.items() if m != target}
    x_rep = x.repeat_interleave(C, 0)
    units = model.units[target]
    length = units.length(x_rep)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        lengths = {} if length is None else {target: length}
        _, h_mf = model.infer_missing(given, steps=start_steps, tol=None, lengths=lengths)
        start = model.sample_visible(target, h_mf, length)
        fixed = model.hidden_bias({**given, target: start}) + model.bottom_up(given)  # clamped: once
        W = model.W[target]
        lse = torch.full((B * C,), -math.inf, dtype=torch.float64, device=x.device)
        state = start
        for t in range(1, int(burn_in) + int(n_samples) * int(thin) + 1):
            h = model.hidden.sample(fixed + state @ W)  # h ~ P(h | v_rest, v_target(t - 1))
            if t > burn_in and (t - burn_in - 1) % thin == 0:
                lp = units.log_prob(x_rep, model.visible_input(target, h)).double()
                lse = torch.logaddexp(lse, lp)
            state = model.sample_visible(target, h, length)
    S = C * int(n_samples)
    return -(torch.logsumexp(lse.reshape(B, C), dim=1) - math.log(S))


def _batches(v: Mapping[str, Tensor], batch_size: int, device):
    n = next(iter(v.values())).shape[0]
    for start in range(0, n, batch_size):
        yield {m: x[start : start + batch_size].to(device) for m, x in v.items()}


@torch.no_grad()
def mean_field_ce(
    model: MultimodalRBM, v: Mapping[str, Tensor], target: str, steps: int, tol: float | None, batch_size: int
) -> Tensor:
    """(N,) float64 mean-field cross-entropy of ``v[target]`` given the rest, in chunks of ``batch_size``."""
    parts = [
        conditional_cross_entropy(model, b, target, steps=steps, tol=tol).double().cpu()
        for b in _batches(v, batch_size, model.c.device)
    ]
    return torch.cat(parts)


@torch.no_grad()
def gibbs_ce_batched(
    model: MultimodalRBM, v: Mapping[str, Tensor], target: str, batch_size: int, **options
) -> Tensor:
    """(N,) :func:`gibbs_predictive_ce` in chunks of ``batch_size`` examples (each chunk seeded
    ``seed`` + its index)."""
    seed = int(options.pop("seed", 0))
    parts = [
        gibbs_predictive_ce(model, b, target, seed=seed + i, **options).cpu()
        for i, b in enumerate(_batches(v, batch_size, model.c.device))
    ]
    return torch.cat(parts)


def likelihood_items(
    model: MultimodalRBM, modalities: Mapping[str, Tensor], likelihood: Mapping | None
) -> dict[str, Tensor]:
    """The test items of :func:`mmvi.evaluation.likelihood.likelihood_metrics`: the first
    ``n_examples``, Bernoulli modalities binarised with ``binarize_seed`` (same defaults)."""
    lik = likelihood or {}
    n = next(iter(modalities.values())).shape[0]
    k = lik.get("n_examples", 1000)
    n = n if k is None else min(int(k), n)
    v = {m: modalities[m][:n] for m in model.names}
    seed = lik.get("binarize_seed", 0)
    if seed is not None:
        v = binarize(v, seed, [m for m in model.names if model.units[m].name == "bernoulli"])
    return {m: x.to(dtype=model.c.dtype) for m, x in v.items()}


@torch.no_grad()
def inference_gap_metrics(
    model: MultimodalRBM,
    test: Mapping[str, Tensor],
    native_steps: int,
    mf_steps: int,
    mf_tol: float | None,
    batch_size: int = 1000,
    likelihood: Mapping | None = None,
    cond_nll: Mapping[str, Tensor] | None = None,
    records=None,
    n_chains: int = 8,
    n_samples: int = 32,
    burn_in: int = 20,
    thin: int = 1,
    gibbs_batch_size: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """The measures of the module docstring (means over items; ``records`` gets each item's value).

    Args:
        test: ``{name: (N, n_m)}`` test values (grey values as given).
        native_steps, mf_steps, mf_tol: the native and the converged inference
            (:func:`mmvi.evaluation.protocol.inference_steps`).
        likelihood: ``evaluation.likelihood`` (its items and binarisation are used).
        cond_nll: ``{m: (n,) −log P(v_m | v_rest)}`` of those items, or None (no ``*gap*`` measures).
        n_chains, n_samples, burn_in, thin, seed: :func:`gibbs_predictive_ce`.
        gibbs_batch_size: examples per Gibbs batch (B·n_chains rows at once).
    """
    out: dict[str, float] = {}
    items = likelihood_items(model, test, likelihood)
    gibbs = dict(n_chains=n_chains, n_samples=n_samples, burn_in=burn_in, thin=thin, start_steps=native_steps)

    def put(name: str, values: Tensor) -> None:
        out[name] = float(values.mean())
        if records is not None:
            records.add(name, values)

    for m in model.names:
        d = direction_name(model, m)
        put(f"cond_ce_native/{d}", mean_field_ce(model, test, m, native_steps, None, batch_size))
        put(f"cond_ce_converged/{d}", mean_field_ce(model, test, m, mf_steps, mf_tol, batch_size))
        g = gibbs_ce_batched(model, items, m, gibbs_batch_size, seed=seed, **gibbs)
        put(f"gibbs_ce/{d}", g)
        nll = None if cond_nll is None else cond_nll.get(m)
        if nll is None:
            continue
        nll = torch.as_tensor(nll, dtype=torch.float64).cpu()
        put(f"gap/{d}", mean_field_ce(model, items, m, native_steps, None, batch_size) - nll)
        put(f"gap_converged/{d}", mean_field_ce(model, items, m, mf_steps, mf_tol, batch_size) - nll)
        put(f"gibbs_gap/{d}", g - nll)
    return out


inference_gap_metrics.constraints = {
    "n_chains": INT1,
    "n_samples": INT1,
    "burn_in": INT0,
    "thin": INT1,
    "gibbs_batch_size": INT1,
    "seed": INT0,
}
#: ``evaluation.inference_gap`` (the per-epoch ``val/`` curves: :mod:`mmvi.lit.gap_monitor`)
INFERENCE_GAP_SETTINGS = {
    "enabled": Flag(),
    **inference_gap_metrics.constraints,
    "per_epoch": Flag(),
    "val_items": INT1,
    "val_chains": INT1,
    "val_samples": INT1,
    "val_burn_in": INT0,
}


def gap_metric_names(model: MultimodalRBM, with_nll: bool) -> set[str]:
    """The names :func:`inference_gap_metrics` reports."""
    fams = ["cond_ce_native", "cond_ce_converged", "gibbs_ce"]
    fams += ["gap", "gap_converged", "gibbs_gap"] if with_nll else []
    return {f"{f}/{direction_name(model, m)}" for f in fams for m in model.names}


def gap_family(
    model: MultimodalRBM,
    test: Mapping[str, Tensor],
    native_steps: int | None,
    mf_steps: int,
    mf_tol: float | None,
    batch_size: int,
    likelihood: Mapping | None,
    settings: Mapping,
    records=None,
) -> dict[str, float]:
    """``evaluation.inference_gap`` as :func:`mmvi.evaluation.protocol.evaluate` runs it: the gaps use
    the per-item ``cond_nll/<m>_given_rest`` already in ``records`` (``likelihood.enabled``).

    Raises:
        ValueError: no native step count for the model.
    """
    if native_steps is None:
        raise ValueError("evaluation.inference_gap needs the model's native mean-field steps")
    lik = likelihood or {}
    cond = None
    if lik.get("enabled", False) and records is not None:
        cond = {
            m: torch.from_numpy(records.values(f"cond_nll/{m}_given_rest"))
            for m in model.names
            if f"cond_nll/{m}_given_rest" in records
        }
    opts = {k: settings[k] for k in inference_gap_metrics.constraints if k in settings}
    t0 = time.perf_counter()
    out = inference_gap_metrics(
        model, test, native_steps, mf_steps, mf_tol, batch_size, lik, cond, records, **opts
    )
    log.info("inference gap: %d measures in %.1f s", len(out), time.perf_counter() - t0)
    return out


@torch.no_grad()
def per_epoch_gap(
    model: MultimodalRBM,
    val: Mapping[str, Tensor],
    native_steps: int,
    mf_steps: int,
    mf_tol: float | None,
    likelihood: Mapping | None = None,
    val_items: int = 200,
    val_chains: int = 2,
    val_samples: int = 4,
    val_burn_in: int = 5,
    seed: int = 0,
    **_,
) -> dict[str, float]:
    """The cheap per-epoch schedule: ``val/cond_ce_native``, ``val/cond_ce_converged``, ``val/gibbs_ce``
    and ``val/gibbs_gap`` = native CE − ``gibbs_ce`` for every direction ``<m>_given_<rest>``.

    On the first ``val_items`` validation items (binarised with ``likelihood.binarize_seed``), Gibbs
    with ``val_chains``·``val_samples`` (2·4) draws after ``val_burn_in`` (5) sweeps, seeded ``seed`` each epoch
    (the same draws' randomness every epoch). ``val/gibbs_ce`` lies above the full schedule's estimate
    (fewer draws: more Jensen bias), so ``val/gibbs_gap`` understates the gap; README (measures)
    gives the bias measured on a small run.
    """
    items = likelihood_items(model, val, {**(likelihood or {}), "n_examples": val_items})
    out = {}
    for m in model.names:
        d = direction_name(model, m)
        native = mean_field_ce(model, items, m, native_steps, None, val_items)
        g = gibbs_predictive_ce(
            model,
            {k: x.to(model.c.device) for k, x in items.items()},
            m,
            val_chains,
            val_samples,
            val_burn_in,
            1,
            native_steps,
            seed,
        ).cpu()
        out[f"val/cond_ce_native/{d}"] = float(native.mean())
        out[f"val/cond_ce_converged/{d}"] = float(
            mean_field_ce(model, items, m, mf_steps, mf_tol, val_items).mean()
        )
        out[f"val/gibbs_ce/{d}"] = float(g.mean())
        out[f"val/gibbs_gap/{d}"] = float((native - g).mean())
    return out
