"""Figures of a comparison (PNG, matplotlib's object API with the Agg canvas; no pyplot state).

* per measure, a point plot by configuration (colour = objective): mean with std error bars and
  each seed's value as a small grey dot;
* per swept numeric axis (e.g. ``objective.alpha``, ``objective.mask_rate``) and measure, a line
  plot of the mean (± std) against the axis, one line per objective (and other swept values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmvi.report.collect import DEFAULT, KEY_CHOICES
from mmvi.report.tables import Aggregate, measure_label
from mmvi.utils import atomic_path

PLOT_DIR = "plots"
DPI = 90


@dataclass
class Plot:
    """One figure file (path relative to the report folder)."""

    kind: str  # "bar" | "line"
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
    """Configuration label per row: the choices, then ``key=value`` of the overrides that are set."""
    if df.empty:
        return pd.Series([], index=df.index, dtype=str)
    parts = pd.DataFrame(
        {
            c: df[c].astype(str)
            if c in KEY_CHOICES
            else (c.rsplit(".", 1)[-1] + "=" + df[c].astype(str)).where(df[c] != DEFAULT, "")
            for c in columns
        },
        index=df.index,
    )
    return parts.apply(lambda row: "\n".join(x for x in row if x), axis=1).astype(str)


def numeric_axes(agg: Aggregate) -> list[str]:
    """Swept overrides whose set values are all numbers, with ≥ 2 distinct ones.

    Rows where the override is not set (``default``, e.g. the other objectives of an alpha sweep)
    are drawn as horizontal reference lines.
    """
    axes = []
    for key in agg.swept:
        values = agg.table[key][agg.table[key] != DEFAULT]
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all() and numbers.nunique() > 1:
            axes.append(key)
    return axes


def objective_colours(objectives: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {o: cmap(i % 10) for i, o in enumerate(dict.fromkeys(objectives))}


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
    set_rows = agg.table[axis] != DEFAULT
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


def make_plots(agg: Aggregate, out_dir: Path) -> list[Plot]:
    """Every bar plot, then every line plot; files under ``<out_dir>/plots``."""
    if agg.table.empty:
        return []
    measures = plottable(agg)
    plots = [bar_plot(agg, m, out_dir) for m in measures]
    plots += [line_plot(agg, axis, m, out_dir) for axis in numeric_axes(agg) for m in measures]
    return plots
