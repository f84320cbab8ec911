"""Evaluation after fit: the paper's Table 1 protocol plus the likelihood and retrieval measures.

Metric names are those of docs/design.md §4 (stable; the comparison report reads them):
``classify/err_<query>`` (single-label, percent) or ``classify/map_<query>`` and
``classify/precision_at_50_<query>`` (multi-label), queries ``multimodal``, ``<m>`` and, with three
or more modalities, ``no_<m>`` (:func:`mmvi.evaluation.representations.query_types`);
``cond_ce/<m>_given_<rest>`` (two modalities: ``<rest>`` is the other's name; more: ``rest``);
``cond_nll/<m>_given_rest``, ``cond_nll/vi``, ``nll`` (+ ``_stderr``);
``retrieval/map_<query>``, ``retrieval/precision_at_<k>_<query>``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from mmvi.constraints import (
    INT0,
    INT1,
    POSITIVE,
    Flag,
    Interval,
    LoggedMeasure,
    NumberList,
    Options,
    Settings,
)
from mmvi.data.base import MultimodalDataModule
from mmvi.errors import ConfigError
from mmvi.evaluation.classify import REFITS
from mmvi.evaluation.condce import conditional_cross_entropy
from mmvi.evaluation.inference_gap import INFERENCE_GAP_SETTINGS, gap_metric_names
from mmvi.evaluation.likelihood import likelihood_metrics
from mmvi.evaluation.observed import OBSERVED_SETTINGS, observed_metric_names
from mmvi.evaluation.records import Records
from mmvi.evaluation.representations import query_types, split_representations
from mmvi.evaluation.shared import SECONDS_PREFIX, PartTimer, shared_test_pass
from mmvi.models.mrbm import MultimodalRBM
from mmvi.run_folder import RECORDS_FILE
from mmvi.utils import Measures

GENERATION_FIGURE, RETRIEVAL_FIGURE = "generation.png", "retrieval.png"
FIGURES = (GENERATION_FIGURE, RETRIEVAL_FIGURE)
#: every file the evaluation writes into the run folder (start-over renames them aside)
EVALUATION_FILES = (*FIGURES, RECORDS_FILE)
CHECKPOINTS = ("last", "best")  # evaluation.checkpoint: the weights mmvi.train evaluates

log = logging.getLogger(__name__)


def _rest_name(model: MultimodalRBM, m: str) -> str:
    rest = [n for n in model.names if n != m]
    return rest[0] if len(rest) == 1 else "rest"


@torch.no_grad()
def conditional_ce_metrics(
    model: MultimodalRBM,
    split,
    batch_size: int,
    steps: int,
    tol: float | None,
    records: Records | None = None,
) -> dict:
    """``cond_ce/<m>_given_<rest>`` averaged over the split (nats per example); ``records`` receives
    each example's value."""
    device = model.c.device
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in model.names}
    n = len(split)
    for start in range(0, n, batch_size):
        v = {m: x[start : start + batch_size].to(device) for m, x in split.modalities.items()}
        for m in model.names:
            ce = conditional_cross_entropy(model, v, m, steps=steps, tol=tol)
            parts[m].append(ce.detach().double().cpu())
    out = {}
    for m in model.names:
        name = f"cond_ce/{m}_given_{_rest_name(model, m)}"
        values = torch.cat(parts[m])
        out[name] = float(values.mean())
        if records is not None:
            records.add(name, values)
    return out


def cond_ce_from_values(
    model: MultimodalRBM, values: Mapping[str, torch.Tensor], records: Records | None
) -> dict:
    """``cond_ce/<m>_given_<rest>``: the mean of each target's per-example nats (:func:`shared_test_pass`)."""
    out = {}
    for m in model.names:
        name = f"cond_ce/{m}_given_{_rest_name(model, m)}"
        out[name] = float(values[m].mean())
        if records is not None:
            records.add(name, values[m])
    return out


