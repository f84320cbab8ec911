"""Tables of a comparison: runs, mean ± std over seeds per configuration, readable labels, Markdown.

A *configuration* is a run's choices (data, model, objective, experiment) plus its recorded
result-defining settings (:mod:`.collect`); the columns show the choices and the settings that
differ between runs of the same choices (the swept axes). A configuration's runs are the repeats
(seeds, data folds) averaged in the table.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mmvi.report.collect import KEY_CHOICES, UNSET, Collection, Run, Skipped, swept_keys

OBJECTIVE_ORDER = ("nll_cd", "nll_pcd", "nll_dbm", "minvi_ccd", "minvi_cdpl", "minvi_mp", "hybrid")
MEASURE_ORDER = (
    "classify/err_",
    "classify/map_",
    "classify/precision_",
    "cond_ce/",
    "cond_nll/",
    "nll",
    "retrieval/map_",
    "retrieval/precision_",
    "theory/",
    "classify/C",
    "eval/",
)
# families of measures: one Markdown table each (title, name prefixes)
FAMILIES = (
    ("Classification (linear probe)", ("classify/",)),
    ("Conditional prediction", ("cond_ce/", "cond_nll/")),
    ("Likelihood", ("nll",)),
    ("Retrieval", ("retrieval/",)),
    ("Theory", ("theory/",)),
)
RUN_COLUMNS = ("fold", "source", "run_dir", "job_num", "duration_s", "diverged")


@dataclass
class TextTable:
    """Header + rows of strings, rendered as Markdown here and as HTML in :mod:`.html`."""

    headers: list[str]
    rows: list[list[str]]
    title: str = ""


@dataclass
class Aggregate:
    """Runs and their per-configuration summary."""

    runs: pd.DataFrame  # one row per completed run
    table: pd.DataFrame  # one row per configuration: config columns, n, seeds, <m> mean/std/n
    config_columns: list[str]
    swept: list[str]
    measures: list[str]


def measure_sort_key(name: str) -> tuple[int, int, str]:
    """Families in :data:`MEASURE_ORDER`; within one, the ``multimodal`` query first, then the
    single-modality queries, then the leave-one-out queries (``no_<m>``)."""
    query = name.rsplit("/", 1)[-1]
    rank = 0 if name.endswith("_multimodal") else 2 if "_no_" in f"_{query}" else 1
    for i, prefix in enumerate(MEASURE_ORDER):
        if name.startswith(prefix):
            return i, rank, name
    return len(MEASURE_ORDER), rank, name


def objective_rank(name: str) -> int:
    return OBJECTIVE_ORDER.index(name) if name in OBJECTIVE_ORDER else len(OBJECTIVE_ORDER)


def measure_label(name: str) -> str:
    """Readable column header of a metric name (docs/design.md §4)."""
    if name.endswith("_stderr"):
        return measure_label(name.removesuffix("_stderr")) + " s.e."
    patterns = (
        (r"classify/err_multimodal", "error, all modalities (%)"),
        (r"classify/err_no_(.+)", r"error, all but \1 (%)"),
        (r"classify/err_one_half", "error, one modality (mean of the single-modality errors) (%)"),
        (r"classify/err_(.+)", r"error, \1 only (%)"),
        (r"classify/map_multimodal", "probe mAP, all modalities"),
        (r"classify/map_no_(.+)", r"probe mAP, all but \1"),
        (r"classify/map_(.+)", r"probe mAP, \1 only"),
        (r"classify/precision_at_(\d+)_(.+)", r"probe P@\1, \2"),
        (r"classify/C_at_bound", "probe C at a grid bound"),
        (r"classify/C", "probe C"),
        (r"cond_ce/(.+)_given_(.+)", r"CE(\1 | \2) (nats)"),
        (r"cond_nll/vi", "VI: Σ −log P(m | rest) (nats)"),
        (r"cond_nll/(.+)_given_rest", r"−log P(\1 | rest) (nats)"),
        (r"nll", "−log P(v) (nats)"),
        (r"retrieval/map_(.+)", r"retrieval mAP, \1"),
        (r"retrieval/precision_at_(\d+)_(.+)", r"retrieval P@\1, \2"),
        (r"eval/seconds", "evaluation time (s)"),
        (r"eval/seconds/(.+)", r"evaluation time, \1 (s)"),
        (r"val/cond_ce/sum", "validation Σ CE(m | rest) (nats)"),
        (r"val/cond_ce/(.+)_given_rest", r"validation CE(\1 | rest) (nats)"),
        (r"train/loss", "training loss"),
        (r"train/lr", "learning rate"),
        (r"train/nonfinite_steps", "non-finite steps (skipped)"),
    )
    for pattern, label in patterns:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, label, name)
    return name


def shown_path(path: str, base: Path | None) -> str:
    """``path`` relative to ``base`` (the report folder) when it is a local path; else as is."""
    if base is None or not path or not (Path(path).is_absolute() or Path(path).exists()):
        return path
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def runs_frame(collection: Collection, base: Path | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """One row per completed run; also the configuration columns and the measure names.

    Paths (``source``, ``run_dir``) are shown relative to ``base`` when given.
    """
    swept = swept_keys(collection.runs)
    records = [
        {
            **{c: run.choices.get(c, "") for c in KEY_CHOICES},
            **{k: run.settings.get(k, UNSET) for k in swept},
            "seed": run.seed,
            **run.metrics,
            "fold": run.fold,
            "source": shown_path(run.source, base),
            "run_dir": shown_path(run.run_dir, base),
            "job_num": run.job_num,
            "duration_s": run.duration_s,
            "diverged": run.divergence is not None,
        }
        for run in collection.runs
    ]
    measures = sorted({m for run in collection.runs for m in run.metrics}, key=measure_sort_key)
    config_columns = [*KEY_CHOICES, *swept]
    columns = [*config_columns, "seed", *measures, *RUN_COLUMNS]
    df = pd.DataFrame.from_records(records, columns=columns)
    return sort_configurations(df, config_columns), config_columns, swept


def sort_configurations(df: pd.DataFrame, config_columns: list[str]) -> pd.DataFrame:
    """Rows ordered by data, model, objective (paper order), experiment, swept values (numeric first)."""
    if df.empty:
        return df
    keys = df[config_columns].astype(str).copy()
    keys["objective"] = df["objective"].map(objective_rank).astype(str).str.zfill(3) + df["objective"]
    by = list(keys.columns)
    numeric = {c: pd.to_numeric(df[c], errors="coerce") for c in config_columns[len(KEY_CHOICES) :]}
    for c, values in numeric.items():
        if values.notna().all():
            keys[c] = values
    extra = ["seed"] if "seed" in df else []
    order = pd.concat([keys, df[extra]], axis=1).sort_values(by + extra, kind="stable").index
    return df.loc[order].reset_index(drop=True)


def aggregate(collection: Collection, base: Path | None = None) -> Aggregate:
    """Mean, std (ddof = 1; blank when n = 1) and n over seeds of every measure, per configuration.

    ``base``: show the runs' paths relative to this folder (the report's).
    """
    runs, config_columns, swept = runs_frame(collection, base)
    measures = [c for c in runs.columns if c not in (*config_columns, "seed", *RUN_COLUMNS)]
    if runs.empty:
        return Aggregate(
            runs, pd.DataFrame(columns=[*config_columns, "n", "seeds"]), config_columns, swept, []
        )
    grouped = runs.groupby(config_columns, sort=False, dropna=False)
    stats = grouped[measures].agg(["mean", "std", "count"])
    stats.columns = [f"{m} {s.replace('count', 'n')}" for m, s in stats.columns]
    head = grouped.agg(
        n=("seed", "size"),
        seeds=("seed", lambda s: " ".join(str(int(x)) for x in sorted(s.dropna()))),
        diverged=("diverged", "sum"),
    )
    table = pd.concat([head, stats], axis=1).reset_index()
    return Aggregate(runs, table, config_columns, swept, measures)


def fmt_number(x: float, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return ""
    return f"{x:.{digits}g}"


def fmt_mean_std(mean: float, std: float, n: int | float, n_group: int) -> str:
    """``mean ± std`` (std blank for a single run); ``–`` when the measure is missing."""
    if not n or not math.isfinite(mean):
        return "–"
    text = fmt_number(mean) if not math.isfinite(std) else f"{fmt_number(mean)} ± {fmt_number(std, 2)}"
    return text if int(n) == n_group else f"{text} (n={int(n)})"


def shown_config_columns(agg: Aggregate) -> list[str]:
    """Configuration columns worth a header: objective always, the others when not all blank."""
    table = agg.table
    return [c for c in agg.config_columns if c == "objective" or (table[c].astype(str).str.len() > 0).any()]


def n_text(row: pd.Series) -> str:
    """The n of a configuration's row, with how many of its runs diverged (``--include-diverged``)."""
    diverged = int(row.get("diverged", 0) or 0)
    return f"{int(row['n'])} ({diverged} diverged)" if diverged else str(int(row["n"]))


