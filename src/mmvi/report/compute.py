"""Curves against compute, and the objectives compared at equal compute.

Training runs log cumulative ``train/seconds``, ``train/examples`` and ``train/flops`` at every epoch
end (:mod:`mmvi.lit.compute`); a curve can be drawn against any of them instead of the epoch
(``python -m mmvi.compare --x seconds|flops|examples|epoch``). The *equal-compute* table takes, per data
set, the budget of the cheapest configuration (the smallest total any run of it spent; so every run
of every configuration has spent at least that much) and gives the value each configuration's
validation measures had at that budget, linearly interpolated on each run's curve between the
epochs around it, then mean ± std over its runs. A run whose first epoch already cost more than
the budget has no value there ("not reached"); nothing is extrapolated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmvi.report.collect import Run
from mmvi.report.tables import Aggregate, TextTable, fmt_mean_std, fmt_number, measure_label

#: the x axes of the curves: the per-epoch measure each reads (None: the epoch itself)
X_AXES = {"epoch": None, "seconds": "train/seconds", "flops": "train/flops", "examples": "train/examples"}
X_LABELS = {
    "epoch": "epoch",
    "seconds": "training seconds (cumulative)",
    "flops": "matmul FLOPs (cumulative)",
    "examples": "training examples seen (cumulative)",
}
#: the axis of the equal-compute table when the curves are drawn against epochs
DEFAULT_BUDGET_AXIS = "flops"
BUDGET_MEASURES = r"val/"


def x_of(frame: pd.DataFrame, x: str) -> pd.Series | None:
    """Per epoch of a run's curves frame, the x value (epochs completed for ``epoch``); None when
    the run did not log that axis."""
    column = X_AXES[x]
    if column is None:
        return pd.Series(frame.index.to_numpy() + 1.0, index=frame.index)
    if column not in frame or not frame[column].notna().any():
        return None
    return frame[column]


def against(frame: pd.DataFrame, measure: str, x: str) -> pd.Series | None:
    """A run's measure indexed by the x axis (epochs with both values; sorted), None without it."""
    xs = x_of(frame, x)
    if xs is None or measure not in frame:
        return None
    both = pd.DataFrame({"x": xs, "y": frame[measure]}).dropna().sort_values("x")
    return pd.Series(both["y"].to_numpy(), index=both["x"].to_numpy())


def budget_axis(x: str) -> str:
    """The equal-compute table's axis: the curves' own, or FLOPs when they are drawn against epochs."""
    return DEFAULT_BUDGET_AXIS if x == "epoch" else x


def value_at(curve: pd.Series, budget: float) -> float:
    """The curve's value at x = ``budget`` by linear interpolation; NaN outside its x range."""
    xs, ys = curve.index.to_numpy(float), curve.to_numpy(float)
    if not len(xs) or budget < xs[0] or budget > xs[-1]:
        return float("nan")
    return float(np.interp(budget, xs, ys))


def equal_compute_frame(
    agg: Aggregate, groups: list[tuple[str, pd.Series, list[Run]]], axis: str
) -> pd.DataFrame:
    """One row per configuration: data, configuration, runs, mean total, budget, and per validation
    measure the mean/std/n over runs of its value at the budget.

    ``groups``: (label, table row, completed runs) per configuration. Empty when no run logged the axis.
    """
    rows = []
    for label, row, runs in groups:
        frames = [r.curves.frame for r in runs if r.curves is not None and not r.curves.stages]
        totals = [float(s.dropna().iloc[-1]) for s in (x_of(f, axis) for f in frames) if s is not None]
        if not totals:
            continue
        rows.append(
            {"data": str(row.get("data", "")), "configuration": label, "frames": frames, "totals": totals}
        )
    if not rows:
        return pd.DataFrame()
    measures = sorted(
        {m for r in rows for f in r["frames"] for m in f.columns if m.startswith(BUDGET_MEASURES)},
        key=lambda m: (m != "val/cond_ce/sum", m),
    )
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        members = [r for r in rows if r["data"] == data]
        budget = min(min(r["totals"]) for r in members)
        cheapest = min(members, key=lambda r: min(r["totals"]))["configuration"]
        for r in members:
            record = {
                "data": data,
                "configuration": r["configuration"],
                "cheapest": r["configuration"] == cheapest,
                "n": len(r["totals"]),
                "total": float(np.mean(r["totals"])),
                "budget": budget,
            }
            for m in measures:
                values = [
                    value_at(c, budget) for c in (against(f, m, axis) for f in r["frames"]) if c is not None
                ]
                values = np.array([v for v in values if np.isfinite(v)])
                record[f"{m} mean"] = values.mean() if len(values) else np.nan
                record[f"{m} std"] = values.std(ddof=1) if len(values) > 1 else np.nan
                record[f"{m} n"] = len(values)
            out.append(record)
    return pd.DataFrame(out)


def equal_compute_table(frame: pd.DataFrame, axis: str) -> TextTable:
    """The readable equal-compute table (``not reached``: no run of it came down to the budget)."""
    if frame.empty:
        return TextTable([], [], "Equal compute")
    measures = [c.removesuffix(" mean") for c in frame.columns if c.endswith(" mean")]
    unit = X_LABELS[axis].removesuffix(" (cumulative)")
    headers = ["data", "configuration", "n", f"total {unit}", "budget (fraction of its run)"]
    headers += [f"{measure_label(m)} at the budget" for m in measures]
    rows = []
    for _, r in frame.iterrows():
        name = r["configuration"] + (" (cheapest)" if r["cheapest"] else "")
        share = f"{fmt_number(r['budget'])} ({100 * r['budget'] / r['total']:.0f} %)"
        cells = [
            fmt_mean_std(r[f"{m} mean"], r[f"{m} std"], r[f"{m} n"], int(r["n"]))
            if r[f"{m} n"]
            else "not reached"
            for m in measures
        ]
        rows.append([r["data"], name, str(int(r["n"])), fmt_number(r["total"]), share, *cells])
    return TextTable(headers, rows, f"Equal compute ({unit})")


def equal_compute_note(axis: str) -> str:
    return (
        f"Each configuration's validation measures at the {X_LABELS[axis].removesuffix(' (cumulative)')} "
        "budget of the cheapest configuration of its data set (the smallest total any of its runs spent), "
        "interpolated linearly on each run's curve, mean ± std over runs; 'not reached': its first epoch "
        "already cost more. Seconds are the training steps' wall time (not validation or evaluation); "
        "FLOPs are the matmul FLOPs of the training steps (mmvi.objectives.cost)."
    )