def classification_metrics(
    reps: Mapping[str, Mapping[str, torch.Tensor]],
    dm: MultimodalDataModule,
    cfg: Mapping,
    records: Records | None = None,
    keep_probe: dict | None = None,
    seconds: dict | None = None,
) -> dict:
    """Linear probe on multimodal train representations, tested on every query type.

    ``keep_probe`` (optional) receives the fitted probe (:func:`classify.linear_probe_error`);
    ``seconds`` (optional) the seconds of the C search and the refit (``C_search``, ``refit``).

    ``classify/C`` is the chosen C and ``classify/C_at_bound`` 1.0 when it is still at an end of the
    grid after the grid was extended ``max_extensions`` times (:func:`classify.select_C`).
    """
    from mmvi.evaluation import classify

    labels = {k: dm.splits[k].labels for k in ("train", "val", "test")}
    train_x = reps["train"]["multimodal"]
    train_y = labels["train"]
    max_train = cfg.get("max_train")
    if max_train is not None and max_train < len(train_x):
        train_x, train_y = train_x[:max_train], train_y[:max_train]
    Cs = tuple(cfg.get("Cs", (0.01, 0.1, 1, 10, 100)))
    options = {
        "max_extensions": int(cfg.get("max_extensions", 3)),
        "refit": cfg.get("refit", "train_val"),
        "records": records,
        "keep_probe": keep_probe,
        "seconds": seconds,
    }
    if dm.single_label:
        metrics, C, at_bound = classify.linear_probe_error(
            train_x.numpy(),
            train_y.argmax(1).numpy(),
            reps["val"]["multimodal"].numpy(),
            labels["val"].argmax(1).numpy(),
            {q: r.numpy() for q, r in reps["test"].items()},
            labels["test"].argmax(1).numpy(),
            Cs=Cs,
            **options,
        )
    else:
        metrics, C, at_bound = classify.multilabel_probe(
            train_x.numpy(),
            train_y.numpy(),
            reps["val"]["multimodal"].numpy(),
            labels["val"].numpy(),
            {q: r.numpy() for q, r in reps["test"].items()},
            labels["test"].numpy(),
            Cs=Cs,
            **options,
        )
    metrics["classify/C"] = float(C)
    metrics["classify/C_at_bound"] = float(at_bound)
    return metrics


def retrieval_figure_of_split(
    model: MultimodalRBM, dm: MultimodalDataModule, reps: torch.Tensor, out_dir: Path, n_queries: int, k: int
) -> Path:
    """Supplement Figure S1: fixed test queries (the first ``n_queries``) and their top-k items.

    Examples are drawn as the data module draws them (``dm.example_images``: images, e.g. the
    pieces of a digit joined); data that are not images as text tiles with their labels.
    """
    from mmvi.evaluation.figures import retrieval_figure, retrieval_topk

    test = dm.splits["test"]
    query_idx = torch.arange(min(n_queries, len(test)))
    topk = retrieval_topk(reps, reps, query_idx, k, exclude_self=True)
    names = dm.label_names or [str(i) for i in range(test.labels.shape[1])]
    captions = [", ".join(names[j] for j in torch.nonzero(row).flatten().tolist()) for row in test.labels]
    images = dm.example_images(test.modalities)
    relevant = (test.labels[query_idx].unsqueeze(1) * test.labels[topk]).sum(-1) > 0
    return retrieval_figure(
        images,
        images,
        query_idx,
        topk,
        out_dir / RETRIEVAL_FIGURE,
        captions=captions,
        relevant=relevant,
        title="multimodal queries: top retrieved test items",
    )


NO_LABELS = "skipped: the data have no labels"


def has_labels(dm: MultimodalDataModule) -> bool:
    """True when the data have labels; otherwise say that the label-based measures are skipped."""
    if dm.splits["train"].labels.shape[1] > 0:
        return True
    log.warning(
        "the data have no labels: classify/* (linear probe) and retrieval/* skipped; "
        "the conditional and likelihood measures still run"
    )
    return False


INFERENCE_MODES = ("native", "converged")


