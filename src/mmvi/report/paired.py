"""Paired comparisons of configurations on the same test items: the report's ``paired.md``/``paired.csv``,
forest plots and the intervals the claim check uses.

Each run folder may hold ``records.parquet`` (:data:`RECORDS_FILE`): one row per measure and test
item (or class), columns ``metric`` (the ``results.json`` metric name), ``unit`` (``item`` or
``class``), ``index`` (the item's or class's index), ``value`` (the mean over a metric's rows is the
``results.json`` figure), ``prediction``, ``label``. Two configurations are compared on a measure
from their runs' rows paired on ``index`` (:func:`mmvi.report.stats.paired_difference`); when a run
has no records for it, or the runs were on different data folds, from the seeds' figures alone
(:func:`mmvi.report.stats.welch_difference`, marked).

Which pairs: within each data set × model (the deep arms ``mdrnn | mdbm`` are one), every MinVI
configuration against every NLL configuration, and with ``--baseline key=value`` every other
configuration against each configuration matching it (e.g. ``objective=nll_pcd``). Every row is
one test of one family corrected together (Holm by default, or Benjamini–Hochberg).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmvi.report.collect import KEY_CHOICES, UNSET, Run
from mmvi.report.paper import DEEP_MODELS, DEEP_SCOPE, ONE_HALF, family
from mmvi.report.plots import PLOT_DIR, Plot, configuration_runs, objective_colour, save, slug
from mmvi.report.stats import (
    CORRECTION_NAMES,
    LEVEL,
    N_BOOT,
    SEED,
    WELCH,
    PairedResult,
    correct,
    paired_difference,
    welch_difference,
)
from mmvi.report.tables import Aggregate, TextTable, fmt_number, measure_label, measure_sort_key
from mmvi.run_folder import RECORDS_FILE

# measures compared (the evaluation's figures; not the probe's C, timings, training logs or theory)
COMPARED = (
    "classify/err_",
    "classify/map_",
    "classify/precision_",
    "cond_ce/",
    "cond_nll/",
    "nll",
    "retrieval/",
)
HIGHER_IS_BETTER = ("classify/map_", "classify/precision_", "retrieval/")
# the one-half error of the claim check: per item, the mean of the single-modality errors
BOTH = "classify/err_multimodal"


def is_compared(measure: str) -> bool:
    return measure.startswith(COMPARED) and not measure.endswith("_stderr")


def single_errors(names) -> list[str]:
    """The single-modality probe errors among ``names`` (not the multimodal or leave-one-out ones)."""
    return sorted(
        m for m in names if m.startswith("classify/err_") and m not in (BOTH, ONE_HALF) and "err_no_" not in m
    )


def scope_of(model: str) -> str:
    return DEEP_SCOPE if model in DEEP_MODELS else model


def read_records(folder: str | Path) -> dict[str, pd.Series] | None:
    """A run's per-item records: metric → values indexed by item (class) index, sorted; ``None``
    without a readable file. A metric whose index repeats is left out (its rows cannot be paired);
    the derived :data:`ONE_HALF` is added when the run has single-modality errors."""
    path = Path(folder) / RECORDS_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path, columns=["metric", "index", "value"])
    except (OSError, ValueError, ImportError) as exc:  # pyarrow's errors derive from these
        del exc
        return None
    out = {}
    for metric, rows in frame.groupby("metric", sort=False):
        series = pd.Series(rows["value"].to_numpy(np.float64), index=rows["index"].to_numpy(np.int64))
        if series.index.is_unique and np.isfinite(series.to_numpy()).all():
            out[str(metric)] = series.sort_index()
    singles = single_errors(out)
    if singles:
        out[ONE_HALF] = pd.concat([out[m] for m in singles], axis=1, join="inner").mean(axis=1)
    return out


def run_value(run: Run, measure: str) -> float:
    """A run's figure for ``measure`` (:data:`ONE_HALF`: the mean of its single-modality errors)."""
    if measure == ONE_HALF:
        singles = single_errors(run.metrics)
        return float(np.mean([run.metrics[m] for m in singles])) if singles else math.nan
    return run.metrics.get(measure, math.nan)


