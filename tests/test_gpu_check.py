"""scripts/gpu_check.py: its CPU path, and its tolerance check on known values."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from forked_cli import run_module

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def test_without_cuda_it_says_so_in_one_line_and_writes_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "out"
    proc = run_module(str(SCRIPT), ["--out", str(out)], tmp_path, env, 120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), proc.stdout
    assert not out.exists()


def test_agreement_uses_the_stated_tolerances():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    cpu = {"cond_ce/a": 100.0, "classify/err_x": 10.0, "other": 1.0}
    rows = gpu_check.compare(cpu, {"cond_ce/a": 100.05, "classify/err_x": 13.0, "other": 9.0}, "32-true")
    assert set(rows) == {"cond_ce/a", "classify/err_x"}  # only the measures with a tolerance
    assert rows["cond_ce/a"]["ok"] and rows["cond_ce/a"]["bound"] == 1e-3 * 100.0
    assert not rows["classify/err_x"]["ok"]  # 3 points > 2
    loose = gpu_check.compare(cpu, {"cond_ce/a": 104.0, "classify/err_x": 13.0}, "bf16-mixed")
    assert loose["cond_ce/a"]["ok"] and loose["classify/err_x"]["ok"]  # 4 <= 5e-2 x 100; 3 <= 5
    assert not gpu_check.compare(cpu, {"cond_ce/a": 106.0}, "bf16-mixed")["cond_ce/a"]["ok"]