def inference_steps(
    inference: str, native_steps: int | None, mf_steps: int, mf_tol: float | None
) -> tuple[int, float | None]:
    """Mean-field steps and tolerance that infer a missing modality (docs/paper.md §2, evaluation).

    ``native``: the model's own inference, ``native_steps`` fixed steps (the objective's T for
    MP, the reference's 10 for the likelihood-based objectives, the fine-tuned T of a deep model);
    ``converged``: up to ``mf_steps`` steps or until the mean change is below ``mf_tol``.

    Raises:
        ValueError: an unknown mode, or ``native`` without the model's native step count.
    """
    if inference not in INFERENCE_MODES:
        raise ValueError(f"evaluation.inference={inference!r}; allowed: {', '.join(INFERENCE_MODES)}")
    if inference == "converged":
        return int(mf_steps), mf_tol
    if native_steps is None:
        raise ValueError("evaluation.inference=native needs the model's native mean-field steps")
    return int(native_steps), None


def evaluate(
    model: MultimodalRBM,
    dm: MultimodalDataModule,
    out_dir: Path,
    native_steps: int | None = None,
    inference: str = "native",
    mf_steps: int = 100,
    mf_tol: float | None = 1e-5,
    batch_size: int = 1000,
    n_generation: int = 10,
    classifier: Mapping | None = None,
    likelihood: Mapping | None = None,
    retrieval: Mapping | None = None,
    checkpoint: str = "last",
    checkpoint_monitor: str = "val/cond_ce/sum",
    inference_gap: Mapping | None = None,
    observed: Mapping | None = None,
) -> tuple[dict, dict]:
    """Run every enabled measure; return (metrics, artefact paths). Args: ``conf/evaluation``.

    The per-example values behind the measures go to ``out_dir/records.parquet``
    (:mod:`mmvi.evaluation.records`; only the measures whose value is finite; artefact
    ``records``). ``checkpoint``/``checkpoint_monitor`` choose the weights ``mmvi.train`` evaluates
    (:mod:`mmvi.lit.selection`); the model given here is evaluated as it is.

    The metrics are a :class:`~mmvi.utils.Measures`: a family whose computation fails (e.g. a
    probe that cannot be fitted) is listed in ``metrics.missing`` with its reason, the others stay.

    ``native_steps`` is the model's own number of mean-field steps (used by ``inference=native``);
    the steps used are recorded as ``eval/mf_steps``.
    """
    dm.setup()
    model.eval()
    steps, tol = inference_steps(inference, native_steps, mf_steps, mf_tol)
    bs = int(batch_size)
    metrics = Measures({"eval/mf_steps": float(steps)})
    artefacts: dict[str, str] = {}
    records = Records()
    t0 = time.perf_counter()
    timer = PartTimer()  # eval/seconds/<part>

    # the test split's representations and cross-entropies share each missing modality's inference
    test_reps, test_ces = shared_test_pass(
        model, dm.splits["test"], bs, steps, tol, query_types(model), timer=timer
    )
    reps = {"test": test_reps}
    for k in ("train", "val"):
        with timer.part("representations/multimodal"):
            reps[k] = split_representations(model, dm.splits[k], bs, steps, tol, queries=["multimodal"])
    log.info("representations computed in %.1f s", time.perf_counter() - t0)
    labelled = has_labels(dm)
    probe: dict = {}  # the fitted probe, for evaluation.observed
    if labelled:
        probe_seconds: dict[str, float] = {}
        with timer.part("probe"):
            metrics.attempt(
                "classify/*",
                lambda: classification_metrics(reps, dm, classifier or {}, records, probe, probe_seconds),
            )
        for k, v in probe_seconds.items():
            timer.add(f"probe/{k}", v)
    else:
        metrics.missing["classify/*"] = NO_LABELS
    with timer.part("cond_ce"):
        metrics.attempt("cond_ce/*", lambda: cond_ce_from_values(model, test_ces, records))

    lik = likelihood or {}
    if lik.get("enabled", False):
        lik_args = {k: v for k, v in lik.items() if k != "enabled"}
        with timer.part("likelihood"):
            metrics.attempt(
                "cond_nll/* nll*",
                lambda: likelihood_metrics(model, dm.splits["test"].modalities, records=records, **lik_args),
            )

    # the inference gap and the observed fraction (mmvi.evaluation.inference_gap, .observed)
    if (inference_gap or {}).get("enabled", False):
        from mmvi.evaluation.inference_gap import gap_family

        test_v = dm.splits["test"].modalities
        with timer.part("inference_gap"):
            metrics.attempt(
                "inference_gap/*",
                lambda: gap_family(
                    model, test_v, native_steps, mf_steps, mf_tol, bs, lik, inference_gap, records
                ),
            )
    if (observed or {}).get("enabled", False):
        from mmvi.evaluation.observed import observed_family

        db = reps["test"]["multimodal"]
        with timer.part("observed"):
            metrics.attempt(
                "observed/*",
                lambda: observed_family(model, dm, steps, tol, bs, probe, retrieval, observed, records, db),
            )

    ret = retrieval or {}
    if ret.get("enabled", False) and not labelled:
        metrics.missing["retrieval/*"] = NO_LABELS
    if ret.get("enabled", False) and labelled:
        from mmvi.evaluation.retrieval import retrieval_measures

        with timer.part("retrieval"):
            metrics.attempt(
                "retrieval/*",
                lambda: retrieval_measures(
                    reps["test"],
                    reps["test"]["multimodal"],
                    dm.splits["test"].labels,
                    k=int(ret.get("k", 50)),
                    records=records,
                ),
            )

    if ret.get("enabled", False) and labelled and int(ret.get("n_figure_queries", 0)) > 0:
        with timer.part("figures"):
            artefacts["retrieval"] = str(
                retrieval_figure_of_split(
                    model,
                    dm,
                    reps["test"]["multimodal"],
                    out_dir,
                    int(ret["n_figure_queries"]),
                    int(ret.get("figure_k", 8)),
                )
            )

    n_fig = int(n_generation)
    if n_fig > 0:
        from mmvi.evaluation.generation import generation_grid

        test = dm.splits["test"]
        with timer.part("figures"):
            path = generation_grid(
                model,
                dm,
                {m: x[:n_fig] for m, x in test.modalities.items()},
                out_dir / GENERATION_FIGURE,
                steps=steps,
                tol=tol,
            )
        if path is not None:
            artefacts["generation"] = str(path)
    finite = [m for m in records.metrics() if m in metrics and math.isfinite(float(metrics[m]))]
    with timer.part("records"):
        artefacts["records"] = str(records.write(Path(out_dir) / RECORDS_FILE, keep=finite))
    metrics.update(timer.metrics())
    metrics["eval/seconds"] = time.perf_counter() - t0
    return metrics, artefacts


