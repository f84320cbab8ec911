"""Every data module checks its splits against the unit types before training (one line on a violation)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from forked_cli import run_module
from helpers import compose_job
from mmvi.data.arrays import ArrayFiles
from mmvi.data.base import MultimodalDataModule, Split, unit_type_problem
from mmvi.deep.stages import SplitsDataModule
from mmvi.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unit_type_problems_exactly():
    x = torch.tensor([[0.0, 0.5, 1.0], [1.5, -0.5, 0.2]])
    assert unit_type_problem(x, "bernoulli") == (
        "has values in [-0.5, 1.5] (33.3 % outside [0, 1])",
        "values in [0, 1]",
    )
    assert unit_type_problem(x.clamp(0, 1), "bernoulli") is None
    counts = torch.tensor([[0.0, 2.0, 3.0], [1.0, 0.5, -1.0]])
    assert unit_type_problem(counts, "softmax") == (
        "has values in [-1, 3], 2 of them negative or not whole",
        "non-negative whole counts",
    )
    assert unit_type_problem(counts.clamp_min(0).round(), "softmax") is None
    nan = torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [float("inf"), float("nan")]])
    assert unit_type_problem(nan, "gaussian") == (
        "holds 3 NaN/inf values (the first in row 1)",
        "finite values",
    )
    assert unit_type_problem(torch.tensor([[-40.0, 1e6]]), "gaussian") is None
    # layer unit types of deep pathways (means in [0, N]) are not data unit types
    assert unit_type_problem(torch.tensor([[0.0, 4.5]]), "stepped_sigmoid") is None


def test_reported_case_stops_before_training_with_one_line(shared_data, tmp_path):
    """data=uci_mfeat data.modalities.pix.units=bernoulli without binarize_pix used to train and
    record a negative cross-entropy."""
    run = tmp_path / "run"
    env = {**os.environ, "MMVI_DATA_DIR": str(shared_data), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    args = ["data=uci_mfeat", "data.modalities.pix.units=bernoulli", "logger=csv", f"hydra.run.dir={run}"]
    proc = run_module("mmvi.train", args, REPO, env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    # the right values: the z-scored training split of pix, computed here from the file
    pix = pd.read_csv(shared_data / "uci_mfeat" / "mfeat-pix.csv").to_numpy()
    dm = instantiate(compose_job("train", ["data=uci_mfeat"], tmp_path / "x").data, _convert_="all")
    dm.data_dir = shared_data / "uci_mfeat"
    dm.setup()
    train = pix[dm.indices["train"], :-1]
    z = (train - train.mean(0)) / train.std(0)
    share = 100 * np.mean((z < 0) | (z > 1))
    assert round(share) == 64
    assert lines[0] == (
        f"error: UCIMultiFeature: modality 'pix' in the train split has values in [{z.min():.4g}, {z.max():.4g}] "
        f"({share:.3g} % outside [0, 1]), but its bernoulli units model values in [0, 1]; "
        "fix: set data.binarize_pix=true (pix / 6, in [0, 1]) or data.modalities.pix.units=gaussian"
    )
    assert not (run / "checkpoints").exists()
    # the fix it names works
    cfg = compose_job(
        "train",
        ["data=uci_mfeat", "data.modalities.pix.units=bernoulli", "data.binarize_pix=true"],
        tmp_path / "y",
    )
    fixed = instantiate(cfg.data, _convert_="all")
    fixed.data_dir = shared_data / "uci_mfeat"
    fixed.setup()
    assert fixed.unit_types() == {"pix": "bernoulli", "fou": "gaussian"}


@pytest.mark.parametrize("data", ["uci_mfeat", "wikipedia", "theorem21"])
def test_every_data_config_fits_its_unit_types(data, shared_data, tmp_path, caplog):
    """(MNIST, mnist5k and MIR-Flickr are checked in test_data_mnist / test_data_real.)"""
    cfg = compose_job("train", [f"data={data}", f"paths.data_dir={shared_data}"], tmp_path)
    caplog.set_level(logging.WARNING, logger="mmvi.data.base")
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()  # runs the check
    declared = {m: spec["units"] for m, spec in cfg.data.modalities.items()}
    assert dm.unit_types() == declared
    assert "far from standardised" not in caplog.text


def test_gaussian_far_from_standardised_is_a_warning(shared_data, tmp_path, caplog):
    fou = pd.read_csv(shared_data / "uci_mfeat" / "mfeat-fou.csv").to_numpy()[::4, :-1]
    kar = pd.read_csv(shared_data / "uci_mfeat" / "mfeat-kar.csv").to_numpy()[::4, :-1]
    np.save(tmp_path / "fou.npy", fou * 10 + 3)
    np.save(tmp_path / "kar.npy", kar)
    caplog.set_level(logging.WARNING, logger="mmvi.data.base")
    kwargs = {"root": str(tmp_path), "files": {"fou": "fou.npy", "kar": "kar.npy"}}
    ArrayFiles(**kwargs).setup()
    assert "far from standardised" not in caplog.text
    raw = ArrayFiles(standardize=False, **kwargs)
    raw.setup()
    x = raw.splits["train"].modalities["fou"].double()
    gap = (float(x.mean(0).abs().mean()), float((x.std(0, unbiased=False) - 1).abs().mean()))
    assert gap[0] > 0.5
    assert (
        f"modality 'fou' ({tmp_path / 'fou.npy'}) (Gaussian units, unit variance assumed) is far from "
        f"standardised in the train split: mean |mean| {gap[0]:.3g}, mean |std - 1| {gap[1]:.3g}"
        in caplog.text
    )
    assert "'kar'" in caplog.text  # raw kar is not standardised either
    assert "standardise it (z-score with training statistics)" in caplog.text
    # standardised, but with constant units: the warning names them instead
    caplog.clear()
    np.save(tmp_path / "const.npy", np.full((fou.shape[0], 3), 2.0))
    ArrayFiles(root=str(tmp_path), files={"fou": "fou.npy", "const": "const.npy"}).setup()
    assert "'const'" in caplog.text and "'fou'" not in caplog.text
    assert "3 of its 3 units are constant (no variance to standardise): remove them" in caplog.text


class _Activations(MultimodalDataModule):
    def __init__(self, splits, **kwargs):
        super().__init__(**kwargs)
        self._splits = splits

    def load_splits(self):
        return dict(self._splits)


def test_stage_data_of_the_deep_pipeline_is_exempt_deliberately():
    """Stepped-sigmoid mean activations lie in [0, N]: no Bernoulli check on a stage's inputs."""
    acts = {"x": torch.linspace(0, 5, 40).reshape(10, 4), "y": torch.rand(10, 3)}
    splits = {s: Split(acts, torch.zeros(10, 0)) for s in ("train", "val", "test")}
    stage = SplitsDataModule(splits)
    stage.setup()
    assert not SplitsDataModule.unit_check and len(stage.splits["train"]) == 10
    with pytest.raises(
        DataError, match=r"_Activations: modality 'x' in the train split has values in \[0, 5\]"
    ):
        _Activations(splits).setup()
