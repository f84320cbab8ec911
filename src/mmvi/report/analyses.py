"""Report sections of the analyses: "Likelihood vs inference" and "Robustness to the observed fraction".

Reads the measures of :mod:`mmvi.evaluation.inference_gap` (``cond_nll``, ``cond_ce_native``,
``cond_ce_converged``, ``gibbs_ce``, ``gap``, ``gap_converged``, ``gibbs_gap`` per direction; the
per-epoch ``val/`` curves are drawn by the curve panels) and of :mod:`mmvi.evaluation.observed`
(``observed/<measure>/<m>/<pattern>/f<f>``: one panel per measure, modality and pattern, one line
per configuration against f).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from mmvi.report.plots import Plot, labels, objective_colour, save, slug, varying_columns
from mmvi.report.tables import Aggregate, TextTable, fmt_number

GAP_COLUMNS = ("cond_ce_native", "cond_ce_converged", "gibbs_ce", "gap", "gap_converged", "gibbs_gap")
OBSERVED = re.compile(r"observed/(?P<measure>[^/]+)/(?P<m>[^/]+)/(?P<pattern>[^/]+)/f(?P<f>[0-9.e+-]+)")
GAP_CURVES = re.compile(r"val/(cond_ce_native|cond_ce_converged|gibbs_ce|gibbs_gap)/.*")


def _cell(agg: Aggregate, row: pd.Series, measure: str, stderr: str | None = None) -> str:
    col = f"{measure} mean"
    if col not in agg.table.columns or pd.isna(row[col]):
        return "—"
    text = f"{float(row[col]):.2f}"
    if stderr and f"{stderr} mean" in agg.table.columns and pd.notna(row[f"{stderr} mean"]):
        text += f" ± {fmt_number(float(row[f'{stderr} mean']), 2)}"
    return text


def inference_table(agg: Aggregate) -> TextTable:
    """One row per configuration and direction: conditional NLL (± its AIS stderr), the mean-field CEs,
    the Gibbs estimate and the gaps (nats per example; means over seeds)."""
    headers = ["configuration", "direction", "cond_nll", *GAP_COLUMNS]
    table = TextTable(headers, [], "Likelihood vs inference (nats per example)")
    if agg.table.empty:
        return table
    directions = sorted({m.split("/", 1)[1] for m in agg.measures if m.startswith("cond_ce_native/")})
    names = labels(agg.table, varying_columns(agg))
    for i, row in agg.table.iterrows():
        for d in directions:
            target = d.split("_given_")[0]
            nll = f"cond_nll/{target}_given_rest"
            cells = [_cell(agg, row, f"{c}/{d}") for c in GAP_COLUMNS]
            if all(c == "—" for c in cells):
                continue
            label = names[i].replace("\n", ", ")
            table.rows.append([label, d, _cell(agg, row, nll, f"{nll}_stderr"), *cells])
    return table


def observed_plots(agg: Aggregate, out_dir: Path) -> list[Plot]:
    """One panel per (measure, modality, pattern): each configuration's mean over seeds against f."""
    found = [(OBSERVED.fullmatch(m), m) for m in agg.measures]
    found = [(x, m) for x, m in found if x]
    if agg.table.empty or not found:
        return []
    names = labels(agg.table, varying_columns(agg))
    panels: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
    for x, m in found:
        panels.setdefault((x["measure"], x["m"], x["pattern"]), []).append((float(x["f"]), m))
    plots = []
    folder = Path(out_dir) / "plots" / "observed"
    folder.mkdir(parents=True, exist_ok=True)
    units = {
        "err": "error (%)",
        "map": "probe mAP",
        "retrieval_map": "retrieval mAP",
        "ce": "nats per hidden unit",
    }
    for (measure, m, pattern), points in sorted(panels.items()):
        points.sort()
        fig = Figure(figsize=(4.6, 3.2))
        ax = fig.add_subplot()
        for i, row in agg.table.iterrows():
            fs = [f for f, name in points if pd.notna(row.get(f"{name} mean"))]
            ys = [float(row[f"{name} mean"]) for f, name in points if pd.notna(row.get(f"{name} mean"))]
            if fs:
                ax.plot(
                    fs,
                    ys,
                    marker="o",
                    label=names[i].replace("\n", ", "),
                    color=objective_colour(str(row.get("objective", ""))),
                )
        ax.set_xlabel(f"observed fraction of {m} ({pattern})")
        ax.set_ylabel(units.get(measure, measure))
        ax.set_title(f"observed/{measure}/{m}/{pattern}", fontsize=9)
        ax.legend(fontsize=7)
        name = f"observed/{measure}/{m}/{pattern}"
        path = folder / f"{slug(name)}.png"
        save(fig, path)
        plots.append(Plot("observed", name, "observed fraction", str(path.relative_to(out_dir))))
    return plots


def gap_curves(plots: list[Plot]) -> list[Plot]:
    """The per-epoch panels of the inference-gap ``val/`` measures."""
    return [p for p in plots if p.kind == "curve" and GAP_CURVES.fullmatch(p.measure)]


def analysis_page_sections(agg: Aggregate, plots: list[Plot], out_dir: Path, draw: bool = True) -> list:
    """The page sections (heading, note, table, plots) of the analyses present in the runs; the
    observed-fraction panels are drawn only if ``draw``."""
    sections = []
    table = inference_table(agg)
    curves = gap_curves(plots)
    if table.rows or curves:
        sections.append(
            (
                "Likelihood vs inference",
                "Per direction m | rest: cond_nll = −log P(v_m | v_rest) (exact or AIS ± stderr) on the first "
                "likelihood.n_examples binarised test items; cond_ce_native/converged: mean-field cross-entropy "
                "on the whole test split; gibbs_ce: −log of the mean of P(v_m | h) over Gibbs draws of "
                "h ~ P(h | v_rest) (biased up for few draws); gap = CE − cond_nll and gibbs_gap = gibbs_ce − "
                "cond_nll per item of the likelihood items. Curves: the cheap per-epoch schedule on a fixed "
                "validation subset (val/gibbs_gap = native CE − gibbs_ce).",
                table,
                curves,
            )
        )
    observed = observed_plots(agg, out_dir) if draw else []
    if observed:
        sections.append(
            (
                "Robustness to the observed fraction",
                "A fraction f of modality m revealed (random units per item, or the top rows of an image "
                "piece), the other modalities given, the rest of m inferred by mean-field: probe error or mAP, "
                "retrieval mAP, and the cross-entropy of m's hidden units (nats per hidden unit). f = 0 is "
                "the query from the other modalities, f = 1 the multimodal query.",
                None,
                observed,
            )
        )
    return sections