evaluate.constraints = {
    "inference": Options(INFERENCE_MODES),
    "mf_steps": INT1,
    "mf_tol": Interval(0, allow_none=True),
    "batch_size": INT1,
    "n_generation": INT0,
    "checkpoint": Options(CHECKPOINTS),
    "checkpoint_monitor": LoggedMeasure(),
    "classifier": Settings(
        {
            "Cs": NumberList(POSITIVE),
            "max_extensions": INT0,
            "refit": Options(REFITS),
            "max_train": Interval(1, integer=True, allow_none=True),
        },
        allow_none=True,
    ),
    "likelihood": Settings({"enabled": Flag(), **likelihood_metrics.constraints}, allow_none=True),
    "retrieval": Settings(
        {"enabled": Flag(), "k": INT1, "n_figure_queries": INT0, "figure_k": INT1}, allow_none=True
    ),
    "inference_gap": Settings(INFERENCE_GAP_SETTINGS, allow_none=True),
    "observed": Settings(OBSERVED_SETTINGS, allow_none=True),
}


def check_protocol_data(
    dm: MultimodalDataModule, model, classifier: Mapping | None = None, retrieval: Mapping | None = None, **_
) -> None:
    """What the protocol's settings need of the data, checked before training.

    Raises:
        ConfigError: a probe training subset (``classifier.max_train``) that holds fewer than two
            classes, or a retrieval ``k`` larger than the database (the test split less the query).
    """
    labels = dm.splits["train"].labels
    if labels.shape[1] == 0:
        return  # no labels: the label-based measures are skipped
    max_train = (classifier or {}).get("max_train")
    if dm.single_label:
        classes = labels.argmax(1)
        kept = classes if max_train is None else classes[: int(max_train)]
        if int(kept.unique().numel()) < 2:
            other = (classes != classes[0]).nonzero()
            where = "the train split" if max_train is None else f"evaluation.classifier.max_train={max_train}"
            fix = (
                f"allowed: an integer >= {int(other[0]) + 1} (or null: the whole train split)"
                if len(other)
                else "use data with two classes or more"
            )
            raise ConfigError(
                f"{where} keeps {len(kept)} training example(s) of one class; the linear probe needs "
                f"two classes at least; {fix}"
            )
    ret = retrieval or {}
    n_test = len(dm.splits["test"])
    if ret.get("enabled", False) and int(ret.get("k", 50)) > n_test - 1:
        raise ConfigError(
            f"evaluation.retrieval.k={ret['k']} is larger than the retrieval database ({n_test - 1} test "
            f"items besides each query); allowed: an integer in [1, {n_test - 1}]"
        )


