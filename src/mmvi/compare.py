"""Compare the runs of one or more sweeps: mean ± std over seeds per configuration, curves, plots, HTML.

    python -m mmvi.compare logs/train/multiruns/mnist-mrbm/<time>            # → <folder>/report
    python -m mmvi.compare sweepA sweepB --out reports/ab
    python -m mmvi.compare --watch 30 logs/train/multiruns/mnist-mrbm/<time>  # follow a running sweep
    python -m mmvi.compare --wandb entity/mmvi --group sweep_mnist_objectives --out reports/wb

Runs that did not complete are skipped and listed, never averaged; ``--watch`` rewrites the
report whenever a run changes until every run has ended. Configurations, files written: docs/workflow.md §2.
Paired comparisons (``paired.md``, ``paired.csv``, ``plots/forest_<data>.png``) and the interval-based
claim check: README, *Sweeps, the comparison report and wandb*.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mmvi.report.analyses import analysis_page_sections
from mmvi.report.collect import Collection, Skipped, collect_folders
from mmvi.report.compute import (
    X_AXES,
    budget_axis,
    equal_compute_frame,
    equal_compute_note,
    equal_compute_table,
)
from mmvi.report.frontier import FRONTIER_NOTE, frontier_plots, frontier_points, mark_frontier
from mmvi.report.html import Page, render
from mmvi.report.paired import (
    BaselineError,
    Pairing,
    comparison_pairs,
    forest_plots,
    method_note,
    paired_frame,
    paired_table,
)
from mmvi.report.paper import CLAIM, LITERATURE_NOTE, check_claims, claims_table, mirflickr_table
from mmvi.report.plots import Plot, configuration_groups, make_curve_plots, make_plots
from mmvi.report.stats import CORRECTIONS, N_BOOT
from mmvi.report.tables import (
    Aggregate,
    aggregate,
    diverged_table,
    mark_missing,
    measure_tables,
    missing_table,
    running_table,
    shown_path,
    skipped_table,
    to_markdown,
)
from mmvi.utils import atomic_path, write_text_atomic


@dataclass
class Report:
    """What :func:`compare` produced."""

    out_dir: Path
    collection: Collection
    aggregate: Aggregate
    plots: list[Plot]
    markdown: str

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"


def write_csv(frame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def claim_note(tol_pp: float) -> str:
    return (
        f"Table 1's finding: “{CLAIM}”. Each objective is represented by its best configuration "
        "(lowest one-half error = mean of the single-modality errors). Each part is decided by the 95 % "
        "interval of the paired difference over seeds and test items (uncorrected; see Paired comparisons): "
        f"'much lower' = the interval of MinVI − NLL lies below −{tol_pp:g} percentage point, "
        f"'about equal with both halves' = its upper end is at most {tol_pp:g}, 'MP above all' = minvi_mp's "
        "interval against every other objective lies below 0. "
        f"MIR-Flickr figures: {LITERATURE_NOTE}."
    )


def compare(
    folders: list[str | Path],
    out: str | Path | None = None,
    collection: Collection | None = None,
    tol_pp: float = 1.0,
    refresh: int | None = None,
    baselines: list[tuple[str, str]] = (),
    correction: str = "holm",
    include_diverged: bool = False,
    n_boot: int = N_BOOT,
    x: str = "epoch",
    figures: bool = True,
) -> Report:
    """Collect (or take) the runs, write every table, plot and ``index.html``; return the report.

    ``refresh`` (seconds): the sweep is still running; runs with status ``running`` go into a
    table of their own (not the skipped list) and the page reloads itself every ``refresh``
    seconds. Without it they are listed as skipped (crashed or unfinished).

    ``baselines``: ``(key, value)`` pairs naming baseline configurations to compare every other one
    with; ``correction``: ``holm`` or ``fdr_bh``; ``include_diverged``: diverged runs are averaged in
    (marked) instead of left out. Raises :class:`BaselineError` for a baseline that matches nothing.

    ``x``: the curves' x axis, ``epoch`` or a compute axis (``seconds``, ``flops``, ``examples``;
    :mod:`mmvi.report.compute`), which is also the equal-compute table's (FLOPs for ``epoch``).
    Raises ValueError for another ``x``. ``figures=False``: the tables and the page only (no plot
    is drawn; a quick look at a large sweep).
    """
    if x not in X_AXES:
        raise ValueError(f"x={x!r}; allowed: {', '.join(X_AXES)}")
    if collection is None:
        collection = collect_folders(folders, include_diverged=include_diverged)
    if out is None:
        if not folders:
            raise ValueError("no folder to put the report in: pass --out")
        out = Path(folders[0]) / "report"
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    live = refresh is not None
    skipped_runs = [s for s in collection.skipped if not (live and s.status == "running")]
    agg = aggregate(collection, base=out_dir)
    tables = mark_missing(measure_tables(agg), agg, collection.runs, out_dir)
    missing = missing_table(collection.runs, out_dir)
    skipped = skipped_table(skipped_runs, out_dir)
    running = running_table(collection.running, collection.runs, out_dir) if live else None
    pairing = Pairing(agg, collection.runs, n_boot=n_boot)
    paired = paired_frame(pairing, comparison_pairs(pairing, list(baselines)), correction)
    paired_text = paired_table(paired, correction)
    diverged = diverged_table(collection.diverged, include_diverged, out_dir)
    claims, errors = check_claims(agg, tol_pp, pairing)
    mirflickr = mirflickr_table(agg)
    plots = []
    if figures:
        plots += make_plots(agg, out_dir)
        plots += make_curve_plots(agg, collection.runs, collection.running if live else [], out_dir, x)
        plots += forest_plots(paired, out_dir)
    axis = budget_axis(x)
    equal = equal_compute_frame(agg, configuration_groups(agg, collection.runs), axis)
    front_plots, front_table = frontier_plots(agg, out_dir, draw=figures)
    plots += front_plots
    points = frontier_points(agg)

    write_csv(agg.table, out_dir / "table.csv")
    write_csv(agg.runs, out_dir / "runs.csv")
    write_csv(skipped_frame(skipped_runs, out_dir), out_dir / "skipped.csv")
    write_csv(paired, out_dir / "paired.csv")
    write_csv(equal, out_dir / "equal_compute.csv")
    write_csv(mark_frontier(points) if len(points) else points, out_dir / "frontier.csv")
    note = method_note(correction, n_boot).format(n=len(paired))
    write_text_atomic(
        out_dir / "paired.md", "# Paired comparisons\n\n" + note + "\n\n" + to_markdown(paired_text)
    )
    header = summary_lines(collection, out_dir, live)
    markdown = "\n".join(to_markdown(t) for t in tables) if tables else "No completed runs.\n"
    intro = "# Comparison\n\n" + "".join(f"{line}  \n" for line in header) + "\n"
    extra = to_markdown(running) + "\n" if running is not None else ""
    if missing.rows:
        extra += to_markdown(missing) + "\n"
    if diverged.rows:
        extra += to_markdown(diverged) + "\n"
    write_text_atomic(out_dir / "table.md", intro + markdown + "\n" + extra + to_markdown(skipped))
    paper_md = "# The paper beside ours\n\n" + claim_note(tol_pp) + "\n\n"
    paper_md += "\n".join(to_markdown(t) for t in (claims_table(claims), errors, mirflickr))
    write_text_atomic(out_dir / "paper.md", paper_md)
    datasets = sorted(set(agg.table["data"])) if len(agg.table) else []
    page = Page(
        title="mmvi comparison" + (": " + ", ".join(datasets) if datasets else ""),
        meta=header,
        tables=tables,
        skipped=skipped,
        claims=claims_table(claims),
        errors=errors,
        mirflickr=mirflickr,
        plots=plots,
        links=[
            *("table.md", "table.csv", "runs.csv", "skipped.csv", "paired.md", "paired.csv", "paper.md"),
            *("equal_compute.csv", "frontier.csv"),
        ],
        claim_note=claim_note(tol_pp),
        running=running,
        refresh=max(1, int(round(refresh))) if live else None,
        missing=missing,
        paired=paired_text,
        paired_note=note,
        diverged=diverged,
        diverged_included=include_diverged,
        x=x,
        equal_compute=equal_compute_table(equal, axis),
        equal_compute_note=equal_compute_note(axis),
        frontier=front_table,
        frontier_note=FRONTIER_NOTE,
    )
    page.sections = analysis_page_sections(agg, plots, out_dir, draw=figures)
    write_text_atomic(out_dir / "index.html", render(page))
    return Report(out_dir, collection, agg, plots, markdown)


def skipped_frame(skipped: list[Skipped], base: Path | None = None):
    import pandas as pd

    rows = [{"source": shown_path(s.source, base), "status": s.status, "reason": s.reason} for s in skipped]
    return pd.DataFrame(rows, columns=["source", "status", "reason"])


def summary_lines(collection: Collection, base: Path | None = None, live: bool = False) -> list[str]:
    """Sources (relative to ``base``), run counts and the time the report was written."""
    sources = [shown_path(s, base) for s in collection.sources]
    counts = f"completed runs: {len(collection.runs)}; "
    if live:
        counts += f"running: {len(collection.running)}; "
        counts += f"skipped: {len(collection.skipped) - len(collection.running)}"
    else:
        counts += f"skipped: {len(collection.skipped)}"
    return [
        "sources (relative to this report): " + ", ".join(sources)
        if base
        else "sources: " + ", ".join(sources),
        counts,
        "generated: " + time.strftime("%Y-%m-%d %H:%M:%S"),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mmvi.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", nargs="*", help="multirun (or run) folders, searched recursively")
    parser.add_argument("--out", help="report folder (default: <first folder>/report)")
    parser.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="read runs from the wandb API (online only)"
    )
    parser.add_argument("--group", help="with --wandb: only runs of this wandb group (sweep_name)")
    parser.add_argument("--timeout", type=float, default=15.0, help="with --wandb: network timeout, seconds")
    parser.add_argument("--tol", type=float, default=1.0, help="claim check tolerance, percentage points")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also compare every configuration with those having KEY=VALUE (a choice or a setting, "
        "e.g. objective=nll_pcd); repeatable",
    )
    parser.add_argument(
        "--correction",
        choices=CORRECTIONS,
        default="holm",
        help="multiple-comparison correction over all paired comparisons (default: holm)",
    )
    parser.add_argument(
        "--include-diverged",
        action="store_true",
        help="average runs that recorded a divergence into the tables, curves and claims (marked)",
    )
    parser.add_argument(
        "--x",
        choices=tuple(X_AXES),
        default="epoch",
        help="x axis of the curves: epoch, or cumulative training seconds, matmul FLOPs or examples seen "
        "(also the equal-compute table's axis; FLOPs for epoch)",
    )
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="write the tables and the page without drawing any plot (quick, for a large sweep)",
    )
    parser.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="follow running sweeps: look every SECONDS, rewrite the report when a run changes, "
        "until every run has ended",
    )
    parser.add_argument(
        "--stale",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with --watch: stop when nothing changed for this long (a killed run stays 'running')",
    )
    args = parser.parse_args(argv)
    baselines = []
    for item in args.baseline:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            parser.error(f"--baseline takes KEY=VALUE (e.g. objective=nll_pcd), got {item!r}")
        baselines.append((key.strip(), value.strip()))
    args.baseline = baselines
    if not args.folders and not args.wandb:
        parser.error("give at least one folder, or --wandb entity/project")
    if args.watch is not None:
        if not (0 < args.watch < math.inf and args.stale > 0):
            parser.error(
                f"--watch and --stale take a number of seconds > 0, got {args.watch} and {args.stale}"
            )
        if args.wandb or not args.folders:
            parser.error("--watch follows run folders: give the sweep folder(s), not --wandb")
        missing = [f for f in args.folders if not Path(f).is_dir()]
        if missing:
            parser.error(f"{missing[0]}: no such folder")
    return args


def follow(args: argparse.Namespace) -> int:
    """``--watch``: rewrite the report while the sweep runs; the last report is a plain one."""
    from mmvi.report.watch import watch

    reports: list[Report] = []

    def write(live: bool) -> None:
        refresh = args.watch if live else None
        reports.append(compare(args.folders, args.out, tol_pp=args.tol, refresh=refresh, **options(args)))
        reports[:] = reports[-1:]

    out = Path(args.out) if args.out else Path(args.folders[0]) / "report"
    print(f"watching {', '.join(args.folders)} every {args.watch:g} s; report: {out / 'index.html'}")
    watch(args.folders, write, args.watch, stale=args.stale)
    print_console(reports[-1])
    return 0 if reports[-1].collection.runs else 1


def options(args: argparse.Namespace) -> dict:
    """The paired-comparison options of the command line, as :func:`compare` takes them."""
    return {
        "baselines": args.baseline,
        "correction": args.correction,
        "include_diverged": args.include_diverged,
        "x": args.x,
        "figures": not args.no_figures,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.watch is not None:
        return follow(args)
    try:
        collection = (
            collect_folders(args.folders, include_diverged=args.include_diverged)
            if args.folders
            else Collection(sources=[])
        )
        if args.wandb:
            from mmvi.report.wandb_source import WandbUnavailable, collect_wandb

            try:
                collection.extend(collect_wandb(args.wandb, args.group, args.timeout))
            except WandbUnavailable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        out = args.out or (None if args.folders else Path("reports") / args.wandb.replace("/", "-"))
        report = compare(args.folders, out, collection=collection, tol_pp=args.tol, **options(args))
    except (FileNotFoundError, BaselineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_console(report)
    return 0 if report.collection.runs else 1


def print_console(report: Report) -> None:
    col = report.collection
    print(f"{len(col.runs)} completed run(s) in {', '.join(col.sources)}\n")
    print(report.markdown)
    if col.skipped:
        print(f"skipped {len(col.skipped)} run(s):")
        for s in col.skipped:
            print(f"  {s.source}  [{s.status}]  {s.reason}")
    if not col.runs:
        print("no completed runs: nothing to average", file=sys.stderr)
    print(f"report: {report.index}")


if __name__ == "__main__":
    sys.exit(main())
