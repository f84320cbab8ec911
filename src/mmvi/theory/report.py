"""Report of a Theorem 2.1 sweep: Markdown + CSV tables and the figure, per objective × n.

    python -m mmvi.theory.report <multirun folder> [--out DIR] [--no-wandb]

Completed runs holding the ``theory/*`` measures of
:func:`mmvi.theory.experiment.evaluate_theorem21`, grouped by objective (and other varying
overrides) and n, into ``theorem21.md``, ``theorem21.csv``, ``theorem21_runs.csv`` and
``theorem21.png`` (:func:`mmvi.theory.plot_theorem21`); :class:`Theorem21ReportCallback` runs it
when a Hydra multirun ends (docs/workflow.md §3).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback

from mmvi.run_folder import RESULTS_FILE, read_results
from mmvi.theory.measures import MEASURE_KEYS, plot_theorem21
from mmvi.utils import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

REPORT_NAME = "theorem21"
N_KEY = "theory/n_samples"
EXTRA_KEYS = ("theory/tv_empirical",)
FLOOR_KEYS = ("theory/l_vi_min", "theory/l_nll_min")
# overrides that define a cell of the table (objective, n) or a repeat (seed): never part of a label
CELL_KEYS = {"objective", "data.n_samples", "seed", "data.sample_seed"}
EMPIRICAL_LABEL = "empirical table of the n draws"


@dataclass
class Collected:
    """Runs found under a sweep folder: usable rows and (path, reason) of the skipped ones."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _override_pairs(overrides: list[str]) -> dict[str, str]:
    pairs = {}
    for o in overrides or []:
        if "=" in o:
            key, value = o.split("=", 1)
            pairs[key.lstrip("+~")] = value
    return pairs


def collect(sweep_dir: str | Path) -> Collected:
    """Read every ``results.json`` under ``sweep_dir`` into rows with objective, n, seed, measures.

    A row's ``objective`` is the Hydra choice, extended by ``key=value`` for each override (other
    than objective, n and seeds) whose value differs between the sweep's runs.
    """
    sweep_dir = Path(sweep_dir)
    out = Collected()
    found = []
    for path in sorted(sweep_dir.rglob(RESULTS_FILE), key=lambda p: str(p)):
        rel = str(path.parent.relative_to(sweep_dir)) or "."
        if "wandb" in path.parts[len(sweep_dir.parts) :]:
            continue
        try:
            res = read_results(path)
        except (OSError, ValueError) as exc:
            out.skipped.append((rel, f"unreadable: {exc}"))
            continue
        status = res.get("status")
        if status != "completed":
            reason = res.get("reason")
            out.skipped.append((rel, f"status {status}" + (f": {reason}" if reason else "")))
            continue
        metrics = res.get("metrics") or {}
        missing = [k for k in (*MEASURE_KEYS, N_KEY) if not _finite(metrics.get(k))]
        if missing:
            out.skipped.append((rel, f"no finite {', '.join(missing)} (not a theorem21 run?)"))
            continue
        found.append((rel, res))
    overrides = {rel: _override_pairs(res.get("overrides", [])) for rel, res in found}
    keys = {k for pairs in overrides.values() for k in pairs} - CELL_KEYS
    varying = sorted(k for k in keys if len({pairs.get(k) for pairs in overrides.values()}) > 1)
    for rel, res in found:
        metrics = res["metrics"]
        config = res.get("config") or {}
        objective = (res.get("choices") or {}).get("objective") or str(
            config.get("objective", {}).get("_target_")
        )
        label = " ".join([objective] + [f"{k}={overrides[rel].get(k, '-')}" for k in varying])
        row = {"run": rel, "objective": label, "n": int(round(metrics[N_KEY])), "seed": config.get("seed")}
        row.update({k: float(metrics[k]) for k in (*MEASURE_KEYS, *EXTRA_KEYS, *FLOOR_KEYS) if k in metrics})
        out.rows.append(row)
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(float(x))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (objective, n): ``runs`` and mean / std (ddof 0) of every measure present."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["objective"], r["n"])].append(r)
    out = []
    for (objective, n), rs in sorted(groups.items()):
        entry: dict[str, Any] = {"objective": objective, "n": n, "runs": len(rs)}
        for k in (*MEASURE_KEYS, *EXTRA_KEYS):
            vals = [r[k] for r in rs if k in r]
            if vals:
                entry[k] = float(np.mean(vals))
                entry[k + ":std"] = float(np.std(vals))
        out.append(entry)
    return out


def _short(key: str) -> str:
    return key.removeprefix("theory/")


def _fmt(entry: dict[str, Any], key: str) -> str:
    if key not in entry:
        return "–"
    if entry["runs"] > 1:
        return f"{entry[key]:.4f} ± {entry[key + ':std']:.4f}"
    return f"{entry[key]:.4f}"


