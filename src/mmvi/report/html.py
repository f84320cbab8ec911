"""One static ``index.html``: inline CSS, no scripts, images by relative path (opens from file://).

A page written while runs are still training (``Page.refresh``) reloads itself every
``refresh`` seconds (``<meta http-equiv="refresh">``) and shows those runs in their own table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from html import escape

from mmvi.report.curves import split_stage
from mmvi.report.plots import Plot
from mmvi.report.tables import TextTable

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em 2em;
       color: #222; max-width: 1400px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
h3 { margin-bottom: 0.3em; }
.meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f3f7; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.PASS { background: #d8f5d8 !important; font-weight: bold; }
.FAIL { background: #f8d7d7 !important; font-weight: bold; }
.nodata { background: #eee !important; color: #666; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #ddd; padding: 4px; background: #fff; }
figure img { max-width: 560px; display: block; }
figcaption { font-size: 0.8em; color: #555; }
.note { font-size: 0.85em; color: #555; }
.live { background: #fff6d6; border: 1px solid #e6c65c; padding: 4px 10px; display: inline-block; }
figure.curve img { width: 380px; height: auto; }
"""


@dataclass
class Page:
    """What the report page shows."""

    title: str
    meta: list[str]
    tables: list[TextTable]
    skipped: TextTable
    claims: TextTable
    errors: TextTable
    mirflickr: TextTable
    plots: list[Plot] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    claim_note: str = ""
    running: TextTable | None = None
    refresh: int | None = None
    missing: TextTable | None = None
    paired: TextTable | None = None
    paired_note: str = ""
    diverged: TextTable | None = None
    diverged_included: bool = False
    x: str = "epoch"
    equal_compute: TextTable | None = None
    equal_compute_note: str = ""
    frontier: TextTable | None = None
    frontier_note: str = ""
    #: (heading, note, table or None, plots) of the analyses (:mod:`mmvi.report.analyses`)
    sections: list[tuple[str, str, TextTable | None, list[Plot]]] = field(default_factory=list)


def analysis_sections(page: Page) -> str:
    """The analyses' sections: a heading, a note, a table and a row of panels each."""
    out = ""
    for heading, note, table, plots in page.sections:
        out += f'<h2 id="{escape(heading.lower().replace(" ", "-"))}">{escape(heading)}</h2>\n'
        out += f'<p class="note">{escape(note)}</p>\n'
        out += html_table(table, level=3) if table is not None else ""
        out += f'<div class="plots">{"".join(map(figure, plots))}</div>\n' if plots else ""
    return out


def looks_numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or (text[0] in "-−≈" and text[1:2].isdigit()))


def _cell(text: str, header: str) -> str:
    classes = []
    if header == "verdict":
        classes.append({"PASS": "PASS", "FAIL": "FAIL"}.get(text, "nodata"))
    elif looks_numeric(text):
        classes.append("num")
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{escape(text)}</td>"


def html_table(table: TextTable, table_id: str = "", level: int = 3) -> str:
    """A ``<table>`` (with its title as a heading); ``none`` when it has no rows."""
    head = f"<h{level}>{escape(table.title)}</h{level}>\n" if table.title else ""
    if not table.rows:
        return head + '<p class="note">none</p>\n'
    ident = f' id="{table_id}"' if table_id else ""
    header = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    rows = "\n".join(
        "<tr>" + "".join(_cell(c, h) for c, h in zip(row, table.headers)) + "</tr>" for row in table.rows
    )
    return f"{head}<table{ident}>\n<thead><tr>{header}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"


