"""The theory notebook runs top to bottom (nbmake), so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_theory_notebook_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MMVI_THEOREM21_SWEEP"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbmake",
            str(REPO / "notebooks" / "theory.ipynb"),
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed" in proc.stdout