class Pairing:
    """The runs of each configuration of ``agg`` and their records; :meth:`compare` two of them."""

    def __init__(self, agg: Aggregate, runs: list[Run], n_boot: int = N_BOOT, seed: int = SEED):
        self.agg, self.n_boot, self.seed = agg, n_boot, seed
        self.rows: dict[tuple[str, ...], pd.Series] = {}
        self.runs: dict[tuple[str, ...], list[Run]] = {}
        for row, members in configuration_runs(agg, runs):
            self.rows[self.key(row)] = row
            self.runs[self.key(row)] = members
        self._records: dict[int, dict[str, pd.Series] | None] = {}
        self._cache: dict[tuple, PairedResult | None] = {}

    def key(self, row: pd.Series) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in self.agg.config_columns)

    def records(self, run: Run) -> dict[str, pd.Series] | None:
        if id(run) not in self._records:
            self._records[id(run)] = read_records(run.folder)
        return self._records[id(run)]

    def measures(self, key: tuple[str, ...]) -> set[str]:
        """The compared measures every run of a configuration has (with :data:`ONE_HALF`)."""
        runs = self.runs.get(key, [])
        if not runs:
            return set()
        names = set.intersection(*({m for m in r.metrics if is_compared(m)} for r in runs))
        if all(single_errors(r.metrics) for r in runs):
            names.add(ONE_HALF)
        return names

    def compare(self, key_a: tuple[str, ...], key_b: tuple[str, ...], measure: str) -> PairedResult | None:
        """A − B on ``measure``: paired over items when every run has its records, else Welch
        over seeds (marked); ``None`` when a configuration has no run with the measure."""
        cache = (key_a, key_b, measure)
        if cache not in self._cache:
            self._cache[cache] = self._compare(key_a, key_b, measure)
        return self._cache[cache]

    def _compare(self, key_a, key_b, measure) -> PairedResult | None:
        runs_a, runs_b = self.runs.get(key_a, []), self.runs.get(key_b, [])
        values_a = np.array([v for v in (run_value(r, measure) for r in runs_a) if math.isfinite(v)])
        values_b = np.array([v for v in (run_value(r, measure) for r in runs_b) if math.isfinite(v)])
        if not len(values_a) or not len(values_b):
            return None
        series = [(self.records(r) or {}).get(measure) for r in (*runs_a, *runs_b)]
        folds = {r.fold for r in (*runs_a, *runs_b)}
        if len(folds) > 1:
            res = welch_difference(values_a, values_b)
            return replace(
                res, method=res.method.replace("no per-item records", "runs on different data folds")
            )
        if any(s is None for s in series):
            return welch_difference(values_a, values_b)
        common = series[0].index
        for s in series[1:]:
            common = common.intersection(s.index)
        if len(common) < 2:
            res = welch_difference(values_a, values_b)
            return replace(res, method=res.method.replace("no per-item records", "no common items"))
        a = np.vstack([s.loc[common].to_numpy() for s in series[: len(runs_a)]])
        b = np.vstack([s.loc[common].to_numpy() for s in series[len(runs_a) :]])
        res = paired_difference(a, b, self.n_boot, self.seed)
        if any(len(s) != len(common) for s in series):
            res = replace(res, method=res.method + f"; on the {len(common)} items all runs share")
        return res


def matches(pairing: Pairing, key: tuple[str, ...], setting: str, value: str) -> bool:
    """Does a configuration have ``setting=value`` (a choice, a swept column, or a setting all its runs share)?"""

    def same(text: str) -> bool:
        if text == value:
            return True
        try:
            return float(text) == float(value)
        except ValueError:
            return False

    row = pairing.rows[key]
    if setting in row.index:
        return same(str(row[setting]))
    runs = pairing.runs[key]
    got = [
        r.choices.get(setting, "") if setting in KEY_CHOICES else r.settings.get(setting, UNSET) for r in runs
    ]
    return bool(got) and all(same(str(g)) for g in got)


class BaselineError(ValueError):
    """A ``--baseline`` that names no configuration of the report."""


@dataclass(frozen=True)
class Pair:
    scope: tuple[str, str]  # (data, model scope)
    a: tuple[str, ...]
    b: tuple[str, ...]


