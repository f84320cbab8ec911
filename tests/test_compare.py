"""The comparison report on one real 2 objectives × 2 seeds multirun (plus a failed and a crashed run).

Checks the tables, plots, learning curves, the skipped-run listing, the claim check, the sweep
presets, that the static ``index.html`` renders in headless Chromium (screenshot + DOM, every image
loads) and that ``--watch`` follows a running sweep (running table and reload while it runs,
neither once it has ended).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from forked_cli import run_module
from mmvi.compare import compare, main
from mmvi.report.curves import read_curves
from mmvi.run_folder import read_results, write_results

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
OBJECTIVES = ("minvi_mp", "nll_cd")
SWEEP_ARGS = [
    "-m",
    f"objective={','.join(OBJECTIVES)}",
    "seed=0,1",
    "data=mnist5k",
    "data.max_examples={train:300,val:100,test:100}",
    "model.n_hidden=32",
    "trainer.max_epochs=2",
    "evaluation.mf_steps=20",
    "evaluation.n_generation=0",
    "logger=csv",
    "callbacks=none",
]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "WANDB_MODE": "offline"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real multirun (4 jobs) + one failed and one crashed ('running') run folder."""
    work = tmp_path_factory.mktemp("sweep")
    sweep_dir = work / "multirun"
    proc = run_module("mmvi.train", [*SWEEP_ARGS, f"hydra.sweep.dir={sweep_dir}"], work, env(), 300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    write_results(sweep_dir / "failed_job", "failed", reason="FloatingPointError: loss is nan", choices={})
    write_results(sweep_dir / "crashed_job", "running", choices={"objective": "minvi_mp"})
    return sweep_dir


@pytest.fixture(scope="module")
def report(sweep) -> tuple[Path, str]:
    """``python -m mmvi.compare <sweep>`` as a user runs it: (report folder, console output)."""
    proc = run_module("mmvi.compare", [str(sweep)], Path.cwd(), env(), 120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sweep / "report", proc.stdout


def measures_of(table: pd.DataFrame) -> list[str]:
    return [c.removesuffix(" mean") for c in table.columns if c.endswith(" mean")]


def test_table_has_one_row_per_objective_with_two_seeds(report):
    out, _ = report
    table = pd.read_csv(out / "table.csv", keep_default_na=False, na_values=[""])
    assert sorted(table["objective"]) == sorted(OBJECTIVES)
    assert list(table["n"]) == [2, 2]
    assert set(table["seeds"]) == {"0 1"}
    measures = measures_of(table)
    for key in (
        "classify/err_multimodal",
        "classify/err_left",
        "classify/err_right",
        "cond_ce/right_given_left",
    ):
        assert key in measures, key
    for m in measures:
        assert (table[f"{m} n"] == 2).all(), m
        assert np.isfinite(table[f"{m} mean"]).all() and np.isfinite(table[f"{m} std"]).all(), m
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and sorted(runs["seed"]) == [0, 0, 1, 1]
    # mean and std (ddof = 1) agree with the runs
    for objective, group in runs.groupby("objective"):
        row = table[table["objective"] == objective].iloc[0]
        values = group["classify/err_left"].to_numpy()
        assert math.isclose(row["classify/err_left mean"], values.mean(), rel_tol=1e-9)
        assert math.isclose(row["classify/err_left std"], values.std(ddof=1), rel_tol=1e-9, abs_tol=1e-12)


def test_incomplete_runs_are_skipped_and_listed(report):
    out, console = report
    skipped = pd.read_csv(out / "skipped.csv")
    by_status = dict(zip(skipped["status"], skipped["reason"]))
    assert set(by_status) == {"failed", "running"}
    assert "loss is nan" in by_status["failed"] and "incomplete" in by_status["running"]
    for name in ("failed_job", "crashed_job"):
        assert name in console
        assert name in (out / "table.md").read_text()
        assert not pd.read_csv(out / "runs.csv")["run_dir"].str.contains(name).any()


def test_a_copied_run_is_a_duplicate_counted_once(sweep, tmp_path):
    from mmvi.report.collect import collect_folders

    original = collect_folders([sweep])
    copy = tmp_path / "copy" / "0"
    copy.mkdir(parents=True)
    shutil.copy(sweep / "0" / "results.json", copy / "results.json")
    both = collect_folders([sweep, tmp_path / "copy"])
    assert len(both.runs) == len(original.runs) == 4
    dup = [s for s in both.skipped if s.status == "duplicate"]
    assert len(dup) == 1 and dup[0].source == str(copy / "results.json")
    assert f"the same settings, data and seed as {sweep / '0' / 'results.json'}" in dup[0].reason


MALFORMED = {
    "metrics_list": {"metrics": [1.0, 2.0]},
    "choices_text": {"choices": "minvi_mp"},
    "config_list": {"config": ["seed", 0]},
    "fingerprint_text": {"fingerprint": "e88900d1353181ac"},
    "missing_list": {"missing_metrics": ["classify/*"]},
    "overrides_text": {"overrides": "objective=minvi_mp"},
    "seed_text": {"config.seed": "zero"},
    "status_number": {"status": 1},
}


def test_malformed_records_are_skipped_with_a_reason_and_an_older_record_joins_its_runs(sweep, tmp_path):
    """Each record with a field of the wrong type is one skipped run with its reason, not an
    abort; a record without ``fingerprint`` and ``choices`` (as older releases wrote) of a third
    seed takes its settings and choices from its config and is a third run of its configuration."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report", "wandb"))
    completed = sorted(
        p for p in copy.glob("*/results.json") if read_results(p.parent)["status"] == "completed"
    )
    base = json.loads(completed[0].read_text())
    for name, change in MALFORMED.items():
        res = json.loads(json.dumps(base))
        for key, value in change.items():
            node, _, leaf = key.partition(".")
            if leaf:
                res[node][leaf] = value
            else:
                res[node] = value
        (copy / name).mkdir()
        (copy / name / "results.json").write_text(json.dumps(res))
    older = json.loads(json.dumps(base))
    del older["fingerprint"], older["choices"]
    older["config"]["seed"] = 7
    (copy / "older").mkdir()
    (copy / "older" / "results.json").write_text(json.dumps(older))

    report = compare([copy], tmp_path / "report", figures=False)
    skipped = pd.read_csv(report.out_dir / "skipped.csv")
    malformed = skipped[skipped["status"] == "malformed"]
    assert sorted(Path(s).parent.name for s in malformed["source"]) == sorted(MALFORMED)
    reasons = dict(zip((Path(s).parent.name for s in malformed["source"]), malformed["reason"]))
    assert reasons["metrics_list"] == "malformed results.json: metrics is list [1.0, 2.0], expected an object"
    assert reasons["seed_text"].startswith("malformed results.json: config.seed is str")
    table = report.aggregate.table
    assert sorted(table["objective"]) == sorted(OBJECTIVES)
    objective = base["choices"]["objective"]
    counts = dict(zip(table["objective"], table["n"]))
    assert counts == {o: 3 if o == objective else 2 for o in OBJECTIVES}
    row = table[table["objective"] == objective].iloc[0]
    assert row["seeds"] == "0 1 7"


def test_a_record_without_choices_is_matched_to_the_config_options_it_holds(sweep):
    from mmvi.report.collect import choices_from_config

    for path in sweep.glob("*/results.json"):
        res = read_results(path.parent)
        if res["status"] != "completed":
            continue
        derived = choices_from_config(res["config"])
        assert derived == {k: res["choices"][k] for k in ("data", "model", "objective")}


def test_measures_a_run_could_not_compute_are_shown_missing(sweep, tmp_path):
    """Both seeds of one objective recorded their probe as missing: its cells read "missing" and
    the reasons are listed; the other objective's numbers are unchanged."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report", "wandb"))
    for path in copy.glob("*/results.json"):
        res = json.loads(path.read_text())
        if res.get("choices", {}).get("objective") == "nll_cd" and res["status"] == "completed":
            res["metrics"] = {k: v for k, v in res["metrics"].items() if not k.startswith("classify/")}
            res["missing_metrics"] = {"classify/*": "ValueError: the probe could not be fitted"}
            path.write_text(json.dumps(res))
    report = compare([copy], tmp_path / "report", figures=False)
    md = (report.out_dir / "table.md").read_text()
    assert "## Missing measures" in md and md.count("ValueError: the probe could not be fitted") == 2
    row = next(
        line for line in md.splitlines() if line.startswith("| ") and "nll_cd" in line and "error" not in line
    )
    assert row.count("| missing") >= 3  # both halves, left only, right only
    html = (report.out_dir / "index.html").read_text()
    assert "<h2>Missing measures</h2>" in html


def test_markdown_tables_and_paper_figures(report):
    out, _ = report
    md = (out / "table.md").read_text()
    assert (
        "| objective |" in md
        and "error, left only (%)" in md
        and "CE(right | left)" in md.replace("\\|", "|")
    )
    assert md.count("minvi_mp") >= 1 and "±" in md
    paper = (out / "paper.md").read_text()
    for number in ("0.609", "0.531", "0.686", "≈0.6", "not run", "recalled from the literature"):
        assert number in paper, number
    claims = [line for line in paper.splitlines() if line.startswith("| mnist5k / mrbm |")]
    assert len(claims) == 3
    assert all(line.rstrip(" |").endswith(("PASS", "FAIL")) for line in claims), claims


def test_every_measure_has_a_plot(report):
    out, _ = report
    table = pd.read_csv(out / "table.csv")
    plots = sorted((out / "plots").glob("bar_*.png"))
    measures = [m for m in measures_of(table) if not m.endswith("_stderr")]
    assert len(plots) == len(measures)
    for path in plots:
        assert path.stat().st_size > 5_000, path
    assert not list((out / "plots").glob("line_*.png"))  # no numeric axis swept here


def test_every_logged_per_epoch_measure_has_a_curve(report, sweep):
    out, _ = report
    logged = set()
    for run in sorted(sweep.glob("[0-9]")):
        log = pd.read_csv(run / "csv" / "metrics.csv")
        per_epoch = log[log["epoch"].notna()].drop(columns=["epoch", "step"]).dropna(axis=1, how="all")
        logged |= set(per_epoch.columns)
        curves = read_curves(run)
        assert list(curves.frame.index) == [0, 1] and curves.last_epoch == 1
        # the curve keeps each epoch's logged value
        last = per_epoch.groupby(log.loc[per_epoch.index, "epoch"].astype(int))["val/cond_ce/sum"].last()
        np.testing.assert_allclose(curves.frame["val/cond_ce/sum"], last)
    assert {"val/cond_ce/sum", "val/cond_ce/left_given_rest", "train/loss", "train/lr"} <= logged
    files = sorted(p.name for p in (out / "plots" / "curves").glob("curve_*.png"))
    assert files == sorted(f"curve_{m.replace('/', '-')}.png" for m in logged)
    assert all((out / "plots" / "curves" / f).stat().st_size > 5_000 for f in files)


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "no headless browser found (looked for " + ", ".join(BROWSERS) + "); install one with "
        "`sudo apt-get install -y chromium` or `bash scripts/ensure_chromium.sh`"
    )


FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000"]
# a page that loads the report in a frame and lists its images that did not load
HARNESS = """<!DOCTYPE html><html><body><iframe id="f" src="{url}" width="1280" height="2000"></iframe>
<pre id="out">pending</pre><script>
document.getElementById('f').addEventListener('load', function () {{
  var imgs = Array.from(this.contentDocument.images);
  var bad = imgs.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }});
  document.getElementById('out').textContent = JSON.stringify(
    {{images: imgs.map(function (i) {{ return i.getAttribute('src'); }}),
      broken: bad.map(function (i) {{ return i.getAttribute('src'); }})}});
}});
</script></body></html>"""


def dump_dom(url: str) -> str:
    dom = subprocess.run([browser(), *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout.replace("&amp;", "&")


def images_in_browser(index: Path, tmp_path: Path) -> dict[str, list[str]]:
    """The report's images as Chromium loads them: {"images": [...], "broken": [...]}."""
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.format(url=index.resolve().as_uri()))
    flags = [*FLAGS, "--allow-file-access-from-files", "--virtual-time-budget=20000", "--dump-dom"]
    proc = subprocess.run([browser(), *flags, harness.as_uri()], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]
    return json.loads(text.replace("&quot;", '"').replace("&amp;", "&"))


def test_index_html_renders_in_headless_chromium(report, sweep, tmp_path):
    out, _ = report
    index = out / "index.html"
    html = index.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    # no path of this machine: runs and sources are shown relative to the report
    assert str(sweep.resolve()) not in html and str(sweep) not in html and "../failed_job" in html
    assert 'http-equiv="refresh"' not in html and 'id="running"' not in html
    dom = dump_dom(index.resolve().as_uri())
    for text in ('<table id="results">', "error, left only (%)", "minvi_mp", "nll_cd", "loss is nan", "PASS"):
        assert text in dom, text
    assert '<h2 id="curves">Curves</h2>' in dom
    loaded = images_in_browser(index, tmp_path)
    curves = [src for src in loaded["images"] if src.startswith("plots/curves/")]
    assert len(curves) == len(list((out / "plots" / "curves").glob("*.png"))) >= 10
    assert loaded["broken"] == [] and len(loaded["images"]) == len(curves) + len(
        list(out.glob("plots/*.png"))
    )
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [browser(), *FLAGS, f"--screenshot={shot}", index.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    with Image.open(shot) as img:
        assert img.size == (1280, 2000)
        # the page is not blank: many distinct colours (text, table shading, plots)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


def test_watch_follows_a_running_sweep(sweep, tmp_path):
    """``--watch`` on a sweep whose last job is in its first epoch, until that job completes."""
    live = tmp_path / "live"
    for job in ("0", "1", "2", "3"):
        shutil.copytree(sweep / job, live / job)
    shutil.copy(sweep / "multirun.yaml", live / "multirun.yaml")
    finished = read_results(live / "3")
    log_file = live / "3" / "csv" / "metrics.csv"
    full_log = log_file.read_text()
    log = pd.read_csv(log_file)
    log[log["epoch"] == 0].to_csv(log_file, index=False)
    running = {k: v for k, v in finished.items() if k not in ("status", "metrics", "duration_s", "artefacts")}
    write_results(live / "3", "running", **running)
    index = live / "report" / "index.html"

    result: dict[str, int] = {}
    thread = threading.Thread(
        target=lambda: result.update(rc=main(["--watch", "0.2", str(live)])), daemon=True
    )
    thread.start()
    deadline = time.time() + 90
    while not (index.is_file() and 'http-equiv="refresh"' in index.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    page = index.read_text()
    assert '<meta http-equiv="refresh" content="1">' in page and thread.is_alive()
    dom = dump_dom(index.resolve().as_uri())
    assert '<table id="running">' in dom and 'http-equiv="refresh"' in dom
    running_rows = dom.split('<table id="running">', 1)[1].split("</table>", 1)[0].split("<tr>")[2:]
    assert len(running_rows) == 1 and "nll_cd" in running_rows[0] and "../3" in running_rows[0]
    table = pd.read_csv(live / "report" / "table.csv")
    assert dict(zip(table["objective"], table["n"])) == {"minvi_mp": 2, "nll_cd": 1}  # never averaged in
    assert "3/results.json" not in pd.read_csv(live / "report" / "skipped.csv")["source"].str.cat()

    log_file.write_text(full_log)
    write_results(live / "3", **finished)
    thread.join(timeout=90)
    assert not thread.is_alive() and result["rc"] == 0
    page = index.read_text()
    assert "refresh" not in page and 'id="running"' not in page
    dom = dump_dom(index.resolve().as_uri())
    assert "Running runs" not in dom and '<table id="results">' in dom
    table = pd.read_csv(live / "report" / "table.csv")
    assert dict(zip(table["objective"], table["n"])) == {"minvi_mp": 2, "nll_cd": 2}


def test_notebook_runs_on_the_sweep(sweep, tmp_path):
    nb = REPO / "notebooks" / "compare.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", str(nb), "-q", "-p", "no:cacheprovider"],
        env={**env(), "MMVI_COMPARE_DIR": str(sweep), "MMVI_COMPARE_OUT": str(tmp_path / "nb_report")},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "nb_report" / "index.html").is_file()


def fake_run(folder: Path, objective: str, seed: int, overrides: list[str], metrics: dict) -> None:
    """A completed run's results.json whose recorded config holds the objective's settings."""
    settings = {k.removeprefix("objective."): float(v) for k, v in (o.split("=") for o in overrides)}
    write_results(
        folder,
        "completed",
        metrics=metrics,
        choices={"data": "mnist5k", "model": "mrbm", "objective": objective, "experiment": None},
        overrides=[f"objective={objective}", f"seed={seed}", "model.n_hidden=32", *overrides],
        config={
            "seed": seed,
            "model": {"n_hidden": 32},
            "objective": {"_target_": objective, **settings},
            "paths": {"output_dir": str(folder)},
        },
    )


def test_swept_numeric_axis_gives_line_plots_and_claims(tmp_path):
    """A synthetic alpha sweep: one row per alpha, lines along objective.alpha, std blank for n = 1."""
    rng = np.random.default_rng(0)
    job = 0
    for objective, single, seeds in (("nll_pcd", 20.0, 2), ("minvi_mp", 9.0, 2)):
        for seed in range(seeds):
            errs = {"classify/err_left": single + rng.random(), "classify/err_right": single + rng.random()}
            fake_run(
                tmp_path / str(job),
                objective,
                seed,
                [],
                {"classify/err_multimodal": 5 + 0.1 * rng.random(), **errs},
            )
            job += 1
    for alpha in (0, 0.5, 1):
        errs = {"classify/err_left": 20 - 10 * alpha, "classify/err_right": 21 - 10 * alpha}
        fake_run(
            tmp_path / str(job),
            "hybrid",
            0,
            [f"objective.alpha={alpha}"],
            {"classify/err_multimodal": 5.0, **errs},
        )
        job += 1
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    rep = compare([tmp_path], out=tmp_path / "out")
    table = rep.aggregate.table
    assert len(table) == 5 and "objective.alpha" in table
    hybrid = table[table["objective"] == "hybrid"]
    assert (
        list(hybrid["objective.alpha"]) == ["0", "0.5", "1"] and hybrid["classify/err_left std"].isna().all()
    )
    assert [s.status for s in rep.collection.skipped] == ["unreadable"]
    lines = sorted(p.path for p in rep.plots if p.kind == "line")
    assert "plots/line_objective.alpha__classify-err_left.png" in lines
    paper = (tmp_path / "out" / "paper.md").read_text()
    verdicts = [
        line.rsplit("|", 2)[-2].strip() for line in paper.splitlines() if line.startswith("| mnist5k")
    ]
    assert verdicts[:3] == ["PASS", "PASS", "PASS"]


def test_wandb_source_fails_fast_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert main(["--wandb", "someone/mmvi", "--timeout", "2"]) == 2
    assert "not logged in" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["--wandb", "someone/mmvi"]) == 2
    assert "offline" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("preset", "params"),
    [
        (
            "experiment=sweep_mnist_objectives",
            {"objective": "nll_pcd,minvi_cdpl,minvi_mp,hybrid", "seed": "0,1,2"},
        ),
        ("experiment=sweep_hybrid_alpha", {"objective.alpha": "0,0.25,0.5,0.75,1", "seed": "0,1,2"}),
        (
            "experiment=sweep_mp_mask",
            {"objective.mask_rate": "0.1,0.25,0.5,0.75", "objective.mf_steps": "1,5,10"},
        ),
    ],
)
def test_sweep_presets_compose_as_multiruns(preset, params):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[preset, "trainer.max_epochs=1"], return_hydra_config=True)
    assert str(cfg.hydra.mode).endswith("MULTIRUN")
    for key, value in params.items():
        assert str(cfg.hydra.sweeper.params[key]) == value
    assert cfg.data._target_.endswith("MNISTHalves") and cfg.trainer.max_epochs == 1
    assert cfg.sweep_name == preset.split("=")[1]