def figure(plot: Plot) -> str:
    if plot.kind == "frontier":
        caption = f"{plot.axis}: joint NLL against cross-modal prediction, non-dominated runs ringed"
    elif plot.kind == "forest":
        caption = f"{plot.measure}: paired differences A − B with their intervals"
    else:
        caption = plot.measure if plot.kind in ("bar", "curve") else f"{plot.measure} vs {plot.axis}"
    kind = f' class="{plot.kind}"'
    return (
        f'<figure{kind}><img src="{escape(plot.path)}" alt="{escape(caption)}" loading="eager">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def curve_sections(plots: list[Plot]) -> str:
    """Curve panels, under one sub-heading per deep-pipeline stage when there are stages."""
    groups: dict[str, list[Plot]] = {}
    for plot in plots:
        groups.setdefault(split_stage(plot.measure)[0], []).append(plot)
    if list(groups) in ([], [""]):
        return f'<div class="plots">{"".join(map(figure, plots))}</div>' if plots else ""
    return "".join(
        f"<h3>{escape(f'Stage {stage}' if stage else 'Training runs')}</h3>\n"
        f'<div class="plots">{"".join(map(figure, group))}</div>\n'
        for stage, group in groups.items()
    )


def render(page: Page) -> str:
    """The whole HTML document."""
    meta = "".join(f"<div>{escape(m)}</div>" for m in page.meta)
    links = " · ".join(f'<a href="{escape(x)}">{escape(x)}</a>' for x in page.links)
    results = "".join(
        html_table(t, table_id="results" if i == 0 else f"results-{i}") for i, t in enumerate(page.tables)
    )
    bars = "".join(figure(p) for p in page.plots if p.kind == "bar")
    lines = "".join(figure(p) for p in page.plots if p.kind == "line")
    curves = curve_sections([p for p in page.plots if p.kind == "curve"])
    line_section = f'<h3>Along swept axes</h3>\n<div class="plots">{lines}</div>\n' if lines else ""
    refresh = f'<meta http-equiv="refresh" content="{int(page.refresh)}">\n' if page.refresh else ""
    live = (
        f'<p class="live" id="live">Runs are still training: this page is rewritten as they progress and '
        f"reloads itself every {int(page.refresh)} s.</p>\n"
        if page.refresh
        else ""
    )
    running = ""
    if page.running is not None:
        running = (
            '<h2>Running runs</h2>\n<p class="note">Last epoch and its measures of runs still training; '
            "never averaged with completed runs.</p>\n"
            + html_table(replace(page.running, title=""), "running")
        )
    missing = ""
    if page.missing is not None and page.missing.rows:
        missing = (
            '<h2>Missing measures</h2>\n<p class="note">Measures completed runs could not compute, with the '
            "reason each run recorded; their cells above read <em>missing</em>.</p>\n"
            + html_table(replace(page.missing, title=""), "missing")
        )
    paired = ""
    if page.paired is not None:
        forests = "".join(figure(p) for p in page.plots if p.kind == "forest")
        paired = (
            '<h2 id="paired">Paired comparisons</h2>\n'
            f'<p class="note">{escape(page.paired_note)}</p>\n'
            + html_table(replace(page.paired, title=""), "paired")
            + (f'<div class="plots">{forests}</div>\n' if forests else "")
        )
    diverged = ""
    if page.diverged is not None and page.diverged.rows:
        how = (
            "averaged in as asked (--include-diverged): their rows say how many of their runs diverged"
            if page.diverged_included
            else "left out of every row, curve mean, paired comparison and claim (--include-diverged keeps them, marked)"
        )
        diverged = (
            '<h2 id="diverged">Diverged runs</h2>\n'
            f'<p class="note">Runs whose training ran away (recorded in their results.json); {escape(how)}.</p>\n'
            + html_table(replace(page.diverged, title=""), "diverged")
        )
    equal = ""
    if page.equal_compute is not None:
        equal = (
            '<h2 id="equal-compute">Equal compute</h2>\n'
            f'<p class="note">{escape(page.equal_compute_note)}</p>\n'
            + (
                html_table(replace(page.equal_compute, title=""), "equal-compute")
                if page.equal_compute.rows
                else '<p class="note">no run logged its training cost (train/seconds, train/flops)</p>\n'
            )
        )
    frontier = ""
    if page.frontier is not None:
        figures = "".join(figure(p) for p in page.plots if p.kind == "frontier")
        frontier = (
            '<h2 id="frontier">Trade-off frontier</h2>\n'
            f'<p class="note">{escape(page.frontier_note)}</p>\n'
            + (
                f'<div class="plots">{figures}</div>\n' + html_table(page.frontier, "frontier")
                if figures
                else '<p class="note">no run has the joint NLL (nll): evaluate with '
                "evaluation.likelihood.enabled=true</p>\n"
            )
        )
    x_note = (
        ""
        if page.x == "epoch"
        else f" Drawn against {escape(page.x)} (cumulative, mean over seeds per epoch)."
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{refresh}<title>{escape(page.title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{escape(page.title)}</h1>
{live}<div class="meta">{meta}</div>
<p class="note">Files: {links}</p>
<h2>Results: mean ± std over seeds</h2>
{results or '<p class="note">no completed runs</p>'}
{paired}{analysis_sections(page)}{diverged}{running}
{missing}<h2>Skipped runs</h2>
<p class="note">Runs that did not complete (failed, crashed or still running, unreadable) are listed here and
never enter the averages.</p>
{html_table(replace(page.skipped, title=""), "skipped")}
<h2>The paper beside ours</h2>
<p class="note">{escape(page.claim_note)}</p>
{html_table(page.claims, "claims")}
{html_table(page.errors, "errors")}
{html_table(page.mirflickr, "mirflickr")}
<h2 id="curves">Curves</h2>
<p class="note">Per-epoch measures: one line per configuration, the mean over seeds with a ± std band; × marks a
run that stopped before the others; runs still training are dotted, one line each. Deep-pipeline runs put their
stages one after the other on the pipeline-epoch axis (pathway layers, top layer, fine-tuning).{x_note}</p>
{curves or '<p class="note">no per-epoch logs</p>'}
{equal}{frontier}
<h2>Plots</h2>
<h3>By configuration</h3>
<div class="plots">{bars or '<p class="note">none</p>'}</div>
{line_section}
</body>
</html>
"""