def comparison_pairs(pairing: Pairing, baselines: list[tuple[str, str]] = ()) -> list[Pair]:
    """MinVI × NLL within each data × model scope, then every configuration against each matching a
    ``--baseline``; each unordered pair once. Raises :class:`BaselineError` for a baseline matching nothing."""
    scopes: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for key, row in pairing.rows.items():
        scopes.setdefault((str(row["data"]), scope_of(str(row["model"]))), []).append(key)
    pairs: list[Pair] = []
    seen: set[frozenset] = set()

    def add(scope, a, b):
        if a != b and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            pairs.append(Pair(scope, a, b))

    for scope, keys in scopes.items():
        fam = {k: family(str(pairing.rows[k]["objective"])) for k in keys}
        for a in keys:
            for b in keys:
                if fam[a] == "MinVI" and fam[b] == "NLL":
                    add(scope, a, b)
    for setting, value in baselines:
        hits = [k for k in pairing.rows if matches(pairing, k, setting, value)]
        if not hits:
            raise BaselineError(f"--baseline {setting}={value}: no configuration of the report has it")
        for scope, keys in scopes.items():
            for b in (k for k in keys if k in hits):
                for a in (k for k in keys if k not in hits):
                    add(scope, a, b)
    return pairs


def label(pairing: Pairing, key: tuple[str, ...], scope: str) -> str:
    """A configuration's short name: objective (and model for the deep scope), then its set swept settings."""
    row = pairing.rows[key]
    parts = [str(row["objective"])]
    if scope == DEEP_SCOPE:
        parts.insert(0, str(row["model"]))
    if str(row.get("experiment", "")):
        parts.append(str(row["experiment"]))
    parts += [f"{c}={row[c]}" for c in pairing.agg.swept if str(row[c]) != UNSET]
    return " ".join(parts)


def better_of(measure: str, diff: float) -> str:
    """``A`` or ``B``: the arm a difference A − B favours (lower is better but for mAP, P@k)."""
    higher = measure.startswith(HIGHER_IS_BETTER)
    return "A" if (diff > 0) == higher else "B"


PAIRED_COLUMNS = [
    "data", "model", "metric", "A", "B", "mean_A", "mean_B", "diff", "ci_low", "ci_high", "p", "p_corrected",
    "correction", "survives", "better", "effect", "effect_kind", "n_seeds_A", "n_seeds_B", "n_items",
    "se", "df", "boot_low", "boot_high", "method", "diverged_A", "diverged_B",
]  # fmt: skip


def paired_frame(pairing: Pairing, pairs: list[Pair], correction: str = "holm") -> pd.DataFrame:
    """One row per pair × measure both have (:data:`PAIRED_COLUMNS`), p corrected over all rows."""
    rows = []
    for pair in pairs:
        measures = sorted(pairing.measures(pair.a) & pairing.measures(pair.b), key=measure_sort_key)
        for m in measures:
            res = pairing.compare(pair.a, pair.b, m)
            if res is None:
                continue
            rows.append(
                {
                    "data": pair.scope[0],
                    "model": pair.scope[1],
                    "metric": m,
                    "A": label(pairing, pair.a, pair.scope[1]),
                    "B": label(pairing, pair.b, pair.scope[1]),
                    "mean_A": res.mean_a,
                    "mean_B": res.mean_b,
                    "diff": res.diff,
                    "ci_low": res.ci_low,
                    "ci_high": res.ci_high,
                    "p": res.p,
                    "effect": res.effect,
                    "effect_kind": res.effect_kind,
                    "n_seeds_A": res.n_a,
                    "n_seeds_B": res.n_b,
                    "n_items": res.n_items,
                    "se": res.se,
                    "df": res.df,
                    "boot_low": res.boot_low,
                    "boot_high": res.boot_high,
                    "method": res.method,
                    "diverged_A": sum(r.divergence is not None for r in pairing.runs[pair.a]),
                    "diverged_B": sum(r.divergence is not None for r in pairing.runs[pair.b]),
                }
            )
    frame = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    if frame.empty:
        return frame
    adjusted, survives = correct(frame["p"].to_numpy(), correction)
    frame["p_corrected"], frame["survives"], frame["correction"] = adjusted, survives, correction
    frame["better"] = [
        better_of(m, d) if s else "–" for m, d, s in zip(frame["metric"], frame["diff"], frame["survives"])
    ]
    return frame


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def paired_table(frame: pd.DataFrame, correction: str = "holm") -> TextTable:
    """The readable paired-comparison table (one row per pair × measure)."""
    name = CORRECTION_NAMES[correction]
    headers = [
        "data", "model", "measure", "A", "B", "A mean", "B mean", "diff (A − B)", "CI low", "CI high", "p",
        f"p ({name})", "effect", "seeds A/B", "items", "survives", "note",
    ]  # fmt: skip
    rows = []
    for _, r in frame.iterrows():
        notes = [r["method"]] if r["method"] != "two-level bootstrap (seeds, items)" else []
        diverged = int(r["diverged_A"]) + int(r["diverged_B"])
        if diverged:
            notes.append(f"includes {diverged} diverged run(s)")
        survives = f"yes ({r['better']} better)" if r["survives"] else "no"
        effect = "–" if not math.isfinite(r["effect"]) else f"{r['effect']:.2f} {r['effect_kind']}"
        rows.append(
            [str(r["data"]), str(r["model"]), measure_label(r["metric"]), str(r["A"]), str(r["B"])]
            + [fmt_number(r["mean_A"]), fmt_number(r["mean_B"]), f"{r['diff']:+.4g}"]
            + [fmt_number(r["ci_low"]), fmt_number(r["ci_high"]), fmt_p(r["p"]), fmt_p(r["p_corrected"])]
            + [effect, f"{int(r['n_seeds_A'])}/{int(r['n_seeds_B'])}", str(int(r["n_items"])) or "–"]
            + [survives, "; ".join(notes)]
        )
    return TextTable(headers, rows, "Paired comparisons")


