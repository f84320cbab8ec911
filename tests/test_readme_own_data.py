"""The README's "Use your own data" example runs as written (create the arrays, train, compare)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def example_script() -> str:
    """The first bash block of the README section "Use your own data"."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use your own data", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the section has no bash example"
    return block.group(1)


def run_example(folder: Path, script: str) -> subprocess.CompletedProcess:
    script = script.replace(".venv/bin/python", sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(["bash", "-e", "-c", script], cwd=folder, env=env, capture_output=True, text=True)


def check_outputs(folder: Path) -> None:
    sweep = folder / "logs" / "my_data"
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert [r["config"]["objective"]["_target_"].rsplit(".", 1)[1] for r in results] == [
        "ContrastiveDivergence",
        "MultiPrediction",
    ]
    metrics = results[1]["metrics"]
    views = ("pixels", "rows", "columns")
    for q in ("multimodal", *views, *(f"no_{m}" for m in views)):
        assert 0 <= metrics[f"classify/err_{q}"] <= 100
    assert all(f"cond_ce/{m}_given_rest" in metrics for m in views)
    assert results[0]["config"]["data"]["root"] == str(folder)  # paths resolved against the launch dir
    table = (sweep / "report" / "table.md").read_text()
    assert "| arrays | mrbm | nll_pcd |" in table and "| arrays | mrbm | minvi_mp |" in table
    assert "error, all but pixels (%)" in table


def test_readme_example_runs(tmp_path):
    """As written, with one epoch and the CSV logger (the test's time budget)."""
    script = example_script()
    assert "hydra.sweep.dir=logs/my_data\n" in script
    script = script.replace(
        "hydra.sweep.dir=logs/my_data\n", "hydra.sweep.dir=logs/my_data logger=csv trainer.max_epochs=1\n"
    )
    proc = run_example(tmp_path, script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_outputs(tmp_path)


@pytest.mark.slow
def test_readme_example_runs_verbatim(tmp_path):
    proc = run_example(tmp_path, example_script())
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_outputs(tmp_path)
