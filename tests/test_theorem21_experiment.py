"""experiment=theorem21: config, table data, exact evaluation, report, and a real tiny multirun."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from forked_cli import run_module
from helpers import compose_job
from mmvi.config_check import validate_config
from mmvi.data.table import CyclingEpochSampler, TableSamples
from mmvi.models.mrbm import MultimodalRBM
from mmvi.objectives import Objective
from mmvi.run_folder import write_results
from mmvi.theory import MEASURE_KEYS, binary_states, make_data_table, rbm_joint_table, state_index
from mmvi.theory.experiment import evaluate_theorem21
from mmvi.theory.report import Theorem21ReportCallback, main, report

REPO = Path(__file__).resolve().parents[1]
MODALITIES = {"x": {"size": 4, "units": "bernoulli"}, "y": {"size": 4, "units": "bernoulli"}}


def compose_theorem21(overrides: list[str], tmp_path: Path):
    return compose_job("train", ["experiment=theorem21", *overrides], tmp_path, keep_hydra=True)


@pytest.mark.parametrize("objective", ["nll_pcd", "minvi_mp", "minvi_cdpl", "minvi_ccd"])
def test_experiment_composes_with_each_objective(objective, tmp_path):
    cfg = compose_theorem21([f"objective={objective}", "data.n_samples=123"], tmp_path)
    callback = cfg.hydra.callbacks.theorem21_report
    assert callback._target_ == "mmvi.theory.report.Theorem21ReportCallback"
    assert isinstance(instantiate(callback), Theorem21ReportCallback)
    with open_dict(cfg):
        del cfg["hydra"]
    validate_config(cfg)
    assert cfg.sweep_name == "theorem21"
    assert cfg.trainer.max_epochs == -1 and cfg.trainer.max_steps > 0
    assert cfg.optim.momentum_switch_epoch == 0 and cfg.objective.sparsity_weight == 0
    assert set(cfg.logger) == {"csv", "wandb"}
    obj = instantiate(cfg.objective)
    assert isinstance(obj, Objective) and obj.sparsity_weight == 0
    dm = instantiate(cfg.data, _convert_="all")
    assert isinstance(dm, TableSamples) and dm.n_samples == 123
    assert dm.modality_sizes == {"x": 4, "y": 4}
    model = instantiate(OmegaConf.to_container(cfg.model, resolve=True))
    assert model.sizes == {"x": 4, "y": 4}
    evaluate = instantiate(cfg.evaluation, _convert_="all")
    assert evaluate.func is evaluate_theorem21


def test_table_samples_splits_labels_and_fixed_eval_sets():
    small = TableSamples(n_samples=100, table_seed=3, modalities=MODALITIES)
    big = TableSamples(n_samples=1000, table_seed=3, modalities=MODALITIES)
    small.setup()
    big.setup()
    np.testing.assert_array_equal(small.p_data, make_data_table(4, 4, seed=3))
    assert {k: len(s) for k, s in small.splits.items()} == {"train": 100, "val": 2000, "test": 2000}
    for split in ("val", "test"):  # evaluation sets do not depend on n
        for m in ("x", "y"):
            assert torch.equal(small.splits[split].modalities[m], big.splits[split].modalities[m])
    assert not torch.equal(
        small.splits["val"].modalities["x"][:100], small.splits["test"].modalities["x"][:100]
    )
    tr = big.splits["train"]
    assert set(torch.unique(tr.modalities["y"]).tolist()) == {0.0, 1.0}
    assert torch.equal(tr.labels.argmax(1), torch.from_numpy(state_index(tr.modalities["x"])))
    assert torch.all(tr.labels.sum(1) == 1) and tr.labels.shape[1] == 16
    # batches of the training loader: epoch_size examples per epoch whatever n is
    dm = TableSamples(n_samples=30, epoch_size=200, batch_size=50, modalities=MODALITIES)
    batches = list(dm.train_dataloader())
    assert [len(b["index"]) for b in batches] == [50] * 4


def test_cycling_sampler_balances_examples_and_depends_on_epoch():
    s = CyclingEpochSampler(n=30, epoch_size=200, seed=1)
    idx = list(s)
    counts = np.bincount(idx, minlength=30)
    assert len(idx) == 200 and counts.min() >= 6 and counts.max() <= 7
    assert list(s) == idx
    s.set_epoch(1)
    assert list(s) != idx
    big = list(CyclingEpochSampler(n=1000, epoch_size=200))
    assert len(set(big)) == 200


def test_evaluate_theorem21_on_an_independent_model_matches_hand_formulas():
    """W = 0: P_θ(x, y) = Π_i σ(±b_i) is a product of independent bits, so P_θ(x|y) = P_θ(x)."""
    torch.manual_seed(0)
    model = MultimodalRBM(MODALITIES, n_hidden=3).double()
    with torch.no_grad():
        for m in ("x", "y"):
            model.W[m].zero_()
            model.b[m].normal_(0, 1)
        model.c.normal_(0, 1)
    dm = TableSamples(n_samples=500, modalities=MODALITIES)
    metrics, artefacts = evaluate_theorem21(model, dm, out_dir=None)
    assert artefacts == {}
    states = binary_states(4)

    def bits_prob(b: torch.Tensor) -> np.ndarray:
        q = torch.sigmoid(b).numpy()
        return np.prod(states * q + (1 - states) * (1 - q), axis=1)

    qx, qy = bits_prob(model.b["x"].detach()), bits_prob(model.b["y"].detach())
    pd = dm.p_data
    px, py = pd.sum(1), pd.sum(0)
    expected = {
        "theory/pi_x_l2": np.linalg.norm(qx - px),
        "theory/pi_y_l2": np.linalg.norm(qy - py),
        "theory/tv_joint": 0.5 * np.abs(np.outer(qx, qy) - pd).sum(),
        "theory/l_vi": -(px @ np.log(qx)) - (py @ np.log(qy)),  # log P_θ(x|y) = log P_θ(x)
        "theory/l_nll": -(pd * np.log(np.outer(qx, qy))).sum(),
        "theory/kl_x": (px * np.log(px / qx)).sum(),
        "theory/kl_y": (py * np.log(py / qy)).sum(),
        "theory/n_samples": 500.0,
        "theory/l_nll_min": -(pd * np.log(pd)).sum(),
        "theory/l_vi_min": -(pd * (np.log(pd / py[None, :]) + np.log(pd / px[:, None]))).sum(),
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert set(MEASURE_KEYS) <= set(metrics)
    assert 0 < metrics["theory/tv_empirical"] < 0.5


def test_evaluate_theorem21_at_the_fixed_point_is_zero():
    """P_D = P_θ of an RBM: the chain's stationary joint is P_D (Theorem 2.1), every distance is 0."""
    torch.manual_seed(1)
    model = MultimodalRBM(MODALITIES, n_hidden=5, init_std=1.0).double()
    p = rbm_joint_table(model)
    x = torch.from_numpy(binary_states(4)).float()
    dm = SimpleNamespace(
        p_data=p, setup=lambda: None, splits={"train": SimpleNamespace(modalities={"x": x, "y": x})}
    )
    metrics, _ = evaluate_theorem21(model, dm)
    for key in ("theory/pi_x_l2", "theory/pi_y_l2", "theory/tv_joint", "theory/kl_x", "theory/kl_y"):
        assert abs(metrics[key]) < 1e-9, key
    assert metrics["theory/l_vi"] == pytest.approx(metrics["theory/l_vi_min"], abs=1e-9)
    assert metrics["theory/l_nll"] == pytest.approx(metrics["theory/l_nll_min"], abs=1e-9)
    assert metrics["theory/n_samples"] == 16