evaluate.check_data = check_protocol_data


def protocol_metric_names(
    dm: MultimodalDataModule,
    model,
    likelihood: Mapping | None = None,
    retrieval: Mapping | None = None,
    inference_gap: Mapping | None = None,
    observed: Mapping | None = None,
    n_generation: int = 10,
    **_,
) -> set[str]:
    """The names of the measures :func:`evaluate` reports for this data and model (a measure whose
    computation fails is recorded as missing instead)."""
    queries = query_types(model)
    names = {"eval/mf_steps", "eval/seconds", f"{SECONDS_PREFIX}cond_ce", f"{SECONDS_PREFIX}records"}
    names |= {f"{SECONDS_PREFIX}representations/{q}" for q in queries}
    names |= {f"cond_ce/{m}_given_{_rest_name(model, m)}" for m in model.names}
    labelled = dm.splits["train"].labels.shape[1] > 0
    if labelled:
        names |= {"classify/C", "classify/C_at_bound", f"{SECONDS_PREFIX}probe"}
        names |= {f"{SECONDS_PREFIX}probe/C_search", f"{SECONDS_PREFIX}probe/refit"}
        if dm.single_label:
            names |= {f"classify/err_{q}" for q in queries}
        else:
            names |= {f"classify/{kind}_{q}" for kind in ("map", "precision_at_50") for q in queries}
    lik = likelihood or {}
    if lik.get("enabled", False):
        cond = [f"cond_nll/{m}_given_rest" for m in model.names] + ["cond_nll/vi"]
        cond += ["nll"] if lik.get("joint", True) else []
        names |= {*cond, *(f"{n}_stderr" for n in cond), f"{SECONDS_PREFIX}likelihood"}
    ret = retrieval or {}
    if ret.get("enabled", False) and labelled:
        k = int(ret.get("k", 50))
        names |= {f"retrieval/{kind}_{q}" for kind in ("map", f"precision_at_{k}") for q in queries}
        names |= {f"{SECONDS_PREFIX}retrieval"}
    if int(n_generation) > 0 or (
        ret.get("enabled", False) and labelled and int(ret.get("n_figure_queries", 0)) > 0
    ):
        names |= {f"{SECONDS_PREFIX}figures"}
    if (inference_gap or {}).get("enabled", False):
        names |= gap_metric_names(model, lik.get("enabled", False))
    obs = observed or {}
    if obs.get("enabled", False):
        opts = {k: obs[k] for k in ("fractions", "patterns") if k in obs}
        names |= observed_metric_names(
            model, dm, labelled, dm.single_label, ret.get("enabled", False), **opts
        )
    return names


evaluate.metric_names = protocol_metric_names
