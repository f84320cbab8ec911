"""data=arrays: modalities from .npy/.npz/.csv/.parquet files written from the real UCI mfeat views.

The files hold every 4th of the 2,000 digits (500 rows, 50 per class).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from helpers import compose_job, tiny_checkpoint
from mmvi.data.arrays import ArrayFiles
from mmvi.data.base import load_data_state
from mmvi.errors import ConfigError, DataError


def _view(shared: Path, view: str) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(shared / "uci_mfeat" / f"mfeat-{view}.csv").to_numpy()[::4]
    return table[:, :-1], table[:, -1].astype(np.int64)


@pytest.fixture(scope="module")
def mfeat(shared_data) -> dict[str, np.ndarray]:
    pix, y = _view(shared_data, "pix")
    fou, _ = _view(shared_data, "fou")
    kar, _ = _view(shared_data, "kar")
    return {"pix": pix, "fou": fou, "kar": kar, "y": y}


@pytest.fixture(scope="module")
def folder(mfeat, tmp_path_factory) -> Path:
    """The three views in three formats, the labels, and one .npz holding everything."""
    d = tmp_path_factory.mktemp("arrays")
    np.save(d / "pix.npy", mfeat["pix"])
    pd.DataFrame(mfeat["fou"], columns=[f"f{i}" for i in range(76)]).to_parquet(d / "fou.parquet")
    pd.DataFrame(mfeat["kar"], columns=[f"k{i}" for i in range(64)]).to_csv(d / "kar.csv", index=False)
    np.save(d / "labels.npy", mfeat["y"])
    np.savez(d / "all.npz", pix=mfeat["pix"], fou=mfeat["fou"], labels=mfeat["y"])
    return d


def _dm(folder: Path, **kwargs) -> ArrayFiles:
    kwargs.setdefault("files", {"pix": "pix.npy", "fou": "fou.parquet", "kar": "kar.csv"})
    kwargs.setdefault("labels", "labels.npy")
    dm = ArrayFiles(root=str(folder), **kwargs)
    dm.setup()
    return dm


def _raw(dm: ArrayFiles, m: str, split: str) -> np.ndarray:
    """Undo the z-scoring: the file's rows of a split."""
    mean, std = dm.stats[m]
    return dm.splits[split].modalities[m].numpy().astype(np.float64) * std + mean


def test_three_formats_load_aligned_standardised_and_stratified(folder, mfeat):
    dm = _dm(folder)
    assert dm.modality_sizes == {"pix": 240, "fou": 76, "kar": 64}
    assert {s: len(x) for s, x in dm.splits.items()} == {"train": 350, "val": 50, "test": 100}
    for s, per_class in (("train", 35), ("val", 5), ("test", 10)):
        assert dm.splits[s].labels.sum(0).tolist() == [per_class] * 10  # 50 per class, 70/10/20
        assert (dm.splits[s].labels.argmax(1).numpy() == mfeat["y"][dm.indices[s]]).all()
    assert sorted(np.concatenate(list(dm.indices.values())).tolist()) == list(range(500))
    for m in ("pix", "fou", "kar"):
        train = dm.splits["train"].modalities[m].double()
        assert train.mean(0).abs().max() < 1e-4
        assert ((train.std(0, unbiased=False) - 1).abs() < 1e-3).all()
        # training statistics only, applied to every split: the files' rows come back
        tr = mfeat[m][dm.indices["train"]]
        np.testing.assert_allclose(dm.stats[m][0], tr.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_raw(dm, m, "test"), mfeat[m][dm.indices["test"]], atol=1e-3)
    assert dm.modality_specs()["kar"] == {"units": "gaussian", "size": 64}
    assert dm.single_label and dm.label_names == [str(d) for d in range(10)]
    # the same seed gives the same split; another seed another one
    assert np.array_equal(_dm(folder).indices["val"], dm.indices["val"])
    assert not np.array_equal(np.sort(_dm(folder, seed=1).indices["val"]), np.sort(dm.indices["val"]))


def test_npz_keys_and_one_npz_for_all_modalities(folder):
    a = _dm(folder, files={"pix": "all.npz:pix", "fou": "all.npz:fou"}, labels="all.npz:labels")
    b = _dm(folder, files="all.npz", labels="all.npz:labels")
    c = _dm(folder, files={"pix": "pix.npy", "fou": "fou.parquet"})
    assert list(b.modality_sizes) == ["pix", "fou"]  # the labels' key is not a modality
    for s in ("train", "test"):
        for m in ("pix", "fou"):
            assert torch.equal(a.splits[s].modalities[m], b.splits[s].modalities[m])
            torch.testing.assert_close(a.splits[s].modalities[m], c.splits[s].modalities[m])


