"""Two-process CPU DDP (gloo) gives the single-process result for the same global batch."""

from __future__ import annotations

import json

import torch

from helpers import SMALL_RUN
from mmvi.lit.module import select_rank_state
from test_train_cli import run_cli

COMMON = [
    "data.max_examples={train:800,val:100,test:200}",
    "model.n_hidden=32",
    "objective=minvi_mp",
    "objective.mask_rate=0.0",  # no random mask: the gradient is a deterministic function of the batch
    "objective.sparsity_weight=0.0",  # a penalty on the batch mean is not additive over ranks
    "trainer.max_epochs=2",
    "~callbacks.rich_progress_bar",
    "trainer.enable_progress_bar=false",
    "evaluation.mf_steps=20",
    "evaluation.classifier.max_extensions=0",  # the fixed grid: a small-data probe at C >> 100 is ill-conditioned
    "evaluation.n_generation=0",
    "logger=csv",
]
KEYS = [
    "classify/err_multimodal",
    "classify/err_left",
    "classify/err_right",
    "cond_ce/right_given_left",
    "cond_ce/left_given_right",
]


def test_two_process_ddp_matches_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = run_cli("mmvi.train", [*COMMON, "data.batch_size=40", f"hydra.run.dir={one}"], cwd=tmp_path)
    assert p1.returncode == 0, p1.stderr[-3000:]
    p2 = run_cli(
        "mmvi.train",
        [
            *COMMON,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "data.batch_size=20",
            f"hydra.run.dir={two}",
        ],
        cwd=tmp_path,
    )
    assert p2.returncode == 0, p2.stderr[-3000:]
    a = json.loads((one / "results.json").read_text())["metrics"]
    b = json.loads((two / "results.json").read_text())["metrics"]
    print("\n".join(f"{k}: 1 process {a[k]:.6f}, 2 processes {b[k]:.6f}" for k in KEYS))
    # same batches and gradients; only the order of floating-point reductions differs
    for key in KEYS:
        # the models agree to float32 summation order (cond_ce to 1e-3 relative, in practice 1e-6); the
        # probe's lbfgs fit on 200 test digits moves by a few digits: 2.0 = 4 of 200
        tol = 2.0 if key.startswith("classify/err") else 1e-3 * abs(a[key])
        assert abs(a[key] - b[key]) <= tol, (key, a[key], b[key])
    # one results file, one run folder: the child process made no second Hydra output
    assert len(list(tmp_path.glob("**/results.json"))) == 2
    assert not list(two.glob("**/offline-run-*"))  # csv logger only: no stray wandb runs


def test_per_rank_buffers_are_restored_to_their_own_rank():
    ck = {
        "state_dict": {"objective.chains_x": torch.zeros(3, 2)},
        "per_rank_buffers": {"objective.chains_x": torch.stack([torch.zeros(3, 2), torch.ones(3, 2)])},
    }
    select_rank_state(ck, 1)
    assert torch.equal(ck["state_dict"]["objective.chains_x"], torch.ones(3, 2))
    select_rank_state(ck, 5)  # fewer saved ranks than the resuming run: rank 0's chains
    assert torch.equal(ck["state_dict"]["objective.chains_x"], torch.zeros(3, 2))


def test_ddp_jobs_of_a_local_sweep_run_as_their_own_job(tmp_path):
    """Each job's DDP child runs that job (not the sweep again): one multirun.yaml, the parent's,
    and every job completed with two ranks."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "mmvi.train",
        [
            "-m",
            *SMALL_RUN,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "data.batch_size=50",
            "objective=nll_cd,minvi_mp",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "objective=nll_cd,minvi_mp" in (sweep / "multirun.yaml").read_text()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job, objective in (("0", "nll_cd"), ("1", "minvi_mp")):
        record = json.loads((sweep / job / "results.json").read_text())
        assert record["status"] == "completed" and record["choices"]["objective"] == objective
        assert record["config"]["trainer"]["devices"] == 2
