"""Matmul FLOPs of one training step of an objective on a :class:`MultimodalRBM` (equal-compute axes).

Counted from the shapes of the products each estimator runs (forward and backward), the way
``torch.utils.flop_counter`` counts them: a (r × n) @ (n × H) product costs 2·r·n·H; in the backward
pass a product costs one such product for its weight gradient and one for its input gradient when its
input carries a gradient (data never does). Element-wise work (sampling, non-linearities, the
sparsity penalty) is not counted. ``P(r, S)`` below is Σ_{m ∈ S} 2·r·n_m·H (one product of every
modality of S, r rows).

* CD-k / PCD-k (docs/design.md §3.1): positive phase forward + weight gradient 2·P(B); each of the k
  Gibbs steps P(n) down and P(n) up (n = B, or the persistent chains); negative statistics P(n).
* conditional CD-k (§3.2), per direction m: the clamped modalities' input P(B, rest), k + 1 target
  inputs and k target samples (2k + 1)·P(B, m), statistics P(B); plus the positive phase 2·P(B).
* CD-PercLoss (§3.3), per direction: start P(B, rest) + P(B, m), chain P(B, rest) + (2k + 1)·P(B, m),
  statistics P(B); plus 2·P(B).
* MP (§3.4), per direction with predicted set S and observed set O: forward P(B, O) + (2T + 2)·P(B, S);
  backward P(B, O) + (4·min(K, T) + 3)·P(B, S) with K the current truncation (``p_modality``: every
  other modality in S with that probability, in expectation).
* the hybrid: its parts' counts where their weight is non-zero.

Other objectives (e.g. the DBM's) have no count: :func:`step_flops` returns None.
"""

from __future__ import annotations

from collections.abc import Iterable

from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives.base import Objective
from mmvi.objectives.minvi import CDPercLoss, ConditionalCD, MultiPrediction, _directions
from mmvi.objectives.mixture import Mixture
from mmvi.objectives.nll import ContrastiveDivergence


def product_flops(model: MultimodalRBM, names: Iterable[str], rows: float) -> float:
    """P(rows, names) = Σ_m 2·rows·n_m·H: one product W_mᵀv_m (or W_m h) of each named modality."""
    return 2.0 * float(rows) * model.n_hidden * sum(model.sizes[m] for m in names)


def _cd(obj: ContrastiveDivergence, model: MultimodalRBM, b: int) -> float:
    n = obj.n_chains if obj.persistent else b
    everything = model.names
    return 2 * product_flops(model, everything, b) + (2 * obj.steps() + 1) * product_flops(
        model, everything, n
    )


def _conditional(obj: ConditionalCD | CDPercLoss, model: MultimodalRBM, b: int) -> float:
    everything = model.names
    total = 2 * product_flops(model, everything, b)
    for m in _directions(model, obj.directions):
        rest = [n for n in everything if n != m]
        starts = 1 if isinstance(obj, ConditionalCD) else 2  # CD-PercLoss also samples its start
        total += starts * product_flops(model, rest, b) + (2 * obj.k + starts) * product_flops(model, [m], b)
        total += product_flops(model, everything, b)
    return total


def _mp(obj: MultiPrediction, model: MultimodalRBM, b: int) -> float:
    T, K = obj.mf_steps, min(obj.truncation(), obj.mf_steps)
    p = obj.p_modality
    total = 0.0
    for m in _directions(model, obj.directions):
        others = product_flops(model, [n for n in model.names if n != m], b)
        predicted = product_flops(model, [m], b) + p * others
        observed = (1 - p) * others
        total += 2 * observed + (2 * T + 2 + 4 * K + 3) * predicted
    return total


def step_flops(objective: Objective, model: MultimodalRBM, batch_size: int) -> float | None:
    """Matmul FLOPs (forward + backward) of one training step on ``batch_size`` examples, at the
    objective's current epoch (its k ramp, MP's truncation); None without a count for it."""
    b = int(batch_size)
    if isinstance(objective, Mixture):
        parts = [
            (w, step_flops(part, model, b))
            for w, part in ((objective.alpha, objective.minvi), (1 - objective.alpha, objective.nll))
            if w > 0
        ]
        return None if any(f is None for _, f in parts) else sum(f for _, f in parts)
    if type(model) is not MultimodalRBM:
        return None
    if isinstance(objective, ContrastiveDivergence):
        return _cd(objective, model, b)
    if isinstance(objective, ConditionalCD | CDPercLoss):
        return _conditional(objective, model, b)
    if isinstance(objective, MultiPrediction):
        return _mp(objective, model, b)
    return None


def flops_per_example(objective: Objective, model: MultimodalRBM, batch_size: int) -> float | None:
    """:func:`step_flops` / ``batch_size`` (PCD's chain cost is shared by the batch)."""
    flops = step_flops(objective, model, batch_size)
    return None if flops is None else flops / int(batch_size)
