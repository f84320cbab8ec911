"""Figures of a comparison (PNG, matplotlib's object API with the Agg canvas; no pyplot state).

Point plots per measure by configuration (mean ± std, seeds as grey dots), line plots along swept
numeric axes (one line per objective), learning curves (:func:`curve_plot`, mean ± std band per
configuration); objectives coloured alike everywhere (:func:`objective_colour`: NLL blues, MinVI
oranges, the hybrid purple). See docs/workflow.md §2.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mmvi.report.collect import KEY_CHOICES, UNSET, Run
from mmvi.report.compute import X_LABELS, against, x_of
from mmvi.report.curves import across_runs, curve_measures, split_stage
from mmvi.report.tables import Aggregate, measure_label
from mmvi.utils import atomic_path

PLOT_DIR = "plots"
CURVE_DIR = "plots/curves"
DPI = 90
# fixed colours: NLL family blues, MinVI family oranges, mixture purple (every plot of every report)
OBJECTIVE_COLOURS = {
    "nll_pcd": "#08519c",
    "nll_cd": "#4292c6",
    "minvi_mp": "#d94801",
    "minvi_cdpl": "#fd8d3c",
    "minvi_ccd": "#8c2d04",
    "hybrid": "#6a51a3",
}
FAMILY_COLOURS = {
    "nll": ("#2171b5", "#6baed6", "#084594"),
    "minvi": ("#f16913", "#fdae6b", "#a63603"),
}
OTHER_COLOURS = ("#238b45", "#737373", "#ce1256", "#8c6d31", "#17becf")
LINE_STYLES = ("-", "--", "-.", ":")


@dataclass
class Plot:
    """One figure file (path relative to the report folder)."""

    kind: str  # "bar" | "line" | "curve"
    measure: str
    axis: str
    path: str


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def varying_columns(agg: Aggregate) -> list[str]:
    """Configuration columns with ≥ 2 values in the table (objective always)."""
    table = agg.table
    return [c for c in agg.config_columns if c == "objective" or table[c].astype(str).nunique() > 1]


def labels(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Configuration label per row: the choices, then ``key=value`` of the settings that are set."""
    if df.empty:
        return pd.Series([], index=df.index, dtype=str)
    parts = pd.DataFrame(
        {
            c: df[c].astype(str)
            if c in KEY_CHOICES
            else (c.rsplit(".", 1)[-1] + "=" + df[c].astype(str)).where(df[c] != UNSET, "")
            for c in columns
        },
        index=df.index,
    )
    return parts.apply(lambda row: "\n".join(x for x in row if x), axis=1).astype(str)


def numeric_axes(agg: Aggregate) -> list[str]:
    """Swept settings whose set values are all numbers, with ≥ 2 distinct ones.

    Rows where the setting is not set (:data:`UNSET`, e.g. the other objectives of an alpha sweep)
    are drawn as horizontal reference lines.
    """
    axes = []
    for key in agg.swept:
        values = agg.table[key][agg.table[key] != UNSET]
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all() and numbers.nunique() > 1:
            axes.append(key)
    return axes


def objective_colour(objective: str) -> str:
    """The fixed colour of an objective: its own, else one of its family's, else a stable other one."""
    if objective in OBJECTIVE_COLOURS:
        return OBJECTIVE_COLOURS[objective]
    h = zlib.crc32(objective.encode())
    for family, colours in FAMILY_COLOURS.items():
        if objective.startswith(family):
            return colours[h % len(colours)]
    return OTHER_COLOURS[h % len(OTHER_COLOURS)]


def objective_colours(objectives: list[str]) -> dict[str, str]:
    return {o: objective_colour(o) for o in dict.fromkeys(objectives)}


def save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


def plottable(agg: Aggregate) -> list[str]:
    return [m for m in agg.measures if not m.endswith("_stderr") and agg.table[f"{m} n"].sum() > 0]


