"""Compare the runs of one or more sweeps: mean ± std over seeds per configuration, plots, HTML.

    python -m mmvi.compare logs/train/multiruns/mnist-mrbm/<time>            # → <folder>/report
    python -m mmvi.compare sweepA sweepB --out reports/ab
    python -m mmvi.compare --wandb entity/mmvi --group sweep_mnist_objectives --out reports/wb

Reads every ``results.json`` under the folders (recursively). Runs that did not complete
(``failed``; ``running`` = crashed or unfinished; unreadable) are skipped and listed, never
averaged. A configuration = the Hydra choices data, model, objective, experiment + the swept
overrides other than ``seed``. Writes, atomically, into the report folder: ``table.csv``,
``table.md``, ``runs.csv``, ``skipped.csv``, ``paper.md``, ``plots/*.png`` and ``index.html``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mmvi.report.collect import Collection, collect_folders
from mmvi.report.html import Page, render
from mmvi.report.paper import CLAIM, LITERATURE_NOTE, check_claims, claims_table, mirflickr_table
from mmvi.report.plots import Plot, make_plots
from mmvi.report.tables import Aggregate, aggregate, measure_tables, skipped_table, to_markdown
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
        "(lowest one-half error = mean of the single-modality errors). Tolerance: "
        f"max({tol_pp:g} percentage point, 2 standard errors); 'much lower' = lower by more than it, "
        "'about equal with both halves' = MinVI not worse than NLL by more than it. "
        f"MIR-Flickr figures: {LITERATURE_NOTE}."
    )


def compare(
    folders: list[str | Path],
    out: str | Path | None = None,
    collection: Collection | None = None,
    tol_pp: float = 1.0,
) -> Report:
    """Collect (or take) the runs, write every table, plot and ``index.html``; return the report."""
    if collection is None:
        collection = collect_folders(folders)
    if out is None:
        if not folders:
            raise ValueError("no folder to put the report in: pass --out")
        out = Path(folders[0]) / "report"
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    agg = aggregate(collection)
    tables = measure_tables(agg)
    skipped = skipped_table(collection.skipped)
    claims, errors = check_claims(agg, tol_pp)
    mirflickr = mirflickr_table(agg)
    plots = make_plots(agg, out_dir)

    write_csv(agg.table, out_dir / "table.csv")
    write_csv(agg.runs, out_dir / "runs.csv")
    write_csv(skipped_frame(collection), out_dir / "skipped.csv")
    header = summary_lines(collection)
    markdown = "\n".join(to_markdown(t) for t in tables) if tables else "No completed runs.\n"
    intro = "# Comparison\n\n" + "".join(f"{line}  \n" for line in header) + "\n"
    write_text_atomic(out_dir / "table.md", intro + markdown + "\n" + to_markdown(skipped))
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
        links=["table.md", "table.csv", "runs.csv", "skipped.csv", "paper.md"],
        claim_note=claim_note(tol_pp),
    )
    write_text_atomic(out_dir / "index.html", render(page))
    return Report(out_dir, collection, agg, plots, markdown)


def skipped_frame(collection: Collection):
    import pandas as pd

    return pd.DataFrame([vars(s) for s in collection.skipped], columns=["source", "status", "reason"])


def summary_lines(collection: Collection) -> list[str]:
    return [
        "sources: " + ", ".join(collection.sources),
        f"completed runs: {len(collection.runs)}; skipped: {len(collection.skipped)}",
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
    args = parser.parse_args(argv)
    if not args.folders and not args.wandb:
        parser.error("give at least one folder, or --wandb entity/project")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        collection = collect_folders(args.folders) if args.folders else Collection(sources=[])
        if args.wandb:
            from mmvi.report.wandb_source import WandbUnavailable, collect_wandb

            try:
                collection.extend(collect_wandb(args.wandb, args.group, args.timeout))
            except WandbUnavailable as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        out = args.out or (None if args.folders else Path("reports") / args.wandb.replace("/", "-"))
        report = compare(args.folders, out, collection=collection, tol_pp=args.tol)
    except FileNotFoundError as exc:
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
