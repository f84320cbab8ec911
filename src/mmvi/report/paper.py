"""The paper's figures beside ours (docs/paper.md §4) and the check of Table 1's qualitative claim.

Table 1's finding (docs/paper.md §2): *MinVI, MP above all, gives much lower error from one half than
NLL, at about equal error with both halves.* For each dataset × model of the comparison, every
objective is represented by its best configuration (lowest one-half error, when a sweep gives it
several); the one-half error of a run is the mean of its single-modality errors (left, right).
"Much lower" means lower by more than the tolerance; "about equal with both halves" means MinVI's
both-halves error is not above NLL's by more than the tolerance (the claim is that MinVI pays
no price there; being better passes).

With a :class:`mmvi.report.paired.Pairing` (the report's), each part is decided by the 95 % interval
of the paired difference (seeds and test items, :mod:`mmvi.report.stats`): "much lower" holds when
the interval of MinVI − NLL lies below −``tol_pp``; "about equal" when its upper end is at most
``tol_pp``; "MP above all" when minvi_mp's interval against every other objective lies below 0.
Each verdict prints the seeds per arm and the test items. Without one: the old rule, a tolerance of
max(``tol_pp`` percentage points, 2 standard errors of the difference of the means over seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mmvi.report.tables import Aggregate, TextTable, fmt_mean_std, fmt_number, objective_rank

PASS, FAIL, NO_DATA = "PASS", "FAIL", "not enough data"
CLAIM = (
    "MinVI, MP above all, gives much lower error from one half than NLL at about equal error with both halves"
)
# MIR-Flickr mAP (multimodal query, image-only query), docs/paper.md §4
MIRFLICKR = (
    ("Multimodal DBM (Srivastava & Salakhutdinov 2012)", "0.609", "0.531"),
    ("MDRNN, MinVI (Sohn, Shang & Lee 2014)", "0.686", "≈0.6"),
)
LITERATURE_NOTE = "recalled from the literature, to be confirmed against the papers"
BOTH = "classify/err_multimodal"
# the deep arms are one comparison: the multimodal DBM is the NLL arm of the MDRNN's MinVI (docs/paper.md §3)
DEEP_MODELS = ("mdrnn", "mdbm")
DEEP_SCOPE = "mdrnn | mdbm"
ONE = "one_half"
#: the mean of a run's single-modality errors, per test item (the paired comparison derives it)
ONE_HALF = f"classify/err_{ONE}"


@dataclass
class Claim:
    """One checked statement: its scope (data / model), text, our numbers and the verdict."""

    scope: str
    claim: str
    ours: str
    verdict: str


def family(objective: str) -> str:
    """``NLL`` / ``MinVI`` / ``mixture`` (hybrid: neither, left out of the claims)."""
    if objective.startswith("nll"):
        return "NLL"
    if objective.startswith("minvi"):
        return "MinVI"
    return "mixture"


def error_summary(agg: Aggregate) -> pd.DataFrame:
    """Per configuration: mean/std/n of the both-halves error and of the one-half error.

    Empty when the runs have no ``classify/err_multimodal`` or no single-modality error.
    """
    runs = agg.runs
    singles = [
        m
        for m in agg.measures
        if m.startswith("classify/err_") and m != BOTH and not m.startswith("classify/err_no_")
    ]
    if runs.empty or BOTH not in runs or not singles:
        return pd.DataFrame()
    # each run's own single-modality errors (a report may hold data sets with other modalities)
    frame = runs[agg.config_columns].assign(both=runs[BOTH], one=runs[singles].mean(axis=1, skipna=True))
    stats = frame.groupby(agg.config_columns, sort=False, dropna=False)[["both", "one"]].agg(
        ["mean", "std", "count"]
    )
    stats.columns = [f"{m} {s}" for m, s in stats.columns]
    return stats.reset_index()


def best_per_objective(errors: pd.DataFrame) -> pd.DataFrame:
    """Per (data, model, objective): the configuration with the lowest one-half error."""
    ok = errors[errors["one count"] > 0]
    idx = ok.groupby(["data", "model", "objective"], sort=False)["one mean"].idxmin()
    best = ok.loc[idx].copy()
    best["family"] = best["objective"].map(family)
    best["_rank"] = best["objective"].map(objective_rank)
    return best.sort_values(["data", "model", "_rank"], kind="stable").drop(columns="_rank")


def _se(row: pd.Series, key: str) -> float:
    std, n = row[f"{key} std"], row[f"{key} count"]
    return float(std) / math.sqrt(n) if n > 1 and math.isfinite(std) else 0.0


def _tolerance(a: pd.Series, b: pd.Series, key: str, tol_pp: float) -> float:
    """Differences up to max(tol_pp, 2 standard errors of the difference) count as equal."""
    return max(tol_pp, 2.0 * math.hypot(_se(a, key), _se(b, key)))


def _fmt(row: pd.Series, key: str) -> str:
    return f"{row['objective']} {fmt_number(row[f'{key} mean'])}%"


def _key(row: pd.Series, pairing) -> tuple[str, ...]:
    return tuple(str(row[c]) for c in pairing.agg.config_columns)


def _interval_text(res) -> str:
    items = f"{res.n_items} items" if res.n_items else "no per-item records"
    return (
        f"diff {res.diff:+.2f} [{res.ci_low:+.2f}, {res.ci_high:+.2f}], "
        f"{res.n_a}/{res.n_b} seeds, {items}; {res.method}"
    )


def _diverged_note(pairing, *rows: pd.Series) -> str:
    n = sum(r.divergence is not None for row in rows for r in pairing.runs.get(_key(row, pairing), []))
    return f" (includes {n} diverged run(s))" if n else ""


LOWER = "MinVI gives much lower error from one half than NLL"
EQUAL = "MinVI has about NLL's error with both halves (not worse by more than the tolerance)"
ABOVE = "MP above all: minvi_mp has the lowest one-half error of the MinVI and NLL objectives"


def _families(best: pd.DataFrame, scope: str) -> tuple[pd.DataFrame, pd.DataFrame, list[Claim]]:
    """The MinVI and the NLL rows, and the claims left undecided when one of the two is absent."""
    minvi, nll = best[best["family"] == "MinVI"], best[best["family"] == "NLL"]
    if not (minvi.empty or nll.empty):
        return minvi, nll, []
    missing = "MinVI" if minvi.empty else "NLL"
    return (
        minvi,
        nll,
        [Claim(scope, text, f"no {missing} objective with errors", NO_DATA) for text in (LOWER, EQUAL)],
    )


def _mp_and_others(best: pd.DataFrame, scope: str) -> tuple[pd.DataFrame, Claim | None]:
    """The MinVI and NLL rows that "MP above all" compares, or the claim left undecided."""
    pure = best[best["family"].isin(["MinVI", "NLL"])]
    if "minvi_mp" not in set(pure["objective"]) or len(pure) < 2:
        return pure, Claim(scope, ABOVE, "needs minvi_mp and another MinVI or NLL objective", NO_DATA)
    return pure, None


def interval_claims(best: pd.DataFrame, scope: str, tol_pp: float, pairing) -> list[Claim]:
    """The three parts of the claim for one data × model, decided by paired intervals."""
    minvi, nll, claims = _families(best, scope)
    if not claims:
        ref = nll.loc[nll["one mean"].idxmin()]
        for _, row in minvi.iterrows():
            note = _diverged_note(pairing, row, ref)
            res = pairing.compare(_key(row, pairing), _key(ref, pairing), ONE_HALF)
            if res is None or not math.isfinite(res.ci_high):
                claims.append(Claim(scope, f"{LOWER} ({row['objective']})", "no interval", NO_DATA))
            else:
                ours = (
                    f"one half: {_fmt(row, 'one')} vs best NLL {_fmt(ref, 'one')}: {_interval_text(res)} "
                    f"(need upper < −{tol_pp:g}){note}"
                )
                verdict = PASS if res.ci_high < -tol_pp else FAIL
                claims.append(Claim(scope, f"{LOWER} ({row['objective']})", ours, verdict))
            res = pairing.compare(_key(row, pairing), _key(ref, pairing), BOTH)
            if res is None or not math.isfinite(res.ci_high):
                claims.append(Claim(scope, f"{EQUAL} ({row['objective']})", "no interval", NO_DATA))
            else:
                ours = (
                    f"both halves: {_fmt(row, 'both')} vs best NLL {_fmt(ref, 'both')}: {_interval_text(res)} "
                    f"(need upper ≤ {tol_pp:g}){note}"
                )
                verdict = PASS if res.ci_high <= tol_pp else FAIL
                claims.append(Claim(scope, f"{EQUAL} ({row['objective']})", ours, verdict))
    pure, undecided = _mp_and_others(best, scope)
    if undecided is not None:
        return [*claims, undecided]
    mp = pure[pure["objective"] == "minvi_mp"].iloc[0]
    parts, clear = [], True
    for _, other in pure[pure["objective"] != "minvi_mp"].iterrows():
        res = pairing.compare(_key(mp, pairing), _key(other, pairing), ONE_HALF)
        if res is None or not math.isfinite(res.ci_high):
            clear = False
            parts.append(f"vs {other['objective']}: no interval")
            continue
        clear &= res.ci_high < 0
        parts.append(f"vs {other['objective']}: {_interval_text(res)}")
    ours = "minvi_mp − other, one half: " + "; ".join(parts) + " (need every upper < 0)"
    claims.append(Claim(scope, ABOVE, ours, PASS if clear else FAIL))
    return claims


def scope_claims(best: pd.DataFrame, scope: str, tol_pp: float) -> list[Claim]:
    """The three parts of the claim for one data × model (means ± standard errors, no pairing)."""
    minvi, nll, claims = _families(best, scope)
    if not claims:
        ref = nll.loc[nll["one mean"].idxmin()]
        for _, row in minvi.iterrows():
            gap = ref["one mean"] - row["one mean"]
            tol = _tolerance(row, ref, "one", tol_pp)
            ours = f"one half: {_fmt(row, 'one')} vs best NLL {_fmt(ref, 'one')} (gap {gap:.2f}, need > {tol:.2f})"
            claims.append(Claim(scope, f"{LOWER} ({row['objective']})", ours, PASS if gap > tol else FAIL))
            diff = row["both mean"] - ref["both mean"]
            tol = _tolerance(row, ref, "both", tol_pp)
            ours = (
                f"both halves: {_fmt(row, 'both')} vs best NLL {_fmt(ref, 'both')} "
                f"(diff {diff:+.2f}, need ≤ {tol:.2f})"
            )
            claims.append(Claim(scope, f"{EQUAL} ({row['objective']})", ours, PASS if diff <= tol else FAIL))
    pure, undecided = _mp_and_others(best, scope)
    if undecided is not None:
        return [*claims, undecided]
    winner = pure.loc[pure["one mean"].idxmin()]
    ranking = ", ".join(_fmt(r, "one") for _, r in pure.sort_values("one mean").iterrows())
    claims.append(Claim(scope, ABOVE, ranking, PASS if winner["objective"] == "minvi_mp" else FAIL))
    return claims


def check_claims(agg: Aggregate, tol_pp: float = 1.0, pairing=None) -> tuple[list[Claim], TextTable]:
    """The claim check per data × model, and the per-objective error table it rests on.

    ``pairing`` (:class:`mmvi.report.paired.Pairing`): decide by paired intervals (module docstring).
    """
    errors = error_summary(agg)
    headers = ["data", "model", "objective", "family", "n", "error, both halves (%)", "error, one half (%)"]
    if errors.empty:
        return [Claim("all runs", CLAIM, "no classification errors in the runs", NO_DATA)], TextTable(
            headers, []
        )
    best = best_per_objective(errors)
    claims = []
    scopes = best["model"].map(lambda m: DEEP_SCOPE if m in DEEP_MODELS else m)
    for (data, model), part in best.groupby([best["data"], scopes], sort=False):
        if pairing is not None:
            claims += interval_claims(part, f"{data} / {model}", tol_pp, pairing)
        else:
            claims += scope_claims(part, f"{data} / {model}", tol_pp)
    rows = [
        [
            str(r["data"]),
            str(r["model"]),
            str(r["objective"]),
            r["family"],
            str(int(r["one count"])),
            fmt_mean_std(r["both mean"], r["both std"], r["both count"], int(r["both count"])),
            fmt_mean_std(r["one mean"], r["one std"], r["one count"], int(r["one count"])),
        ]
        for _, r in best.iterrows()
    ]
    return claims, TextTable(headers, rows, "Errors per objective (best configuration of each)")


def claims_table(claims: list[Claim]) -> TextTable:
    return TextTable(
        ["scope", "claim", "ours", "verdict"],
        [[c.scope, c.claim, c.ours, c.verdict] for c in claims],
        "Table 1 claim check",
    )


def mirflickr_table(agg: Aggregate) -> TextTable:
    """docs/paper.md §4's MIR-Flickr mAP beside our ``classify/map_multimodal`` / ``classify/map_image``."""
    rows = [[name, multi, image, LITERATURE_NOTE] for name, multi, image in MIRFLICKR]
    keys = ["classify/map_multimodal", "classify/map_image"]
    present = [k for k in keys if k in agg.measures]
    if not present:
        rows.append(
            ["ours", "not run", "not run", "no classify/map_multimodal or classify/map_image in the runs"]
        )
    else:
        table = agg.table[agg.table[[f"{k} n" for k in present]].sum(axis=1) > 0]
        for _, r in table.iterrows():
            cells = [
                fmt_mean_std(r[f"{k} mean"], r[f"{k} std"], r[f"{k} n"], int(r["n"]))
                if k in present
                else "not run"
                for k in keys
            ]
            rows.append([f"ours: {r['objective']} ({r['data']}, {r['model']})", *cells, "this comparison"])
    return TextTable(
        ["model", "mAP, multimodal query", "mAP, image-only query", "source"], rows, "MIR-Flickr mAP"
    )
