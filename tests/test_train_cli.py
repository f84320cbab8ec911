"""The real CLI: Hydra composition, Lightning Trainer, wandb offline, on a slice of real MNIST."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from forked_cli import run_module

REPO = Path(__file__).resolve().parents[1]
REQUIRED = [
    "classify/err_multimodal",
    "classify/err_left",
    "classify/err_right",
    "cond_ce/right_given_left",
    "cond_ce/left_given_right",
]


def run_cli(module: str, args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in a process of its own (:mod:`forked_cli`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return run_module(module, args, cwd, env, timeout)


def small_mnist_args(shared_data: Path, run_dir: Path, objective: str = "minvi_mp") -> list[str]:
    return [
        "data=mnist",
        f"data.data_dir={shared_data / 'mnist'}",
        "data.max_examples={train:1000,val:300,test:300}",
        f"objective={objective}",
        "model.n_hidden=64",
        "trainer.max_epochs=1",
        "~callbacks.rich_progress_bar",
        "trainer.enable_progress_bar=false",
        "evaluation.mf_steps=30",
        "evaluation.n_generation=6",
        f"hydra.run.dir={run_dir}",
    ]


@pytest.fixture(scope="module")
def trained_run(shared_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    proc = run_cli("mmvi.train", small_mnist_args(shared_data, run_dir), cwd=tmp_path_factory.mktemp("cwd"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


def test_cli_trains_and_writes_complete_results(trained_run):
    res = json.loads((trained_run / "results.json").read_text())
    assert res["status"] == "completed"
    for key in REQUIRED:
        assert key in res["metrics"], key
    assert all(math.isfinite(v) for v in res["metrics"].values())
    for key in REQUIRED[:3]:
        assert 0 <= res["metrics"][key] <= 100
    assert res["choices"]["objective"] == "minvi_mp" and res["choices"]["data"] == "mnist"
    assert res["config"]["model"]["n_hidden"] == 64
    assert (trained_run / "generation.png").stat().st_size > 1000
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert list((trained_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (trained_run / "csv" / "metrics.csv").is_file()


def test_eval_cli_reproduces_the_training_run_metrics(trained_run, tmp_path):
    proc = run_cli(
        "mmvi.eval",
        [
            f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
            "evaluation.mf_steps=30",
            "evaluation.n_generation=0",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    train_m = json.loads((trained_run / "results.json").read_text())["metrics"]
    eval_m = json.loads((tmp_path / "results.json").read_text())["metrics"]
    for key in REQUIRED:
        assert abs(train_m[key] - eval_m[key]) < 1e-6, key
