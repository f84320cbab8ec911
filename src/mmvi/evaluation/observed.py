"""Robustness to the observed fraction: a modality partly seen, the rest of it inferred.

For each modality m (not replicated-softmax) and each fraction f of ``fractions``, a fraction f of
m's units is revealed, the other modalities are given whole, and the hidden units of m are inferred
by mean-field with the evaluation's inference (:func:`infer_partial`; native steps by default).
Patterns: ``random`` (per test item, round(f·n_m) units drawn with a fixed seed; the masks are
nested: the units of a smaller f are among those of a larger one) and ``block`` (for images: the
top round(f·rows) rows of the image piece, from the data module's cut; other data: random only).

Metrics ``observed/<measure>/<m>/<pattern>/f<f>`` (``f`` printed with ``%g``):

* ``err`` (single-label data): error in percent of the trained linear probe (the one of
  ``classify/*``) on the test representations; ``map``, multi-label: the probe's mean AP over classes;
* ``retrieval_map`` (``evaluation.retrieval.enabled``): mAP of each test query against the
  multimodal test representations (:func:`mmvi.evaluation.retrieval.per_query_retrieval`);
* ``ce``: cross-entropy of the hidden units of m under their mean-field prediction, in nats per
  hidden unit (the item's sum over its hidden units divided by their number), probabilities clipped
  as ``cond_ce`` does; not reported at f = 1 (nothing hidden).

At f = 0 the inference is that of the query ``<other>`` (``classify/err_<other>``, ``cond_ce``/n_m)
and at f = 1 that of ``multimodal``, step for step, so the paper's two points lie on the curves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from mmvi.constraints import INT0, Flag, Interval, NumberList, OptionList
from mmvi.evaluation.condce import LOGIT_CLIP
from mmvi.models.mrbm import MultimodalRBM
from mmvi.models.units import observe

log = logging.getLogger(__name__)

PATTERNS = ("random", "block")
DEFAULT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def fraction_label(f: float) -> str:
    """``f<f>`` as the metric names print it (``%g``): f0, f0.1, f0.25, f1."""
    return f"f{float(f):g}"


def random_masks(
    n_items: int, n_units: int, fractions: Sequence[float], seed: int = 0
) -> dict[float, Tensor]:
    """``{f: (n_items, n_units) 0/1 mask}`` revealing round(f·n_units) units per item, nested in f.

    One ranking of the units per item (argsort of seeded uniform draws); f reveals the units of
    rank < round(f·n_units).
    """
    g = torch.Generator().manual_seed(int(seed))
    ranks = torch.rand(n_items, n_units, generator=g).argsort(1).argsort(1)
    return {float(f): (ranks < round(float(f) * n_units)).float() for f in fractions}


def block_masks(piece_shape: tuple[int, int], fractions: Sequence[float]) -> dict[float, Tensor]:
    """``{f: (1, rows·cols) mask}`` revealing the top round(f·rows) rows of a row-major image piece."""
    rows, cols = piece_shape
    out = {}
    for f in fractions:
        mask = torch.zeros(rows, cols)
        mask[: round(float(f) * rows)] = 1.0
        out[float(f)] = mask.reshape(1, -1)
    return out


def piece_shapes(dm) -> dict[str, tuple[int, int]]:
    """``{modality: (rows, cols)}`` of the image pieces of a data module with an image cut, else {}."""
    cut = getattr(dm, "image_cut", None)
    if cut is None:
        return {}
    return {m: (rs.stop - rs.start, cs.stop - cs.start) for m, (rs, cs) in cut.pieces.items()}


@torch.no_grad()
def infer_partial(
    model: MultimodalRBM,
    v: Mapping[str, Tensor],
    target: str,
    mask: Tensor,
    steps: int,
    tol: float | None,
) -> tuple[Tensor, Tensor]:
    """Mean-field inference of the hidden units of ``target`` (mask 0) from its revealed units (mask 1)
    and every other modality: ``(h (B, H), target activation b + W h (B, n))``.

    h₀ = E[h | c + s·Σ_rest W_rᵀ v_r + W_mᵀ(o ⊙ v_m)] with s = 1 + (hidden units of m)/(units of the
    rest) (:meth:`MultimodalRBM.missing_scale`; the MP objective's s with p = f), then ``steps``
    updates v_m ← o ⊙ v_m + (1 − o) ⊙ E[v_m | h]; h ← E[h | v] (stopping once the mean absolute
    change of h is below ``tol``), the order of :meth:`MultimodalRBM.infer_missing`, which this is at
    o = 0; with every unit revealed it is E[h | v] (nothing to infer).
    """
    x = v[target]
    mask = mask.to(device=x.device, dtype=x.dtype).expand_as(x)
    full = {m: v[m] for m in model.names}
    if bool(mask.all()):
        h = model.hidden_probs(full)
        return h, model.visible_input(target, h)
    rest = {m: t for m, t in full.items() if m != target}
    n_hidden_units = float((1 - mask).sum(1).mean())
    s = 1.0 + n_hidden_units / max(sum(model.sizes[m] for m in rest), 1)
    h = model.hidden_probs({**rest, target: mask * x}, {m: s for m in rest})
    for _ in range(steps):
        state = observe(model.visible_mean(target, h), x, mask)
        new = model.hidden_probs({**rest, target: state})
        change = float((new - h).abs().mean()) if tol is not None else None
        h = new
        if change is not None and change < tol:
            break
    return h, model.visible_input(target, h)


def hidden_part_ce(model: MultimodalRBM, target: str, x: Tensor, act: Tensor, mask: Tensor) -> Tensor:
    """(B,) nats per hidden unit: Σ_(o=0) −log p(x_i | a_i) / #(o=0), Bernoulli logits clipped at ±23.03."""
    mask = mask.to(x.dtype).expand_as(x)
    if model.units[target].name == "bernoulli":
        act = act.clamp(-LOGIT_CLIP, LOGIT_CLIP)
    nll = -model.units[target].log_prob_units(x, act)
    hidden = 1 - mask
    return (hidden * nll).sum(1).double() / hidden.sum(1).double()


def observed_patterns(model: MultimodalRBM, dm, patterns: Sequence[str]) -> dict[str, list[str]]:
    """``{modality: patterns it gets}``: not replicated-softmax; ``block`` only for image pieces."""
    shapes = piece_shapes(dm)
    out = {}
    for m in model.names:
        if model.units[m].name == "softmax":
            log.info("observed/*: %r is replicated-softmax (word counts); skipped", m)
            continue
        out[m] = [p for p in patterns if p == "random" or m in shapes]
    return out


@torch.no_grad()
def observed_measures(
    model: MultimodalRBM,
    dm,
    steps: int,
    tol: float | None,
    batch_size: int = 1000,
    probe: Callable[[Tensor], tuple[str, Tensor, Tensor | None]] | None = None,
    retrieval: Callable[[Tensor], Tensor] | None = None,
    records=None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    patterns: Sequence[str] = PATTERNS,
    seed: int = 0,
) -> dict[str, float]:
    """The ``observed/*`` metrics of the module docstring on the test split.

    Args:
        steps, tol: the evaluation's mean-field inference.
        probe: representations (N, H) → (measure name, values, class index or None): ``err`` per
            item (percent) or ``map`` per class (None: no probe measure).
        retrieval: representations (N, H) → (N,) AP of each query (None: no ``retrieval_map``).
        records: receives every item's (class's) values.
    """
    test = dm.splits["test"]
    shapes = piece_shapes(dm)
    device = model.c.device
    n = len(test)
    out: dict[str, float] = {}
    for m, pats in observed_patterns(model, dm, patterns).items():
        for pattern in pats:
            if pattern == "random":
                masks = random_masks(n, model.sizes[m], fractions, seed)
            else:
                masks = block_masks(shapes[m], fractions)
            for f, mask in masks.items():
                reps, ces = [], []
                for start in range(0, n, batch_size):
                    v = {k: x[start : start + batch_size].to(device) for k, x in test.modalities.items()}
                    o = mask if mask.shape[0] == 1 else mask[start : start + batch_size]
                    o = o.to(device)
                    h, act = infer_partial(model, v, m, o, steps, tol)
                    reps.append(h.float().cpu())
                    if f < 1:
                        ces.append(hidden_part_ce(model, m, v[m], act, o).cpu())
                rep = torch.cat(reps)
                tail = f"{m}/{pattern}/{fraction_label(f)}"

                def put(
                    measure: str, values: Tensor, unit: str = "item", index=None, tail: str = tail
                ) -> None:
                    name = f"observed/{measure}/{tail}"
                    out[name] = float(values.double().mean())
                    if records is not None:
                        records.add(name, values, unit=unit, index=index)

                if ces:
                    put("ce", torch.cat(ces))
                if probe is not None:
                    measure, values, index = probe(rep)
                    put(measure, values, "item" if index is None else "class", index)
                if retrieval is not None:
                    put("retrieval_map", retrieval(rep))
    return out


def observed_metric_names(
    model: MultimodalRBM,
    dm,
    labelled: bool,
    single_label: bool,
    retrieval: bool,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    patterns: Sequence[str] = PATTERNS,
    **_,
) -> set[str]:
    """The names :func:`observed_measures` reports."""
    names = set()
    for m, pats in observed_patterns(model, dm, patterns).items():
        for p in pats:
            for f in fractions:
                tail = f"{m}/{p}/{fraction_label(f)}"
                if float(f) < 1:
                    names.add(f"observed/ce/{tail}")
                if labelled:
                    names.add(f"observed/{'err' if single_label else 'map'}/{tail}")
                    if retrieval:
                        names.add(f"observed/retrieval_map/{tail}")
    return names


#: ``evaluation.observed``
OBSERVED_SETTINGS = {
    "enabled": Flag(),
    "fractions": NumberList(Interval(0, 1)),
    "patterns": OptionList(PATTERNS),
    "seed": INT0,
}


def observed_family(
    model: MultimodalRBM,
    dm,
    steps: int,
    tol: float | None,
    batch_size: int,
    probe: Mapping | None,
    retrieval: Mapping | None,
    settings: Mapping,
    records=None,
    db: Tensor | None = None,
) -> dict[str, float]:
    """``evaluation.observed`` as :func:`mmvi.evaluation.protocol.evaluate` runs it: the probe kept by
    ``classify/*`` (``probe``: ``predict`` or ``scores``; empty or None: no probe measure) and, with
    ``retrieval.enabled``, retrieval against ``db``, the multimodal test representations."""
    from mmvi.evaluation.classify import multilabel_class_scores
    from mmvi.evaluation.retrieval import per_query_retrieval

    test = dm.splits["test"]
    labels = test.labels
    probe_fn = None
    if probe and "predict" in probe:
        y = labels.argmax(1).numpy()

        def probe_fn(rep: Tensor):
            pred = probe["predict"](rep.numpy())
            return "err", torch.from_numpy(100.0 * (pred != y)), None

    elif probe and "scores" in probe:

        def probe_fn(rep: Tensor):
            keep, ap, _ = multilabel_class_scores(probe["scores"](rep), labels)
            return "map", ap, keep

    ret_fn = None
    ret = retrieval or {}
    if ret.get("enabled", False) and labels.shape[1] > 0 and db is not None:
        k = int(ret.get("k", 50))

        def ret_fn(rep: Tensor) -> Tensor:
            return per_query_retrieval(rep, db, labels, labels, k, True)[0]

    opts = {key: settings[key] for key in ("fractions", "patterns", "seed") if key in settings}
    t0 = time.perf_counter()
    out = observed_measures(model, dm, steps, tol, batch_size, probe_fn, ret_fn, records, **opts)
    log.info("observed/*: %d measures in %.1f s", len(out), time.perf_counter() - t0)
    return out