def test_label_forms_and_no_labels(folder, mfeat):
    names = np.array([f"digit {d}" for d in mfeat["y"]])
    pd.DataFrame({"digit": names}).to_csv(folder / "names.csv", index=False, header=False)
    np.save(folder / "onehot.npy", np.eye(10, dtype=np.int64)[mfeat["y"]])
    multi = np.stack([mfeat["y"] % 2 == 0, mfeat["y"] >= 5, mfeat["y"] == 0], 1).astype(np.float32)
    np.save(folder / "multi.npy", multi)
    ids = _dm(folder)
    by_name = _dm(folder, labels="names.csv")
    assert by_name.label_names == [f"digit {d}" for d in range(10)]
    assert torch.equal(by_name.splits["test"].labels, ids.splits["test"].labels)
    # class names under a header row: the header is recognised by the row count
    pd.DataFrame({"digit": names}).to_csv(folder / "names_header.csv", index=False)
    with_header = _dm(folder, labels="names_header.csv")
    assert with_header.label_names == by_name.label_names
    assert torch.equal(with_header.splits["test"].labels, ids.splits["test"].labels)
    onehot = _dm(folder, labels="onehot.npy")
    assert onehot.single_label and torch.equal(onehot.splits["val"].labels, ids.splits["val"].labels)
    ml = _dm(folder, labels="multi.npy")
    assert not ml.single_label and ml.splits["train"].labels.shape == (350, 3)
    assert torch.equal(ml.splits["test"].labels, torch.from_numpy(multi[ml.indices["test"]]))
    none = _dm(folder, labels=None)
    assert none.splits["train"].labels.shape == (350, 0) and none.label_names == []


def test_split_files_give_exactly_those_rows(folder, mfeat):
    rows = np.random.default_rng(5).permutation(500)
    np.save(folder / "train_idx.npy", rows[:300])
    pd.DataFrame({"row": rows[300:350]}).to_csv(folder / "val_idx.csv", index=False)
    np.save(folder / "test_idx.npy", rows[350:])
    dm = _dm(folder, split_files={"train": "train_idx.npy", "val": "val_idx.csv", "test": "test_idx.npy"})
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [300, 50, 150]
    np.testing.assert_allclose(_raw(dm, "kar", "val"), mfeat["kar"][rows[300:350]], atol=1e-3)


def test_binarize_threshold_and_sample(folder, mfeat):
    np.save(folder / "pix01.npy", mfeat["pix"] / 6.0)
    files = {"pix": "pix01.npy", "fou": "fou.parquet"}
    plain = _dm(folder, files=files, units={"pix": "bernoulli"})
    x = plain.splits["train"].modalities["pix"]
    torch.testing.assert_close(x.double(), torch.from_numpy(mfeat["pix"][plain.indices["train"]] / 6.0))
    thr = _dm(folder, files=files, units={"pix": "bernoulli"}, binarize={"pix": "threshold"}, threshold=0.4)
    assert torch.equal(thr.splits["train"].modalities["pix"], (x > 0.4).float())
    smp = _dm(folder, files=files, units={"pix": "bernoulli"}, binarize={"pix": "sample"})
    s = smp.splits["train"].modalities["pix"]
    assert set(s.unique().tolist()) == {0.0, 1.0}
    assert abs(float(s.mean()) - float(x.mean())) < 0.01  # a Bernoulli(x) draw (84,000 values)
    again = _dm(folder, files=files, units={"pix": "bernoulli"}, binarize={"pix": "sample"})
    assert torch.equal(again.splits["train"].modalities["pix"], s)
    counts = _dm(folder, files={"pix": "pix.npy", "fou": "fou.parquet"}, units={"pix": "softmax"})
    assert torch.equal(
        counts.splits["test"].modalities["pix"].double(),
        torch.from_numpy(mfeat["pix"][counts.indices["test"]]),
    )


