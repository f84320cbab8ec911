"""A run's process ends honestly: SIGTERM, two processes on one folder, a full or read-only disk,
Hydra's own flag errors, mmvi.run inside the caller's Hydra context, mmvi.eval without a record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import mmvi
from forked_cli import Started, start_module
from test_reliability import RESUME, SMALL
from test_train_cli import run_cli

CONF = Path(__file__).resolve().parents[1] / "conf"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}


def start(args: list[str], cwd: Path) -> Started:
    return start_module("mmvi.train", args, cwd, ENV)


def errors_of(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("error: ")]


def test_sigterm_mid_training_exits_143_with_one_line_and_resumes(tmp_path):
    run = tmp_path / "run"
    child = start([*RESUME, f"hydra.run.dir={run}"], tmp_path)
    first = run / "checkpoints" / "epoch_000.ckpt"
    deadline = time.time() + 240
    while not first.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err[-2000:]
    lines = errors_of(err)
    assert len(lines) == 1 and "terminated (SIGTERM)" in lines[0] and "resume" in lines[0], err[-2000:]
    record = json.loads((run / "results.json").read_text())
    assert record["status"] == "failed" and record["reason"].startswith("terminated (SIGTERM)")
    again = run_cli("mmvi.train", [*RESUME, f"hydra.run.dir={run}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["status"] == "completed"


def test_two_processes_on_one_folder_exactly_one_trains(tmp_path):
    run = tmp_path / "run"
    a = start([*SMALL, f"hydra.run.dir={run}"], tmp_path)
    time.sleep(0.3)
    b = start([*SMALL, "model.n_hidden=33", f"hydra.run.dir={run}"], tmp_path)
    outs = [p.communicate(timeout=300) for p in (a, b)]
    codes = sorted(p.returncode for p in (a, b))
    assert codes == [0, 2], [o[1][-1500:] for o in outs]
    refused = next(o[1] for p, o in zip((a, b), outs, strict=True) if p.returncode == 2)
    lines = errors_of(refused)
    assert len(lines) == 1 and ("is in use by another run" in lines[0] or "another configuration" in lines[0])
    assert "Traceback" not in refused
    record = json.loads((run / "results.json").read_text())
    saved = json.loads((run / "config_resolved.json").read_text())
    assert record["status"] == "completed" and record["fingerprint"] == saved["fingerprint"]
    assert not (run / ".mmvi.lock").exists()


def mounted(path: Path, size: str, read_only: bool = False) -> None:
    """A small tmpfs at ``path`` (root only: the CI machine and the sessions run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")


@needs_root
def test_a_full_disk_is_one_line_and_leaves_no_unloadable_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    mounted(disk, "160k")
    try:
        run = disk / "run"
        proc = run_cli(
            "mmvi.train",
            [*SMALL, "model.n_hidden=64", "hydra.output_subdir=null", f"hydra.run.dir={run}"],
            tmp_path,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = errors_of(proc.stderr)
        assert len(lines) == 1 and "No space left on device" in lines[0] and "resume" in lines[0]
        assert "Traceback" not in proc.stderr
        for ckpt in (run / "checkpoints").glob("*.ckpt"):  # whatever was written loads
            torch.load(ckpt, map_location="cpu", weights_only=False)
        assert not list((run / "checkpoints").glob(".*.tmp")) if (run / "checkpoints").exists() else True
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@needs_root
def test_a_read_only_folder_is_one_line(tmp_path):
    disk = tmp_path / "ro"
    mounted(disk, "1m", read_only=True)
    try:
        proc = run_cli("mmvi.train", [*SMALL, f"hydra.run.dir={disk / 'run'}"], tmp_path)
        assert proc.returncode in (1, 2), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert any("Read-only file system" in x for x in errors_of(proc.stderr)), proc.stderr[-2000:]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_hydra_flag_errors_are_one_line(tmp_path):
    proc = run_cli("mmvi.train", ["--resolve"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = errors_of(proc.stderr)
    assert len(lines) == 1 and "--resolve" in lines[0] and "Traceback" not in proc.stderr


def test_mmvi_run_inside_the_callers_hydra_context(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outer = compose("train", overrides=["objective=nll_cd"])
        out = mmvi.run([*SMALL, "objective=minvi_mp"], run_dir=tmp_path / "run")
        assert out["results"]["status"] == "completed"
        assert outer.objective._target_.endswith("ContrastiveDivergence")  # the caller's config as it was
        again = compose("train", overrides=["objective=nll_pcd"])  # and its Hydra context still works
        assert again.objective.persistent is True


def test_eval_of_a_checkpoint_without_its_record(tmp_path, shared_data):
    train = run_cli("mmvi.train", [*SMALL, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    lone = tmp_path / "lone" / "checkpoints"
    lone.mkdir(parents=True)
    (lone / "last.ckpt").write_bytes((tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes())
    base = [f"ckpt_path={lone / 'last.ckpt'}", "evaluation.n_generation=0"]
    proc = run_cli("mmvi.eval", [*base, f"hydra.run.dir={tmp_path / 'e1'}"], cwd=tmp_path)
    assert proc.returncode == 2 and "name the data with +data=<option>" in errors_of(proc.stderr)[0]
    proc = run_cli(
        "mmvi.eval",
        [
            *base,
            "+data=mnist5k",
            "data.max_examples={train:200,val:100,test:100}",
            f"hydra.run.dir={tmp_path / 'e2'}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "e2" / "results.json").read_text())["status"] == "completed"