def bar_plot(agg: Aggregate, measure: str, out_dir: Path) -> Plot:
    table, runs = agg.table, agg.runs
    cols = varying_columns(agg)
    names = labels(table, cols)
    x = np.arange(len(table))
    position = dict(zip(names, x))
    colours = objective_colours(list(table["objective"]))
    width = max(4.0, 0.9 * len(table) + 1.5)
    fig = Figure(figsize=(width, 3.6))
    ax = fig.add_subplot()
    run_x = labels(runs, cols).map(position)
    ax.scatter(run_x, runs[measure], s=12, color="0.3", zorder=5, label="seeds")
    ax.errorbar(
        x,
        table[f"{measure} mean"],
        yerr=table[f"{measure} std"].fillna(0.0),
        fmt="none",
        ecolor="black",
        capsize=4,
        zorder=2,
    )
    ax.scatter(x, table[f"{measure} mean"], s=60, c=[colours[o] for o in table["objective"]], zorder=4)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_xlim(-0.6, len(table) - 0.4)
    ax.set_ylabel(measure_label(measure))
    ax.set_title(f"{measure}: mean ± std over seeds", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    path = Path(PLOT_DIR) / f"bar_{slug(measure)}.png"
    save(fig, out_dir / path)
    return Plot("bar", measure, "objective", str(path))


def line_plot(agg: Aggregate, axis: str, measure: str, out_dir: Path) -> Plot:
    set_rows = agg.table[axis] != UNSET
    table = agg.table[set_rows].assign(_x=lambda t: pd.to_numeric(t[axis])).sort_values("_x", kind="stable")
    table = table[table[f"{measure} n"] > 0]
    refs = agg.table[~set_rows & (agg.table[f"{measure} n"] > 0)]
    line_cols = [c for c in varying_columns(agg) if c != axis]
    colours = objective_colours(list(agg.table["objective"]))
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    for name, (_, ref) in zip(labels(refs, line_cols).str.replace("\n", ", "), refs.iterrows()):
        ax.axhline(
            ref[f"{measure} mean"],
            ls="--",
            lw=1,
            color=colours[ref["objective"]],
            label=f"{name} ({axis} unset)",
        )
    markers = "osD^v<>p*h"
    names = labels(table, line_cols).str.replace("\n", ", ")
    for i, (name, line) in enumerate(table.groupby(names, sort=False)):
        ax.errorbar(
            line["_x"],
            line[f"{measure} mean"],
            yerr=line[f"{measure} std"].fillna(0.0),
            marker=markers[i % len(markers)],
            color=colours[line["objective"].iloc[0]],
            alpha=0.9,
            capsize=3,
            label=name,
        )
    ax.set_xlabel(axis)
    ax.set_ylabel(measure_label(measure))
    ax.set_title(f"{measure} vs {axis}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = Path(PLOT_DIR) / f"line_{slug(axis)}__{slug(measure)}.png"
    save(fig, out_dir / path)
    return Plot("line", measure, axis, str(path))


def planned_last_epoch(run: Run) -> int | None:
    """The last epoch a training run was set to reach (``trainer.max_epochs`` − 1); ``None`` if unknown."""
    if run.curves is None or run.curves.stages:
        return None
    epochs = pd.to_numeric(pd.Series([run.settings.get("trainer.max_epochs")]), errors="coerce").iloc[0]
    steps = pd.to_numeric(pd.Series([run.settings.get("trainer.max_steps", -1)]), errors="coerce").iloc[0]
    if not np.isfinite(epochs) or epochs <= 0 or (np.isfinite(steps) and steps > 0):
        return None
    return int(epochs) - 1


def config_key(run: Run, agg: Aggregate) -> tuple[str, ...]:
    """A run's configuration as the values of ``agg.config_columns`` (choices, then swept settings)."""
    return tuple(
        run.choices.get(c, "") if c in KEY_CHOICES else run.settings.get(c, UNSET) for c in agg.config_columns
    )


def configuration_runs(agg: Aggregate, runs: list[Run]) -> list[tuple[pd.Series, list[Run]]]:
    """Each row of ``agg.table`` with its completed runs."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(config_key(run, agg), []).append(run)
    return [
        (row, groups.get(tuple(str(row[c]) for c in agg.config_columns), []))
        for _, row in agg.table.iterrows()
    ]


def stopped_early(runs: list[Run]) -> list[Run]:
    """Runs of one configuration whose log ends before the others' or before ``trainer.max_epochs``."""
    ends = {id(r): r.curves.last_epoch for r in runs if r.curves is not None}
    ends = {k: v for k, v in ends.items() if v is not None}
    planned = [p for p in map(planned_last_epoch, runs) if p is not None]
    expected = max([*ends.values(), *planned], default=None)
    return [r for r in runs if id(r) in ends and ends[id(r)] < expected]


def curve_plot(
    measure: str,
    groups: list[tuple[str, str, str, list[Run]]],
    running: list[tuple[str, str, Run]],
    out_dir: Path,
    x: str = "epoch",
) -> Plot | None:
    """Learning curve of one per-epoch measure; ``None`` when no run logged it.

    ``x``: the x axis (:data:`mmvi.report.compute.X_AXES`); against a compute axis a configuration's
    mean is drawn at the mean over its runs of their x at each epoch, and runs that did not log the
    axis are left out.

    ``groups``: (label, objective, line style, completed runs) per configuration: the mean over its runs
    with a ± std band (runs aligned by epoch; a run ending before the others or before its
    ``trainer.max_epochs`` is marked ×). ``running``: (label, objective, run) drawn one by one,
    dotted, ending in ▸.
    """
    fig = Figure(figsize=(4.6, 3.1))
    ax = fig.add_subplot()
    drawn = early = False
    for label, objective, style, runs in groups:
        frames = [r.curves.frame for r in runs if r.curves and measure in r.curves.frame]
        frames = [f for f in frames if f[measure].notna().any() and x_of(f, x) is not None]
        if not frames:
            continue
        series = [f[measure].dropna() for f in frames]
        colour = objective_colour(objective)
        stats = across_runs(series)
        xs = across_runs([x_of(f, x) for f in frames])["mean"].reindex(stats.index)
        stats = stats[xs.notna().to_numpy()]
        x_pos = xs.dropna().to_numpy() if x != "epoch" else stats.index.to_numpy()
        marker = "o" if len(x_pos) <= 12 else None
        n_runs = len(series)
        ax.plot(
            x_pos,
            stats["mean"],
            color=colour,
            ls=style,
            marker=marker,
            ms=3.5,
            lw=1.6,
            label=f"{label} (n={n_runs})",
        )
        band = stats["std"].notna().to_numpy()
        if band.any():
            ax.fill_between(
                x_pos,
                stats["mean"] - stats["std"].fillna(0),
                stats["mean"] + stats["std"].fillna(0),
                where=band,
                color=colour,
                alpha=0.18,
                lw=0,
            )
        for run in stopped_early(runs):
            x_run = curve_of(run, measure, x)
            if x_run is not None and len(x_run):
                ax.plot(
                    x_run.index[-1:],
                    x_run.iloc[-1:],
                    marker="X",
                    ms=8,
                    color=colour,
                    mec="black",
                    mew=0.8,
                    ls="none",
                )
                early = True
        drawn = True
    for label, objective, run in running:
        x_run = curve_of(run, measure, x)
        if x_run is None or not len(x_run):
            continue
        colour = objective_colour(objective)
        seed = "" if run.seed is None else f" s{run.seed}"
        ax.plot(x_run.index, x_run, color=colour, ls=":", lw=1.2, label=f"{label}{seed} (running)")
        ax.plot([x_run.index[-1]], [x_run.iloc[-1]], marker=">", ms=6, color=colour, ls="none")
        drawn = True
    if not drawn:
        return None
    handles, names = ax.get_legend_handles_labels()
    if early:
        handles.append(Line2D([], [], marker="X", color="0.4", mec="black", ls="none", ms=7))
        names.append("run stopped early")
    stage, rest = split_stage(measure)
    if x == "epoch":
        ax.set_xlabel("pipeline epoch" if stage else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(measure_label(rest), fontsize=8)
    ax.set_title(f"{stage}: {rest}" if stage else measure, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(handles, names, fontsize=7)
    path = Path(CURVE_DIR) / f"curve_{slug(measure)}.png"
    save(fig, out_dir / path)
    return Plot("curve", measure, x, str(path))


def curve_of(run: Run, measure: str, x: str) -> pd.Series | None:
    """One run's curve of ``measure`` against ``x`` (the epoch index for ``epoch``)."""
    if not run.curves or measure not in run.curves.frame:
        return None
    if x == "epoch":
        return run.curves.frame[measure].dropna()
    return against(run.curves.frame, measure, x)


def make_plots(agg: Aggregate, out_dir: Path) -> list[Plot]:
    """Every bar plot, then every line plot; files under ``<out_dir>/plots``."""
    if agg.table.empty:
        return []
    measures = [m for m in plottable(agg) if not m.startswith("observed/")]  # curves: report.analyses
    plots = [bar_plot(agg, m, out_dir) for m in measures]
    plots += [line_plot(agg, axis, m, out_dir) for axis in numeric_axes(agg) for m in measures]
    return plots


def configuration_groups(agg: Aggregate, runs: list[Run]) -> list[tuple[str, pd.Series, list[Run]]]:
    """(one-line label, table row, completed runs) of every configuration of ``agg``."""
    rows = configuration_runs(agg, runs)
    names = labels(agg.table, varying_columns(agg)).str.replace("\n", ", ") if rows else []
    return [(name, row, members) for name, (row, members) in zip(names, rows)]


def make_curve_plots(
    agg: Aggregate, runs: list[Run], running: list[Run], out_dir: Path, x: str = "epoch"
) -> list[Plot]:
    """One learning-curve panel per per-epoch measure (files under ``<out_dir>/plots/curves``).

    ``runs``: the completed runs of ``agg`` (averaged per configuration); ``running``: runs
    still training (drawn one by one, never averaged); ``x``: the x axis of every panel.
    """
    cols = varying_columns(agg)
    rows = configuration_runs(agg, runs)
    names = labels(agg.table, cols).str.replace("\n", ", ") if rows else pd.Series([], dtype=str)
    # each configuration keeps its colour (objective) and line style (its rank within the objective) in every panel
    ranks: dict[str, int] = {}
    groups = []
    for name, (row, members) in zip(names, rows):
        objective = str(row["objective"])
        ranks[objective] = ranks.get(objective, -1) + 1
        diverged = sum(r.divergence is not None for r in members)
        name = f"{name} [incl. {diverged} diverged]" if diverged else name
        groups.append((name, objective, LINE_STYLES[ranks[objective] % len(LINE_STYLES)], members))
    live = []
    for run in running:
        values = {c: run.choices.get(c, "") if c in KEY_CHOICES else run.settings.get(c, UNSET) for c in cols}
        label = (
            labels(pd.DataFrame([values], columns=cols), cols).iloc[0] if cols else run.choices["objective"]
        )
        live.append((label.replace("\n", ", "), run.choices.get("objective", ""), run))
    measures = curve_measures([r.curves for r in [*runs, *running] if r.curves is not None])
    plots = [p for p in (curve_plot(m, groups, live, out_dir, x) for m in measures) if p is not None]
    kept = {out_dir / p.path for p in plots}
    for old in (out_dir / CURVE_DIR).glob("curve_*.png"):  # panels of an earlier writing of the report
        if old not in kept:
            old.unlink()
    return plots