@pytest.fixture(scope="module")
def bad(folder, mfeat) -> Path:
    bad = folder / "bad"
    bad.mkdir(exist_ok=True)
    fou = mfeat["fou"].copy()
    fou[[17, 40, 41], 3] = np.nan
    np.save(bad / "fou_nan.npy", fou)
    np.save(bad / "fou_short.npy", mfeat["fou"][:499])
    np.save(bad / "labels_short.npy", mfeat["y"][:490])
    kar = pd.DataFrame(mfeat["kar"][:50]).astype(object)
    kar.iloc[7, 2] = "n/a?"
    kar.to_csv(bad / "kar_text.csv", index=False, header=False)
    np.save(bad / "idx_a.npy", np.arange(0, 300))
    np.save(bad / "idx_b.npy", np.arange(250, 350))
    np.save(bad / "idx_c.npy", np.arange(350, 500))
    np.save(bad / "pix_frac.npy", mfeat["pix"] / 6.0)
    np.save(bad / "fou_empty.npy", mfeat["fou"][:0])
    (bad / "kar_empty.csv").write_text("")
    return bad


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"files": {"pix": "pix.npy", "fou": "nope.npy"}}, r"data file not found: .*nope\.npy"),
        (
            {"files": {"pix": "all.npz:pixels", "fou": "fou.parquet"}},
            r"all\.npz:pixels: no array 'pixels'.*\['pix', 'fou', 'labels'\]",
        ),
        (
            {"files": {"pix": "pix.npy", "fou": "bad/fou_short.npy"}},
            r"fou_short\.npy: 499 rows, but .*pix\.npy has 500",
        ),
        (
            {"files": {"pix": "pix.npy", "fou": "bad/fou_nan.npy"}},
            r"fou_nan\.npy \(modality 'fou'\): 3 NaN/inf values, the first in row 17",
        ),
        ({"labels": "bad/labels_short.npy"}, r"labels_short\.npy: 490 labels, but .*pix\.npy has 500 rows"),
        (
            {"files": {"pix": "pix.npy", "kar": "bad/kar_text.csv"}},
            r"kar_text\.csv: column 2 holds 'n/a\?' in row 7",
        ),
        (
            {"units": {"pix": "bernoulli"}},
            r"ArrayFiles: modality 'pix' \(.*pix\.npy\) in the train split has values in \[0, 6\].*\+\+data\.binarize\.pix=threshold",
        ),
        (
            {"units": {"fou": "softmax"}},
            r"modality 'fou' \(.*fou\.parquet\) in the train split .* negative or not whole.*non-negative whole counts",
        ),
        ({"units": {"pix": "poisson"}}, r"data\.units\.pix='poisson'; allowed: bernoulli, gaussian, softmax"),
        ({"units": {"pixel": "gaussian"}}, r"data\.units names \['pixel'\], which data\.files does not"),
        (
            {"binarize": {"pix": "threshold"}},
            r"data\.binarize\.pix=threshold needs data\.units\.pix=bernoulli \(\+\+data\.units\.pix=bernoulli\)",
        ),
        (
            {
                "files": {"pix": "pix.npy", "fou": "fou.parquet"},
                "units": {"pix": "bernoulli"},
                "binarize": {"pix": "sample"},
            },
            r"pix\.npy: binarize=sample .* \[0, 6\]",
        ),
        (
            {"split_files": {"train": "bad/idx_a.npy", "val": "bad/idx_b.npy", "test": "bad/idx_c.npy"}},
            r"share rows",
        ),
        ({"fractions": [0.7, 0.3, 0.2]}, r"data\.fractions=\[0\.7, 0\.3, 0\.2\]"),
        (
            {"files": {"pix": "pix.npy", "multimodal": "fou.parquet"}},
            r"modality name 'multimodal' is not allowed",
        ),
        ({"files": {}}, r"data\.files names no file"),
        (
            {"files": {"pix": "pix.npy", "fou": "bad/fou_empty.npy"}},
            r"fou_empty\.npy: no values \(array of shape \(0, 76\)\)",
        ),
        ({"files": {"pix": "pix.npy", "kar": "bad/kar_empty.csv"}}, r"cannot read .*kar_empty\.csv"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_key(folder, bad, kwargs, pattern):
    kwargs.setdefault("files", {"pix": "pix.npy", "fou": "fou.parquet"})
    dm = ArrayFiles(root=str(folder), labels=kwargs.pop("labels", "labels.npy"), **kwargs)
    with pytest.raises(DataError, match=pattern) as err:
        dm.setup()
    assert "\n" not in str(err.value)
    assert dm.splits == {}


def test_hydra_interface_exactly_as_documented(folder, tmp_path, monkeypatch):
    """The issue's command line composes, resolves paths against the launch directory and loads."""
    monkeypatch.chdir(folder)
    cfg = compose_job(
        "train",
        [
            "data=arrays",
            "data.files={pix: pix.npy, fou: fou.parquet}",
            "data.labels=labels.npy",
            "data.units={pix: gaussian, fou: gaussian}",
            "model.n_hidden=64",
        ],
        tmp_path / "run",
    )
    assert cfg.data.root == str(folder) and cfg.model.modalities is None
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    assert dm.modality_specs() == {
        "pix": {"units": "gaussian", "size": 240},
        "fou": {"units": "gaussian", "size": 76},
    }


def test_training_statistics_travel_with_the_checkpoint(folder, mfeat, tmp_path):
    """Lightning stores the data module's statistics; new files are standardised with them."""
    dm = _dm(folder, files={"pix": "pix.npy", "fou": "fou.parquet"}, batch_size=100)
    ckpt = tiny_checkpoint(dm, tmp_path, n_hidden=8, batches=2)
    # "new files": other digits (the last 200 rows), whose own statistics differ
    new = tmp_path / "new"
    new.mkdir()
    np.save(new / "pix.npy", mfeat["pix"][300:])
    shutil.copy(folder / "fou.parquet", new / "fou_all.parquet")
    pd.read_parquet(new / "fou_all.parquet").iloc[300:].to_parquet(new / "fou.parquet")
    fresh = ArrayFiles(root=str(new), files={"pix": "pix.npy", "fou": "fou.parquet"})
    assert load_data_state(fresh, ckpt)
    fresh.setup()
    for m in ("pix", "fou"):
        mean, std = dm.stats[m]
        want = (mfeat[m][300:][fresh.indices["test"]] - mean) / std
        np.testing.assert_allclose(fresh.splits["test"].modalities[m].numpy(), want, atol=1e-4)
    # loading after setup re-standardises the data already loaded
    late = ArrayFiles(root=str(new), files={"pix": "pix.npy", "fou": "fou.parquet"})
    late.setup()
    assert not np.allclose(late.stats["fou"][0], dm.stats["fou"][0])
    load_data_state(late, ckpt)
    assert torch.equal(late.splits["test"].modalities["fou"], fresh.splits["test"].modalities["fou"])


def test_without_labels_the_label_measures_are_skipped_and_said_to_be(folder, tmp_path, caplog):
    from mmvi.evaluation.protocol import NO_LABELS, evaluate
    from mmvi.models.mrbm import MultimodalRBM

    dm = _dm(folder, files={"fou": "fou.parquet", "kar": "kar.csv"}, labels=None)
    torch.manual_seed(0)
    model = MultimodalRBM(dm.modality_specs(), n_hidden=6, init_std=0.1)
    likelihood = {"enabled": True, "n_examples": 10, "n_ais_runs": 2, "n_betas": 10, "joint_ais_runs": 2}
    retrieval = {"enabled": True, "k": 5, "n_figure_queries": 2}
    caplog.set_level(logging.WARNING, logger="mmvi.evaluation.protocol")
    metrics, artefacts = evaluate(
        model=model,
        dm=dm,
        out_dir=tmp_path,
        native_steps=2,
        n_generation=2,
        likelihood={**likelihood, "joint_betas": 10},
        retrieval=retrieval,
    )
    assert not any(k.startswith(("classify/", "retrieval/")) for k in metrics)
    assert metrics.missing == {"classify/*": NO_LABELS, "retrieval/*": NO_LABELS}
    assert "no labels" in caplog.text
    assert {"cond_ce/fou_given_kar", "cond_ce/kar_given_fou", "cond_nll/fou_given_rest", "nll"} <= set(
        metrics
    )
    assert set(artefacts) == {"records"}  # feature views: no images to draw, only the per-item records


def test_eval_on_array_files_keeps_the_training_unit_types(folder, bad, tmp_path, monkeypatch):
    """``mmvi.eval +data=arrays 'data.files=…'`` without the units: the training run's unit types
    (here a Bernoulli view) are kept; a view left out is named as the data's to change."""
    import mmvi

    monkeypatch.chdir(folder)
    files = "data.files={pix: bad/pix_frac.npy, fou: fou.parquet, again: all.npz:fou}"
    small = [
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "evaluation.n_generation=0",
        "logger=csv",
    ]
    trained = mmvi.run(
        [
            "data=arrays",
            files,
            "data.labels=labels.npy",
            "data.units={pix: bernoulli}",
            "model.n_hidden=8",
            *small,
        ],
        run_dir=tmp_path / "t",
    )
    ckpt = f"ckpt_path={tmp_path / 't' / 'checkpoints' / 'last.ckpt'}"
    ev = mmvi.run(
        [ckpt, "+data=arrays", files, "data.labels=labels.npy", "evaluation.n_generation=0"],
        task="eval",
        run_dir=tmp_path / "e",
    )
    assert ev["results"]["data_config"]["units"] == {"pix": "bernoulli"}
    for key in ("cond_ce/pix_given_rest", "cond_ce/fou_given_rest"):
        assert ev["metrics"][key] == pytest.approx(trained["metrics"][key])
    with pytest.raises(ConfigError, match=r"evaluate on data with the trained model's modalities and sizes$"):
        mmvi.run(
            [
                ckpt,
                "+data=arrays",
                "data.files={pix: bad/pix_frac.npy, fou: fou.parquet}",
                "evaluation.n_generation=0",
            ],
            task="eval",
            run_dir=tmp_path / "e2",
        )
