"""Per-example records (records.parquet): the means in results.json are the means of the records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import mmvi
from helpers import SMALL_RUN
from mmvi.evaluation.protocol import EVALUATION_FILES
from mmvi.evaluation.records import VERSION, VERSION_KEY, Records, read_records
from mmvi.run_folder import RECORDS_FILE

# summary numbers that are not means over items or classes
NOT_PER_UNIT = ("classify/C", "classify/C_at_bound", "eval/mf_steps", "eval/seconds")


def _check_means(run_dir: Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed"
    df = read_records(run_dir / RECORDS_FILE)
    means = df.groupby("metric")["value"].mean()
    per_unit = {
        k
        for k in res["metrics"]
        if k not in NOT_PER_UNIT and not k.endswith("_stderr") and not k.startswith("eval/seconds/")
    }
    assert set(means.index) == per_unit  # every mean measure has its records, and nothing else
    for metric, mean in means.items():
        assert math.isclose(mean, res["metrics"][metric], rel_tol=1e-12, abs_tol=1e-12), metric
    assert df.groupby("metric")["index"].apply(lambda s: s.is_unique).all()
    return df


def test_records_of_a_single_label_run_average_to_its_results(tmp_path):
    out = mmvi.run(
        [
            *SMALL_RUN,
            "evaluation.likelihood.enabled=true",  # 16 hidden units: exact by enumeration
            "evaluation.retrieval.enabled=true",
            "evaluation.retrieval.n_figure_queries=0",
        ],
        run_dir=tmp_path / "run",
    )
    df = _check_means(out["run_dir"])
    n_test = 100
    assert (df["unit"] == "item").all()
    assert df.groupby("metric").size().eq(n_test).all()
    test_labels = mmvi.load(out["run_dir"]).datamodule.splits["test"].labels.argmax(1).numpy()
    err = df[df["metric"].str.startswith("classify/err_")]
    assert set(err["metric"]) == {"classify/err_multimodal", "classify/err_left", "classify/err_right"}
    for _, rows in err.groupby("metric"):
        rows = rows.sort_values("index")
        np.testing.assert_array_equal(rows["label"].to_numpy(dtype=np.int64), test_labels)
        wrong = rows["prediction"].to_numpy(dtype=np.int64) != test_labels
        np.testing.assert_array_equal(rows["value"].to_numpy(), 100.0 * wrong)
    others = df[~df["metric"].str.startswith("classify/err_")]
    assert others["prediction"].isna().all() and others["label"].isna().all()
    # the vi of an item is the sum of its two conditional NLLs
    wide = df.pivot(index="index", columns="metric", values="value")
    np.testing.assert_allclose(
        wide["cond_nll/vi"], wide["cond_nll/left_given_rest"] + wide["cond_nll/right_given_rest"], rtol=1e-12
    )
    assert (wide.filter(like="retrieval/").to_numpy() >= 0).all()


def test_records_of_a_multilabel_run_hold_per_class_scores(tmp_path, shared_data):
    """Two mfeat views as array files with a 0/1 label matrix (digit, even, above four)."""
    mor = pd.read_csv(shared_data / "uci_mfeat" / "mfeat-mor.csv")
    zer = pd.read_csv(shared_data / "uci_mfeat" / "mfeat-zer.csv")
    digit = mor.iloc[:, -1].to_numpy()
    labels = np.concatenate(
        [np.eye(10)[digit], (digit % 2 == 0)[:, None], (digit > 4)[:, None]], axis=1
    ).astype(np.int64)
    np.save(tmp_path / "mor.npy", mor.iloc[:, :-1].to_numpy(dtype=np.float32))
    np.save(tmp_path / "zer.npy", zer.iloc[:, :-1].to_numpy(dtype=np.float32))
    np.save(tmp_path / "labels.npy", labels)
    out = mmvi.run(
        [
            "data=arrays",
            f"data.files={{mor: {tmp_path}/mor.npy, zer: {tmp_path}/zer.npy}}",
            f"data.labels={tmp_path}/labels.npy",
            "data.max_examples={train:300,val:100,test:150}",
            "model.n_hidden=16",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "evaluation.n_generation=0",
            "evaluation.retrieval.enabled=true",
            "evaluation.retrieval.n_figure_queries=0",
            "logger=csv",
        ],
        run_dir=tmp_path / "run",
    )
    df = _check_means(out["run_dir"])
    per_class = df[df["metric"].str.startswith("classify/")]
    assert set(per_class["metric"]) == {
        f"classify/{m}_{q}" for m in ("map", "precision_at_50") for q in ("multimodal", "mor", "zer")
    }
    assert (per_class["unit"] == "class").all()
    test_labels = mmvi.load(out["run_dir"]).datamodule.splits["test"].labels.numpy()
    present = set(np.flatnonzero(test_labels.sum(0) > 0))
    for _, rows in per_class.groupby("metric"):
        assert set(rows["index"]) == present  # the classes with a positive test item
    assert ((per_class["value"] >= 0) & (per_class["value"] <= 1)).all()
    items = df[df["unit"] == "item"]
    assert items.groupby("metric").size().eq(150).all()


def test_records_file_schema_version_nulls_and_atomic_write(tmp_path):
    rec = Records()
    rec.add("classify/err_left", [0.0, 100.0, 0.0], prediction=[1, 2, 3], label=[1, 5, 3])
    rec.add("classify/map_left", [0.5, 0.25], unit="class", index=[3, 7])
    rec.add("cond_ce/left_given_right", np.array([1.5, 2.5, 3.5]))
    with pytest.raises(ValueError, match="unit must be one of"):
        rec.add("x", [1.0], unit="query")
    with pytest.raises(ValueError, match="differ in length"):
        rec.add("x", [1.0, 2.0], index=[0])
    path = rec.write(tmp_path / RECORDS_FILE, keep=["classify/err_left", "classify/map_left"])
    assert [p.name for p in tmp_path.iterdir()] == [RECORDS_FILE]  # no temporary file left
    schema = pq.read_schema(path)
    assert schema.metadata[VERSION_KEY] == str(VERSION).encode()
    assert [
        str(schema.field(c).type) for c in ("metric", "unit", "index", "value", "prediction", "label")
    ] == [
        "string",
        "string",
        "int64",
        "double",
        "int64",
        "int64",
    ]
    df = read_records(path)
    assert list(df["metric"]) == ["classify/err_left"] * 3 + ["classify/map_left"] * 2
    assert list(df["index"]) == [0, 1, 2, 3, 7] and list(df["unit"]) == ["item"] * 3 + ["class"] * 2
    assert df["prediction"].tolist()[:3] == [1, 2, 3] and df["prediction"].isna().tolist()[3:] == [True, True]
    assert str(df["label"].dtype) == "Int64"
    table = pq.read_table(path).replace_schema_metadata({VERSION_KEY: b"0"})
    pq.write_table(table, tmp_path / "old.parquet")
    with pytest.raises(ValueError, match="schema version"):
        read_records(tmp_path / "old.parquet")
    assert RECORDS_FILE in EVALUATION_FILES  # renamed aside with the figures when a run starts over


def test_records_of_a_paper_size_evaluation_stay_near_one_megabyte(tmp_path):
    """10,000 test items x the 15 per-item measures of a paper run (incompressible random values)."""
    rng = np.random.default_rng(0)
    n, rec = 10_000, Records()
    for q in ("multimodal", "left", "right"):
        y = rng.integers(0, 10, n)
        pred = np.where(rng.random(n) < 0.8, y, rng.integers(0, 10, n))
        rec.add(f"classify/err_{q}", 100.0 * (pred != y), prediction=pred, label=y)
        rec.add(f"retrieval/map_{q}", rng.random(n))
        rec.add(f"retrieval/precision_at_50_{q}", rng.integers(0, 51, n) / 50)
    for m in ("cond_ce/left_given_right", "cond_ce/right_given_left", "cond_nll/left_given_rest"):
        rec.add(m, rng.normal(100, 20, n))
    for m in ("cond_nll/right_given_rest", "cond_nll/vi", "nll"):
        rec.add(m, rng.normal(100, 20, n))
    path = rec.write(tmp_path / RECORDS_FILE)
    size = path.stat().st_size
    print(f"{rec.table().num_rows} rows: {size / 1e6:.2f} MB")
    assert rec.table().num_rows == 150_000
    assert size < 2e6
