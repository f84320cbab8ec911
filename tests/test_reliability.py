"""Bad input, numerical faults, interruptions: clear errors, no lost or false results."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forked_cli import start_module
from mmvi.config_check import validate_config
from mmvi.data.mnist import MNIST5kHalves
from mmvi.errors import ConfigError
from mmvi.lit.module import MultimodalLitModule, NonFiniteError
from mmvi.objectives.minvi import MultiPrediction
from test_train_cli import run_cli

SMALL = [
    "data.max_examples={train:400,val:100,test:100}",
    "model.n_hidden=32",
    "trainer.max_epochs=1",
    "~callbacks.rich_progress_bar",
    "trainer.enable_progress_bar=false",
    "evaluation.mf_steps=10",
    "evaluation.n_generation=0",
    "logger=csv",
]


# ------------------------------------------------------------------ bad configuration
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr=-0.1", "optim.lr=-0.1 is out of range; allowed: a number > 0"),
        ("objective.mask_rate=1.5", "objective.mask_rate=1.5 is out of range; allowed: a number in [0, 1]"),
        ("objective.mf_steps=abc", "objective.mf_steps='abc' has the wrong type"),
        ("objective.directions=[middle]", "objective.directions names modality 'middle'"),
        ("model.modalities={left:{size:100},right:{size:392}}", "do not match the data's modalities"),
        ("objective=newton", "Could not find 'objective/newton'"),
        ("optim.learning_rate=1", "Key 'learning_rate' is not in struct"),
    ],
)
def test_bad_config_stops_before_training_with_one_clear_message(override, expected, tmp_path):
    proc = run_cli("mmvi.train", [*SMALL, override, f"hydra.run.dir={tmp_path}"], cwd=tmp_path, timeout=120)
    # Hydra's own errors (an unknown key or group option) too: one line, exit status 2
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()
    if (tmp_path / "results.json").exists():
        assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


RANGES = {
    "optim.lr": lambda x: x > 0,
    "optim.weight_decay": lambda x: x >= 0,
    "objective.mask_rate": lambda x: 0 <= x <= 1,
    "objective.alpha": lambda x: 0 <= x <= 1,
    "objective.sparsity_target": lambda x: 0 < x < 1,
    "optim.momentum": lambda x: 0 <= x < 1,
}


# the class whose declared constraint a key of RANGES is (objective settings live on their objective)
TARGETS = {"objective.alpha": "mmvi.objectives.Mixture", "objective": "mmvi.objectives.MultiPrediction"}


def _nested(key: str, value) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    if parts[0] == "objective":
        out["objective"]["_target_"] = TARGETS.get(key, TARGETS["objective"])
    return out


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(RANGES)), value=st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_validation_rejects_exactly_the_out_of_range_values(key, value):
    ok = math.isfinite(value) and RANGES[key](value)
    if ok:
        validate_config(_nested(key, value))
    else:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(_nested(key, value))


@settings(max_examples=50, deadline=None)
@given(
    key=st.sampled_from(sorted(RANGES)),
    value=st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2)),
)
def test_validation_rejects_values_of_the_wrong_type(key, value):
    with pytest.raises(ConfigError, match="wrong type"):
        validate_config(_nested(key, value))


# ------------------------------------------------------------------ numerical faults
class NaNAtStep(MultiPrediction):
    """MP objective whose loss is NaN at chosen global calls (fault injection)."""

    bad_calls = (2,)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0

    def terms(self, model, v):
        loss, h, logs = super().terms(model, v)
        self.calls += 1
        if self.calls in self.bad_calls:
            loss = loss * float("nan")
        return loss, h, logs


def _lit(policy: str) -> MultimodalLitModule:
    return MultimodalLitModule(
        model={
            "_target_": "mmvi.models.MultimodalRBM",
            "modalities": {"left": {"size": 392}, "right": {"size": 392}},
            "n_hidden": 16,
        },
        objective={"_target_": "test_reliability.NaNAtStep", "mf_steps": 2, "bptt_steps": 2},
        optim={
            "lr": 0.01,
            "lr_decay": 0.0,
            "momentum_initial": 0.5,
            "momentum": 0.5,
            "momentum_switch_epoch": 0,
            "weight_decay": 0.0,
        },
        nonfinite={"policy": policy, "backoff": 0.95},
    )


def _fit(lit, tmp_path, steps=4):
    dm = MNIST5kHalves(batch_size=50, max_examples={"train": 200, "val": 50, "test": 50})
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(lit, datamodule=dm)
    return trainer


def test_nonfinite_loss_is_skipped_and_backs_off_the_learning_rate(tmp_path):
    lit = _lit("backoff")
    seen = []
    original = lit.training_step

    def spy(batch, batch_idx):
        before = [p.detach().clone() for p in lit.model.parameters()]
        out = original(batch, batch_idx)
        changed = any(not torch.equal(a, p) for a, p in zip(before, lit.model.parameters()))
        seen.append((batch_idx, changed, float(lit.lr_backoff), lit.optimizers().param_groups[0]["lr"]))
        return out

    lit.training_step = spy
    _fit(lit, tmp_path)
    assert [s[1] for s in seen] == [True, False, True, True]  # the NaN step (2nd) changed nothing
    assert [round(s[2], 6) for s in seen] == [1.0, 0.95, 0.95, 0.95]
    assert seen[2][3] == pytest.approx(0.01 * 0.95)  # lower lr for the rest of the epoch
    assert int(lit.bad_steps) == 1
    assert all(torch.isfinite(p).all() for p in lit.model.parameters())


def test_nonfinite_loss_with_stop_policy_names_step_objective_and_checkpoint(tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 1 .*NaNAtStep.*Last good checkpoint"):
        _fit(_lit("stop"), tmp_path)


def test_cli_huge_learning_rate_fails_the_run_instead_of_recording_nan(tmp_path):
    proc = run_cli(
        "mmvi.train",
        [*SMALL, "optim.lr=1e30", "nonfinite.policy=stop", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path,
        timeout=180,
    )
    assert proc.returncode != 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed"
    assert "NonFiniteError: non-finite" in res["reason"] and "MultiPrediction" in res["reason"]
    assert "at step" in res["reason"] and "Last good checkpoint" in res["reason"]
    assert "metrics" not in res
    assert "error: non-finite" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ interruption and resume
RESUME = [
    "data.max_examples={train:1500,val:100,test:200}",
    "data.batch_size=10",
    "model.n_hidden=48",
    "objective=nll_pcd",
    "objective.n_chains=20",
    "objective.k=2",
    "trainer.max_epochs=3",
    "~callbacks.rich_progress_bar",
    "trainer.enable_progress_bar=false",
    "evaluation.mf_steps=20",
    "evaluation.n_generation=0",
    "logger=csv",
]


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    proc = run_cli("mmvi.train", [*RESUME, f"hydra.run.dir={straight}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # start the same run, kill it hard during its second epoch
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = start_module("mmvi.train", [*RESUME, f"hydra.run.dir={broken}"], tmp_path, env)
    first = broken / "checkpoints" / "epoch_000.ckpt"
    deadline = time.time() + 240
    while not first.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    status = json.loads((broken / "results.json").read_text())["status"]
    assert status == "running", "the run finished before it could be interrupted"
    assert not (broken / "checkpoints" / "epoch_002.ckpt").exists()
    # resume in the reused folder (no ckpt_path: picks up checkpoints/last.ckpt)
    proc = run_cli(
        "mmvi.train", [*RESUME, f"hydra.run.dir={broken}", "ckpt_path=last"], cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((broken / "results.json").read_text())
    assert b["status"] == "completed"
    print(
        "\n".join(
            f"{k}: uninterrupted {a['metrics'][k]:.6f}, resumed {b['metrics'][k]:.6f}"
            for k in sorted(a["metrics"])
        )
    )
    for key in (
        "classify/err_multimodal",
        "classify/err_left",
        "cond_ce/right_given_left",
        "cond_ce/left_given_right",
    ):
        assert abs(a["metrics"][key] - b["metrics"][key]) <= 1e-6 * max(1.0, abs(a["metrics"][key])), key


# ------------------------------------------------------------------ results integrity in a multirun
def test_failing_job_is_recorded_and_the_other_jobs_complete(tmp_path):
    proc = run_cli(
        "mmvi.train",
        ["-m", *SMALL, "optim.lr=0.01,-1", f"hydra.sweep.dir={tmp_path}"],
        cwd=tmp_path,
        timeout=240,
    )
    # the sweep ends with status 2 and one line per refused job, no traceback
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if "optim.lr=-1" in x]
    assert len(errors) == 2 and errors[0].startswith(
        f"error: {tmp_path / '1'}: "
    )  # when it ends, and at the end
    assert "error: 1 job(s) of this sweep refused:" in proc.stderr
    statuses = {p.parent.name: json.loads(p.read_text()) for p in Path(tmp_path).glob("*/results.json")}
    assert statuses["0"]["status"] == "completed"
    assert statuses["1"]["status"] == "failed" and "optim.lr=-1" in statuses["1"]["reason"]
    first_record = (tmp_path / "multirun.yaml").read_text()
    completed = (tmp_path / "0" / "results.json").read_text()

    # the same sweep folder with other settings: job 0 is refused in one line naming the sweep
    # override, its completed run and the earlier sweep's record are kept
    again = run_cli(
        "mmvi.train", ["-m", *SMALL, "optim.lr=0.02", f"hydra.sweep.dir={tmp_path}"], cwd=tmp_path
    )
    assert again.returncode == 2 and "Traceback" not in again.stderr
    refused = [x for x in again.stderr.splitlines() if x.startswith("error: ")]
    assert refused[0].startswith(f"error: {tmp_path / '0'} holds a run of another configuration")
    assert "optim.lr: 0.01 → 0.02" in refused[0] and "hydra.sweep.dir=<new folder>" in refused[0]
    assert (tmp_path / "0" / "results.json").read_text() == completed
    kept = [p for p in tmp_path.glob("multirun.*.yaml")]
    assert len(kept) == 1 and kept[0].read_text() == first_record
    assert "optim.lr=0.02" in (tmp_path / "multirun.yaml").read_text()