def test_optuna_search_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=mnist_optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert set(sweeper.params) == {"optim.lr", "objective.sparsity_weight", "objective.mask_rate"}
    assert cfg.objective._target_.endswith("MultiPrediction") and cfg.optimized_metric == "classify/err_left"


def test_results_json_written_by_train_is_what_compare_reads(sweep):
    res = json.loads(next(sweep.glob("0/results.json")).read_text())
    assert res["status"] == "completed" and "objective=minvi_mp" in res["overrides"]


def test_wandb_runs_convert_like_run_folders():
    from types import SimpleNamespace

    from mmvi.report.collect import Run, Skipped
    from mmvi.report.wandb_source import run_from_wandb

    config = {
        "seed": 1,
        "choices": {"data": "mnist", "model": "mrbm", "objective": "hybrid", "experiment": None},
        "objective": {"alpha": 0.25, "minvi": {"mask_rate": 0.1}},
        "paths": {"output_dir": "/somewhere"},
    }
    summary = {"classify/err_left": 12.5, "train/loss": 3.0, "_step": 7, "epoch": 4, "nll": float("nan")}
    history = pd.DataFrame(
        {
            "epoch": [0, 0, 1, np.nan],
            "_step": [0, 1, 2, 3],
            "trainer/global_step": [4, 4, 9, 9],
            "train/loss": [np.nan, 3.5, 3.0, np.nan],
            "val/cond_ce/sum": [9.0, np.nan, 8.0, np.nan],
            "classify/err_left": [np.nan, np.nan, np.nan, 12.5],
        }
    )
    wandb_run = SimpleNamespace(
        path=["e", "p", "id1"],
        state="finished",
        config=config,
        summary=summary,
        history=lambda samples, pandas: history,
    )
    run = run_from_wandb(wandb_run, history=True)
    assert isinstance(run, Run) and run.seed == 1 and run.choices["objective"] == "hybrid"
    assert run.metrics == {"classify/err_left": 12.5}
    assert run.settings == {"objective.alpha": "0.25", "objective.minvi.mask_rate": "0.1"}
    assert run.curves.frame.to_dict("list") == {"train/loss": [3.5, 3.0], "val/cond_ce/sum": [9.0, 8.0]}
    crashed = run_from_wandb(
        SimpleNamespace(path=["e", "p", "id2"], state="crashed", config=config, summary={})
    )
    assert isinstance(crashed, Skipped) and crashed.status == "crashed"