def markdown(summary: list[dict[str, Any]], collected: Collected, sweep_dir: str | Path) -> str:
    """The Markdown report: one table row per (objective, n), then floors and skipped runs."""
    cols = [*MEASURE_KEYS, *EXTRA_KEYS]
    lines = [
        f"# Theorem 2.1 sweep: {sweep_dir}",
        "",
        f"{len(collected.rows)} completed runs; mean ± std over repeats where runs > 1. "
        "pi_x_l2, pi_y_l2: ‖π − P_D‖₂ of the Gibbs chain's stationary marginals; tv_joint: ½ Σ |P_θ(x|y) π(y) − P_D|; "
        "l_vi, l_nll, kl_x, kl_y: eq. S3 terms (nats); tv_empirical: TV of the training draws' own "
        "empirical table (sampling error alone).",
        "",
        "| objective | n | runs | " + " | ".join(_short(k) for k in cols) + " |",
        "|---|---:|---:|" + "---:|" * len(cols),
    ]
    for e in summary:
        lines.append(
            f"| {e['objective']} | {e['n']} | {e['runs']} | " + " | ".join(_fmt(e, k) for k in cols) + " |"
        )
    floors = {k: [r[k] for r in collected.rows if k in r] for k in FLOOR_KEYS}
    if all(floors.values()):
        lines += [
            "",
            f"Minima at P_θ = P_D: l_vi = C₂ = {np.mean(floors['theory/l_vi_min']):.4f}, "
            f"l_nll = H_D(X, Y) = {np.mean(floors['theory/l_nll_min']):.4f} nats.",
        ]
    if collected.skipped:
        lines += ["", f"Skipped ({len(collected.skipped)}):", ""]
        lines += [f"* `{rel}`: {reason}" for rel, reason in collected.skipped]
    return "\n".join(lines) + "\n"


def _csv_text(records: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def write_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """:func:`plot_theorem21` written atomically, plus the empirical table's TV as a reference line."""
    reference = [
        {"objective": EMPIRICAL_LABEL, "n": r["n"], "theory/tv_joint": r["theory/tv_empirical"]}
        for r in rows
        if "theory/tv_empirical" in r
    ]
    with atomic_path(path) as tmp:
        png = tmp.with_name(tmp.name + ".png")  # savefig picks the format from the suffix
        try:
            plot_theorem21(rows + reference, png)
            os.replace(png, tmp)
        finally:
            png.unlink(missing_ok=True)
    return path


def report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``theorem21.md``, ``.csv``, ``_runs.csv`` and ``.png`` for ``sweep_dir``; return their paths.

    Raises FileNotFoundError if the folder does not exist and ValueError if no run is usable
    (the Markdown listing the skipped runs is still written).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep folder")
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir
    collected = collect(sweep_dir)
    summary = summarise(collected.rows)
    paths = {
        "markdown": write_text_atomic(out_dir / f"{REPORT_NAME}.md", markdown(summary, collected, sweep_dir))
    }
    if not collected.rows:
        raise ValueError(
            f"{sweep_dir}: no completed theorem21 run ({len(collected.skipped)} skipped); see {paths['markdown']}"
        )
    keys = [*MEASURE_KEYS, *EXTRA_KEYS]
    columns = ["objective", "n", "runs"] + [c for k in keys for c in (k, k + ":std")]
    paths["csv"] = write_text_atomic(out_dir / f"{REPORT_NAME}.csv", _csv_text(summary, columns))
    run_cols = ["run", "objective", "n", "seed", *keys, *FLOOR_KEYS]
    paths["runs_csv"] = write_text_atomic(
        out_dir / f"{REPORT_NAME}_runs.csv", _csv_text(collected.rows, run_cols)
    )
    paths["plot"] = write_plot(collected.rows, out_dir / f"{REPORT_NAME}.png")
    return paths


def log_to_wandb(sweep_dir: str | Path, plot: str | Path, table_csv: str | Path | None = None) -> str | None:
    """Log the figure (and the summary table) to an offline wandb run in ``sweep_dir``.

    Returns the run's folder, or None if wandb is missing or fails (the report never depends on it).
    """
    try:
        import wandb

        run = wandb.init(
            mode="offline",
            dir=str(sweep_dir),
            project="mmvi",
            group=REPORT_NAME,
            job_type="report",
            name=f"{REPORT_NAME}-report",
        )
        try:
            payload: dict[str, Any] = {REPORT_NAME: wandb.Image(str(plot))}
            if table_csv is not None:
                with open(table_csv) as f:
                    records = list(csv.reader(f))
                payload[f"{REPORT_NAME}_table"] = wandb.Table(columns=records[0], data=records[1:])
            run.log(payload)
            return str(Path(run.dir).parent)
        finally:
            run.finish()
    except Exception as exc:  # noqa: BLE001 - wandb is optional for the report
        log.warning("wandb logging of the theorem21 report failed: %s: %s", type(exc).__name__, exc)
        return None


class Theorem21ReportCallback(Callback):
    """Hydra callback: run :func:`report` on the sweep folder when a multirun ends.

    Register under ``hydra.callbacks`` (see ``conf/experiment/theorem21.yaml``). A failure is
    logged, not raised: the runs' results stay valid and the report can be rerun by hand.
    """

    def __init__(self, out_dir: str | None = None, wandb: bool = True) -> None:
        self.out_dir = out_dir
        self.wandb = bool(wandb)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            paths = report(sweep_dir, self.out_dir)
        except Exception as exc:  # noqa: BLE001 - never fail a finished multirun
            log.error("theorem21 report of %s failed: %s: %s", sweep_dir, type(exc).__name__, exc)
            return
        if self.wandb:
            log_to_wandb(sweep_dir, paths["plot"], paths["csv"])
        print(Path(paths["markdown"]).read_text(), flush=True)
        print("\n".join(f"  {k}: {p}" for k, p in paths.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmvi.theory.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder of experiment=theorem21 runs")
    parser.add_argument("--out", default=None, help="output folder (default: the sweep folder)")
    parser.add_argument("--wandb", action="store_true", help="also log the figure to an offline wandb run")
    args = parser.parse_args(argv)
    try:
        paths = report(args.sweep_dir, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", flush=True)
        return 2
    if args.wandb:
        log_to_wandb(args.sweep_dir, paths["plot"], paths["csv"])
    print(Path(paths["markdown"]).read_text())
    print("\n".join(f"  {k}: {p}" for k, p in paths.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
