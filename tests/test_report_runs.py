"""The comparison report's reading of run folders: grouping by recorded settings, deep-pipeline curves,
the running-run table and when a watched sweep has ended (hand-written run folders, no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmvi.fingerprint import fingerprint
from mmvi.report.collect import collect_folders, run_settings
from mmvi.report.curves import read_curves
from mmvi.report.plots import stopped_early
from mmvi.report.tables import aggregate, running_table
from mmvi.report.watch import SweepState, expected_jobs, has_ended, scan
from mmvi.run_folder import write_results

CHOICES = {"data": "mnist5k", "model": "mrbm", "objective": "minvi_mp", "experiment": None}
# the command line every run below claims to have run (the labels)
OVERRIDES = ["objective=minvi_mp", "seed=0", "model.n_hidden=32"]


def config(
    seed: int, mask_rate: float = 0.5, devices: int = 1, fold: int | None = None, out: str = "x"
) -> dict:
    return {
        "seed": seed,
        "data": {"_target_": "mmvi.data.MNISTHalves", "batch_size": 100, "fold": fold, "data_dir": f"/{out}"},
        "model": {"_target_": "mmvi.models.MultimodalRBM", "n_hidden": 32},
        "objective": {"_target_": "mmvi.objectives.MultiPrediction", "mask_rate": mask_rate, "mf_steps": 10},
        "trainer": {"max_epochs": 2, "devices": devices, "accelerator": "cpu"},
        "paths": {"output_dir": f"/{out}/run"},
        "logger": {"csv": {"save_dir": f"/{out}"}},
    }


def completed(
    folder: Path, cfg: dict, err: float, recorded: dict | None = None, with_fingerprint=True
) -> None:
    fields = {"fingerprint": fingerprint(recorded or cfg)} if with_fingerprint else {}
    write_results(
        folder,
        "completed",
        metrics={"classify/err_left": err},
        choices=CHOICES,
        overrides=OVERRIDES,
        config=cfg,
        **fields,
    )


def test_runs_are_grouped_by_what_they_ran_not_by_their_labels(tmp_path):
    completed(tmp_path / "a0", config(0), 10.0)
    completed(tmp_path / "a1", config(1, devices=2, out="elsewhere"), 12.0)  # resources and paths only
    completed(tmp_path / "a2", config(2), 14.0, with_fingerprint=False)  # older record: its config
    completed(tmp_path / "a3", config(3, fold=2), 16.0)  # another fold is a repeat
    # same labels and command line, but it ran another mask rate: its own row
    completed(tmp_path / "b0", config(0, mask_rate=0.25), 30.0)
    # a record whose fingerprint says what ran wins over its (mislabelled) config
    completed(tmp_path / "b1", config(1), 40.0, recorded=config(1, mask_rate=0.25))
    agg = aggregate(collect_folders([tmp_path]))
    table = agg.table.set_index("objective.mask_rate")
    assert agg.swept == ["objective.mask_rate"] and len(table) == 2
    assert "trainer.devices" not in agg.table and "data.fold" not in agg.table
    assert table.loc["0.5", "n"] == 4 and table.loc["0.25", "n"] == 2
    assert table.loc["0.5", "classify/err_left mean"] == pytest.approx(13.0)
    assert table.loc["0.25", "classify/err_left mean"] == pytest.approx(35.0)
    assert table.loc["0.5", "seeds"] == "0 1 2 3" and sorted(agg.runs["fold"].dropna()) == [2]


def test_settings_text_and_the_fallback_for_records_without_a_config():
    res = {"config": {"seed": 3, "objective": {"alpha": 1.0, "mask": [0.1, 0.2], "steps": None}}}
    assert run_settings(res) == {
        "objective.alpha": "1",
        "objective.mask": "[0.1, 0.2]",
        "objective.steps": "null",
    }
    legacy = {
        "config": {"seed": 3},
        "overrides": ["objective=hybrid", "seed=3", "objective.alpha=0.5", "paths.x=/a"],
    }
    assert run_settings(legacy) == {"objective.alpha": "0.5"}


def write_log(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def done(stage: Path, finished: float, epochs: int) -> None:
    (stage / "done.json").write_text(json.dumps({"finished": finished, "epochs": epochs}))


def deep_run(run: Path) -> None:
    """A deep-pipeline run: two finished stages (the top one resumed once) and one still training."""
    stages = run / "stages"
    write_log(
        stages / "pathway_image_1" / "csv" / "version_0" / "metrics.csv",
        [{"epoch": e, "step": 3 * e, "train/loss": 5.0 - e} for e in range(2)],
    )
    done(stages / "pathway_image_1", 100.0, 2)
    top = stages / "top" / "csv"
    write_log(
        top / "version_0" / "metrics.csv",
        [
            {"epoch": 0, "step": 1, "train/loss": 9.0},
            {"epoch": 0, "step": 1, "val/cond_ce/sum": 7.0},
            {"epoch": 1, "step": 2, "train/loss": 8.0, "val/cond_ce/sum": math.inf},
            {"epoch": 2, "step": 3, "train/loss": 99.0},  # interrupted in epoch 2
        ],
    )
    write_log(
        top / "version_1" / "metrics.csv",
        [{"epoch": 2, "step": 3, "train/loss": 7.5, "val/cond_ce/sum": 6.0}],
    )
    done(stages / "top", 200.0, 3)
    write_log(
        stages / "finetune_recurrent" / "csv" / "version_0" / "metrics.csv",
        [{"epoch": 0, "step": 2, "train/loss": 2.0, "val/loss": 1.5}, {"epoch": None, "step": 2, "nll": 3.0}],
    )


def test_deep_pipeline_curves_put_the_stages_one_after_the_other(tmp_path):
    deep_run(tmp_path)
    curves = read_curves(tmp_path)
    assert [(s.prefix, s.first, s.last, s.done) for s in curves.stages] == [
        ("pathway/image_1", 0, 1, True),
        ("top", 2, 4, True),
        ("finetune/recurrent", 5, 5, False),
    ]
    frame = curves.frame
    assert list(frame.index) == [0, 1, 2, 3, 4, 5] and "finetune/recurrent/nll" not in frame
    assert frame["pathway/image_1/train/loss"].dropna().to_dict() == {0: 5.0, 1: 4.0}
    # the resumed epoch comes from the later log; a non-finite value is a gap
    assert frame["top/train/loss"].dropna().to_dict() == {2: 9.0, 3: 8.0, 4: 7.5}
    assert frame["top/val/cond_ce/sum"].dropna().to_dict() == {2: 7.0, 4: 6.0}
    stage, epoch, values = curves.current()
    assert (
        stage.prefix == "finetune/recurrent" and epoch == 0 and values == {"train/loss": 2.0, "val/loss": 1.5}
    )


def test_running_runs_show_their_stage_epoch_and_current_measures(tmp_path):
    cfg = config(0)
    deep_run(tmp_path / "deep")
    write_results(tmp_path / "deep", "running", choices={**CHOICES, "model": "mdrnn"}, config=cfg)
    write_results(tmp_path / "new", "running", choices=CHOICES, config=config(1))  # no epoch yet
    col = collect_folders([tmp_path])
    assert [s.status for s in col.skipped] == ["running", "running"] and not col.runs
    table = running_table(col.running, [], base=tmp_path)
    rows = {row[-1]: dict(zip(table.headers, row)) for row in table.rows}
    assert rows["deep"]["stage"] == "finetune/recurrent" and rows["deep"]["last epoch"] == "0"
    assert (
        rows["deep"]["train/loss"] == "2"
        and rows["deep"]["val/loss"] == "1.5"
        and rows["deep"]["model"] == "mdrnn"
    )
    assert rows["new"]["last epoch"] == "–" and rows["new"]["train/loss"] == "–"


def test_a_run_that_stopped_before_its_last_epoch_is_marked(tmp_path):
    for i, epochs in enumerate((3, 3, 2)):
        completed(tmp_path / str(i), config(i), 10.0)
        write_log(
            tmp_path / str(i) / "csv" / "metrics.csv",
            [{"epoch": e, "train/loss": 1.0} for e in range(epochs)],
        )
    runs = collect_folders([tmp_path]).runs
    assert [r.folder.name for r in stopped_early(runs)] == ["2"]  # the others reached the longest
    assert [r.folder.name for r in stopped_early(runs[2:])] == []  # max_epochs = 2: epochs 0, 1 are all
    longer = [r for r in runs if r.folder.name == "0"]
    longer[0].settings["trainer.max_epochs"] = "5"
    assert [r.folder.name for r in stopped_early(longer)] == ["0"]


def multirun_yaml(folder: Path, sweeper: dict, task: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "multirun.yaml"
    path.write_text(json.dumps({"hydra": {"sweeper": sweeper, "overrides": {"task": task}}}))
    return path


def test_expected_jobs_of_a_multirun(tmp_path):
    basic = {
        "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "params": {"objective": "a,b,c"},
    }
    assert expected_jobs(multirun_yaml(tmp_path / "1", basic, ["seed=0,1", "trainer.max_epochs=2"])) == 6
    # the command line overrides the preset's sweep of the same key
    assert expected_jobs(multirun_yaml(tmp_path / "2", basic, ["objective=a,b", "seed=range(3)"])) == 6
    optuna = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 20}
    assert expected_jobs(multirun_yaml(tmp_path / "3", optuna, ["optim.lr=interval(0.001,0.1)"])) == 20
    assert expected_jobs(multirun_yaml(tmp_path / "4", {"_target_": "some.Other"}, [])) is None


def test_when_a_watched_sweep_has_ended(tmp_path):
    now, settle, stale = 1000.0, 10.0, 100.0
    running = SweepState((), {"a": "completed", "b": "running"}, expected=2, newest=now - 50)
    assert not has_ended(running, now, settle, stale)
    assert has_ended(running, now + 60, settle, stale)  # nothing changed for `stale`: a killed run
    between_jobs = SweepState((), {"a": "completed", "b": "failed"}, expected=3, newest=now - 50)
    assert not has_ended(between_jobs, now, settle, stale)
    assert has_ended(
        SweepState((), {"a": "completed", "b": "failed"}, expected=2, newest=now), now, settle, stale
    )
    unknown = SweepState((), {"a": "completed"}, expected=None, newest=now - 5)
    assert not has_ended(unknown, now, settle, stale) and has_ended(unknown, now + 5, settle, stale)
    # the real folders: one running run, no multirun.yaml
    write_results(tmp_path / "r", "running", choices=CHOICES)
    write_log(tmp_path / "r" / "csv" / "metrics.csv", [{"epoch": 0, "train/loss": 1.0}])
    state = scan([tmp_path])
    assert state.running == 1 and state.expected is None and len(state.signature) == 2
    (tmp_path / "r" / "csv" / "metrics.csv").write_text("epoch,train/loss\n0,1.0\n1,0.5\n")
    assert scan([tmp_path]).signature != state.signature
    assert np.isfinite(state.newest)
