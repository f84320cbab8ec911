"""The deep pipeline like every other run: one offline wandb run with stage-prefixed metrics, the final
evaluation and figures; a results.json with a training run's fields plus per-stage measures; and the
comparison report reading it beside a training run (model column, stage curves one after the other)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pandas as pd

from helpers import compose_job
from mmvi.compare import compare
from mmvi.report.collect import UNSET
from mmvi.report.curves import read_curves
from mmvi.run_folder import write_results

# the fields of a training run's results.json (mmvi.train)
TRAIN_FIELDS = {"artefacts", "choices", "config", "duration_s", "metrics", "overrides", "run_dir", "status"}
TRAIN_FIELDS |= {"started", "wandb_dir"}
STAGES = ["pathway_image_1", "top", "finetune_recurrent"]


def finished_records(path: Path, seconds: float = 30.0) -> list:
    """:func:`wandb_records` once the file holds its ``exit`` record: wandb's service process may
    still be writing the offline file when the run has returned."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            records = wandb_records(path)
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                return records
        except Exception:  # noqa: BLE001 - a record still being written does not parse yet
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline wandb run file (LevelDB log format: 32 KiB blocks of chunks
    with a 7-byte header crc32c/length/type after the file's 7-byte ``:W&B`` header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, parts, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block padding
            pos += left
            continue
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


def test_deep_pipeline_logs_like_a_training_run_and_enters_the_report(shared_data, tmp_path, monkeypatch):
    from mmvi.deep.pipeline import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "sweep" / "deep"
    cfg = compose_job(
        "deep",
        [
            "experiment=wikipedia_deep",
            "objective=minvi_mp",
            f"data.data_dir={shared_data / 'wikipedia_xmodal'}",
            "data.max_examples={train:300,val:100,test:100}",
            "model.n_joint=12",
            "model.pathways.image.layers=[{size:12,hidden:stepped_sigmoid}]",
            "stages.pathway.epochs=1",
            "stages.top.epochs=2",
            "stages.finetune.recurrent.epochs=2",
            "evaluation.mf_steps=5",
            "evaluation.classifier.Cs=[1.0]",
        ],
        run_dir,
    )
    assert set(cfg.logger) == {"wandb", "csv"}
    metrics = run(cfg)

    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed" and TRAIN_FIELDS <= set(res)
    assert sorted(res["stage_metrics"]) == sorted(STAGES)
    assert "top/val/cond_ce/sum" not in res["metrics"] and res["stage_metrics"]["top"]["val/cond_ce/sum"] > 0

    # one offline wandb run: grouped and tagged like mmvi.train runs, every stage by prefix, then the evaluation
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    assert Path(res["wandb_dir"]).parent == run_file.parent
    records = finished_records(run_file)
    (wandb_run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert wandb_run.run_group == "wikipedia_deep" and wandb_run.job_type == "minvi_mp"
    assert set(wandb_run.tags) == {"minvi_mp", "wikipedia", "mdrnn"}
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    keys = set().union(*history)
    for key in (
        "pathway/image_1/train/loss",
        "top/train/loss",
        "top/val/cond_ce/sum",
        "finetune/recurrent/val/loss",
        "classify/err_multimodal",
        "figures/retrieval/_type",
    ):
        assert key in keys, key
    (final,) = [h for h in history if "classify/err_multimodal" in h]
    assert final["classify/err_multimodal"] == metrics["classify/err_multimodal"]

    # the run's CSV holds the stages one after the other, on the pipeline epochs the report uses
    log = pd.read_csv(run_dir / "csv" / "metrics.csv")
    curves = read_curves(run_dir)
    assert [s.name for s in curves.stages] == STAGES and curves.last_epoch == 4
    for stage in curves.stages:
        column = log.filter(regex=f"^{stage.prefix}/train/loss$").squeeze()
        epochs = sorted(log.loc[column.notna(), "epoch"].astype(int))
        assert epochs == list(range(stage.first, stage.last + 1)), stage
        logged = column.dropna().to_numpy()
        assert list(curves.frame[f"{stage.prefix}/train/loss"].dropna()) == list(logged), stage

    # the report: the deep run beside a training run, the model as a column, its curves by stage
    shallow = tmp_path / "sweep" / "shallow"
    write_results(
        shallow,
        "completed",
        metrics={"classify/err_multimodal": 20.0},
        choices={"data": "mnist5k", "model": "mrbm", "objective": "minvi_mp"},
        config={"seed": 0, "model": {"n_hidden": 32}},
    )
    pd.DataFrame({"epoch": [0, 1], "train/loss": [2.0, 1.0]}).to_csv(shallow / "metrics.csv", index=False)
    (shallow / "csv").mkdir()
    (shallow / "metrics.csv").rename(shallow / "csv" / "metrics.csv")
    rep = compare([tmp_path / "sweep"])
    table = rep.aggregate.table
    assert sorted(zip(table["model"], table["data"])) == [("mdrnn", "wikipedia"), ("mrbm", "mnist5k")]
    curves_shown = {p.measure for p in rep.plots if p.kind == "curve"}
    assert {"train/loss", "top/val/cond_ce/sum", "pathway/image_1/train/loss"} <= curves_shown
    html = rep.index.read_text()
    assert (
        html.index("Stage pathway/image_1") < html.index("Stage top") < html.index("Stage finetune/recurrent")
    )


def test_a_pipeline_stopped_after_a_stage_is_its_own_configuration(tmp_path):
    """The same settings and seed evaluated after the top stage and after fine-tuning: two rows, no
    duplicate; a copy of the stopped run is the duplicate."""
    fp = {"digest": "d1", "settings": {"seed": 0, "model": {"_target_": "mmvi.deep.MDRNN"}}}
    common = {"choices": {"data": "wikipedia", "model": "mdrnn", "objective": "minvi_mp"}, "fingerprint": fp}
    common["config"] = {"seed": 0}
    write_results(tmp_path / "full", "completed", metrics={"classify/err_multimodal": 30.0}, **common)
    for name in ("top", "top_copy"):
        write_results(
            tmp_path / name,
            "completed",
            metrics={"classify/err_multimodal": 35.0},
            stopped_after="top",
            **common,
        )
    rep = compare([tmp_path], tmp_path / "report", figures=False)
    table = rep.aggregate.table
    assert len(table) == 2 and sorted(table["classify/err_multimodal mean"]) == [30.0, 35.0]
    assert sorted(table["stopped_after"]) == sorted(["top", UNSET])
    assert [s.status for s in rep.collection.skipped] == ["duplicate"]
