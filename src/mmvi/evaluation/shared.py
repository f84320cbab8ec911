"""One pass over a split for the representations and the conditional cross-entropies, and part timings.

The representation of the query "every modality but m" (``<other>`` with two modalities, ``no_<m>``
with more; :mod:`mmvi.evaluation.representations`) is the hidden means h of the mean-field
inference of m (docs/paper.md §2), and ``cond_ce/<m>_given_<rest>`` (docs/design.md §6.3) is the
cross-entropy of v_m under the prediction from the same h. :func:`shared_test_pass` infers each missing
modality once per batch and computes both from it; a replicated-softmax target, whose inference
uses its true document length, is inferred again for its cross-entropy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from mmvi.data.base import Split
from mmvi.evaluation.condce import bernoulli_cross_entropy, conditional_cross_entropy
from mmvi.evaluation.representations import query_given
from mmvi.models.mrbm import MultimodalRBM
from mmvi.models.units import Units

SECONDS_PREFIX = "eval/seconds/"


class PartTimer:
    """Wall seconds of the evaluation's parts: ``eval/seconds/<part>`` (summed over repeated parts)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def metrics(self) -> dict[str, float]:
        return {f"{SECONDS_PREFIX}{k}": v for k, v in self.seconds.items()}


def ce_query(model: MultimodalRBM, target: str) -> str | None:
    """The query whose representation is the inference of ``target`` from all the other modalities."""
    rest = [m for m in model.names if m != target]
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else f"no_{target}"


def _shares_inference(model: MultimodalRBM, target: str) -> bool:
    """The cross-entropy's inference equals the representation's: no document length is used."""
    units = model.units[target]
    return not hasattr(model, "lengths") or type(units).length is Units.length


@torch.no_grad()
def shared_test_pass(
    model: MultimodalRBM,
    split: Split,
    batch_size: int,
    steps: int,
    tol: float | None,
    queries: list[str],
    ce: bool = True,
    timer: PartTimer | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``({query: (N, H) float32 hidden means}, {target: (N,) float64 cross-entropies in nats})``.

    The representations equal :func:`~mmvi.evaluation.representations.split_representations`'s and
    the cross-entropies :func:`~mmvi.evaluation.condce.conditional_cross_entropy`'s, batch by batch
    (same batches, so a tolerance-stopped inference stops at the same step). ``timer`` receives
    ``representations/<query>`` and ``cond_ce`` seconds (the shared inference counts as the
    representation's).
    """
    timer = timer or PartTimer()
    device = model.c.device
    given = {q: query_given(q, list(model.names)) for q in queries}
    targets = list(model.names) if ce else []
    by_query = {ce_query(model, m): m for m in targets if _shares_inference(model, m)}
    reps: dict[str, list[Tensor]] = {q: [] for q in queries}
    ces: dict[str, list[Tensor]] = {m: [] for m in targets}
    for start in range(0, len(split), batch_size):
        v = {m: x[start : start + batch_size].to(device) for m, x in split.modalities.items()}
        for q in queries:
            with timer.part(f"representations/{q}"):
                h = model.representation({m: v[m] for m in given[q]}, steps=steps, tol=tol)
                reps[q].append(h.float().cpu())
            target = by_query.get(q)
            if target is not None and target in ces:
                with timer.part("cond_ce"):
                    act = model.visible_input(target, h)
                    x = v[target]
                    if model.units[target].name == "bernoulli":
                        value = bernoulli_cross_entropy(x, act)
                    else:
                        value = -model.units[target].log_prob(x, act)
                    ces[target].append(value.double().cpu())
        for m in targets:
            if m not in by_query.values():
                with timer.part("cond_ce"):
                    value = conditional_cross_entropy(model, v, m, steps=steps, tol=tol)
                    ces[m].append(value.double().cpu())
    for m in targets:  # a target whose query was not asked for
        if not ces[m] and len(split):
            with timer.part("cond_ce"):
                ces[m] = [
                    conditional_cross_entropy(
                        model,
                        {n: x[s : s + batch_size].to(device) for n, x in split.modalities.items()},
                        m,
                        steps=steps,
                        tol=tol,
                    )
                    .double()
                    .cpu()
                    for s in range(0, len(split), batch_size)
                ]
    return (
        {q: torch.cat(p) for q, p in reps.items()},
        {m: torch.cat(p) for m, p in ces.items() if p},
    )