def _fake_run(
    folder: Path, status: str, objective: str, n: int, seed: int, tv: float, overrides=(), theory=True
):
    metrics = {k: tv for k in MEASURE_KEYS} if theory else {"nll": 1.0}
    if theory:
        metrics.update(
            {
                "theory/n_samples": n,
                "theory/tv_empirical": 0.1,
                "theory/l_vi_min": 2.0,
                "theory/l_nll_min": 4.0,
            }
        )
    write_results(
        folder,
        status,
        metrics=metrics,
        choices={"objective": objective},
        config={"seed": seed},
        overrides=[f"objective={objective}", f"data.n_samples={n}", f"seed={seed}", *overrides],
    )


def test_report_aggregates_seeds_labels_variants_and_lists_skipped(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0", "completed", "minvi_mp", 100, 0, 0.2, ["model.n_hidden=16"])
    _fake_run(sweep / "1", "completed", "minvi_mp", 100, 1, 0.4, ["model.n_hidden=16"])
    _fake_run(sweep / "2", "completed", "minvi_mp", 100, 0, 0.1, ["model.n_hidden=32"])
    _fake_run(sweep / "3", "failed", "nll_pcd", 100, 0, 0.1)
    _fake_run(sweep / "4", "running", "nll_pcd", 1000, 0, 0.1)
    _fake_run(sweep / "5", "completed", "nll_pcd", 1000, 0, 0.1, theory=False)
    paths = report(sweep, tmp_path / "out")
    md = paths["markdown"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| minvi_mp")]
    assert rows == [
        "| minvi_mp model.n_hidden=16 | 100 | 2 | "
        + " | ".join(["0.3000 ± 0.1000"] * 7)
        + " | 0.1000 ± 0.0000 |",
        "| minvi_mp model.n_hidden=32 | 100 | 1 | " + " | ".join(["0.1000"] * 7) + " | 0.1000 |",
    ]
    assert "Skipped (3)" in md and "`3`: status failed" in md and "`4`: status running" in md
    assert "`5`: no finite" in md
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and float(table[0]["theory/tv_joint"]) == pytest.approx(0.3)
    assert paths["plot"].stat().st_size > 1000
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no temporary files left


def test_report_cli_errors_on_an_empty_folder(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no completed theorem21 run" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2


def test_tiny_multirun_through_the_cli_writes_results_and_the_report(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    args = [
        "-m",
        "experiment=theorem21",
        "objective=nll_pcd,minvi_mp",
        "data.n_samples=100,1000",
        "trainer.max_steps=30",
        f"hydra.sweep.dir={sweep}",
        "logger=csv",
    ]
    proc = run_module("mmvi.train", args, tmp_path, env, 300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    assert sorted((r["choices"]["objective"], r["metrics"]["theory/n_samples"]) for r in results) == [
        ("minvi_mp", 100),
        ("minvi_mp", 1000),
        ("nll_pcd", 100),
        ("nll_pcd", 1000),
    ]
    for r in results:
        assert all(math.isfinite(r["metrics"][k]) for k in MEASURE_KEYS)
        assert r["metrics"]["theory/l_vi"] >= r["metrics"]["theory/l_vi_min"]
    # the same number of updates whatever n: final metrics are logged at global_step = max_steps
    for run in sweep.glob("*/csv/metrics.csv"):
        with open(run) as f:
            final = [row for row in csv.DictReader(f) if row.get("theory/tv_joint")]
        assert [int(row["step"]) for row in final] == [30]
    md = (sweep / "theorem21.md").read_text()
    assert len([line for line in md.splitlines() if line.startswith(("| nll_pcd |", "| minvi_mp |"))]) == 4
    assert (sweep / "theorem21.png").stat().st_size > 1000
    assert (sweep / "theorem21.csv").is_file() and (sweep / "theorem21_runs.csv").is_file()
    assert list((sweep / "wandb").glob("offline-run-*/run-*.wandb"))
