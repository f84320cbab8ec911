"""The report's paired comparisons, diverged-run listing and interval-based claim check.

Synthetic run folders with per-item records of known values check the numbers against
:mod:`mmvi.report.stats` and the correction against statsmodels; a real 2 objectives × 2 seeds
mnist5k sweep, with records written by :mod:`record_helpers`, checks the page in headless Chromium.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from statsmodels.stats.multitest import multipletests

from forked_cli import run_module
from mmvi.compare import compare, main
from mmvi.report.paired import RECORDS_FILE
from mmvi.report.stats import TWO_LEVEL, WELCH, paired_difference
from mmvi.run_folder import write_results
from record_helpers import write_records
from test_compare import FLAGS, SWEEP_ARGS, browser, dump_dom, env, images_in_browser

N_ITEMS = 300
CE = "cond_ce/right_given_left"


def fake_run(folder: Path, objective: str, seed: int, metrics: dict, status="completed", **extra) -> None:
    write_results(
        folder,
        status,
        metrics=metrics,
        choices={"data": "mnist5k", "model": "mrbm", "objective": objective, "experiment": None},
        overrides=[f"objective={objective}", f"seed={seed}"],
        config={"seed": seed, "model": {"n_hidden": 32}, "objective": {"_target_": objective}},
        **extra,
    )


def records(folder: Path, values: dict[str, np.ndarray]) -> None:
    frames = [
        pd.DataFrame({"metric": m, "unit": "item", "index": np.arange(len(v)), "value": v})
        for m, v in values.items()
    ]
    pd.concat(frames).to_parquet(folder / RECORDS_FILE, index=False)


def arms(rng, shift: float, k: int, item_effects: np.ndarray, seed_sd=0.3) -> np.ndarray:
    return shift + item_effects + rng.normal(0, seed_sd, (k, 1)) + rng.normal(0, 1.0, (k, len(item_effects)))


@pytest.fixture
def synthetic(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """minvi_mp, nll_pcd, nll_cd × 3 seeds: per-item CE (records) and one-half errors; nll only in results."""
    rng = np.random.default_rng(0)
    item = rng.normal(0, 3, N_ITEMS)
    hard = rng.random(N_ITEMS)
    ce = {
        "minvi_mp": arms(rng, 50.0, 3, item),
        "nll_pcd": arms(rng, 50.4, 3, item),
        "nll_cd": arms(rng, 51.0, 3, item),
    }
    wrong = {"minvi_mp": 0.10, "nll_pcd": 0.30, "nll_cd": 0.32}
    job = 0
    for objective in ce:
        for s in range(3):
            folder = tmp_path / "runs" / str(job)
            left = 100.0 * (hard + rng.normal(0, 0.05, N_ITEMS) < wrong[objective])
            right = 100.0 * (hard + rng.normal(0, 0.05, N_ITEMS) < wrong[objective] + 0.02)
            both = 100.0 * (hard + rng.normal(0, 0.05, N_ITEMS) < 0.05)
            values = {CE: ce[objective][s], "classify/err_left": left, "classify/err_right": right}
            values["classify/err_multimodal"] = both
            metrics = {m: float(v.mean()) for m, v in values.items()}
            metrics["nll"] = 100.0 + rng.normal() + (2.0 if objective == "nll_cd" else 0.0)
            fake_run(folder, objective, s, metrics)
            records(folder, values)
            job += 1
    return tmp_path / "runs", ce


def test_paired_rows_are_the_statistics_of_the_records(synthetic, tmp_path):
    runs, ce = synthetic
    report = compare([runs], tmp_path / "report", baselines=[("objective", "nll_pcd")], n_boot=1000)
    paired = pd.read_csv(report.out_dir / "paired.csv")
    # MinVI × NLL (2 pairs) + nll_cd against the named baseline nll_pcd
    pairs = set(zip(paired["A"], paired["B"]))
    assert pairs == {("minvi_mp", "nll_pcd"), ("minvi_mp", "nll_cd"), ("nll_cd", "nll_pcd")}
    row = paired[(paired["A"] == "minvi_mp") & (paired["B"] == "nll_pcd") & (paired["metric"] == CE)].iloc[0]
    ref = paired_difference(ce["minvi_mp"], ce["nll_pcd"], n_boot=1000)
    for column, value in (("diff", ref.diff), ("ci_low", ref.ci_low), ("ci_high", ref.ci_high), ("p", ref.p)):
        assert row[column] == pytest.approx(value), column
    assert row["effect"] == pytest.approx(ref.effect) and row["effect_kind"] == "d_z (items)"
    assert (row["n_seeds_A"], row["n_seeds_B"], row["n_items"], row["method"]) == (3, 3, N_ITEMS, TWO_LEVEL)
    assert row["diff"] == pytest.approx(ce["minvi_mp"].mean() - ce["nll_pcd"].mean())
    # the per-item one-half error is derived from the single-modality records; nll has no records
    one = paired[paired["metric"] == "classify/err_one_half"]
    assert len(one) == 3 and (one["n_items"] == N_ITEMS).all()
    nll = paired[paired["metric"] == "nll"]
    assert len(nll) == 3 and (nll["method"] == WELCH).all() and (nll["n_items"] == 0).all()
    # Holm over every row of the report
    adjusted = multipletests(paired["p"], method="holm")[1]
    np.testing.assert_allclose(paired["p_corrected"], adjusted)
    assert list(paired["survives"]) == list(adjusted < 0.05)
    big = paired[(paired["metric"] == "classify/err_one_half") & (paired["A"] == "minvi_mp")]
    assert big["survives"].all() and (big["better"] == "A").all()
    md = (report.out_dir / "paired.md").read_text()
    assert "two-level bootstrap" in md and "Holm" in md and f"all {len(paired)} comparisons" in md
    assert (report.out_dir / "plots" / "forest_mnist5k.png").stat().st_size > 5_000
    # the claim check decides by these intervals and prints seeds and items
    paper = (report.out_dir / "paper.md").read_text()
    claims = [line for line in paper.splitlines() if line.startswith("| mnist5k / mrbm |")]
    assert len(claims) == 3 and all("3/3 seeds, 300 items" in line for line in claims)
    assert claims[0].rstrip(" |").endswith("PASS")  # one half: 10 % vs 30 %
    assert claims[2].rstrip(" |").endswith("PASS")  # MP above all


def test_benjamini_hochberg_on_the_command_line(synthetic, tmp_path, capsys):
    assert main([str(synthetic[0]), "--out", str(tmp_path / "bh"), "--correction", "fdr_bh"]) == 0
    paired = pd.read_csv(tmp_path / "bh" / "paired.csv")
    np.testing.assert_allclose(paired["p_corrected"], multipletests(paired["p"], method="fdr_bh")[1])
    assert "Benjamini–Hochberg" in (tmp_path / "bh" / "paired.md").read_text()


def test_a_baseline_that_names_nothing_is_one_line_and_exit_2(synthetic, tmp_path, capsys):
    assert main([str(synthetic[0]), "--out", str(tmp_path / "x"), "--baseline", "objective=nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --baseline objective=nope: no configuration of the report has it"
    )
    with pytest.raises(SystemExit) as exc:
        main([str(synthetic[0]), "--baseline", "objective"])
    assert exc.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_diverged_runs_are_listed_apart_and_never_averaged_silently(synthetic, tmp_path):
    runs, _ = synthetic
    divergence = {
        "epoch": 7,
        "measure": "train/loss",
        "value": 2.0e4,
        "best": 1.0e3,
        "rule": "> 10 x best",
        "action": "warn",
    }
    fake_run(runs / "diverged", "nll_pcd", 3, {"classify/err_left": 60.0, "classify/err_right": 60.0,
             "classify/err_multimodal": 60.0}, divergence=divergence)  # fmt: skip
    stopped = {**divergence, "action": "stop"}
    fake_run(runs / "stopped", "minvi_mp", 4, {}, status="failed", reason="diverged", divergence=stopped)
    report = compare([runs], tmp_path / "out", n_boot=500, figures=False)
    table = report.aggregate.table.set_index("objective")
    assert table.loc["nll_pcd", "n"] == 3 and table.loc["nll_pcd", "diverged"] == 0
    md = (report.out_dir / "table.md").read_text()
    assert "## Diverged runs" in md
    lines = [line for line in md.splitlines() if "train/loss" in line]
    assert len(lines) == 2 and "| 7 |" in lines[0] and lines[0].rstrip(" |").endswith("no")
    assert any(line.rstrip(" |").endswith("no (failed)") for line in lines)
    paired = pd.read_csv(report.out_dir / "paired.csv")
    assert (paired.loc[paired["B"] == "nll_pcd", "n_seeds_B"] == 3).all()
    html = (report.out_dir / "index.html").read_text()
    assert '<h2 id="diverged">Diverged runs</h2>' in html and "left out of every row" in html

    kept = compare([runs], tmp_path / "kept", include_diverged=True, n_boot=500, figures=False)
    table = kept.aggregate.table.set_index("objective")
    assert table.loc["nll_pcd", "n"] == 4 and table.loc["nll_pcd", "diverged"] == 1
    md = (kept.out_dir / "table.md").read_text()
    assert "| 4 (1 diverged) |" in md and lines[0].split("|")[1] in md
    paired = pd.read_csv(kept.out_dir / "paired.csv")
    row = paired[(paired["B"] == "nll_pcd") & (paired["metric"] == "classify/err_left")].iloc[0]
    assert row["diverged_B"] == 1 and "Welch" in row["method"]  # the diverged run has no records
    assert "includes 1 diverged run(s)" in (kept.out_dir / "paired.md").read_text()
    assert "averaged in as asked" in (kept.out_dir / "index.html").read_text()


# ---------------------------------------------------------------- a real sweep, in Chromium
@pytest.fixture(scope="module")
def sweep_with_records(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("paired_sweep")
    sweep_dir = work / "multirun"
    proc = run_module("mmvi.train", [*SWEEP_ARGS, f"hydra.sweep.dir={sweep_dir}"], work, env(), 300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for job in sorted(sweep_dir.glob("[0-9]")):
        res = json.loads((job / "results.json").read_text())
        write_records(job, 100, res["config"]["seed"])
    return sweep_dir


def test_real_sweep_report_shows_paired_table_forest_and_interval_claims(sweep_with_records, tmp_path):
    proc = run_module(
        "mmvi.compare", [str(sweep_with_records), "--out", str(tmp_path / "report")], tmp_path, env(), 180
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "report"
    paired = pd.read_csv(out / "paired.csv")
    assert set(zip(paired["A"], paired["B"])) == {("minvi_mp", "nll_cd")}
    for metric in ("classify/err_left", "classify/err_multimodal", "classify/err_one_half", CE):
        row = paired[paired["metric"] == metric].iloc[0]
        assert (row["n_seeds_A"], row["n_seeds_B"], row["n_items"]) == (2, 2, 100), metric
        assert row["method"] == TWO_LEVEL and row["ci_low"] <= row["diff"] <= row["ci_high"]
    table = pd.read_csv(out / "table.csv").set_index("objective")
    row = paired[paired["metric"] == "classify/err_left"].iloc[0]
    diff = table.loc["minvi_mp", "classify/err_left mean"] - table.loc["nll_cd", "classify/err_left mean"]
    assert row["diff"] == pytest.approx(diff)
    paper = (out / "paper.md").read_text()
    claims = [line for line in paper.splitlines() if line.startswith("| mnist5k / mrbm |")]
    assert len(claims) == 3 and all(line.rstrip(" |").endswith(("PASS", "FAIL")) for line in claims)
    assert all("2/2 seeds, 100 items" in line for line in claims)

    index = out / "index.html"
    dom = dump_dom(index.resolve().as_uri())
    for text in (
        '<h2 id="paired">Paired comparisons</h2>',
        '<table id="paired">',
        "two-level bootstrap",
        "Holm",
    ):
        assert text in dom, text
    paired_rows = dom.split('<table id="paired">', 1)[1].split("</table>", 1)[0].count("<tr>") - 1
    assert paired_rows == len(paired)
    loaded = images_in_browser(index, tmp_path)
    assert "plots/forest_mnist5k.png" in loaded["images"] and loaded["broken"] == []
    shot = tmp_path / "paired.png"
    proc = subprocess.run(
        [browser(), *FLAGS, f"--screenshot={shot}", index.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as img:
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
    with Image.open(out / "plots" / "forest_mnist5k.png") as img:
        assert img.size[0] > 300 and len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20