def diverged_table(runs: list[Run], included: bool, base: Path | None = None) -> TextTable:
    """Runs whose ``results.json`` records a divergence: where, when, why, and whether they count."""
    headers = [
        "run",
        "objective",
        "seed",
        "status",
        "epoch",
        "measure",
        "value",
        "best",
        "rule",
        "action",
        "counted",
    ]
    rows = []
    for run in runs:
        d = run.divergence or {}
        counted = "no (failed)" if run.status != "completed" else "yes, marked" if included else "no"
        rows.append(
            [
                shown_path(run.source, base),
                run.choices.get("objective", ""),
                "" if run.seed is None else str(run.seed),
            ]
            + [run.status, str(d.get("epoch", ""))]
            + [str(d.get("measure", "")), _num(d.get("value")), _num(d.get("best"))]
            + [str(d.get("rule", "")), str(d.get("action", "")), counted]
        )
    return TextTable(headers, rows, "Diverged runs")


def _num(x) -> str:
    return fmt_number(float(x)) if isinstance(x, int | float) and not isinstance(x, bool) else str(x or "")


def family_of(measure: str) -> str:
    for title, prefixes in FAMILIES:
        if measure.startswith(prefixes):
            return title
    return "Other"


def measure_tables(agg: Aggregate, measures: list[str] | None = None) -> list[TextTable]:
    """One readable table per family of measures: configuration columns, n, mean ± std."""
    measures = agg.measures if measures is None else measures
    config = shown_config_columns(agg)
    families: dict[str, list[str]] = {}
    for m in measures:
        families.setdefault(family_of(m), []).append(m)
    tables = []
    for title, names in families.items():
        rows = [
            [str(row[c]) for c in config]
            + [n_text(row)]
            + [fmt_mean_std(row[f"{m} mean"], row[f"{m} std"], row[f"{m} n"], int(row["n"])) for m in names]
            for _, row in agg.table.iterrows()
        ]
        tables.append(TextTable([*config, "n", *map(measure_label, names)], rows, title))
    return tables


