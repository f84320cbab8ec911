"""optim.gaussian_lr_scale: a Gaussian modality's weights and visible biases learn at a scaled rate, so
the default optimiser trains the real-valued views of UCI mfeat (at scale 1 it runs away)."""

from __future__ import annotations

import pytest
import torch

import mmvi
from mmvi.errors import NonFiniteError
from mmvi.lit import reference_update
from mmvi.run_folder import CHECKPOINT_DIR, LAST_CHECKPOINT, read_results

MFEAT = [
    "data=uci_mfeat",
    "trainer.max_epochs=6",
    "trainer.enable_progress_bar=false",
    "evaluation.n_generation=0",
    "evaluation.classifier.max_train=400",
    "logger=csv",
]


def groups_of(run_dir) -> list[dict]:
    state = torch.load(run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT, map_location="cpu", weights_only=False)
    return state["optimizer_states"][0]["param_groups"]


def test_default_optimiser_trains_gaussian_views_and_scale_one_runs_away(shared_data, tmp_path):
    mfeat = [*MFEAT, f"data.data_dir={shared_data / 'uci_mfeat'}"]
    ok = mmvi.run(mfeat, run_dir=tmp_path / "scaled")["results"]
    assert ok["status"] == "completed" and "divergence" not in ok, ok.get("divergence")
    # both views are Gaussian: their weights and visible biases at 0.1 x lr, the hidden biases at lr
    groups = groups_of(tmp_path / "scaled")
    assert sorted(g["lr_scale"] for g in groups) == [0.1, 0.1, 1.0]
    base = next(g["lr"] for g in groups if g["lr_scale"] == 1.0)
    assert all(abs(g["lr"] - g["lr_scale"] * base) <= 1e-12 * base for g in groups)
    # the reported case: the same run with every parameter at lr diverges (recorded, not averaged)
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step \d+ \(epoch [3-5]"):
        mmvi.run([*mfeat, "optim.gaussian_lr_scale=1"], run_dir=tmp_path / "unscaled")
    bad = read_results(tmp_path / "unscaled")
    assert bad["status"] == "failed" and bad["divergence"]["epoch"] <= 5


def test_without_a_gaussian_modality_the_groups_are_unchanged(tmp_path):
    out = mmvi.run(
        ["data.max_examples={train:200,val:100,test:100}", "model.n_hidden=16", "trainer.max_epochs=1",
         "evaluation.n_generation=0", "logger=csv"],
        run_dir=tmp_path / "run",
    )  # fmt: skip
    assert out["results"]["status"] == "completed"
    assert [g["lr_scale"] for g in groups_of(tmp_path / "run")] == [1.0, 1.0]


def test_negative_statistics_use_each_parameters_own_rate():
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b], "lr": 0.05}], lr=0.5)
    ones = torch.ones(2, dtype=torch.float64)
    reference_update.apply_negative(opt, [a, b], (ones, ones))
    torch.testing.assert_close(a.detach(), -0.5 * ones)
    torch.testing.assert_close(b.detach(), -0.05 * ones)