def test_folds_and_seeds_are_repeats_not_configurations():
    from mmvi.report.collect import parse_overrides

    assert parse_overrides(["objective=minvi_mp", "seed=1", "data.fold=3", "objective.alpha=0.5"]) == {
        "objective.alpha": "0.5"
    }


def test_an_evaluation_sits_beside_the_run_it_evaluated(tmp_path):
    """``mmvi.eval`` with converged inference on a training run: a row of its own, under the training
    run's objective, with the evaluation setting that differs as a column."""
    import mmvi
    from helpers import SMALL_RUN

    small = ["data=mnist5k", *SMALL_RUN]
    trained = mmvi.run([*small, "objective=nll_cd"], run_dir=tmp_path / "runs" / "nll")
    ckpt = Path(trained["run_dir"]) / "checkpoints" / "last.ckpt"
    mmvi.run(
        [f"ckpt_path={ckpt}", "evaluation.inference=converged", "evaluation.n_generation=0"],
        task="eval",
        run_dir=tmp_path / "runs" / "nll_converged",
    )
    report = compare([tmp_path / "runs"], tmp_path / "report", figures=False)
    table = report.aggregate.table
    assert list(table["objective"]) == ["nll_cd", "nll_cd"] and list(table["n"]) == [1, 1]
    assert sorted(table["evaluation.inference"]) == ["converged", "native"]
    assert sorted(table["evaluation.by"]) == ["mmvi.eval", "–"]
    steps = dict(zip(table["evaluation.inference"], table["eval/mf_steps mean"]))
    assert (
        steps == {"native": 10.0, "converged": pytest.approx(steps["converged"])} and steps["converged"] > 10
    )