def method_note(correction: str = "holm", n_boot: int = N_BOOT) -> str:
    name = CORRECTION_NAMES[correction]
    return (
        f"diff = mean(A) − mean(B) over seeds and test items; {LEVEL:.0%} interval diff ± t(ν)·se, se from a "
        f"two-level bootstrap ({n_boot} draws: seeds resampled within each arm, then test items jointly, "
        "paired on the item index; seed level = the ANOVA seed component), ν = Welch–Satterthwaite "
        "(seeds k − 1 per arm, items n − 1); p from the same t; effect d_z = mean / sd of the per-item "
        f"differences of the seed means. p corrected by {name} over all {{n}} comparisons of this report; "
        f"'survives' = corrected p < {1 - LEVEL:.2g}. Rows marked '{WELCH}' had no per-item records: "
        "Welch's t over the seeds' figures."
    )


def forest_plots(frame: pd.DataFrame, out_dir: Path) -> list[Plot]:
    """Per data set, ``plots/forest_<data>.png``: one panel per measure, one line per pair: the
    difference A − B with its interval (filled: survives the correction)."""
    plots = []
    for data, part in frame.groupby("data", sort=False):
        measures = sorted(part["metric"].unique(), key=measure_sort_key)
        heights = [0.5 + 0.32 * (part["metric"] == m).sum() for m in measures]
        fig = Figure(figsize=(7.5, sum(heights) + 0.45 * len(measures)), layout="constrained")
        axes = fig.subplots(len(measures), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, m in zip(axes, measures):
            rows = part[part["metric"] == m].reset_index(drop=True)
            y = np.arange(len(rows))[::-1]
            for yi, (_, r) in zip(y, rows.iterrows()):
                tokens = str(r["A"]).split(" ")
                colour = objective_colour(
                    tokens[1] if r["model"] == DEEP_SCOPE and len(tokens) > 1 else tokens[0]
                )
                ax.plot([r["ci_low"], r["ci_high"]], [yi, yi], color=colour, lw=2)
                face = colour if r["survives"] else "white"
                ax.plot([r["diff"]], [yi], marker="o", ms=6, color=colour, mfc=face, ls="none")
            ax.axvline(0.0, color="0.3", lw=0.8, ls="--")
            ax.set_yticks(y, [f"{r['A']} − {r['B']}" for _, r in rows.iterrows()], fontsize=7)
            ax.set_ylim(-0.7, len(rows) - 0.3)
            ax.set_title(f"{measure_label(m)}: A − B", fontsize=8, loc="left")
            ax.tick_params(axis="x", labelsize=7)
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(
            f"{data}: paired differences, {LEVEL:.0%} intervals (filled: survives correction)", fontsize=9
        )
        path = Path(PLOT_DIR) / f"forest_{slug(str(data))}.png"
        save(fig, out_dir / path)
        plots.append(Plot("forest", str(data), "A − B", str(path)))
    return plots
