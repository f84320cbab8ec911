"""Mean-field conditional cross-entropy (docs/design.md §6).

cond_ce(m | rest) = −Σ_i [v_i log p̂_i + (1 − v_i) log(1 − p̂_i)] per example for Bernoulli units,
with p̂ = σ(a) the mean-field prediction of modality m given the others (a = b + W ĥ, the final
hidden means ĥ), probabilities clipped to [1e-10, 1 − 1e-10] as the reference code does; for other
unit types −log p(v_m | a) under the same ĥ.

The Bernoulli form is evaluated from the activation a, never from p̂: clipping p̂ to
[ε, 1 − ε] is clipping a to [−L, L] with L = log((1 − ε)/ε) ≈ 23.03, and then
−log σ(a) = softplus(−a), −log(1 − σ(a)) = softplus(a). So the value stays finite and exact where
σ(a) rounds to 0 or 1 in float32 (e.g. a = 20: 2.1e-9 nats for a true 1, 20.0 nats for a 0), each
term computed as a softplus of its own sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mmvi.models.mrbm import MultimodalRBM
from mmvi.models.units import BernoulliUnits

CLIP = 1e-10
LOGIT_CLIP = math.log((1 - CLIP) / CLIP)


def bernoulli_cross_entropy(x: Tensor, act: Tensor, clip: float = CLIP) -> Tensor:
    """−Σ_i [x_i log p_i + (1 − x_i) log(1 − p_i)] per row, p = clip(σ(act), clip, 1 − clip).

    Args:
        x: (B, n) targets in [0, 1].
        act: (B, n) activations (logits) of the prediction.
        clip: the probability clip ε (0 for none).
    Returns:
        (B,) nats: −log p(x | a) of Bernoulli units (:class:`BernoulliUnits`) at the clipped logit.
    """
    if clip > 0:
        bound = math.log((1 - clip) / clip)
        act = act.clamp(-bound, bound)
    return -BernoulliUnits().log_prob(x, act)


@torch.no_grad()
def conditional_cross_entropy(
    model: MultimodalRBM,
    v: Mapping[str, Tensor],
    target: str,
    steps: int = 100,
    tol: float | None = 1e-5,
) -> Tensor:
    """Per-example cross-entropy (B,) in nats of the true ``v[target]`` under its mean-field prediction.

    The other modalities of ``v`` are given; a replicated-softmax target is predicted with its
    true document length.
    """
    given = {m: x for m, x in v.items() if m != target}
    x = v[target]
    lengths = model.lengths({target: x}) if hasattr(model, "lengths") else {}
    if lengths:
        _, h = model.infer_missing(given, steps=steps, tol=tol, lengths=lengths)
    else:
        _, h = model.infer_missing(given, steps=steps, tol=tol)
    act = model.visible_input(target, h)
    if model.units[target].name == "bernoulli":
        return bernoulli_cross_entropy(x, act)
    return -model.units[target].log_prob(x, act)