def missing_table(runs: list, base: Path | None = None) -> TextTable:
    """The measures completed runs could not compute, with each reason (``missing_metrics``)."""
    rows = [
        [shown_path(run.source, base), pattern, reason]
        for run in runs
        for pattern, reason in sorted(run.missing.items())
    ]
    return TextTable(["run", "measures", "reason"], rows, "Missing measures")


def mark_missing(
    tables: list[TextTable], agg: Aggregate, runs: list, base: Path | None = None
) -> list[TextTable]:
    """Cells of measures a configuration's runs recorded as missing read ``missing`` (not ``–``);
    ``base`` is the folder the runs table's ``source`` paths are relative to."""
    from mmvi.utils import is_missing

    by_source = {shown_path(run.source, base): run.missing for run in runs if run.missing}
    if not by_source or agg.table.empty:
        return tables
    config = agg.config_columns
    sources = agg.runs.groupby(config, sort=False, dropna=False)["source"].apply(list)
    labels = {measure_label(m): m for m in agg.measures}
    for table in tables:
        for i, (_, row) in enumerate(agg.table.iterrows()):
            key = tuple(row[c] for c in config)
            key = key if len(config) > 1 else key[0]
            missing = [by_source[s] for s in sources.get(key, []) if s in by_source]
            for j, header in enumerate(table.headers):
                m = labels.get(header)
                if m and table.rows[i][j] == "–" and any(is_missing(m, mm) for mm in missing):
                    table.rows[i][j] = "missing"
    return tables


def skipped_table(skipped: list[Skipped], base: Path | None = None) -> TextTable:
    return TextTable(
        ["run", "status", "reason"],
        [[shown_path(s.source, base), s.status, s.reason] for s in skipped],
        "Skipped runs",
    )


# the current measures a running run shows (after its stage prefix, if any)
CURRENT_MEASURES = (r"train/loss", r"val/.+")


def running_table(running: list[Run], completed: list[Run], base: Path | None = None) -> TextTable:
    """Runs still training: configuration, seed, stage, last epoch and that epoch's measures.

    The configuration columns are the non-blank choices and the settings swept among ``running``
    and ``completed`` together. The epoch is counted from 0 (within its stage for a deep run);
    ``updated`` is the local time its files last changed.
    """
    swept = swept_keys([*completed, *running])
    choices = [c for c in KEY_CHOICES if c == "objective" or any(r.choices.get(c) for r in running)]
    currents = [r.curves.current() if r.curves else (None, None, {}) for r in running]
    names = sorted(
        {m for _, _, values in currents for m in values if any(re.fullmatch(p, m) for p in CURRENT_MEASURES)},
        key=lambda m: (not m.startswith("train/"), m),
    )
    deep = any(stage is not None for stage, _, _ in currents)
    headers = [*choices, *swept, "seed", *(["stage"] if deep else []), "last epoch", *names, "updated", "run"]
    rows = []
    for run, (stage, epoch, values) in zip(running, currents):
        updated = time.strftime("%H:%M:%S", time.localtime(run.updated)) if run.updated else ""
        rows.append(
            [run.choices.get(c, "") for c in choices]
            + [run.settings.get(k, UNSET) for k in swept]
            + ["" if run.seed is None else str(run.seed)]
            + ([stage.prefix if stage else ""] if deep else [])
            + ["–" if epoch is None else str(epoch)]
            + [fmt_number(values[m]) if m in values else "–" for m in names]
            + [updated, shown_path(str(run.folder), base)]
        )
    return TextTable(headers, rows, "Running runs")


def escape_md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: TextTable, level: int = 2) -> str:
    """A GitHub-flavoured Markdown table (with its title as a heading when it has one)."""
    lines = [f"{'#' * level} {table.title}", ""] if table.title else []
    lines.append("| " + " | ".join(map(escape_md, table.headers)) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.headers) + "|")
    lines += ["| " + " | ".join(map(escape_md, row)) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"
