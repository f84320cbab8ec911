"""The trade-off frontier: joint likelihood against cross-modal prediction, across a sweep's runs.

Each completed run is a point (objectives, α and other settings, seeds): x = the joint NLL
−log P(v) (``nll``, from ``evaluation.likelihood.enabled=true``), y = the one-modality error (the mean
of its single-modality probe errors ``classify/err_<m>``) or the sum of its conditional
cross-entropies Σ_m CE(m | rest) (``cond_ce/*``). Lower is better on both; the non-dominated runs
(:func:`pareto_mask`) are ringed and joined by the frontier's staircase. Configurations with
``objective.alpha`` set (the hybrid's α sweep, ``make sweep-alpha``) are also drawn as their mean
over seeds, joined in α order: the frontier traced by α. One figure per data set,
``plots/frontier_<data>.png``; runs without the joint NLL are left out (none: no figure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmvi.report.collect import UNSET
from mmvi.report.plots import PLOT_DIR, Plot, labels, objective_colour, save, slug, varying_columns
from mmvi.report.tables import Aggregate, TextTable, fmt_number

JOINT = "nll"
ONE_ERROR = "one-modality error (%)"
CE_SUM = "Σ CE(m | rest) (nats)"
ALPHA = "objective.alpha"
BOTH = "classify/err_multimodal"


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Non-dominated rows of ``points`` (n, d), every column minimised.

    Row i is dominated when some row j is ≤ it in every column and < in one. Rows with a NaN are
    never non-dominated (and dominate nothing); equal rows are all kept. Returns a bool (n,) array.
    O(n²·d) memory, vectorised (no loop over points).
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"points must be (n, d), got shape {p.shape}")
    ok = np.isfinite(p).all(axis=1)
    le = (p[:, None, :] <= p[None, :, :]).all(-1)  # le[j, i]: row j ≤ row i everywhere
    lt = (p[:, None, :] < p[None, :, :]).any(-1)
    dominated = (le & lt & ok[:, None]).any(axis=0)
    return ok & ~dominated


def single_errors(measures: list[str]) -> list[str]:
    return [
        m
        for m in measures
        if m.startswith("classify/err_")
        and m != BOTH
        and not m.startswith(("classify/err_no_", "classify/err_one"))
    ]


def frontier_points(agg: Aggregate) -> pd.DataFrame:
    """One row per run with a joint NLL: data, objective, configuration, seed, alpha, nll and the two
    prediction measures (NaN where a run lacks them)."""
    runs = agg.runs
    if runs.empty or JOINT not in runs or not runs[JOINT].notna().any():
        return pd.DataFrame()
    singles = single_errors(agg.measures)
    ces = [m for m in agg.measures if m.startswith("cond_ce/") and not m.endswith("_stderr")]
    cols = varying_columns(agg)
    frame = pd.DataFrame(
        {
            "data": runs["data"].astype(str),
            "objective": runs["objective"].astype(str),
            "configuration": labels(runs, cols).str.replace("\n", ", "),
            "seed": runs["seed"],
            "alpha": pd.to_numeric(runs[ALPHA], errors="coerce") if ALPHA in runs else np.nan,
            JOINT: runs[JOINT],
            ONE_ERROR: runs[singles].mean(axis=1, skipna=False) if singles else np.nan,
            CE_SUM: runs[ces].sum(axis=1, min_count=len(ces)) if ces else np.nan,
        }
    )
    if ALPHA in runs:
        frame.loc[runs[ALPHA].astype(str) == UNSET, "alpha"] = np.nan
    return frame[frame[JOINT].notna()].reset_index(drop=True)


def mark_frontier(points: pd.DataFrame) -> pd.DataFrame:
    """``points`` with a bool column per prediction measure: non-dominated within its data set."""
    out = points.copy()
    for y in (ONE_ERROR, CE_SUM):
        out[f"front {y}"] = False
        for _, group in out.groupby("data"):
            out.loc[group.index, f"front {y}"] = pareto_mask(group[[JOINT, y]].to_numpy())
    return out


def frontier_plot(points: pd.DataFrame, data: str, out_dir: Path) -> Plot | None:
    """The data set's figure: one panel per prediction measure the runs have."""
    ys = [y for y in (ONE_ERROR, CE_SUM) if points[y].notna().any()]
    if not ys:
        return None
    fig = Figure(figsize=(5.2 * len(ys), 4.0))
    for i, y in enumerate(ys):
        ax = fig.add_subplot(1, len(ys), i + 1)
        for objective, group in points.groupby("objective", sort=False):
            ax.scatter(
                group[JOINT], group[y], s=22, color=objective_colour(objective), label=objective, zorder=3
            )
        front = points[points[f"front {y}"]].sort_values([JOINT, y])
        ax.scatter(
            front[JOINT],
            front[y],
            s=90,
            facecolors="none",
            edgecolors="black",
            lw=1.2,
            zorder=4,
            label="non-dominated",
        )
        ax.step(front[JOINT], front[y], where="post", color="black", lw=0.8, alpha=0.6, zorder=2)
        swept = points[points["alpha"].notna()]
        if swept["alpha"].nunique() > 1:
            means = swept.groupby("alpha")[[JOINT, y]].mean().sort_index()
            colour = objective_colour(str(swept["objective"].iloc[0]))
            ax.plot(
                means[JOINT],
                means[y],
                "-D",
                color=colour,
                ms=5,
                lw=1.4,
                zorder=5,
                label="α sweep (mean over seeds)",
            )
            for alpha, row in means.iterrows():
                ax.annotate(
                    f"α={fmt_number(alpha, 3)}",
                    (row[JOINT], row[y]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
        ax.set_xlabel("joint NLL −log P(v) (nats)")
        ax.set_ylabel(y)
        ax.set_title(f"{data}: {y} vs joint NLL", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    path = Path(PLOT_DIR) / f"frontier_{slug(data)}.png"
    save(fig, out_dir / path)
    return Plot("frontier", "trade-off frontier", data, str(path))


def frontier_plots(agg: Aggregate, out_dir: Path, draw: bool = True) -> tuple[list[Plot], TextTable]:
    """Every data set's frontier figure (none if not ``draw``) and the table of non-dominated runs."""
    points = frontier_points(agg)
    headers = ["data", "configuration", "seed", "−log P(v) (nats)", ONE_ERROR, CE_SUM, "non-dominated for"]
    if points.empty:
        return [], TextTable(headers, [], "Non-dominated runs")
    points = mark_frontier(points)
    groups = points.groupby("data") if draw else []
    plots = [p for p in (frontier_plot(g, d, out_dir) for d, g in groups) if p is not None]
    rows = []
    for _, r in points.iterrows():
        which = [name for name, y in (("error", ONE_ERROR), ("CE", CE_SUM)) if r[f"front {y}"]]
        if which:
            seed = "" if pd.isna(r["seed"]) else str(int(r["seed"]))
            rows.append(
                [
                    r["data"],
                    r["configuration"],
                    seed,
                    fmt_number(r[JOINT]),
                    fmt_number(r[ONE_ERROR]),
                    fmt_number(r[CE_SUM]),
                    ", ".join(which),
                ]
            )
    return plots, TextTable(headers, rows, "Non-dominated runs")


FRONTIER_NOTE = (
    "Every completed run with a joint NLL (evaluation.likelihood.enabled=true) is a point: x = −log P(v), "
    "y = the one-modality error (mean of the single-modality probe errors) or Σ_m CE(m | rest); lower is "
    "better on both. Ringed points are non-dominated (no other run of the data set is at least as good on "
    "both and better on one), joined by the frontier's staircase; an α sweep's configurations are joined in α "
    "order (mean over seeds)."
)
